// Shared helpers of simgpu's CUDA driver front (cuda_*.cpp): status mapping, handle
// resolution, and the argument checks common to families of entry points.
#pragma once

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <cudaProfiler.h>

#include <pthread.h>
#include <strings.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "process.h"

namespace simgpu::cuda {

inline std::atomic<Process*> g_process{nullptr};
inline bool g_forked_child = false;

inline CUresult ToCu(Status s) {
  switch (s) {
    case Status::kOk: return CUDA_SUCCESS;
    case Status::kInvalidValue: return CUDA_ERROR_INVALID_VALUE;
    case Status::kOutOfMemory: return CUDA_ERROR_OUT_OF_MEMORY;
    case Status::kNotFound: return CUDA_ERROR_NOT_FOUND;
    case Status::kInvalidHandle: return CUDA_ERROR_INVALID_HANDLE;
    case Status::kNotReady: return CUDA_ERROR_NOT_READY;
    case Status::kNotSupported: return CUDA_ERROR_NOT_SUPPORTED;
    case Status::kPeerUnsupported: return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
    case Status::kPeerAlreadyEnabled: return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
    case Status::kPeerNotEnabled: return CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
    case Status::kNoDevice: return CUDA_ERROR_NO_DEVICE;
  }
  return CUDA_ERROR_UNKNOWN;
}

inline Context* Current() {
  auto& stack = Process::context_stack;
  return stack.empty() ? nullptr : stack.back();
}

// The error a test armed for entry point `entry` (control/simgpu_control.h), else
// CUDA_SUCCESS. One relaxed load of shared memory while nothing is armed.
inline CUresult InjectedError(Process* p, const char* entry) {
  int error = 0;
  if (!p->node().AnyFaultArmed() || !p->node().TakeFault(FaultKind::kCall, entry, -1, &error)) return CUDA_SUCCESS;
  return static_cast<CUresult>(error);
}

// Every entry point but cuInit and the version/error queries starts with one of these.
// `entry` names the entry point for injected faults: __func__, the ABI symbol; helpers
// shared by several entry points take their caller's (__builtin_FUNCTION()).
#define SIM_INIT_AS(entry)                                   \
  Process* proc = g_process.load(std::memory_order_acquire); \
  if (proc == nullptr) return CUDA_ERROR_NOT_INITIALIZED;    \
  if (CUresult injected_ = InjectedError(proc, entry); injected_ != CUDA_SUCCESS) return injected_
#define SIM_INIT() SIM_INIT_AS(__func__)

#define SIM_CTX_AS(entry)   \
  SIM_INIT_AS(entry);       \
  Context* ctx = Current(); \
  if (ctx == nullptr || !proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT
#define SIM_CTX() SIM_CTX_AS(__func__)

#define SIM_TRY(expr)                  \
  do {                                 \
    CUresult r_ = (expr);              \
    if (r_ != CUDA_SUCCESS) return r_; \
  } while (0)

// Which driver this libcuda.so.1 is (cuda_variant.cpp, compiled once per library):
// simgpu's standard driver or a variant that lacks something, as older or smaller
// real drivers do. The rest of the front is the same objects in every library.
struct DriverVariant {
  const char* name;
  bool mempools;             // stream-ordered allocation and memory pools
  bool get_proc_address_v2;  // cuGetProcAddress_v2 (CUDA 12); CUDA 11 drivers had only cuGetProcAddress
};
extern const DriverVariant kVariant;

// The memory-pool family on a driver without pools: CUDA_ERROR_NOT_SUPPORTED, and
// CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED reads 0.
#define SIM_MEMPOOLS() \
  if (!kVariant.mempools) return CUDA_ERROR_NOT_SUPPORTED

inline bool ValidDevice(Process* p, CUdevice d) { return d >= 0 && d < p->device_count(); }

// The NULL stream, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD all resolve to the
// current context's default stream (simgpu runs each device's work in one queue, so
// per-thread default streams need no separate ordering).
inline CUresult ResolveStream(Process* p, CUstream h, Stream** out) {
  if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
    Context* c = Current();
    if (c == nullptr || !p->ValidContext(c)) return CUDA_ERROR_INVALID_CONTEXT;
    *out = &c->default_stream;
    return CUDA_SUCCESS;
  }
  auto* s = reinterpret_cast<Stream*>(h);
  if (!p->Valid(s, Tag::kStream)) return CUDA_ERROR_INVALID_HANDLE;
  *out = s;
  return CUDA_SUCCESS;
}

#define SIM_STREAM(h)       \
  Stream* stream = nullptr; \
  SIM_TRY(ResolveStream(proc, (h), &stream))

inline Function* AsFunction(Process* p, const void* h) {
  auto* f = static_cast<Function*>(const_cast<void*>(h));
  return p->Valid(f, Tag::kFunction) ? f : nullptr;
}

inline int HexNibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 0;
}

inline void UuidBytes(const std::string& uuid, unsigned char out[16]) {
  std::string hex;
  for (size_t i = 4; i < uuid.size(); ++i)
    if (uuid[i] != '-') hex += uuid[i];
  for (int i = 0; i < 16; ++i)
    out[i] = static_cast<unsigned char>(HexNibble(hex[2 * i]) << 4 | HexNibble(hex[2 * i + 1]));
}

inline int PciField(const std::string& bus_id, int which) {  // 0 domain, 1 bus, 2 device
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  std::sscanf(bus_id.c_str(), "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
  return static_cast<int>(which == 0 ? dom : which == 1 ? bus : dev);
}

inline CUresult NewModule(Process* p, const void* image, Module** out) {
  if (image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = p->LoadModule(image);
  return CUDA_SUCCESS;
}

inline CUresult ModuleFunction(Process* p, Module* m, const char* name, Function** out) {
  if (name == nullptr || out == nullptr)
    return p->Valid(m, Tag::kModule) ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_INVALID_HANDLE;
  return ToCu(p->ModuleFunction(m, name, out));
}

inline CUresult LaunchOn(Process* p, const void* f_handle, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned shared, CUstream h) {
  Function* f = AsFunction(p, f_handle);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  Stream* stream = nullptr;
  SIM_TRY(ResolveStream(p, h, &stream));
  return ToCu(p->Launch(stream, f, LaunchGeometry{{gx, gy, gz}, {bx, by, bz}, shared}));
}

inline uint64_t Ptr(const void* p) { return reinterpret_cast<uint64_t>(p); }

inline CUresult CopyGeneric(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h, bool async,
                            const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  SIM_STREAM(h);
  return ToCu(proc->Copy(stream, dst, src, n, async));
}

// A device-side operand of a typed copy must be device memory.
inline CUresult CopyTyped(uint64_t dst, bool dst_dev, uint64_t src, bool src_dev, size_t n, CUstream h, bool async,
                          const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  if (n > 0 && ((dst_dev && !proc->DeviceSpan(dst, n, nullptr)) || (src_dev && !proc->DeviceSpan(src, n, nullptr))))
    return CUDA_ERROR_INVALID_VALUE;
  SIM_STREAM(h);
  return ToCu(proc->Copy(stream, dst, src, n, async));
}

inline uint64_t Copy2DAddress(CUmemorytype type, const void* host, CUdeviceptr dev, size_t x, size_t y, size_t pitch) {
  uint64_t base = type == CU_MEMORYTYPE_HOST ? Ptr(host) : dev;
  return base + y * pitch + x;
}

inline CUresult Copy2DGeneric(const CUDA_MEMCPY2D* c, CUstream h, bool async,
                              const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  if (c == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (c->srcMemoryType == CU_MEMORYTYPE_ARRAY || c->dstMemoryType == CU_MEMORYTYPE_ARRAY)
    return CUDA_ERROR_NOT_SUPPORTED;
  SIM_STREAM(h);
  uint64_t src = Copy2DAddress(c->srcMemoryType, c->srcHost, c->srcDevice, c->srcXInBytes, c->srcY, c->srcPitch);
  uint64_t dst = Copy2DAddress(c->dstMemoryType, c->dstHost, c->dstDevice, c->dstXInBytes, c->dstY, c->dstPitch);
  size_t sp = c->srcPitch ? c->srcPitch : c->WidthInBytes, dp = c->dstPitch ? c->dstPitch : c->WidthInBytes;
  return ToCu(proc->Copy2D(stream, dst, dp, src, sp, c->WidthInBytes, c->Height, async));
}

inline CUresult MemsetGeneric(CUdeviceptr d, size_t pitch, unsigned value, unsigned elem, size_t w, size_t hgt,
                              CUstream h, bool async, const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  SIM_STREAM(h);
  return ToCu(proc->Memset(stream, d, pitch ? pitch : w * elem, value, elem, w, hgt, async));
}

inline size_t ArrayFormatBytes(CUarray_format f) {
  switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    default: return 0;
  }
}

inline CUresult NewArray(const CUDA_ARRAY3D_DESCRIPTOR* d, int levels, Array** out,
                         const char* entry = __builtin_FUNCTION()) {
  SIM_CTX_AS(entry);
  if (d == nullptr || out == nullptr || levels < 1) return CUDA_ERROR_INVALID_VALUE;
  const size_t elem = ArrayFormatBytes(d->Format);
  if (elem == 0 || d->Width == 0 || !(d->NumChannels == 1 || d->NumChannels == 2 || d->NumChannels == 4))
    return CUDA_ERROR_INVALID_VALUE;
  const uint64_t level0 =
      uint64_t{d->Width} * std::max<size_t>(d->Height, 1) * std::max<size_t>(d->Depth, 1) * elem * d->NumChannels;
  uint64_t bytes = 0;
  for (int l = 0; l < levels; ++l) bytes += std::max<uint64_t>(level0 >> (2 * l), elem * d->NumChannels);
  auto* a = new Array();
  if (Status s = proc->Allocate(ctx->device, bytes, MemKind::kArray, &a->address); s != Status::kOk) {
    delete a;
    return ToCu(s);
  }
  a->width = d->Width;
  a->height = d->Height;
  a->depth = d->Depth;
  a->format = d->Format;
  a->channels = d->NumChannels;
  a->flags = d->Flags;
  a->levels = levels;
  proc->Track(a);
  *out = a;
  return CUDA_SUCCESS;
}

inline CUresult DestroyArray(void* h, const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  auto* a = static_cast<Array*>(h);
  if (!proc->Valid(a, Tag::kArray)) return CUDA_ERROR_INVALID_HANDLE;
  proc->Untrack(a);
  proc->Free(a->address);
  a->tag = Tag::kDead;
  delete a;
  return CUDA_SUCCESS;
}

inline int DeviceAttribute(Process* p, CUdevice_attribute attr, int dev) {
  const GpuConfig& g = p->gpu(dev);
  switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return 49152;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: return 65536;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1755000;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: return 512;
    case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: return 1;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return g.sms;
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: return CU_COMPUTEMODE_DEFAULT;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: return PciField(g.pci_bus_id, 1);
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: return PciField(g.pci_bus_id, 2);
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: return PciField(g.pci_bus_id, 0);
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 2619000;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 5120;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return 50 << 20;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: return 2;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return g.cc_major;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return g.cc_minor;
    case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 233472;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: return 1;
    case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD: return 0;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: return 1;
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: return 0;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: return 1;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return 232448;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: return 32;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: return 0;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: return kVariant.mempools ? 1 : 0;
    case CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES: return 0;
    case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: return 1;
    default: return 0;
  }
}

}  // namespace simgpu::cuda
