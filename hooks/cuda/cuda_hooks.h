// The CUDA hook family's shared pieces: the typed table of real driver functions
// (from cuda_hooks.def) and the family's description for the common plumbing
// (common/family.h: loading the real driver, lookups, the ready client).
#pragma once

#define __CUDA_API_VERSION_INTERNAL 1  // every versioned ABI symbol by its own name
#include <cuda.h>

#include <atomic>

#include "client.h"
#include "common/family.h"

namespace gpushare::cuda {

// real::cuMemAlloc_v2 etc.: the real driver's functions, null until resolved.
namespace real {
#define GS_CUDA_HOOK(symbol) inline decltype(&::symbol) symbol = nullptr;
#include "cuda/cuda_hooks.def"
}  // namespace real

// The CUDA family as common/family.h sees it (defined in cuda_lookup.cpp).
struct CudaApi {
  using Result = CUresult;
  // What a hook answers when the shim itself fails (guard.h): the driver's own codes
  // for an allocation that failed and for an internal error.
  static constexpr Result kOutOfMemory = CUDA_ERROR_OUT_OF_MEMORY;
  static constexpr Result kInternal = CUDA_ERROR_UNKNOWN;
  static Result NoReal(const char*) { return CUDA_ERROR_NOT_SUPPORTED; }  // this driver lacks it
  static const hooks::HookEntry kEntries[];
  static const size_t kEntryCount;
  static void* OpenRealLibrary();  // libcuda.so.1, loaded RTLD_GLOBAL
  static bool InitDevices(Client& client);
};
using Cuda = hooks::Family<CudaApi>;

// Loads the real driver and resolves the table (once; thread-safe). False, with the
// reason logged once, if the real libcuda.so.1 cannot be found.
inline bool LoadRealDriver() { return Cuda::Load(); }

// The client runtime, with its devices known (the real driver initialized).
inline Client* ReadyClient() { return Cuda::ReadyClient(); }

// Contexts of a virtual GPU the application created (cuda_launch.cpp): the drain
// thread synchronizes them, with the GPU's primary context, when a grant is revoked.
void TrackContext(int device, CUcontext ctx);

// The virtual GPU of the calling thread's current context (cuda_context.cpp: cached per
// thread, the cached answer inline here); the driver's error, or
// CUDA_ERROR_INVALID_CONTEXT for a GPU not this client's.
namespace context_cache {
inline std::atomic<uint32_t> generation{1};  // process-wide: bumped when any context may have gone
struct Thread {
  uint32_t generation;  // 0: nothing cached
  int device;
};
__attribute__((tls_model("initial-exec"))) inline thread_local Thread t_thread = {0, 0};
}  // namespace context_cache
CUresult AskVirtualDevice(Client* client, int* device);
inline CUresult CurrentVirtualDevice(Client* client, int* device) {
  const context_cache::Thread& t = context_cache::t_thread;
  if (t.generation == context_cache::generation.load(std::memory_order_acquire)) {
    *device = t.device;
    return CUDA_SUCCESS;
  }
  return AskVirtualDevice(client, device);
}
// The calling thread changed its current context / any context may have gone.
void ThreadContextChanged();
void ContextsChanged();
void DrainDevice(int device);

// Calls a real driver function (loading the driver first if need be), or answers
// CUDA_ERROR_NOT_SUPPORTED when this driver lacks it.
#define GS_CUDA_CALL(symbol, ...) GS_FAMILY_CALL(::gpushare::cuda::CudaApi, ::gpushare::cuda::real, symbol, __VA_ARGS__)

}  // namespace gpushare::cuda
