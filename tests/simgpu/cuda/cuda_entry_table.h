// What simgpu's cuGetProcAddress searches: every driver entry point of the toolkit
// (the generated table hooks/cuda/generated/cuda_entry_points.inc) with simgpu's
// function for it. No CUDA type here: cuda_entry_table.cpp cannot include cuda.h.
#pragma once

#include <cstddef>

namespace simgpu::cuda {

struct ProcEntry {
  const char* name;  // as cuGetProcAddress is asked ("cuMemAlloc")
  int version;       // the first CUDA version that asks for this symbol
  void* fn;          // simgpu's function, or its CUDA_ERROR_NOT_SUPPORTED stub
  bool per_thread;   // a _ptsz/_ptds variant (an alias of the legacy one in simgpu)
};

extern const ProcEntry kProcs[];
extern const size_t kProcCount;

}  // namespace simgpu::cuda
