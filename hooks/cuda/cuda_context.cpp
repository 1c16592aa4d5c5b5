// The current context's virtual GPU, cached per thread (cuda_hooks.h) so that a launch
// or an allocation does not ask the driver each time. A thread's cache is dropped when it
// changes its current context (the hooks below, and a context it creates), and every
// thread's when any context is destroyed or a primary context released or reset (a
// process-wide generation: a later context may reuse the handle on another GPU).
#include "cuda/cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace gpushare::cuda {

using context_cache::generation;
using context_cache::t_thread;

CUresult AskVirtualDevice(Client* client, int* device) {
  const uint32_t seen = generation.load(std::memory_order_acquire);
  CUdevice physical;
  if (CUresult r = GS_CUDA_CALL(cuCtxGetDevice, &physical); r != CUDA_SUCCESS) return r;
  const int v = client->devices().Virtual(physical);
  if (v < 0) return CUDA_ERROR_INVALID_CONTEXT;
  t_thread = {seen, v};
  *device = v;
  return CUDA_SUCCESS;
}

void ThreadContextChanged() { t_thread.generation = 0; }

void ContextsChanged() {
  // Never 0, the "nothing cached" mark.
  if (generation.fetch_add(1, std::memory_order_acq_rel) + 1 == 0) generation.fetch_add(1);
  t_thread.generation = 0;
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
