// Device hooks of the HIP family: the application speaks of virtual GPUs; every
// ordinal going into the real runtime is made physical, every ordinal coming out
// virtual. The in-only translations are generated from hip_hooks.def; the rest is here.
#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <tuple>

#include "hip/hip_hooks.h"

using namespace gpushare;
using namespace gpushare::hip;

namespace {

// Translates device arguments to physical, remembering the first failure. Negative
// ordinals (hipCpuDeviceId, hipInvalidDeviceId) pass unchanged.
class ToPhysical {
 public:
  ToPhysical() : client_(ReadyClient()) {}
  bool ready() const { return client_ != nullptr; }
  hipError_t status() const { return status_; }

  int operator()(int dev) {
    if (dev < 0) return dev;
    const int p = client_->devices().Physical(dev);
    if (p < 0 && status_ == hipSuccess) status_ = hipErrorInvalidDevice;
    return p < 0 ? 0 : p;
  }

 private:
  Client* client_;
  hipError_t status_ = hipSuccess;
};

// A physical ordinal the real runtime returned, as this client's virtual one.
hipError_t ToVirtual(int physical, int* dev, hipError_t not_visible) {
  Client* c = ReadyClient();
  if (c == nullptr) return hipErrorNotInitialized;
  const int v = c->devices().Virtual(physical);
  if (v < 0) return not_visible;
  *dev = v;
  return hipSuccess;
}

// The cap of virtual GPU `dev` where it is below the device's own `bytes`.
uint64_t CappedTotal(int dev, uint64_t bytes) { return std::min<uint64_t>(bytes, Client::Get().ledger().Cap(dev)); }

}  // namespace

extern "C" {

#define GS_HIP_HOOK(name)
#define GS_HIP_HOOK_C(name, types)
#define GS_HIP_HOOK_CXX(name, symbol)
#define GS_HIP_REAL(name)
#define GS_HIP_DEVICE_HOOK(name, params, args)                                 \
  hipError_t name params {                                                     \
    return GS_GUARDED(HipApi, {                                                \
      ToPhysical t;                                                            \
      if (!t.ready()) return hipErrorNotInitialized;                           \
      auto call = std::make_tuple args;                                        \
      if (t.status() != hipSuccess) return t.status();                         \
      return real::name ? std::apply(real::name, call) : hipErrorNotSupported; \
    });                                                                        \
  }
#include "hip/hip_hooks.def"
#undef GS_HIP_HOOK
#undef GS_HIP_HOOK_C
#undef GS_HIP_HOOK_CXX
#undef GS_HIP_REAL
#undef GS_HIP_DEVICE_HOOK

hipError_t hipGetDeviceCount(int* count) {
  return GS_GUARDED(HipApi, {
    Client* c = ReadyClient();
    if (c == nullptr) return GS_HIP_CALL(hipGetDeviceCount, count);  // the runtime's own error
    if (count == nullptr) return hipErrorInvalidValue;
    *count = c->devices().count();
    return c->devices().count() > 0 ? hipSuccess : hipErrorNoDevice;
  });
}

hipError_t hipSetDevice(int dev) {
  return GS_GUARDED(HipApi, {
    ToPhysical t;
    if (!t.ready()) return hipErrorNotInitialized;
    const int physical = t(dev);
    if (t.status() != hipSuccess || dev < 0) return hipErrorInvalidDevice;
    return GS_HIP_CALL(hipSetDevice, physical);
  });
}

hipError_t hipGetDevice(int* dev) {
  return GS_GUARDED(HipApi, {
    if (dev == nullptr) return hipErrorInvalidValue;
    int physical;
    if (hipError_t r = GS_HIP_CALL(hipGetDevice, &physical); r != hipSuccess) return r;
    return ToVirtual(physical, dev, hipErrorInvalidDevice);
  });
}

hipError_t hipDeviceGet(hipDevice_t* device, int ordinal) {
  return GS_GUARDED(HipApi, {
    ToPhysical t;
    if (!t.ready()) return hipErrorNotInitialized;
    const int physical = t(ordinal);
    if (t.status() != hipSuccess || ordinal < 0) return hipErrorInvalidDevice;
    if (device == nullptr) return hipErrorInvalidValue;
    hipDevice_t real_handle;
    if (hipError_t r = GS_HIP_CALL(hipDeviceGet, &real_handle, physical); r != hipSuccess) return r;
    *device = ordinal;  // a hipDevice_t is its ordinal; ours is the virtual one
    return hipSuccess;
  });
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t* prop, int dev) {
  return GS_GUARDED(HipApi, {
    ToPhysical t;
    if (!t.ready()) return hipErrorNotInitialized;
    const int physical = t(dev);
    if (t.status() != hipSuccess || dev < 0) return hipErrorInvalidDevice;
    hipError_t r = GS_HIP_CALL(hipGetDeviceProperties, prop, physical);
    if (r == hipSuccess) prop->totalGlobalMem = CappedTotal(dev, prop->totalGlobalMem);
    return r;
  });
}

hipError_t hipDeviceGetAttribute(int* value, hipDeviceAttribute_t attr, int dev) {
  return GS_GUARDED(HipApi, {
    ToPhysical t;
    if (!t.ready()) return hipErrorNotInitialized;
    const int physical = t(dev);
    if (t.status() != hipSuccess) return t.status();
    hipError_t r = GS_HIP_CALL(hipDeviceGetAttribute, value, attr, physical);
    if (r == hipSuccess && attr == hipDeviceAttributeTotalGlobalMem && *value > 0)
      *value = static_cast<int>(std::min<uint64_t>(CappedTotal(dev, static_cast<uint64_t>(*value)), INT_MAX));
    return r;
  });
}

hipError_t hipDeviceTotalMem(size_t* bytes, hipDevice_t dev) {
  return GS_GUARDED(HipApi, {
    ToPhysical t;
    if (!t.ready()) return hipErrorNotInitialized;
    const int physical = t(dev);
    if (t.status() != hipSuccess) return t.status();
    hipError_t r = GS_HIP_CALL(hipDeviceTotalMem, bytes, physical);
    if (r == hipSuccess) *bytes = CappedTotal(dev, *bytes);
    return r;
  });
}

hipError_t hipDeviceGetByPCIBusId(int* dev, const char* bus_id) {
  return GS_GUARDED(HipApi, {
    if (dev == nullptr) return hipErrorInvalidValue;
    int physical;
    if (hipError_t r = GS_HIP_CALL(hipDeviceGetByPCIBusId, &physical, bus_id); r != hipSuccess) return r;
    return ToVirtual(physical, dev, hipErrorInvalidDevice);
  });
}

// The runtime picks among the GPUs it sees; a physical GPU this client does not see
// is answered with its first virtual GPU instead.
hipError_t hipChooseDevice(int* dev, const hipDeviceProp_t* prop) {
  return GS_GUARDED(HipApi, {
    if (dev == nullptr) return hipErrorInvalidValue;
    int physical;
    if (hipError_t r = GS_HIP_CALL(hipChooseDevice, &physical, prop); r != hipSuccess) return r;
    if (ToVirtual(physical, dev, hipErrorInvalidDevice) == hipSuccess) return hipSuccess;
    Client* c = ReadyClient();
    if (c == nullptr || c->devices().count() == 0) return hipErrorNoDevice;
    *dev = 0;
    return hipSuccess;
  });
}

hipError_t hipCtxGetDevice(hipDevice_t* dev) {
  return GS_GUARDED(HipApi, {
    if (dev == nullptr) return hipErrorInvalidValue;
    hipDevice_t physical;
    if (hipError_t r = GS_HIP_CALL(hipCtxGetDevice, &physical); r != hipSuccess) return r;
    return ToVirtual(physical, dev, hipErrorInvalidContext);
  });
}

int hipGetStreamDeviceId(hipStream_t stream) {
  if (!LoadRealRuntime() || real::hipGetStreamDeviceId == nullptr) return -1;
  const int physical = real::hipGetStreamDeviceId(stream);
  Client* c = ReadyClient();
  return c != nullptr && physical >= 0 ? c->devices().Virtual(physical) : physical;
}

hipError_t hipPointerGetAttributes(hipPointerAttribute_t* attributes, const void* ptr) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipPointerGetAttributes, attributes, ptr);
    if (r != hipSuccess || attributes->device < 0) return r;
    // As for CUDA: memory on a GPU this client does not see is not its to ask about.
    return ToVirtual(attributes->device, &attributes->device, hipErrorInvalidValue);
  });
}

}  // extern "C"
