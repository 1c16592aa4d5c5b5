// Device hooks: the application speaks of virtual GPUs; every ordinal going into the
// real driver is translated to the physical GPU, and every ordinal coming out back.
// The in-only translations are generated from cuda_hooks.def; the rest is here.
#include <tuple>

#include "cuda/cuda_hooks.h"
#include "nvml/nvml_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace {

// Translates device arguments to physical, remembering the first failure. Negative
// ordinals (CU_DEVICE_CPU, CU_DEVICE_INVALID) and host locations pass unchanged.
class ToPhysical {
 public:
  ToPhysical() : client_(ReadyClient()) {}
  bool ready() const { return client_ != nullptr; }
  CUresult status() const { return status_; }

  CUdevice operator()(CUdevice dev) {
    if (dev < 0) return dev;
    const int p = client_->devices().Physical(dev);
    if (p < 0 && status_ == CUDA_SUCCESS) status_ = CUDA_ERROR_INVALID_DEVICE;
    return p < 0 ? 0 : p;
  }
  CUmemLocation operator()(CUmemLocation loc) {
    if (loc.type == CU_MEM_LOCATION_TYPE_DEVICE) loc.id = (*this)(loc.id);
    return loc;
  }

 private:
  Client* client_;
  CUresult status_ = CUDA_SUCCESS;
};

// A physical ordinal the real driver returned, as this client's virtual one.
CUresult ToVirtual(CUdevice physical, CUdevice* dev, CUresult not_visible) {
  Client* c = ReadyClient();
  if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const int v = c->devices().Virtual(physical);
  if (v < 0) return not_visible;
  *dev = v;
  return CUDA_SUCCESS;
}

// A context's own device memory counts against the cap: the first time this process
// creates a context on a GPU, what the driver holds for the process there beyond its
// recorded allocations (NVML's per-process figure) is charged.
void ChargeContext(CUdevice dev) {
  Client* client = ReadyClient();
  const int physical = client ? client->devices().Physical(dev) : -1;
  if (physical < 0 || !client->MarkContextCharged(dev)) return;
  char bus_id[32] = "";
  if (GS_CUDA_CALL(cuDeviceGetPCIBusId, bus_id, sizeof bus_id, physical) != CUDA_SUCCESS) return;
  auto held = gpushare::nvml::ProcessMemory(bus_id);
  const uint64_t tracked = client->ledger().Used(dev);
  if (!held || *held <= tracked) return;
  client->ChargeOverhead(dev, *held - tracked, "context");
}

// A context the application created: charged as above, and known to the drain.
void ContextCreated(CUdevice dev, CUcontext ctx) {
  ThreadContextChanged();  // the new context is the thread's current one
  ChargeContext(dev);
  TrackContext(dev, ctx);
}

}  // namespace

extern "C" {

#define GS_CUDA_HOOK(symbol)
#define GS_CUDA_REAL(symbol)
#define GS_CUDA_DEVICE_HOOK_THEN(symbol, params, args, then)                                 \
  CUresult symbol params {                                                                   \
    return GS_GUARDED(CudaApi, {                                                             \
      ToPhysical t;                                                                          \
      if (!t.ready()) return CUDA_ERROR_NOT_INITIALIZED;                                     \
      auto call = std::make_tuple args;                                                      \
      if (t.status() != CUDA_SUCCESS) return t.status();                                     \
      CUresult r = real::symbol ? std::apply(real::symbol, call) : CUDA_ERROR_NOT_SUPPORTED; \
      if (r == CUDA_SUCCESS) then;                                                           \
      return r;                                                                              \
    });                                                                                      \
  }
#include "cuda/cuda_hooks.def"

CUresult cuDeviceGetCount(int* count) {
  return GS_GUARDED(CudaApi, {
    Client* c = ReadyClient();
    if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
    if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *count = c->devices().count();
    return CUDA_SUCCESS;
  });
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  return GS_GUARDED(CudaApi, {
    ToPhysical t;
    if (!t.ready()) return CUDA_ERROR_NOT_INITIALIZED;
    const CUdevice physical = t(ordinal);
    if (t.status() != CUDA_SUCCESS || ordinal < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
    CUdevice real_handle;
    if (CUresult r = GS_CUDA_CALL(cuDeviceGet, &real_handle, physical); r != CUDA_SUCCESS) return r;
    *device = ordinal;  // a CUdevice is its ordinal; ours is the virtual one
    return CUDA_SUCCESS;
  });
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  return GS_GUARDED(CudaApi, {
    ToPhysical t;
    if (!t.ready()) return CUDA_ERROR_NOT_INITIALIZED;
    const CUdevice physical = t(dev);
    if (t.status() != CUDA_SUCCESS) return t.status();
    CUresult r = GS_CUDA_CALL(cuDeviceTotalMem_v2, bytes, physical);
    if (r == CUDA_SUCCESS) *bytes = std::min<uint64_t>(*bytes, Client::Get().ledger().Cap(dev));
    return r;
  });
}

CUresult cuDeviceGetByPCIBusId(CUdevice* dev, const char* bus_id) {
  return GS_GUARDED(CudaApi, {
    CUdevice physical;
    if (CUresult r = GS_CUDA_CALL(cuDeviceGetByPCIBusId, &physical, bus_id); r != CUDA_SUCCESS) return r;
    return ToVirtual(physical, dev, CUDA_ERROR_INVALID_DEVICE);
  });
}

CUresult cuCtxGetDevice(CUdevice* dev) {
  return GS_GUARDED(CudaApi, {
    CUdevice physical;
    if (CUresult r = GS_CUDA_CALL(cuCtxGetDevice, &physical); r != CUDA_SUCCESS) return r;
    return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
  });
}

CUresult cuCtxGetDevice_v2(CUdevice* dev, CUcontext ctx) {
  return GS_GUARDED(CudaApi, {
    CUdevice physical;
    if (CUresult r = GS_CUDA_CALL(cuCtxGetDevice_v2, &physical, ctx); r != CUDA_SUCCESS) return r;
    return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
  });
}

CUresult cuStreamGetDevice(CUstream stream, CUdevice* dev) {
  return GS_GUARDED(CudaApi, {
    CUdevice physical;
    if (CUresult r = GS_CUDA_CALL(cuStreamGetDevice, stream, &physical); r != CUDA_SUCCESS) return r;
    return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
  });
}

CUresult cuStreamGetDevice_ptsz(CUstream stream, CUdevice* dev) {
  return GS_GUARDED(CudaApi, {
    CUdevice physical;
    if (CUresult r = GS_CUDA_CALL(cuStreamGetDevice_ptsz, stream, &physical); r != CUDA_SUCCESS) return r;
    return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
  });
}

CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attr, CUdeviceptr ptr) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuPointerGetAttribute, data, attr, ptr);
    if (r != CUDA_SUCCESS || attr != CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) return r;
    auto* ordinal = static_cast<int*>(data);
    return ToVirtual(*ordinal, ordinal, CUDA_ERROR_INVALID_VALUE);
  });
}

}  // extern "C"
