// Device hooks: the application speaks of virtual GPUs; every ordinal going into the
// real driver is translated to the physical GPU, and every ordinal coming out back.
#include "cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace {

// Physical ordinal of virtual `dev`, or the error the driver gives for a bad ordinal.
CUresult ToPhysical(CUdevice dev, CUdevice* physical) {
  Client* c = ReadyClient();
  if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const int p = c->devices().Physical(dev);
  if (p < 0) return CUDA_ERROR_INVALID_DEVICE;
  *physical = p;
  return CUDA_SUCCESS;
}

CUresult ToVirtual(CUdevice physical, CUdevice* dev, CUresult not_visible) {
  Client* c = ReadyClient();
  if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const int v = c->devices().Virtual(physical);
  if (v < 0) return not_visible;
  *dev = v;
  return CUDA_SUCCESS;
}

#define GS_PHYS(dev)    \
  CUdevice dev##_p = 0; \
  if (CUresult r_ = ToPhysical(dev, &dev##_p); r_ != CUDA_SUCCESS) return r_

}  // namespace

extern "C" {

CUresult cuDeviceGetCount(int* count) {
  Client* c = ReadyClient();
  if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = c->devices().count();
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  GS_PHYS(ordinal);
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUdevice real_handle;
  if (CUresult r = GS_REAL(cuDeviceGet, &real_handle, ordinal_p); r != CUDA_SUCCESS) return r;
  *device = ordinal;  // a CUdevice is its ordinal; ours is the virtual one
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetName, name, len, dev_p);
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  GS_PHYS(dev);
  CUresult r = GS_REAL(cuDeviceTotalMem_v2, bytes, dev_p);
  if (r == CUDA_SUCCESS) *bytes = std::min<uint64_t>(*bytes, Client::Get().ledger().Cap(dev));
  return r;
}

CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attr, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetAttribute, value, attr, dev_p);
}

CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetUuid, uuid, dev_p);
}

CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetUuid_v2, uuid, dev_p);
}

CUresult cuDeviceGetPCIBusId(char* bus_id, int len, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetPCIBusId, bus_id, len, dev_p);
}

CUresult cuDeviceGetByPCIBusId(CUdevice* dev, const char* bus_id) {
  CUdevice physical;
  if (CUresult r = GS_REAL(cuDeviceGetByPCIBusId, &physical, bus_id); r != CUDA_SUCCESS) return r;
  return ToVirtual(physical, dev, CUDA_ERROR_INVALID_DEVICE);
}

CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceComputeCapability, major, minor, dev_p);
}

CUresult cuDeviceCanAccessPeer(int* can, CUdevice dev, CUdevice peer) {
  GS_PHYS(dev);
  GS_PHYS(peer);
  return GS_REAL(cuDeviceCanAccessPeer, can, dev_p, peer_p);
}

CUresult cuDeviceGetP2PAttribute(int* value, CUdevice_P2PAttribute attr, CUdevice src, CUdevice dst) {
  GS_PHYS(src);
  GS_PHYS(dst);
  return GS_REAL(cuDeviceGetP2PAttribute, value, attr, src_p, dst_p);
}

CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetDefaultMemPool, pool, dev_p);
}

CUresult cuDeviceGetMemPool(CUmemoryPool* pool, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceGetMemPool, pool, dev_p);
}

CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool) {
  GS_PHYS(dev);
  return GS_REAL(cuDeviceSetMemPool, dev_p, pool);
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDevicePrimaryCtxRetain, ctx, dev_p);
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDevicePrimaryCtxRelease_v2, dev_p);
}

CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags) {
  GS_PHYS(dev);
  return GS_REAL(cuDevicePrimaryCtxSetFlags_v2, dev_p, flags);
}

CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int* flags, int* active) {
  GS_PHYS(dev);
  return GS_REAL(cuDevicePrimaryCtxGetState, dev_p, flags, active);
}

CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuDevicePrimaryCtxReset_v2, dev_p);
}

CUresult cuCtxCreate_v2(CUcontext* ctx, unsigned int flags, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuCtxCreate_v2, ctx, flags, dev_p);
}

CUresult cuCtxCreate_v3(CUcontext* ctx, CUexecAffinityParam* params, int num, unsigned int flags, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuCtxCreate_v3, ctx, params, num, flags, dev_p);
}

CUresult cuCtxCreate_v4(CUcontext* ctx, CUctxCreateParams* params, unsigned int flags, CUdevice dev) {
  GS_PHYS(dev);
  return GS_REAL(cuCtxCreate_v4, ctx, params, flags, dev_p);
}

CUresult cuCtxGetDevice(CUdevice* dev) {
  CUdevice physical;
  if (CUresult r = GS_REAL(cuCtxGetDevice, &physical); r != CUDA_SUCCESS) return r;
  return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
}

CUresult cuCtxGetDevice_v2(CUdevice* dev, CUcontext ctx) {
  CUdevice physical;
  if (CUresult r = GS_REAL(cuCtxGetDevice_v2, &physical, ctx); r != CUDA_SUCCESS) return r;
  return ToVirtual(physical, dev, CUDA_ERROR_INVALID_CONTEXT);
}

}  // extern "C"
