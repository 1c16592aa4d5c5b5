// The current context's virtual GPU, cached per thread so that a launch or an
// allocation does not ask the driver each time. A thread's cache is dropped when it
// changes its current context (the hooks below, and a context it creates), and every
// thread's when any context is destroyed or a primary context released or reset (a
// process-wide generation: a later context may reuse the handle on another GPU).
#include "cuda/cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace {

std::atomic<uint32_t> g_generation{1};

struct DeviceCache {
  uint32_t generation = 0;  // 0: nothing cached
  int device = 0;
};
__attribute__((tls_model("initial-exec"))) thread_local DeviceCache t_cache;

}  // namespace

namespace gpushare::cuda {

CUresult CurrentVirtualDevice(Client* client, int* device) {
  const uint32_t generation = g_generation.load(std::memory_order_acquire);
  if (t_cache.generation == generation) {
    *device = t_cache.device;
    return CUDA_SUCCESS;
  }
  CUdevice physical;
  if (CUresult r = GS_CUDA_CALL(cuCtxGetDevice, &physical); r != CUDA_SUCCESS) return r;
  const int v = client->devices().Virtual(physical);
  if (v < 0) return CUDA_ERROR_INVALID_CONTEXT;
  t_cache = {generation, v};
  *device = v;
  return CUDA_SUCCESS;
}

void ThreadContextChanged() { t_cache.generation = 0; }

void ContextsChanged() {
  // Never 0, the "nothing cached" mark.
  if (g_generation.fetch_add(1, std::memory_order_acq_rel) + 1 == 0) g_generation.fetch_add(1);
  t_cache.generation = 0;
}

}  // namespace gpushare::cuda

extern "C" {

CUresult cuCtxSetCurrent(CUcontext ctx) {
  return GS_GUARDED(CudaApi, {
    ThreadContextChanged();
    return GS_CUDA_CALL(cuCtxSetCurrent, ctx);
  });
}

#define GS_CONTEXT_STACK_HOOK(symbol, param_t)  \
  CUresult symbol(param_t ctx) {                \
    return GS_GUARDED(CudaApi, {                \
      ThreadContextChanged();                   \
      return GS_CUDA_CALL(symbol, ctx);         \
    });                                         \
  }
GS_CONTEXT_STACK_HOOK(cuCtxPushCurrent, CUcontext)
GS_CONTEXT_STACK_HOOK(cuCtxPushCurrent_v2, CUcontext)
GS_CONTEXT_STACK_HOOK(cuCtxPopCurrent, CUcontext*)
GS_CONTEXT_STACK_HOOK(cuCtxPopCurrent_v2, CUcontext*)

}  // extern "C"
