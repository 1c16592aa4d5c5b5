// A CUDA driver that does nothing, for measuring what the shim adds to a call: every
// entry point the launch-path bench uses answers at once (launches succeed and are
// counted per thread, allocations hand out fresh addresses). Built as
// build/noopcuda/libcuda.so.1 and loaded through LD_LIBRARY_PATH; NOOPCUDA_GPUS sets
// how many GPUs it shows (default 1). Never installed.
#include <cuda.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

int GpuCount() {
  static const int n = [] {
    const char* v = std::getenv("NOOPCUDA_GPUS");
    const int parsed = v != nullptr ? std::atoi(v) : 1;
    return parsed > 0 && parsed <= 16 ? parsed : 1;
  }();
  return n;
}

// A context is its device + 1, as a handle.
CUcontext ContextOf(CUdevice d) { return reinterpret_cast<CUcontext>(static_cast<uintptr_t>(d) + 1); }
thread_local CUcontext t_current = nullptr;
std::atomic<CUdeviceptr> g_next_address{0x7f0000000000ull};

}  // namespace

extern "C" {

__attribute__((visibility("default"))) thread_local unsigned long long noopcuda_thread_launches = 0;

CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) {
  *v = CUDA_VERSION;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* n) {
  *n = GpuCount();
  return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (ordinal < 0 || ordinal >= GpuCount()) return CUDA_ERROR_INVALID_DEVICE;
  *d = ordinal;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice d) {
  if (d < 0 || d >= GpuCount()) return CUDA_ERROR_INVALID_DEVICE;
  *ctx = ContextOf(d);
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext ctx) {
  t_current = ctx;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext* ctx) {
  *ctx = t_current;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *d = static_cast<CUdevice>(reinterpret_cast<uintptr_t>(t_current) - 1);
  return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void**, void**) {
  ++noopcuda_thread_launches;
  return CUDA_SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *p = g_next_address.fetch_add((bytes + 4095) & ~size_t{4095}, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr) { return CUDA_SUCCESS; }

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int, cuuint64_t, CUdriverProcAddressQueryResult* status) {
  struct Entry {
    const char* name;
    void* fn;
  };
  static const Entry kTable[] = {
      {"cuInit", reinterpret_cast<void*>(&cuInit)},
      {"cuDriverGetVersion", reinterpret_cast<void*>(&cuDriverGetVersion)},
      {"cuDeviceGetCount", reinterpret_cast<void*>(&cuDeviceGetCount)},
      {"cuDeviceGet", reinterpret_cast<void*>(&cuDeviceGet)},
      {"cuDevicePrimaryCtxRetain", reinterpret_cast<void*>(&cuDevicePrimaryCtxRetain)},
      {"cuDevicePrimaryCtxRelease", reinterpret_cast<void*>(&cuDevicePrimaryCtxRelease_v2)},
      {"cuCtxSetCurrent", reinterpret_cast<void*>(&cuCtxSetCurrent)},
      {"cuCtxGetCurrent", reinterpret_cast<void*>(&cuCtxGetCurrent)},
      {"cuCtxGetDevice", reinterpret_cast<void*>(&cuCtxGetDevice)},
      {"cuCtxSynchronize", reinterpret_cast<void*>(&cuCtxSynchronize)},
      {"cuLaunchKernel", reinterpret_cast<void*>(&cuLaunchKernel)},
      {"cuMemAlloc", reinterpret_cast<void*>(&cuMemAlloc_v2)},
      {"cuMemFree", reinterpret_cast<void*>(&cuMemFree_v2)},
      {"cuGetProcAddress", reinterpret_cast<void*>(&cuGetProcAddress_v2)},
  };
  for (const Entry& e : kTable)
    if (std::strcmp(e.name, symbol) == 0) {
      *pfn = e.fn;
      if (status != nullptr) *status = CU_GET_PROC_ADDRESS_SUCCESS;
      return CUDA_SUCCESS;
    }
  *pfn = nullptr;
  if (status != nullptr) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return CUDA_ERROR_NOT_FOUND;
}

}  // extern "C"
