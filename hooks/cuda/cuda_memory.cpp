// Memory hooks: every allocation is charged against the cap of the virtual GPU it
// lands on before the real driver is asked, so a refusal is the API's own
// CUDA_ERROR_OUT_OF_MEMORY and concurrent allocations never overshoot the cap.
// Managed memory counts in full against the GPU current at allocation (conservative:
// a client cannot pass its cap through oversubscription). Stream-ordered memory is
// charged from cuMemAllocAsync to cuMemFreeAsync (the call, not the stream's arrival
// at it); VMM physical memory from cuMemCreate to cuMemRelease; arrays by their size.
#include <map>
#include <mutex>
#include <type_traits>

#include "cuda/cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace {

// The virtual GPU of the calling thread's current context.
CUresult CurrentDevice(Client** client, int* dev) {
  *client = ReadyClient();
  if (*client == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  return CurrentVirtualDevice(*client, dev);
}

// Reserve on virtual GPU `dev`, allocate through `allocate`, and record the result
// under `*key`; the reservation is undone if the real driver refuses. Should recording
// throw (no host memory), the bytes stay charged: the cap may then count too much,
// never too little.
template <typename Key, typename F>
CUresult ChargedOn(Client* client, int dev, uint64_t bytes, AllocKind kind, AllocSpace space, const char* call,
                   Key* key, F allocate) {
  if (!client->Reserve(dev, bytes, call)) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult r = CUDA_ERROR_UNKNOWN;
  try {
    r = allocate();
  } catch (...) {
    client->Unreserve(dev, bytes);
    throw;
  }
  if (r != CUDA_SUCCESS) {
    client->Unreserve(dev, bytes);
    return r;
  }
  client->ledger().Remember(space, LedgerKey(*key), {dev, bytes, kind});
  return CUDA_SUCCESS;
}

// The same on the current context's GPU.
template <typename Key, typename F>
CUresult Charged(uint64_t bytes, AllocKind kind, AllocSpace space, const char* call, Key* key, F allocate) {
  Client* client;
  int dev;
  if (CUresult r = CurrentDevice(&client, &dev); r != CUDA_SUCCESS) return r;
  return ChargedOn(client, dev, bytes, kind, space, call, key, allocate);
}

void Uncharge(AllocSpace space, uint64_t key) { Client::Get().Uncharge(space, key); }
void NotePool(CUmemoryPool pool, int dev) { Client::Get().NotePool(LedgerKey(pool), dev); }
int PoolDevice(CUmemoryPool pool) { return Client::Get().PoolDevice(LedgerKey(pool)); }

// The virtual GPU a stream's work runs on.
CUresult StreamDevice(CUstream stream, Client** client, int* dev) {
  if (stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD)
    return CurrentDevice(client, dev);
  *client = ReadyClient();
  if (*client == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  CUcontext ctx;
  CUdevice physical;
  if (CUresult r = GS_CUDA_CALL(cuStreamGetCtx, stream, &ctx); r != CUDA_SUCCESS) return r;
  if (CUresult r = GS_CUDA_CALL(cuCtxGetDevice_v2, &physical, ctx); r != CUDA_SUCCESS) return r;
  *dev = (*client)->devices().Virtual(physical);
  return *dev < 0 ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
}

// A copy of a memory location with its virtual GPU ordinal made physical.
CUresult PhysicalLocation(const CUmemLocation& in, CUmemLocation* out, int* virtual_dev) {
  *out = in;
  *virtual_dev = -1;
  if (in.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_SUCCESS;
  Client* client = ReadyClient();
  if (client == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  out->id = client->devices().Physical(in.id);
  if (out->id < 0) return CUDA_ERROR_INVALID_DEVICE;
  *virtual_dev = in.id;
  return CUDA_SUCCESS;
}

template <typename F>
CUresult AllocAsync(F real, CUdeviceptr* dptr, size_t bytes, CUstream stream) {
  Client* client;
  int dev;
  if (dptr == nullptr || bytes == 0) return real(dptr, bytes, stream);
  if (CUresult r = StreamDevice(stream, &client, &dev); r != CUDA_SUCCESS) return r;
  return ChargedOn(client, dev, bytes, AllocKind::kAsync, AllocSpace::kAddress, "cuMemAllocAsync", dptr,
                   [&] { return real(dptr, bytes, stream); });
}

template <typename F>
CUresult AllocFromPoolAsync(F real, CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool, CUstream stream) {
  Client* client;
  int dev = PoolDevice(pool);
  if (dptr == nullptr || bytes == 0) return real(dptr, bytes, pool, stream);
  if (CUresult r = dev >= 0 ? ((client = ReadyClient()) ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED)
                            : StreamDevice(stream, &client, &dev);
      r != CUDA_SUCCESS)
    return r;
  return ChargedOn(client, dev, bytes, AllocKind::kAsync, AllocSpace::kAddress, "cuMemAllocFromPoolAsync", dptr,
                   [&] { return real(dptr, bytes, pool, stream); });
}

template <typename F>
CUresult FreeAsync(F real, CUdeviceptr dptr, CUstream stream) {
  CUresult r = real(dptr, stream);
  if (r == CUDA_SUCCESS) Uncharge(AllocSpace::kAddress, dptr);
  return r;
}

size_t ArrayBytes(const CUDA_ARRAY3D_DESCRIPTOR& d, unsigned levels) {
  size_t elem = 4;
  switch (d.Format) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: elem = 1; break;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: elem = 2; break;
    default: elem = 4;
  }
  const uint64_t level0 = uint64_t{d.Width} * std::max<size_t>(d.Height, 1) * std::max<size_t>(d.Depth, 1) * elem *
                          std::max(d.NumChannels, 1u);
  uint64_t total = 0;
  for (unsigned l = 0; l < std::max(levels, 1u); ++l) total += std::max<uint64_t>(level0 >> (2 * l), elem);
  return total;
}

}  // namespace

extern "C" {

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  return GS_GUARDED(CudaApi, {
    if (dptr == nullptr || bytes == 0) return GS_CUDA_CALL(cuMemAlloc_v2, dptr, bytes);
    return Charged(bytes, AllocKind::kDevice, AllocSpace::kAddress, "cuMemAlloc", dptr,
                   [&] { return GS_CUDA_CALL(cuMemAlloc_v2, dptr, bytes); });
  });
}

CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int flags) {
  return GS_GUARDED(CudaApi, {
    if (dptr == nullptr || bytes == 0) return GS_CUDA_CALL(cuMemAllocManaged, dptr, bytes, flags);
    return Charged(bytes, AllocKind::kManaged, AllocSpace::kAddress, "cuMemAllocManaged", dptr,
                   [&] { return GS_CUDA_CALL(cuMemAllocManaged, dptr, bytes, flags); });
  });
}

CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t width, size_t height, unsigned int elem) {
  return GS_GUARDED(CudaApi, {
    if (dptr == nullptr || pitch == nullptr || width == 0 || height == 0)
      return GS_CUDA_CALL(cuMemAllocPitch_v2, dptr, pitch, width, height, elem);
    // The pitch is known only afterwards: charge the widest pitch the driver may pick
    // (512-byte alignment), then give back the difference.
    const uint64_t bound = (uint64_t{width} + 511) / 512 * 512 * height;
    CUresult r = Charged(bound, AllocKind::kPitch, AllocSpace::kAddress, "cuMemAllocPitch", dptr,
                         [&] { return GS_CUDA_CALL(cuMemAllocPitch_v2, dptr, pitch, width, height, elem); });
    if (r != CUDA_SUCCESS) return r;
    const uint64_t actual = uint64_t{*pitch} * height;
    if (actual < bound) {
      Client& client = Client::Get();
      auto a = client.ledger().Forget(AllocSpace::kAddress, *dptr);
      client.Release(a->device, bound - actual);
      client.ledger().Remember(AllocSpace::kAddress, *dptr, {a->device, actual, AllocKind::kPitch});
    }
    return CUDA_SUCCESS;
  });
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuMemFree_v2, dptr);
    if (r == CUDA_SUCCESS) Uncharge(AllocSpace::kAddress, dptr);
    return r;
  });
}

// (cap - used, cap), and never more free than the device really has.
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuMemGetInfo_v2, free_bytes, total_bytes);
    if (r != CUDA_SUCCESS) return r;
    Client* client;
    int dev;
    if (CurrentDevice(&client, &dev) != CUDA_SUCCESS) return r;
    uint64_t free_view = *free_bytes, total_view = *total_bytes;
    client->CapView(dev, &free_view, &total_view);
    *free_bytes = free_view;
    *total_bytes = total_view;
    return r;
  });
}

// ---- stream-ordered allocation ----

CUresult cuMemPoolCreate(CUmemoryPool* pool, const CUmemPoolProps* props) {
  return GS_GUARDED(CudaApi, {
    if (pool == nullptr || props == nullptr) return GS_CUDA_CALL(cuMemPoolCreate, pool, props);
    CUmemPoolProps physical = *props;
    int dev;
    if (CUresult r = PhysicalLocation(props->location, &physical.location, &dev); r != CUDA_SUCCESS) return r;
    CUresult r = GS_CUDA_CALL(cuMemPoolCreate, pool, &physical);
    if (r == CUDA_SUCCESS && dev >= 0) NotePool(*pool, dev);
    return r;
  });
}

CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream stream) {
  return GS_GUARDED(CudaApi, { return AllocAsync(real::cuMemAllocAsync, dptr, bytes, stream); });
}
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUstream stream) {
  return GS_GUARDED(CudaApi, { return AllocAsync(real::cuMemAllocAsync_ptsz, dptr, bytes, stream); });
}
CUresult cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool, CUstream stream) {
  return GS_GUARDED(CudaApi, { return AllocFromPoolAsync(real::cuMemAllocFromPoolAsync, dptr, bytes, pool, stream); });
}
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool, CUstream stream) {
  return GS_GUARDED(CudaApi,
                    { return AllocFromPoolAsync(real::cuMemAllocFromPoolAsync_ptsz, dptr, bytes, pool, stream); });
}
CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream) {
  return GS_GUARDED(CudaApi, { return FreeAsync(real::cuMemFreeAsync, dptr, stream); });
}
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream) {
  return GS_GUARDED(CudaApi, { return FreeAsync(real::cuMemFreeAsync_ptsz, dptr, stream); });
}

// ---- virtual memory management ----

CUresult cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                       CUmemAllocationGranularity_flags option) {
  return GS_GUARDED(CudaApi, {
    if (prop == nullptr) return GS_CUDA_CALL(cuMemGetAllocationGranularity, granularity, prop, option);
    CUmemAllocationProp physical = *prop;
    int dev;
    if (CUresult r = PhysicalLocation(prop->location, &physical.location, &dev); r != CUDA_SUCCESS) return r;
    return GS_CUDA_CALL(cuMemGetAllocationGranularity, granularity, &physical, option);
  });
}

CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                     unsigned long long flags) {
  return GS_GUARDED(CudaApi, {
    if (handle == nullptr || prop == nullptr || size == 0) return GS_CUDA_CALL(cuMemCreate, handle, size, prop, flags);
    CUmemAllocationProp physical = *prop;
    int dev;
    if (CUresult r = PhysicalLocation(prop->location, &physical.location, &dev); r != CUDA_SUCCESS) return r;
    Client* client = ReadyClient();
    if (dev < 0 || client == nullptr) return GS_CUDA_CALL(cuMemCreate, handle, size, &physical, flags);
    return ChargedOn(client, dev, size, AllocKind::kVmm, AllocSpace::kHandle, "cuMemCreate", handle,
                     [&] { return GS_CUDA_CALL(cuMemCreate, handle, size, &physical, flags); });
  });
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuMemRelease, handle);
    if (r == CUDA_SUCCESS) Uncharge(AllocSpace::kHandle, handle);
    return r;
  });
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  return GS_GUARDED(CudaApi, {
    if (desc == nullptr || count == 0 || count > 64) return GS_CUDA_CALL(cuMemSetAccess, ptr, size, desc, count);
    CUmemAccessDesc physical[64];
    for (size_t i = 0; i < count; ++i) {
      physical[i] = desc[i];
      int dev;
      if (CUresult r = PhysicalLocation(desc[i].location, &physical[i].location, &dev); r != CUDA_SUCCESS) return r;
    }
    return GS_CUDA_CALL(cuMemSetAccess, ptr, size, physical, count);
  });
}

// ---- arrays ----

CUresult cuArrayCreate_v2(CUarray* handle, const CUDA_ARRAY_DESCRIPTOR* d) {
  return GS_GUARDED(CudaApi, {
    if (handle == nullptr || d == nullptr) return GS_CUDA_CALL(cuArrayCreate_v2, handle, d);
    CUDA_ARRAY3D_DESCRIPTOR d3{d->Width, d->Height, 0, d->Format, d->NumChannels, 0};
    return Charged(ArrayBytes(d3, 1), AllocKind::kArray, AllocSpace::kArray, "cuArrayCreate", handle,
                   [&] { return GS_CUDA_CALL(cuArrayCreate_v2, handle, d); });
  });
}

CUresult cuArray3DCreate_v2(CUarray* handle, const CUDA_ARRAY3D_DESCRIPTOR* d) {
  return GS_GUARDED(CudaApi, {
    if (handle == nullptr || d == nullptr) return GS_CUDA_CALL(cuArray3DCreate_v2, handle, d);
    return Charged(ArrayBytes(*d, 1), AllocKind::kArray, AllocSpace::kArray, "cuArray3DCreate", handle,
                   [&] { return GS_CUDA_CALL(cuArray3DCreate_v2, handle, d); });
  });
}

CUresult cuMipmappedArrayCreate(CUmipmappedArray* handle, const CUDA_ARRAY3D_DESCRIPTOR* d, unsigned int levels) {
  return GS_GUARDED(CudaApi, {
    if (handle == nullptr || d == nullptr) return GS_CUDA_CALL(cuMipmappedArrayCreate, handle, d, levels);
    return Charged(ArrayBytes(*d, levels), AllocKind::kArray, AllocSpace::kArray, "cuMipmappedArrayCreate", handle,
                   [&] { return GS_CUDA_CALL(cuMipmappedArrayCreate, handle, d, levels); });
  });
}

CUresult cuArrayDestroy(CUarray handle) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuArrayDestroy, handle);
    if (r == CUDA_SUCCESS) Uncharge(AllocSpace::kArray, LedgerKey(handle));
    return r;
  });
}

CUresult cuMipmappedArrayDestroy(CUmipmappedArray handle) {
  return GS_GUARDED(CudaApi, {
    CUresult r = GS_CUDA_CALL(cuMipmappedArrayDestroy, handle);
    if (r == CUDA_SUCCESS) Uncharge(AllocSpace::kArray, LedgerKey(handle));
    return r;
  });
}

}  // extern "C"
