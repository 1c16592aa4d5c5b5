// Memory hooks of the HIP family: every allocation is charged against the cap of the
// virtual GPU it lands on before the real runtime is asked, so a refusal is the API's
// own hipErrorOutOfMemory and concurrent allocations never overshoot the cap. The
// rules are the CUDA family's (cuda_memory.cpp): managed memory counts in full on the
// current GPU, stream-ordered memory from hipMallocAsync to hipFreeAsync, VMM physical
// memory from hipMemCreate to hipMemRelease, arrays by their size.
#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>

#include "hip/hip_hooks.h"

using namespace gpushare;
using namespace gpushare::hip;

namespace {

// Allocation hooks this thread is inside. A runtime may implement one allocation call
// through another exported one (hipExtMallocWithFlags through hipMalloc): the inner
// call reaches our hook again and must not be charged a second time.
thread_local int t_allocating = 0;

struct Allocating {
  Allocating() { ++t_allocating; }
  ~Allocating() { --t_allocating; }
};

// Reserve on virtual GPU `dev`, allocate through `allocate`, and record the result
// under `*key`; the reservation is undone if the real runtime refuses. Should recording
// throw (no host memory), the bytes stay charged: the cap may then count too much,
// never too little.
template <typename Key, typename F>
hipError_t ChargedOn(Client* client, int dev, uint64_t bytes, AllocKind kind, AllocSpace space, const char* call,
                     Key* key, F allocate) {
  if (t_allocating > 0) return allocate();  // charged by the outer call
  Allocating inside;
  if (!client->Reserve(dev, bytes, call)) return hipErrorOutOfMemory;
  hipError_t r = hipErrorUnknown;
  try {
    r = allocate();
  } catch (...) {
    client->Unreserve(dev, bytes);
    throw;
  }
  if (r != hipSuccess) {
    client->Unreserve(dev, bytes);
    return r;
  }
  client->ledger().Remember(space, LedgerKey(*key), {dev, bytes, kind});
  return hipSuccess;
}

// The same on the calling thread's current GPU.
template <typename Key, typename F>
hipError_t Charged(uint64_t bytes, AllocKind kind, AllocSpace space, const char* call, Key* key, F allocate) {
  Client* client = ReadyClient();
  if (client == nullptr) return hipErrorNotInitialized;
  const int dev = CurrentDevice(client);
  if (dev < 0) return hipErrorInvalidDevice;
  return ChargedOn(client, dev, bytes, kind, space, call, key, allocate);
}

void Uncharge(AllocSpace space, uint64_t key) { Client::Get().Uncharge(space, key); }

// Pitched allocations learn their pitch only afterwards: charge the widest pitch the
// runtime may pick (512-byte alignment), then give back the difference.
uint64_t PitchBound(size_t width, size_t rows) { return (uint64_t{width} + 511) / 512 * 512 * rows; }

void SettlePitch(void* ptr, uint64_t bound, uint64_t actual) {
  if (actual >= bound) return;
  Client& client = Client::Get();
  auto a = client.ledger().Forget(AllocSpace::kAddress, LedgerKey(ptr));
  if (!a) return;
  client.Release(a->device, bound - actual);
  client.ledger().Remember(AllocSpace::kAddress, LedgerKey(ptr), {a->device, actual, AllocKind::kPitch});
}

void NotePool(hipMemPool_t pool, int dev) { Client::Get().NotePool(LedgerKey(pool), dev); }
int PoolDevice(hipMemPool_t pool) { return Client::Get().PoolDevice(LedgerKey(pool)); }

// A copy of a memory location with its virtual GPU ordinal made physical.
hipError_t PhysicalLocation(const hipMemLocation& in, hipMemLocation* out, int* virtual_dev) {
  *out = in;
  *virtual_dev = -1;
  if (in.type != hipMemLocationTypeDevice) return hipSuccess;
  Client* client = ReadyClient();
  if (client == nullptr) return hipErrorNotInitialized;
  out->id = client->devices().Physical(in.id);
  if (out->id < 0) return hipErrorInvalidDevice;
  *virtual_dev = in.id;
  return hipSuccess;
}

// Access descriptors (at most 64) with their GPU locations made physical.
hipError_t PhysicalAccess(const hipMemAccessDesc* desc, size_t count, hipMemAccessDesc* physical) {
  for (size_t i = 0; i < count; ++i) {
    physical[i] = desc[i];
    int dev;
    if (hipError_t r = PhysicalLocation(desc[i].location, &physical[i].location, &dev); r != hipSuccess) return r;
  }
  return hipSuccess;
}

uint64_t ChannelBytes(const hipChannelFormatDesc& d) {
  const int bits = std::max(d.x, 0) + std::max(d.y, 0) + std::max(d.z, 0) + std::max(d.w, 0);
  return std::max<uint64_t>((bits + 7) / 8, 1);
}

uint64_t ElementBytes(hipArray_Format f, unsigned channels) {
  uint64_t elem = 4;
  switch (f) {
    case HIP_AD_FORMAT_UNSIGNED_INT8:
    case HIP_AD_FORMAT_SIGNED_INT8: elem = 1; break;
    case HIP_AD_FORMAT_UNSIGNED_INT16:
    case HIP_AD_FORMAT_SIGNED_INT16:
    case HIP_AD_FORMAT_HALF: elem = 2; break;
    default: elem = 4;
  }
  return elem * std::max(channels, 1u);
}

uint64_t Extent(size_t w, size_t h, size_t d) {
  return uint64_t{w} * std::max<uint64_t>(h, 1) * std::max<uint64_t>(d, 1);
}

}  // namespace

extern "C" {

hipError_t hipMalloc(void** ptr, size_t bytes) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || bytes == 0) return GS_HIP_CALL(hipMalloc, ptr, bytes);
    return Charged(bytes, AllocKind::kDevice, AllocSpace::kAddress, "hipMalloc", ptr,
                   [&] { return GS_HIP_CALL(hipMalloc, ptr, bytes); });
  });
}

hipError_t hipExtMallocWithFlags(void** ptr, size_t bytes, unsigned int flags) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || bytes == 0) return GS_HIP_CALL(hipExtMallocWithFlags, ptr, bytes, flags);
    return Charged(bytes, AllocKind::kDevice, AllocSpace::kAddress, "hipExtMallocWithFlags", ptr,
                   [&] { return GS_HIP_CALL(hipExtMallocWithFlags, ptr, bytes, flags); });
  });
}

hipError_t hipMallocManaged(void** ptr, size_t bytes, unsigned int flags) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || bytes == 0) return GS_HIP_CALL(hipMallocManaged, ptr, bytes, flags);
    return Charged(bytes, AllocKind::kManaged, AllocSpace::kAddress, "hipMallocManaged", ptr,
                   [&] { return GS_HIP_CALL(hipMallocManaged, ptr, bytes, flags); });
  });
}

hipError_t hipMallocPitch(void** ptr, size_t* pitch, size_t width, size_t height) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || pitch == nullptr || width == 0 || height == 0)
      return GS_HIP_CALL(hipMallocPitch, ptr, pitch, width, height);
    const uint64_t bound = PitchBound(width, height);
    hipError_t r = Charged(bound, AllocKind::kPitch, AllocSpace::kAddress, "hipMallocPitch", ptr,
                           [&] { return GS_HIP_CALL(hipMallocPitch, ptr, pitch, width, height); });
    if (r == hipSuccess) SettlePitch(*ptr, bound, uint64_t{*pitch} * height);
    return r;
  });
}

hipError_t hipMemAllocPitch(hipDeviceptr_t* ptr, size_t* pitch, size_t width, size_t height, unsigned int elem) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || pitch == nullptr || width == 0 || height == 0)
      return GS_HIP_CALL(hipMemAllocPitch, ptr, pitch, width, height, elem);
    const uint64_t bound = PitchBound(width, height);
    hipError_t r = Charged(bound, AllocKind::kPitch, AllocSpace::kAddress, "hipMemAllocPitch", ptr,
                           [&] { return GS_HIP_CALL(hipMemAllocPitch, ptr, pitch, width, height, elem); });
    if (r == hipSuccess) SettlePitch(*ptr, bound, uint64_t{*pitch} * height);
    return r;
  });
}

hipError_t hipMalloc3D(hipPitchedPtr* pitched, hipExtent extent) {
  return GS_GUARDED(HipApi, {
    if (pitched == nullptr || extent.width == 0 || extent.height == 0 || extent.depth == 0)
      return GS_HIP_CALL(hipMalloc3D, pitched, extent);
    const uint64_t rows = uint64_t{extent.height} * extent.depth;
    const uint64_t bound = PitchBound(extent.width, rows);
    void** key = &pitched->ptr;
    hipError_t r = Charged(bound, AllocKind::kPitch, AllocSpace::kAddress, "hipMalloc3D", key,
                           [&] { return GS_HIP_CALL(hipMalloc3D, pitched, extent); });
    if (r == hipSuccess) SettlePitch(pitched->ptr, bound, uint64_t{pitched->pitch} * rows);
    return r;
  });
}

hipError_t hipFree(void* ptr) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipFree, ptr);
    if (r == hipSuccess && ptr != nullptr) Uncharge(AllocSpace::kAddress, LedgerKey(ptr));
    return r;
  });
}

// (cap - used, cap) on the current GPU, and never more free than the device has.
hipError_t hipMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipMemGetInfo, free_bytes, total_bytes);
    if (r != hipSuccess) return r;
    Client* client = ReadyClient();
    const int dev = client ? CurrentDevice(client) : -1;
    if (dev < 0) return r;
    uint64_t free_view = *free_bytes, total_view = *total_bytes;
    client->CapView(dev, &free_view, &total_view);
    *free_bytes = free_view;
    *total_bytes = total_view;
    return r;
  });
}

// ---- stream-ordered allocation ----

hipError_t hipDeviceGetDefaultMemPool(hipMemPool_t* pool, int dev) {
  return GS_GUARDED(HipApi, {
    Client* client = ReadyClient();
    if (client == nullptr) return hipErrorNotInitialized;
    const int physical = client->devices().Physical(dev);
    if (physical < 0) return hipErrorInvalidDevice;
    hipError_t r = GS_HIP_CALL(hipDeviceGetDefaultMemPool, pool, physical);
    if (r == hipSuccess && pool != nullptr) NotePool(*pool, dev);
    return r;
  });
}

hipError_t hipDeviceGetMemPool(hipMemPool_t* pool, int dev) {
  return GS_GUARDED(HipApi, {
    Client* client = ReadyClient();
    if (client == nullptr) return hipErrorNotInitialized;
    const int physical = client->devices().Physical(dev);
    if (physical < 0) return hipErrorInvalidDevice;
    hipError_t r = GS_HIP_CALL(hipDeviceGetMemPool, pool, physical);
    if (r == hipSuccess && pool != nullptr) NotePool(*pool, dev);
    return r;
  });
}

hipError_t hipMemPoolCreate(hipMemPool_t* pool, const hipMemPoolProps* props) {
  return GS_GUARDED(HipApi, {
    if (pool == nullptr || props == nullptr) return GS_HIP_CALL(hipMemPoolCreate, pool, props);
    hipMemPoolProps physical = *props;
    int dev;
    if (hipError_t r = PhysicalLocation(props->location, &physical.location, &dev); r != hipSuccess) return r;
    hipError_t r = GS_HIP_CALL(hipMemPoolCreate, pool, &physical);
    if (r == hipSuccess && dev >= 0) NotePool(*pool, dev);
    return r;
  });
}

hipError_t hipMallocAsync(void** ptr, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || bytes == 0) return GS_HIP_CALL(hipMallocAsync, ptr, bytes, stream);
    Client* client = ReadyClient();
    if (client == nullptr) return hipErrorNotInitialized;
    const int dev = StreamDevice(client, stream);
    if (dev < 0) return hipErrorInvalidDevice;
    return ChargedOn(client, dev, bytes, AllocKind::kAsync, AllocSpace::kAddress, "hipMallocAsync", ptr,
                     [&] { return GS_HIP_CALL(hipMallocAsync, ptr, bytes, stream); });
  });
}

hipError_t hipMallocFromPoolAsync(void** ptr, size_t bytes, hipMemPool_t pool, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    if (ptr == nullptr || bytes == 0) return GS_HIP_CALL(hipMallocFromPoolAsync, ptr, bytes, pool, stream);
    Client* client = ReadyClient();
    if (client == nullptr) return hipErrorNotInitialized;
    int dev = PoolDevice(pool);
    if (dev < 0) dev = StreamDevice(client, stream);
    if (dev < 0) return hipErrorInvalidDevice;
    return ChargedOn(client, dev, bytes, AllocKind::kAsync, AllocSpace::kAddress, "hipMallocFromPoolAsync", ptr,
                     [&] { return GS_HIP_CALL(hipMallocFromPoolAsync, ptr, bytes, pool, stream); });
  });
}

hipError_t hipFreeAsync(void* ptr, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipFreeAsync, ptr, stream);
    if (r == hipSuccess && ptr != nullptr) Uncharge(AllocSpace::kAddress, LedgerKey(ptr));
    return r;
  });
}

// ---- virtual memory management ----

hipError_t hipMemGetAllocationGranularity(size_t* granularity, const hipMemAllocationProp* prop,
                                          hipMemAllocationGranularity_flags option) {
  return GS_GUARDED(HipApi, {
    if (prop == nullptr) return GS_HIP_CALL(hipMemGetAllocationGranularity, granularity, prop, option);
    hipMemAllocationProp physical = *prop;
    int dev;
    if (hipError_t r = PhysicalLocation(prop->location, &physical.location, &dev); r != hipSuccess) return r;
    return GS_HIP_CALL(hipMemGetAllocationGranularity, granularity, &physical, option);
  });
}

hipError_t hipMemCreate(hipMemGenericAllocationHandle_t* handle, size_t size, const hipMemAllocationProp* prop,
                        unsigned long long flags) {
  return GS_GUARDED(HipApi, {
    if (handle == nullptr || prop == nullptr || size == 0) return GS_HIP_CALL(hipMemCreate, handle, size, prop, flags);
    hipMemAllocationProp physical = *prop;
    int dev;
    if (hipError_t r = PhysicalLocation(prop->location, &physical.location, &dev); r != hipSuccess) return r;
    Client* client = ReadyClient();
    if (dev < 0 || client == nullptr) return GS_HIP_CALL(hipMemCreate, handle, size, &physical, flags);
    return ChargedOn(client, dev, size, AllocKind::kVmm, AllocSpace::kHandle, "hipMemCreate", handle,
                     [&] { return GS_HIP_CALL(hipMemCreate, handle, size, &physical, flags); });
  });
}

hipError_t hipMemRelease(hipMemGenericAllocationHandle_t handle) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipMemRelease, handle);
    if (r == hipSuccess) Uncharge(AllocSpace::kHandle, LedgerKey(handle));
    return r;
  });
}

hipError_t hipMemSetAccess(void* ptr, size_t size, const hipMemAccessDesc* desc, size_t count) {
  return GS_GUARDED(HipApi, {
    if (desc == nullptr || count == 0 || count > 64) return GS_HIP_CALL(hipMemSetAccess, ptr, size, desc, count);
    hipMemAccessDesc physical[64];
    if (hipError_t r = PhysicalAccess(desc, count, physical); r != hipSuccess) return r;
    return GS_HIP_CALL(hipMemSetAccess, ptr, size, physical, count);
  });
}

hipError_t hipMemGetAccess(unsigned long long* flags, const hipMemLocation* location, void* ptr) {
  return GS_GUARDED(HipApi, {
    if (location == nullptr) return GS_HIP_CALL(hipMemGetAccess, flags, location, ptr);
    hipMemLocation physical;
    int dev;
    if (hipError_t r = PhysicalLocation(*location, &physical, &dev); r != hipSuccess) return r;
    return GS_HIP_CALL(hipMemGetAccess, flags, &physical, ptr);
  });
}

hipError_t hipMemPoolSetAccess(hipMemPool_t pool, const hipMemAccessDesc* desc, size_t count) {
  return GS_GUARDED(HipApi, {
    if (desc == nullptr || count == 0 || count > 64) return GS_HIP_CALL(hipMemPoolSetAccess, pool, desc, count);
    hipMemAccessDesc physical[64];
    if (hipError_t r = PhysicalAccess(desc, count, physical); r != hipSuccess) return r;
    return GS_HIP_CALL(hipMemPoolSetAccess, pool, physical, count);
  });
}

hipError_t hipMemPoolGetAccess(hipMemAccessFlags* flags, hipMemPool_t pool, hipMemLocation* location) {
  return GS_GUARDED(HipApi, {
    if (location == nullptr) return GS_HIP_CALL(hipMemPoolGetAccess, flags, pool, location);
    hipMemLocation physical;
    int dev;
    if (hipError_t r = PhysicalLocation(*location, &physical, &dev); r != hipSuccess) return r;
    return GS_HIP_CALL(hipMemPoolGetAccess, flags, pool, &physical);
  });
}

// ---- arrays ----

hipError_t hipMallocArray(hipArray** array, const hipChannelFormatDesc* desc, size_t width, size_t height,
                          unsigned int flags) {
  return GS_GUARDED(HipApi, {
    if (array == nullptr || desc == nullptr) return GS_HIP_CALL(hipMallocArray, array, desc, width, height, flags);
    return Charged(Extent(width, height, 1) * ChannelBytes(*desc), AllocKind::kArray, AllocSpace::kArray,
                   "hipMallocArray", array,
                   [&] { return GS_HIP_CALL(hipMallocArray, array, desc, width, height, flags); });
  });
}

hipError_t hipMalloc3DArray(hipArray** array, const hipChannelFormatDesc* desc, hipExtent extent, unsigned int flags) {
  return GS_GUARDED(HipApi, {
    if (array == nullptr || desc == nullptr) return GS_HIP_CALL(hipMalloc3DArray, array, desc, extent, flags);
    return Charged(Extent(extent.width, extent.height, extent.depth) * ChannelBytes(*desc), AllocKind::kArray,
                   AllocSpace::kArray, "hipMalloc3DArray", array,
                   [&] { return GS_HIP_CALL(hipMalloc3DArray, array, desc, extent, flags); });
  });
}

hipError_t hipArrayCreate(hipArray** array, const HIP_ARRAY_DESCRIPTOR* d) {
  return GS_GUARDED(HipApi, {
    if (array == nullptr || d == nullptr) return GS_HIP_CALL(hipArrayCreate, array, d);
    return Charged(Extent(d->Width, d->Height, 1) * ElementBytes(d->Format, d->NumChannels), AllocKind::kArray,
                   AllocSpace::kArray, "hipArrayCreate", array, [&] { return GS_HIP_CALL(hipArrayCreate, array, d); });
  });
}

hipError_t hipArray3DCreate(hipArray** array, const HIP_ARRAY3D_DESCRIPTOR* d) {
  return GS_GUARDED(HipApi, {
    if (array == nullptr || d == nullptr) return GS_HIP_CALL(hipArray3DCreate, array, d);
    return Charged(Extent(d->Width, d->Height, d->Depth) * ElementBytes(d->Format, d->NumChannels), AllocKind::kArray,
                   AllocSpace::kArray, "hipArray3DCreate", array,
                   [&] { return GS_HIP_CALL(hipArray3DCreate, array, d); });
  });
}

hipError_t hipFreeArray(hipArray* array) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipFreeArray, array);
    if (r == hipSuccess && array != nullptr) Uncharge(AllocSpace::kArray, LedgerKey(array));
    return r;
  });
}

hipError_t hipArrayDestroy(hipArray* array) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipArrayDestroy, array);
    if (r == hipSuccess && array != nullptr) Uncharge(AllocSpace::kArray, LedgerKey(array));
    return r;
  });
}

}  // extern "C"
