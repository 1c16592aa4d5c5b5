// Memory hooks: every allocation is charged against the cap of the virtual GPU it
// lands on before the real driver is asked, so a refusal is the API's own
// CUDA_ERROR_OUT_OF_MEMORY and concurrent allocations never overshoot the cap.
// Managed memory counts in full against the GPU current at allocation (conservative:
// a client cannot pass its cap through oversubscription).
#include "cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;

namespace {

// The virtual GPU of the calling thread's current context.
CUresult CurrentDevice(Client** client, int* dev) {
  *client = ReadyClient();
  if (*client == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  CUdevice physical;
  if (CUresult r = GS_REAL(cuCtxGetDevice, &physical); r != CUDA_SUCCESS) return r;
  *dev = (*client)->devices().Virtual(physical);
  return *dev < 0 ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
}

// Reserve, allocate through `allocate`, and record; the reservation is undone if the
// real driver refuses.
template <typename F>
CUresult Charged(uint64_t bytes, AllocKind kind, const char* call, CUdeviceptr* dptr, F allocate) {
  Client* client;
  int dev;
  if (CUresult r = CurrentDevice(&client, &dev); r != CUDA_SUCCESS) return r;
  if (!client->Reserve(dev, bytes, call)) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult r = allocate();
  if (r != CUDA_SUCCESS) {
    client->ledger().Unreserve(dev, bytes);
    return r;
  }
  client->ledger().Remember(*dptr, {dev, bytes, kind});
  return CUDA_SUCCESS;
}

}  // namespace

extern "C" {

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  if (dptr == nullptr || bytes == 0) return GS_REAL(cuMemAlloc_v2, dptr, bytes);
  return Charged(bytes, AllocKind::kDevice, "cuMemAlloc", dptr, [&] { return GS_REAL(cuMemAlloc_v2, dptr, bytes); });
}

CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int flags) {
  if (dptr == nullptr || bytes == 0) return GS_REAL(cuMemAllocManaged, dptr, bytes, flags);
  return Charged(bytes, AllocKind::kManaged, "cuMemAllocManaged", dptr,
                 [&] { return GS_REAL(cuMemAllocManaged, dptr, bytes, flags); });
}

CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t width, size_t height, unsigned int elem) {
  if (dptr == nullptr || pitch == nullptr || width == 0 || height == 0)
    return GS_REAL(cuMemAllocPitch_v2, dptr, pitch, width, height, elem);
  // The pitch is known only afterwards: charge the widest pitch the driver may pick
  // (512-byte alignment), then give back the difference.
  const uint64_t bound = (uint64_t{width} + 511) / 512 * 512 * height;
  CUresult r = Charged(bound, AllocKind::kPitch, "cuMemAllocPitch", dptr,
                       [&] { return GS_REAL(cuMemAllocPitch_v2, dptr, pitch, width, height, elem); });
  if (r != CUDA_SUCCESS) return r;
  const uint64_t actual = uint64_t{*pitch} * height;
  if (actual < bound) {
    Client& client = Client::Get();
    auto a = client.ledger().Forget(*dptr);
    client.ledger().Unreserve(a->device, bound - actual);
    client.ledger().Remember(*dptr, {a->device, actual, AllocKind::kPitch});
  }
  return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  CUresult r = GS_REAL(cuMemFree_v2, dptr);
  if (r == CUDA_SUCCESS) {
    Client& client = Client::Get();
    if (auto a = client.ledger().Forget(dptr)) client.ledger().Unreserve(a->device, a->bytes);
  }
  return r;
}

// (cap - used, cap), and never more free than the device really has.
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  CUresult r = GS_REAL(cuMemGetInfo_v2, free_bytes, total_bytes);
  if (r != CUDA_SUCCESS) return r;
  Client* client;
  int dev;
  if (CurrentDevice(&client, &dev) != CUDA_SUCCESS) return r;
  const uint64_t cap = client->ledger().Cap(dev);
  if (cap == MemoryLedger::kNoCap) return r;
  const uint64_t used = client->ledger().Used(dev);
  *total_bytes = cap;
  *free_bytes = std::min<uint64_t>(*free_bytes, used >= cap ? 0 : cap - used);
  return r;
}

}  // extern "C"
