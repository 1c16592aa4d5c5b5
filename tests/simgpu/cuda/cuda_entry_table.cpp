// simgpu's table for cuGetProcAddress (cuda_entry_table.h), built from the entry-point
// table generated from the toolkit's headers, shared with the shim's hooks. cuda.h is
// deliberately not included: every entry point is defined here, weak and with one
// neutral signature, as a stub answering CUDA_ERROR_NOT_SUPPORTED (801). simgpu's models
// (cuda_driver.cpp, cuda_exec.cpp, cuda_procs.cpp) override the stubs of what they
// implement, and the per-thread symbols become aliases of the legacy ones
// (cuda_per_thread_aliases.ld), so every entry point is callable and exported.
#include "cuda_entry_table.h"

extern "C" {
#define GS_CUDA_ENTRY_POINT(name, version, symbol, per_thread) \
  __attribute__((weak)) int symbol() { return 801; }
#include "cuda/generated/cuda_entry_points.inc"
#undef GS_CUDA_ENTRY_POINT
}

namespace simgpu::cuda {

const ProcEntry kProcs[] = {
#define GS_CUDA_ENTRY_POINT(name, version, symbol, per_thread) \
  {#name, version, reinterpret_cast<void*>(&::symbol), per_thread != 0},
#include "cuda/generated/cuda_entry_points.inc"
#undef GS_CUDA_ENTRY_POINT
};
const size_t kProcCount = sizeof kProcs / sizeof kProcs[0];

}  // namespace simgpu::cuda
