// The CUDA hook family's shared pieces: the typed table of real driver functions
// (from cuda_hooks.def), loading the real driver, and ordinal translation helpers.
#pragma once

#define __CUDA_API_VERSION_INTERNAL 1  // every versioned ABI symbol by its own name
#include <cuda.h>

#include "client.h"
#include "common/guard.h"

namespace gpushare::cuda {

// real::cuMemAlloc_v2 etc.: the real driver's functions, null until resolved.
namespace real {
#define GS_CUDA_HOOK(symbol) inline decltype(&::symbol) symbol = nullptr;
#define GS_CUDA_REAL GS_CUDA_HOOK
#define GS_CUDA_DEVICE_HOOK(symbol, params, args) GS_CUDA_HOOK(symbol)
#define GS_CUDA_DEVICE_HOOK_THEN(symbol, params, args, then) GS_CUDA_HOOK(symbol)
#include "cuda/cuda_hooks.def"
#undef GS_CUDA_HOOK
#undef GS_CUDA_REAL
#undef GS_CUDA_DEVICE_HOOK
#undef GS_CUDA_DEVICE_HOOK_THEN
}  // namespace real

// What a CUDA hook answers when the shim itself fails (guard.h): the driver's own
// codes for an allocation that failed and for an internal error.
struct CudaApi {
  using Result = CUresult;
  static constexpr Result kOutOfMemory = CUDA_ERROR_OUT_OF_MEMORY;
  static constexpr Result kInternal = CUDA_ERROR_UNKNOWN;
};

// Loads the real driver and resolves the table (once; thread-safe). False, with the
// reason logged once, if the real libcuda.so.1 cannot be found.
bool LoadRealDriver();

// The hook of an ABI symbol name ("cuMemAlloc_v2"), or null if not hooked.
void* HookForSymbol(const char* symbol);

// The client runtime, with its devices known (the real driver initialized).
Client* ReadyClient();

// Contexts of a virtual GPU the application created (cuda_launch.cpp): the drain
// thread synchronizes them, with the GPU's primary context, when a grant is revoked.
void TrackContext(int device, CUcontext ctx);
void DrainDevice(int device);

// Calls a real function, or answers CUDA_ERROR_NOT_SUPPORTED when this driver lacks it.
#define GS_REAL(symbol, ...) \
  (::gpushare::cuda::real::symbol ? ::gpushare::cuda::real::symbol(__VA_ARGS__) : CUDA_ERROR_NOT_SUPPORTED)

}  // namespace gpushare::cuda
