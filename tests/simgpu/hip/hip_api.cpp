// simgpu's HIP runtime front, part one: start-up, versions and errors, devices and
// their properties, memory of every family, copies and memsets, translated onto the
// same Process and node as the CUDA front (so both see one node's capacity).
#include <pthread.h>
#include <strings.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hip_front.h"

using namespace simgpu;
using namespace simgpu::hip;

namespace simgpu::hip {
namespace {

std::atomic<Process*> g_process{nullptr};
std::atomic<bool> g_forked_child{false};

}  // namespace

Process* Proc() {
  if (Process* p = g_process.load(std::memory_order_acquire)) return p;
  // As with real runtimes, a child forked after start cannot use the parent's queues.
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork(nullptr, nullptr, [] {
      g_process.store(nullptr);
      g_forked_child.store(true);
    });
    g_process.store(Process::Get(nullptr), std::memory_order_release);  // prints the reason on failure
  });
  return g_forked_child.load() ? nullptr : g_process.load(std::memory_order_acquire);
}

}  // namespace simgpu::hip

namespace {

int PciField(const std::string& bus_id, int which) {  // 0 domain, 1 bus, 2 device
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  std::sscanf(bus_id.c_str(), "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
  return static_cast<int>(which == 0 ? dom : which == 1 ? bus : dev);
}

// The values a gfx90a-class device reports; what the config describes comes from it.
bool Attribute(Process* p, hipDeviceAttribute_t attr, int dev, int* value) {
  const GpuConfig& g = p->gpu(dev);
  switch (attr) {
    case hipDeviceAttributeMultiprocessorCount:
    case hipDeviceAttributePhysicalMultiProcessorCount: *value = g.cus; break;
    case hipDeviceAttributeMaxThreadsPerBlock:
    case hipDeviceAttributeMaxBlockDimX:
    case hipDeviceAttributeMaxBlockDimY:
    case hipDeviceAttributeMaxBlockDimZ: *value = 1024; break;
    case hipDeviceAttributeMaxGridDimX:
    case hipDeviceAttributeMaxGridDimY:
    case hipDeviceAttributeMaxGridDimZ: *value = 2147483647; break;
    case hipDeviceAttributeWarpSize: *value = 64; break;
    case hipDeviceAttributeMaxSharedMemoryPerBlock:
    case hipDeviceAttributeSharedMemPerBlockOptin:
    case hipDeviceAttributeMaxSharedMemoryPerMultiprocessor:
    case hipDeviceAttributeSharedMemPerMultiprocessor: *value = 65536; break;
    case hipDeviceAttributeTotalConstantMemory: *value = 2147483647; break;
    case hipDeviceAttributeMaxRegistersPerBlock:
    case hipDeviceAttributeMaxRegistersPerMultiprocessor: *value = 65536; break;
    case hipDeviceAttributeClockRate: *value = 1700000; break;
    case hipDeviceAttributeMemoryClockRate: *value = 1600000; break;
    case hipDeviceAttributeMemoryBusWidth: *value = 4096; break;
    case hipDeviceAttributeL2CacheSize: *value = 8 << 20; break;
    case hipDeviceAttributeMaxThreadsPerMultiProcessor: *value = 2048; break;
    case hipDeviceAttributeComputeCapabilityMajor: *value = g.cc_major; break;
    case hipDeviceAttributeComputeCapabilityMinor: *value = g.cc_minor; break;
    case hipDeviceAttributePciBusId: *value = PciField(g.pci_bus_id, 1); break;
    case hipDeviceAttributePciDeviceId: *value = PciField(g.pci_bus_id, 2); break;
    case hipDeviceAttributePciDomainID: *value = PciField(g.pci_bus_id, 0); break;
    case hipDeviceAttributeConcurrentKernels:
    case hipDeviceAttributeCanMapHostMemory:
    case hipDeviceAttributeManagedMemory:
    case hipDeviceAttributeConcurrentManagedAccess:
    case hipDeviceAttributeCooperativeLaunch:
    case hipDeviceAttributeCooperativeMultiDeviceLaunch:
    case hipDeviceAttributeUnifiedAddressing:
    case hipDeviceAttributeMemoryPoolsSupported:
    case hipDeviceAttributeStreamPrioritiesSupported:
    case hipDeviceAttributeIsLargeBar:
    case hipDeviceAttributeFineGrainSupport:
    case hipDeviceAttributeDeviceOverlap: *value = 1; break;
    case hipDeviceAttributeAsyncEngineCount: *value = 2; break;
    case hipDeviceAttributeComputeMode: *value = hipComputeModeDefault; break;
    case hipDeviceAttributeMaxPitch: *value = 2147483647; break;
    case hipDeviceAttributeTextureAlignment:
    case hipDeviceAttributeTexturePitchAlignment: *value = 256; break;
    case hipDeviceAttributeClockInstructionRate: *value = 100000; break;
    case hipDeviceAttributeGcnArch: *value = std::atoi(g.gcn_arch.c_str() + 3); break;
    case hipDeviceAttributeMaxBlocksPerMultiProcessor: *value = 32; break;
    default:
      if (attr < hipDeviceAttributeCudaCompatibleBegin || attr >= hipDeviceAttributeAmdSpecificEnd) return false;
      *value = 0;  // features simgpu does not model (textures, surfaces, ECC, ...)
  }
  return true;
}

hipError_t CopyKinded(void* dst, const void* src, size_t n, hipMemcpyKind kind, hipStream_t h, bool async,
                      const char* entry = __builtin_FUNCTION()) {
  HIP_INIT_AS(entry);
  if (kind < hipMemcpyHostToHost || kind > hipMemcpyDefault) return Ret(hipErrorInvalidMemcpyDirection);
  // A device side named by the kind must be device memory (hipMemcpyDefault infers it).
  const bool dst_dev = kind == hipMemcpyHostToDevice || kind == hipMemcpyDeviceToDevice;
  const bool src_dev = kind == hipMemcpyDeviceToHost || kind == hipMemcpyDeviceToDevice;
  if (n > 0 &&
      ((dst_dev && !proc->DeviceSpan(Ptr(dst), n, nullptr)) || (src_dev && !proc->DeviceSpan(Ptr(src), n, nullptr))))
    return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  if (async && Capture(stream, [=](Process* p, Stream* s) { return ToHip(p->Copy(s, Ptr(dst), Ptr(src), n, true)); }))
    return hipSuccess;
  return Ret(ToHip(proc->Copy(stream, Ptr(dst), Ptr(src), n, async)));
}

hipError_t MemsetElems(void* dst, uint32_t value, unsigned elem, size_t count, hipStream_t h, bool async,
                       const char* entry = __builtin_FUNCTION()) {
  HIP_INIT_AS(entry);
  HIP_STREAM(h);
  if (async && Capture(stream, [=](Process* p, Stream* s) {
        return ToHip(p->Memset(s, Ptr(dst), count * elem, value, elem, count, 1, true));
      }))
    return hipSuccess;
  return Ret(ToHip(proc->Memset(stream, Ptr(dst), count * elem, value, elem, count, 1, async)));
}

// hipArray is a public struct in HIP: applications may read its fields, so the handle
// points at one, with simgpu's bookkeeping behind it.
struct SimArray {
  hipArray pub;
  OutAddress address = 0;
};
std::mutex g_arrays_mu;
std::set<SimArray*> g_arrays;

size_t FormatBytes(hipArray_Format f) {
  switch (f) {
    case HIP_AD_FORMAT_UNSIGNED_INT8:
    case HIP_AD_FORMAT_SIGNED_INT8: return 1;
    case HIP_AD_FORMAT_UNSIGNED_INT16:
    case HIP_AD_FORMAT_SIGNED_INT16:
    case HIP_AD_FORMAT_HALF: return 2;
    case HIP_AD_FORMAT_UNSIGNED_INT32:
    case HIP_AD_FORMAT_SIGNED_INT32:
    case HIP_AD_FORMAT_FLOAT: return 4;
  }
  return 0;
}

hipError_t NewArray(hipArray** out, size_t w, size_t h, size_t d, size_t elem_bytes, const hipArray& shape,
                    const char* entry = __builtin_FUNCTION()) {
  HIP_DEVICE_AS(entry);
  if (out == nullptr || w == 0 || elem_bytes == 0) return Ret(hipErrorInvalidValue);
  auto* a = new SimArray();
  a->pub = shape;
  const uint64_t bytes = uint64_t{w} * std::max<size_t>(h, 1) * std::max<size_t>(d, 1) * elem_bytes;
  if (Status s = proc->Allocate(device, bytes, MemKind::kArray, &a->address); s != Status::kOk) {
    delete a;
    return Ret(ToHip(s));
  }
  a->pub.data = reinterpret_cast<void*>(a->address);
  a->pub.width = static_cast<unsigned>(w);
  a->pub.height = static_cast<unsigned>(h);
  a->pub.depth = static_cast<unsigned>(d);
  std::lock_guard<std::mutex> lock(g_arrays_mu);
  g_arrays.insert(a);
  *out = &a->pub;
  return hipSuccess;
}

hipError_t DestroyArray(hipArray* h, const char* entry = __builtin_FUNCTION()) {
  HIP_INIT_AS(entry);
  auto* a = reinterpret_cast<SimArray*>(h);
  {
    std::lock_guard<std::mutex> lock(g_arrays_mu);
    if (h == nullptr || !g_arrays.erase(a)) return Ret(hipErrorInvalidValue);
  }
  proc->Free(a->address);
  delete a;
  return hipSuccess;
}

bool ValidLocation(Process* proc, const hipMemLocation& loc) {
  return loc.type == hipMemLocationTypeDevice && ValidDevice(proc, loc.id);
}

hipError_t PoolOf(Process* proc, hipMemPool_t h, MemPool** out) {
  auto* p = reinterpret_cast<MemPool*>(h);
  if (!proc->ValidPool(p)) return hipErrorInvalidValue;
  *out = p;
  return hipSuccess;
}

hipError_t Copy2DKinded(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                        hipMemcpyKind kind, hipStream_t h, bool async, const char* entry = __builtin_FUNCTION()) {
  HIP_INIT_AS(entry);
  if (kind < hipMemcpyHostToHost || kind > hipMemcpyDefault) return Ret(hipErrorInvalidMemcpyDirection);
  if (width == 0 || height == 0) return hipSuccess;
  const bool dst_dev = kind == hipMemcpyHostToDevice || kind == hipMemcpyDeviceToDevice;
  const bool src_dev = kind == hipMemcpyDeviceToHost || kind == hipMemcpyDeviceToDevice;
  if ((dst_dev && !proc->DeviceSpan(Ptr(dst), dpitch * (height - 1) + width, nullptr)) ||
      (src_dev && !proc->DeviceSpan(Ptr(src), spitch * (height - 1) + width, nullptr)))
    return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  auto copy = [=](Process* p, Stream* s) {
    return ToHip(p->Copy2D(s, Ptr(dst), dpitch, Ptr(src), spitch, width, height, async));
  };
  if (async && Capture(stream, copy)) return hipSuccess;
  return Ret(copy(proc, stream));
}

hipError_t Memset2D(void* dst, size_t pitch, int value, size_t width, size_t height, hipStream_t h, bool async,
                    const char* entry = __builtin_FUNCTION()) {
  HIP_INIT_AS(entry);
  HIP_STREAM(h);
  auto set = [=](Process* p, Stream* s) {
    return ToHip(p->Memset(s, Ptr(dst), pitch, static_cast<uint8_t>(value), 1, width, height, async));
  };
  if (async && Capture(stream, set)) return hipSuccess;
  return Ret(set(proc, stream));
}

}  // namespace

extern "C" {

// Not a HIP entry point: the HIP samples look it up (dlsym) to know that kernels here
// take modeled time but compute nothing (see simgpuCudaDriver).
const char* simgpuHipRuntime() { return "simgpu"; }

// ---- start-up, versions, errors ----

hipError_t hipInit(unsigned int flags) {
  if (flags != 0) return Ret(hipErrorInvalidValue);
  HIP_INIT();
  (void)proc;
  return hipSuccess;
}

hipError_t hipDriverGetVersion(int* version) {
  if (version == nullptr) return Ret(hipErrorInvalidValue);
  *version = HIP_VERSION;
  return hipSuccess;
}

hipError_t hipRuntimeGetVersion(int* version) {
  if (version == nullptr) return Ret(hipErrorInvalidValue);
  *version = HIP_VERSION;
  return hipSuccess;
}

hipError_t hipGetLastError(void) {
  hipError_t e = t_last_error;
  t_last_error = hipSuccess;
  return e;
}

hipError_t hipPeekAtLastError(void) { return t_last_error; }

const char* hipGetErrorName(hipError_t e) {
  struct Named {
    hipError_t code;
    const char* name;
  };
  static const Named kNames[] = {
  // aliases (hipErrorMemoryAllocation) come after their first name
#define SIM_ERROR(name) {name, #name},
#include "hip_errors.inc"
#undef SIM_ERROR
  };
  for (const Named& n : kNames)
    if (n.code == e) return n.name;
  return "hipErrorUnknown";
}

const char* hipGetErrorString(hipError_t e) {
  switch (e) {
    case hipSuccess: return "no error";
    case hipErrorInvalidValue: return "invalid argument";
    case hipErrorOutOfMemory: return "out of memory";
    case hipErrorNotInitialized: return "initialization error";
    case hipErrorNoDevice: return "no ROCm-capable device is detected";
    case hipErrorInvalidDevice: return "invalid device ordinal";
    case hipErrorInvalidContext: return "invalid device context";
    case hipErrorInvalidHandle: return "invalid resource handle";
    case hipErrorInvalidDeviceFunction: return "invalid device function";
    case hipErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case hipErrorInvalidConfiguration: return "invalid configuration argument";
    case hipErrorNotFound: return "named symbol not found";
    case hipErrorNotReady: return "device not ready";
    case hipErrorFileNotFound: return "file not found";
    case hipErrorPeerAccessUnsupported: return "peer access is not supported between these two devices";
    case hipErrorPeerAccessAlreadyEnabled: return "peer access is already enabled";
    case hipErrorPeerAccessNotEnabled: return "peer access has not been enabled";
    case hipErrorNotSupported: return "operation not supported";
    case hipErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case hipErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case hipErrorIllegalState: return "the operation cannot be performed in the present state";
    default: return hipGetErrorName(e);
  }
}

// ---- devices ----

hipError_t hipGetDeviceCount(int* count) {
  if (count == nullptr) return Ret(hipErrorInvalidValue);
  Process* proc = Proc();
  *count = proc ? proc->device_count() : 0;
  return proc ? hipSuccess : Ret(hipErrorNoDevice);
}

hipError_t hipSetDevice(int device) {
  HIP_INIT();
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  t_device = device;
  return hipSuccess;
}

hipError_t hipGetDevice(int* device) {
  HIP_INIT();
  if (device == nullptr) return Ret(hipErrorInvalidValue);
  *device = t_device;
  return hipSuccess;
}

hipError_t hipDeviceGet(hipDevice_t* device, int ordinal) {
  HIP_INIT();
  if (device == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, ordinal)) return Ret(hipErrorInvalidDevice);
  *device = ordinal;
  return hipSuccess;
}

hipError_t hipCtxGetDevice(hipDevice_t* device) {
  HIP_INIT();
  if (device == nullptr) return Ret(hipErrorInvalidValue);
  *device = t_device;
  return hipSuccess;
}

hipError_t hipDeviceGetName(char* name, int len, hipDevice_t device) {
  HIP_INIT();
  if (name == nullptr || len <= 0) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  std::snprintf(name, static_cast<size_t>(len), "%s", proc->gpu(device).name.c_str());
  return hipSuccess;
}

hipError_t hipDeviceTotalMem(size_t* bytes, hipDevice_t device) {
  HIP_INIT();
  if (bytes == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  *bytes = proc->gpu(device).memory_bytes;
  return hipSuccess;
}

hipError_t hipDeviceComputeCapability(int* major, int* minor, hipDevice_t device) {
  HIP_INIT();
  if (major == nullptr || minor == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  *major = proc->gpu(device).cc_major;
  *minor = proc->gpu(device).cc_minor;
  return hipSuccess;
}

hipError_t hipDeviceGetPCIBusId(char* bus_id, int len, int device) {
  HIP_INIT();
  if (bus_id == nullptr || len <= 0) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  std::snprintf(bus_id, static_cast<size_t>(len), "%s", proc->gpu(device).pci_bus_id.c_str());
  return hipSuccess;
}

hipError_t hipDeviceGetByPCIBusId(int* device, const char* bus_id) {
  HIP_INIT();
  if (device == nullptr || bus_id == nullptr) return Ret(hipErrorInvalidValue);
  for (int d = 0; d < proc->device_count(); ++d) {
    const std::string& id = proc->gpu(d).pci_bus_id;
    if (strcasecmp(id.c_str(), bus_id) == 0 || strcasecmp(id.c_str() + 5, bus_id) == 0) {  // or "bb:dd.f"
      *device = d;
      return hipSuccess;
    }
  }
  return Ret(hipErrorInvalidDevice);
}

hipError_t hipDeviceGetUuid(hipUUID* uuid, hipDevice_t device) {
  HIP_INIT();
  if (uuid == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  const std::string& text = proc->gpu(device).uuid;  // "GPU-" + 32 hex digits and dashes
  std::string hex;
  for (size_t i = 4; i < text.size(); ++i)
    if (text[i] != '-') hex += text[i];
  for (int i = 0; i < 16; ++i) uuid->bytes[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return hipSuccess;
}

hipError_t hipDeviceGetAttribute(int* value, hipDeviceAttribute_t attr, int device) {
  HIP_INIT();
  if (value == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  return Attribute(proc, attr, device, value) ? hipSuccess : Ret(hipErrorInvalidValue);
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t* prop, int device) {
  HIP_INIT();
  if (prop == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  const GpuConfig& g = proc->gpu(device);
  auto attr = [&](hipDeviceAttribute_t a) {
    int v = 0;
    Attribute(proc, a, device, &v);
    return v;
  };
  *prop = hipDeviceProp_t{};
  std::snprintf(prop->name, sizeof prop->name, "%s", g.name.c_str());
  std::snprintf(prop->gcnArchName, sizeof prop->gcnArchName, "%s", g.gcn_arch.c_str());
  prop->totalGlobalMem = g.memory_bytes;
  prop->sharedMemPerBlock = static_cast<size_t>(attr(hipDeviceAttributeMaxSharedMemoryPerBlock));
  prop->regsPerBlock = attr(hipDeviceAttributeMaxRegistersPerBlock);
  prop->warpSize = attr(hipDeviceAttributeWarpSize);
  prop->maxThreadsPerBlock = attr(hipDeviceAttributeMaxThreadsPerBlock);
  for (int i = 0; i < 3; ++i) {
    prop->maxThreadsDim[i] = 1024;
    prop->maxGridSize[i] = 2147483647;
  }
  prop->clockRate = attr(hipDeviceAttributeClockRate);
  prop->memoryClockRate = attr(hipDeviceAttributeMemoryClockRate);
  prop->memoryBusWidth = attr(hipDeviceAttributeMemoryBusWidth);
  prop->totalConstMem = static_cast<size_t>(attr(hipDeviceAttributeTotalConstantMemory));
  prop->major = g.cc_major;
  prop->minor = g.cc_minor;
  prop->multiProcessorCount = g.cus;
  prop->l2CacheSize = attr(hipDeviceAttributeL2CacheSize);
  prop->maxThreadsPerMultiProcessor = attr(hipDeviceAttributeMaxThreadsPerMultiProcessor);
  prop->computeMode = hipComputeModeDefault;
  prop->clockInstructionRate = attr(hipDeviceAttributeClockInstructionRate);
  prop->concurrentKernels = 1;
  prop->pciDomainID = PciField(g.pci_bus_id, 0);
  prop->pciBusID = PciField(g.pci_bus_id, 1);
  prop->pciDeviceID = PciField(g.pci_bus_id, 2);
  prop->maxSharedMemoryPerMultiProcessor = static_cast<size_t>(attr(hipDeviceAttributeSharedMemPerMultiprocessor));
  prop->canMapHostMemory = 1;
  prop->gcnArch = attr(hipDeviceAttributeGcnArch);
  prop->cooperativeLaunch = 1;
  prop->cooperativeMultiDeviceLaunch = 1;
  prop->memPitch = static_cast<size_t>(attr(hipDeviceAttributeMaxPitch));
  prop->textureAlignment = 256;
  prop->texturePitchAlignment = 256;
  prop->isLargeBar = 1;
  prop->managedMemory = 1;
  prop->concurrentManagedAccess = 1;
  return hipSuccess;
}

hipError_t hipDeviceGetStreamPriorityRange(int* least, int* greatest) {
  HIP_INIT();
  (void)proc;
  if (least) *least = 0;
  if (greatest) *greatest = -1;
  return hipSuccess;
}

hipError_t hipDeviceCanAccessPeer(int* can, int device, int peer) {
  HIP_INIT();
  if (can == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device) || !ValidDevice(proc, peer)) return Ret(hipErrorInvalidDevice);
  *can = device != peer && proc->config().link(device, peer) != LinkKind::kNone;
  return hipSuccess;
}

hipError_t hipDeviceEnablePeerAccess(int peer, unsigned int flags) {
  HIP_DEVICE();
  if (flags != 0) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, peer)) return Ret(hipErrorInvalidDevice);
  if (peer == device || proc->config().link(device, peer) == LinkKind::kNone) return Ret(hipErrorPeerAccessUnsupported);
  Context* ctx = proc->PrimaryContext(device);
  std::lock_guard<std::mutex> lock(ctx->mu);
  return ctx->peers.insert(proc->PrimaryContext(peer)).second ? hipSuccess : Ret(hipErrorPeerAccessAlreadyEnabled);
}

hipError_t hipDeviceDisablePeerAccess(int peer) {
  HIP_DEVICE();
  if (!ValidDevice(proc, peer)) return Ret(hipErrorInvalidDevice);
  Context* ctx = proc->PrimaryContext(device);
  std::lock_guard<std::mutex> lock(ctx->mu);
  return ctx->peers.erase(proc->PrimaryContext(peer)) ? hipSuccess : Ret(hipErrorPeerAccessNotEnabled);
}

hipError_t hipDeviceGetP2PAttribute(int* value, hipDeviceP2PAttr attr, int src, int dst) {
  HIP_INIT();
  if (value == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, src) || !ValidDevice(proc, dst) || src == dst) return Ret(hipErrorInvalidDevice);
  const LinkKind link = proc->config().link(src, dst);
  switch (attr) {
    case hipDevP2PAttrPerformanceRank: *value = link == LinkKind::kNvlink ? 0 : 1; break;
    case hipDevP2PAttrAccessSupported:
    case hipDevP2PAttrHipArrayAccessSupported: *value = link != LinkKind::kNone; break;
    case hipDevP2PAttrNativeAtomicSupported: *value = link == LinkKind::kNvlink; break;
    default: return Ret(hipErrorInvalidValue);
  }
  return hipSuccess;
}

hipError_t hipChooseDevice(int* device, const hipDeviceProp_t* prop) {
  HIP_INIT();
  if (device == nullptr || prop == nullptr) return Ret(hipErrorInvalidValue);
  *device = 0;  // every simulated GPU offers the same features
  return hipSuccess;
}

// The runtime's primary contexts are the CUDA front's: one per device, reference-counted.
hipError_t hipDevicePrimaryCtxRetain(hipCtx_t* ctx, hipDevice_t device) {
  HIP_INIT();
  if (ctx == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  HIP_TRY(ToHip(proc->ActivatePrimary(device)));
  proc->RetainPrimary(device);
  *ctx = reinterpret_cast<hipCtx_t>(proc->PrimaryContext(device));
  return hipSuccess;
}

hipError_t hipDevicePrimaryCtxRelease(hipDevice_t device) {
  HIP_INIT();
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  return Ret(ToHip(proc->ReleasePrimary(device)));
}

hipError_t hipDevicePrimaryCtxGetState(hipDevice_t device, unsigned int* flags, int* active) {
  HIP_INIT();
  if (flags == nullptr || active == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  *flags = proc->PrimaryContext(device)->flags;
  *active = proc->PrimaryRefs(device) > 0;
  return hipSuccess;
}

hipError_t hipDeviceSynchronize(void) {
  HIP_DEVICE();
  proc->SyncDevice(device);
  return hipSuccess;
}

// Frees what this process holds on the current device and drops its context charge.
hipError_t hipDeviceReset(void) {
  HIP_DEVICE();
  proc->SyncDevice(device);
  proc->ReleaseDeviceMemory(device);
  {
    std::lock_guard<std::mutex> lock(g_arrays_mu);
    std::erase_if(g_arrays, [&](SimArray* a) {
      if (proc->Lookup(a->address, nullptr, nullptr)) return false;  // still live: another device
      delete a;
      return true;
    });
  }
  return hipSuccess;
}

// ---- memory ----

hipError_t hipMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  HIP_DEVICE();
  if (free_bytes == nullptr || total_bytes == nullptr) return Ret(hipErrorInvalidValue);
  const uint64_t cap = proc->node().capacity(device), used = proc->node().Used(device);
  *total_bytes = cap;
  *free_bytes = used >= cap ? 0 : cap - used;
  return hipSuccess;
}

hipError_t hipMalloc(void** ptr, size_t size) {
  HIP_DEVICE();
  if (ptr == nullptr) return Ret(hipErrorInvalidValue);
  if (size == 0) {  // HIP: a zero-size request succeeds with a null pointer
    *ptr = nullptr;
    return hipSuccess;
  }
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->Allocate(device, size, MemKind::kDevice, &a)));
  *ptr = reinterpret_cast<void*>(a);
  return hipSuccess;
}

hipError_t hipExtMallocWithFlags(void** ptr, size_t size, unsigned int flags) {
  if (flags > hipMallocSignalMemory) return Ret(hipErrorInvalidValue);
  return hipMalloc(ptr, size);  // fine-grained and signal memory are charged alike
}

hipError_t hipMallocManaged(void** ptr, size_t size, unsigned int flags) {
  HIP_DEVICE();
  if (ptr == nullptr || size == 0 || (flags != hipMemAttachGlobal && flags != hipMemAttachHost))
    return Ret(hipErrorInvalidValue);
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->Allocate(device, size, MemKind::kManaged, &a)));
  *ptr = reinterpret_cast<void*>(a);
  return hipSuccess;
}

hipError_t hipMallocPitch(void** ptr, size_t* pitch, size_t width, size_t height) {
  HIP_DEVICE();
  if (ptr == nullptr || pitch == nullptr || width == 0 || height == 0) return Ret(hipErrorInvalidValue);
  const size_t p = (width + 511) / 512 * 512;
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->Allocate(device, p * height, MemKind::kDevice, &a)));
  *ptr = reinterpret_cast<void*>(a);
  *pitch = p;
  return hipSuccess;
}

hipError_t hipMalloc3D(hipPitchedPtr* out, hipExtent extent) {
  HIP_DEVICE();
  if (out == nullptr || extent.width == 0 || extent.height == 0 || extent.depth == 0) return Ret(hipErrorInvalidValue);
  const size_t p = (extent.width + 511) / 512 * 512;
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->Allocate(device, p * extent.height * extent.depth, MemKind::kDevice, &a)));
  *out = hipPitchedPtr{reinterpret_cast<void*>(a), p, extent.width, extent.height};
  return hipSuccess;
}

hipError_t hipFree(void* ptr) {
  HIP_INIT();
  if (ptr == nullptr) return hipSuccess;
  Range r;
  if (proc->Lookup(Ptr(ptr), nullptr, &r)) proc->SyncDevice(r.device);  // hipFree waits for the device
  return Ret(ToHip(proc->Free(Ptr(ptr))));
}

hipError_t hipHostMalloc(void** ptr, size_t size, unsigned int) {
  HIP_INIT();
  if (ptr == nullptr || size == 0) return Ret(hipErrorInvalidValue);
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size) != 0) return Ret(hipErrorOutOfMemory);
  proc->AddPinned(Ptr(p), size);
  *ptr = p;
  return hipSuccess;
}

hipError_t hipHostFree(void* ptr) {
  HIP_INIT();
  if (ptr == nullptr) return hipSuccess;
  if (!proc->RemovePinned(Ptr(ptr))) return Ret(hipErrorInvalidValue);
  std::free(ptr);
  return hipSuccess;
}

hipError_t hipHostRegister(void* ptr, size_t size, unsigned int) {
  HIP_INIT();
  if (ptr == nullptr || size == 0) return Ret(hipErrorInvalidValue);
  if (proc->IsPinned(Ptr(ptr))) return Ret(hipErrorHostMemoryAlreadyRegistered);
  proc->AddPinned(Ptr(ptr), size);
  return hipSuccess;
}

hipError_t hipHostUnregister(void* ptr) {
  HIP_INIT();
  return proc->RemovePinned(Ptr(ptr)) ? hipSuccess : Ret(hipErrorHostMemoryNotRegistered);
}

hipError_t hipHostGetDevicePointer(void** device_ptr, void* host_ptr, unsigned int flags) {
  HIP_INIT();
  if (device_ptr == nullptr || flags != 0 || !proc->IsPinned(Ptr(host_ptr))) return Ret(hipErrorInvalidValue);
  *device_ptr = host_ptr;  // unified addressing: the same address on both sides
  return hipSuccess;
}

hipError_t hipMemGetAddressRange(hipDeviceptr_t* base, size_t* size, hipDeviceptr_t ptr) {
  HIP_INIT();
  uint64_t b = 0;
  Range r;
  if (!proc->Lookup(Ptr(ptr), &b, &r)) return Ret(hipErrorNotFound);
  if (base) *base = reinterpret_cast<hipDeviceptr_t>(b);
  if (size) *size = r.size;
  return hipSuccess;
}

hipError_t hipPointerGetAttributes(hipPointerAttribute_t* attr, const void* ptr) {
  HIP_INIT();
  if (attr == nullptr || ptr == nullptr) return Ret(hipErrorInvalidValue);
  uint64_t base = 0;
  Range r;
  *attr = hipPointerAttribute_t{};
  if (proc->Lookup(Ptr(ptr), &base, &r)) {
    attr->memoryType = r.kind == MemKind::kArray ? hipMemoryTypeArray : hipMemoryTypeDevice;
    attr->device = r.device;
    attr->devicePointer = const_cast<void*>(ptr);
    attr->isManaged = r.kind == MemKind::kManaged;
    if (r.kind == MemKind::kManaged) attr->hostPointer = const_cast<void*>(ptr);
    return hipSuccess;
  }
  if (proc->IsPinned(Ptr(ptr))) {
    attr->memoryType = hipMemoryTypeHost;
    attr->device = t_device;
    attr->devicePointer = const_cast<void*>(ptr);  // mapped: the same address on both sides
    attr->hostPointer = const_cast<void*>(ptr);
    return hipSuccess;
  }
  return Ret(hipErrorInvalidValue);  // pageable host memory HIP does not know
}

// ---- arrays ----

hipError_t hipMallocArray(hipArray** array, const hipChannelFormatDesc* desc, size_t width, size_t height,
                          unsigned int flags) {
  if (desc == nullptr) return Ret(hipErrorInvalidValue);
  const int bits = desc->x + desc->y + desc->z + desc->w;
  if (bits <= 0 || bits % 8) return Ret(hipErrorInvalidValue);
  hipArray shape{};
  shape.desc = *desc;
  shape.type = flags;
  shape.NumChannels = (desc->x > 0) + (desc->y > 0) + (desc->z > 0) + (desc->w > 0);
  return NewArray(array, width, height, 0, static_cast<size_t>(bits / 8), shape);
}

hipError_t hipMalloc3DArray(hipArray** array, const hipChannelFormatDesc* desc, hipExtent extent, unsigned int flags) {
  if (desc == nullptr) return Ret(hipErrorInvalidValue);
  const int bits = desc->x + desc->y + desc->z + desc->w;
  if (bits <= 0 || bits % 8) return Ret(hipErrorInvalidValue);
  hipArray shape{};
  shape.desc = *desc;
  shape.type = flags;
  shape.NumChannels = (desc->x > 0) + (desc->y > 0) + (desc->z > 0) + (desc->w > 0);
  return NewArray(array, extent.width, extent.height, extent.depth, static_cast<size_t>(bits / 8), shape);
}

hipError_t hipArrayCreate(hipArray** array, const HIP_ARRAY_DESCRIPTOR* d) {
  if (d == nullptr || !(d->NumChannels == 1 || d->NumChannels == 2 || d->NumChannels == 4))
    return Ret(hipErrorInvalidValue);
  hipArray shape{};
  shape.Format = d->Format;
  shape.NumChannels = d->NumChannels;
  shape.isDrv = true;
  return NewArray(array, d->Width, d->Height, 0, FormatBytes(d->Format) * d->NumChannels, shape);
}

hipError_t hipFreeArray(hipArray* array) { return DestroyArray(array); }
hipError_t hipArrayDestroy(hipArray* array) { return DestroyArray(array); }

// ---- stream-ordered allocation ----

hipError_t hipDeviceGetDefaultMemPool(hipMemPool_t* out, int device) {
  HIP_INIT();
  if (out == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  *out = reinterpret_cast<hipMemPool_t>(proc->DefaultPool(device));
  return hipSuccess;
}

hipError_t hipDeviceGetMemPool(hipMemPool_t* out, int device) {
  HIP_INIT();
  if (out == nullptr) return Ret(hipErrorInvalidValue);
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  *out = reinterpret_cast<hipMemPool_t>(proc->CurrentPool(device));
  return hipSuccess;
}

hipError_t hipDeviceSetMemPool(int device, hipMemPool_t h) {
  HIP_INIT();
  if (!ValidDevice(proc, device)) return Ret(hipErrorInvalidDevice);
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  if (pool->device != device) return Ret(hipErrorInvalidValue);
  proc->SetCurrentPool(device, pool);
  return hipSuccess;
}

hipError_t hipMemPoolCreate(hipMemPool_t* out, const hipMemPoolProps* props) {
  HIP_INIT();
  if (out == nullptr || props == nullptr || props->allocType != hipMemAllocationTypePinned ||
      !ValidLocation(proc, props->location))
    return Ret(hipErrorInvalidValue);
  MemPool* pool;
  HIP_TRY(ToHip(proc->CreatePool(props->location.id, &pool)));
  *out = reinterpret_cast<hipMemPool_t>(pool);
  return hipSuccess;
}

hipError_t hipMemPoolDestroy(hipMemPool_t h) {
  HIP_INIT();
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  return Ret(ToHip(proc->DestroyPool(pool)));
}

hipError_t hipMemPoolTrimTo(hipMemPool_t h, size_t keep) {
  HIP_INIT();
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  proc->PoolTrim(pool, keep);
  return hipSuccess;
}

hipError_t hipMemPoolSetAttribute(hipMemPool_t h, hipMemPoolAttr attr, void* value) {
  HIP_INIT();
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  if (value == nullptr) return Ret(hipErrorInvalidValue);
  std::lock_guard<std::mutex> lock(proc->pool_mutex());
  switch (attr) {
    case hipMemPoolAttrReleaseThreshold: pool->release_threshold = *static_cast<uint64_t*>(value); break;
    case hipMemPoolAttrReservedMemHigh:  // only a reset (to 0) may be written
      if (*static_cast<uint64_t*>(value) != 0) return Ret(hipErrorInvalidValue);
      pool->reserved_high = pool->reserved;
      break;
    case hipMemPoolAttrUsedMemHigh:
      if (*static_cast<uint64_t*>(value) != 0) return Ret(hipErrorInvalidValue);
      pool->used_high = pool->used;
      break;
    case hipMemPoolReuseFollowEventDependencies:
    case hipMemPoolReuseAllowOpportunistic:
    case hipMemPoolReuseAllowInternalDependencies: break;
    default: return Ret(hipErrorInvalidValue);
  }
  return hipSuccess;
}

hipError_t hipMemPoolGetAttribute(hipMemPool_t h, hipMemPoolAttr attr, void* value) {
  HIP_INIT();
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  if (value == nullptr) return Ret(hipErrorInvalidValue);
  std::lock_guard<std::mutex> lock(proc->pool_mutex());
  auto* v64 = static_cast<uint64_t*>(value);
  switch (attr) {
    case hipMemPoolAttrReleaseThreshold: *v64 = pool->release_threshold; break;
    case hipMemPoolAttrReservedMemCurrent: *v64 = pool->reserved; break;
    case hipMemPoolAttrReservedMemHigh: *v64 = pool->reserved_high; break;
    case hipMemPoolAttrUsedMemCurrent: *v64 = pool->used; break;
    case hipMemPoolAttrUsedMemHigh: *v64 = pool->used_high; break;
    case hipMemPoolReuseFollowEventDependencies:
    case hipMemPoolReuseAllowOpportunistic:
    case hipMemPoolReuseAllowInternalDependencies: *static_cast<int*>(value) = 1; break;
    default: return Ret(hipErrorInvalidValue);
  }
  return hipSuccess;
}

hipError_t hipMallocFromPoolAsync(void** ptr, size_t size, hipMemPool_t h, hipStream_t s) {
  HIP_INIT();
  MemPool* pool;
  HIP_TRY(PoolOf(proc, h, &pool));
  HIP_STREAM(s);
  if (ptr == nullptr) return Ret(hipErrorInvalidValue);
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->PoolAllocate(pool, size, &a)));
  *ptr = reinterpret_cast<void*>(a);
  return hipSuccess;
}

hipError_t hipMallocAsync(void** ptr, size_t size, hipStream_t s) {
  HIP_INIT();
  HIP_STREAM(s);
  if (ptr == nullptr) return Ret(hipErrorInvalidValue);
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->PoolAllocate(proc->CurrentPool(stream->device), size, &a)));
  *ptr = reinterpret_cast<void*>(a);
  return hipSuccess;
}

hipError_t hipFreeAsync(void* ptr, hipStream_t s) {
  HIP_INIT();
  HIP_STREAM(s);
  return Ret(ToHip(proc->PoolFree(Ptr(ptr), stream)));
}

// ---- virtual memory management ----

hipError_t hipMemGetAllocationGranularity(size_t* granularity, const hipMemAllocationProp* prop,
                                          hipMemAllocationGranularity_flags) {
  HIP_INIT();
  if (granularity == nullptr || prop == nullptr || !ValidLocation(proc, prop->location))
    return Ret(hipErrorInvalidValue);
  *granularity = kVmmGranularity;
  return hipSuccess;
}

hipError_t hipMemCreate(hipMemGenericAllocationHandle_t* handle, size_t size, const hipMemAllocationProp* prop,
                        unsigned long long flags) {
  HIP_INIT();
  if (handle == nullptr || prop == nullptr || flags != 0 || prop->type != hipMemAllocationTypePinned ||
      !ValidLocation(proc, prop->location))
    return Ret(hipErrorInvalidValue);
  OutAddress h = 0;
  HIP_TRY(ToHip(proc->VmmCreate(prop->location.id, size, &h)));
  *handle = reinterpret_cast<hipMemGenericAllocationHandle_t>(h);
  return hipSuccess;
}

hipError_t hipMemRelease(hipMemGenericAllocationHandle_t handle) {
  HIP_INIT();
  return Ret(ToHip(proc->VmmRelease(Ptr(handle))));
}

hipError_t hipMemAddressReserve(void** ptr, size_t size, size_t alignment, void*, unsigned long long flags) {
  HIP_INIT();
  if (ptr == nullptr || flags != 0) return Ret(hipErrorInvalidValue);
  OutAddress a = 0;
  HIP_TRY(ToHip(proc->VmmReserve(size, alignment, &a)));
  *ptr = reinterpret_cast<void*>(a);
  return hipSuccess;
}

hipError_t hipMemAddressFree(void* ptr, size_t size) {
  HIP_INIT();
  return Ret(ToHip(proc->VmmFree(Ptr(ptr), size)));
}

hipError_t hipMemMap(void* ptr, size_t size, size_t offset, hipMemGenericAllocationHandle_t handle,
                     unsigned long long flags) {
  HIP_INIT();
  if (flags != 0) return Ret(hipErrorInvalidValue);
  return Ret(ToHip(proc->VmmMap(Ptr(ptr), size, offset, Ptr(handle))));
}

hipError_t hipMemUnmap(void* ptr, size_t size) {
  HIP_INIT();
  return Ret(ToHip(proc->VmmUnmap(Ptr(ptr), size)));
}

hipError_t hipMemSetAccess(void* ptr, size_t size, const hipMemAccessDesc* desc, size_t count) {
  HIP_INIT();
  if (desc == nullptr || count == 0) return Ret(hipErrorInvalidValue);
  bool rw = false;
  for (size_t i = 0; i < count; ++i) {
    if (!ValidLocation(proc, desc[i].location)) return Ret(hipErrorInvalidDevice);
    rw = rw || desc[i].flags == hipMemAccessFlagsProtReadWrite;
  }
  return Ret(ToHip(proc->VmmSetAccess(Ptr(ptr), size, rw)));
}

// ---- copies and memsets ----

hipError_t hipMemcpy(void* dst, const void* src, size_t n, hipMemcpyKind kind) {
  return CopyKinded(dst, src, n, kind, nullptr, false);
}
hipError_t hipMemcpyAsync(void* dst, const void* src, size_t n, hipMemcpyKind kind, hipStream_t s) {
  return CopyKinded(dst, src, n, kind, s, true);
}
hipError_t hipMemcpyHtoD(hipDeviceptr_t dst, void* src, size_t n) {
  return CopyKinded(dst, src, n, hipMemcpyHostToDevice, nullptr, false);
}
hipError_t hipMemcpyDtoH(void* dst, hipDeviceptr_t src, size_t n) {
  return CopyKinded(dst, src, n, hipMemcpyDeviceToHost, nullptr, false);
}
hipError_t hipMemcpyDtoD(hipDeviceptr_t dst, hipDeviceptr_t src, size_t n) {
  return CopyKinded(dst, src, n, hipMemcpyDeviceToDevice, nullptr, false);
}
hipError_t hipMemcpyHtoDAsync(hipDeviceptr_t dst, void* src, size_t n, hipStream_t s) {
  return CopyKinded(dst, src, n, hipMemcpyHostToDevice, s, true);
}
hipError_t hipMemcpyDtoHAsync(void* dst, hipDeviceptr_t src, size_t n, hipStream_t s) {
  return CopyKinded(dst, src, n, hipMemcpyDeviceToHost, s, true);
}
hipError_t hipMemcpyDtoDAsync(hipDeviceptr_t dst, hipDeviceptr_t src, size_t n, hipStream_t s) {
  return CopyKinded(dst, src, n, hipMemcpyDeviceToDevice, s, true);
}

hipError_t hipMemcpyPeer(void* dst, int dst_device, const void* src, int src_device, size_t n) {
  HIP_INIT();
  if (!ValidDevice(proc, dst_device) || !ValidDevice(proc, src_device)) return Ret(hipErrorInvalidDevice);
  return CopyKinded(dst, src, n, hipMemcpyDeviceToDevice, nullptr, false);
}

hipError_t hipMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t n, hipStream_t s) {
  HIP_INIT();
  if (!ValidDevice(proc, dst_device) || !ValidDevice(proc, src_device)) return Ret(hipErrorInvalidDevice);
  return CopyKinded(dst, src, n, hipMemcpyDeviceToDevice, s, true);
}

hipError_t hipMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                       hipMemcpyKind kind) {
  return Copy2DKinded(dst, dpitch, src, spitch, width, height, kind, nullptr, false);
}
hipError_t hipMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                            hipMemcpyKind kind, hipStream_t s) {
  return Copy2DKinded(dst, dpitch, src, spitch, width, height, kind, s, true);
}
hipError_t hipMemset2D(void* dst, size_t pitch, int value, size_t width, size_t height) {
  return Memset2D(dst, pitch, value, width, height, nullptr, false);
}
hipError_t hipMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height, hipStream_t s) {
  return Memset2D(dst, pitch, value, width, height, s, true);
}
hipError_t hipMemsetD16(hipDeviceptr_t dst, unsigned short value, size_t n) {
  return MemsetElems(dst, value, 2, n, nullptr, false);
}
hipError_t hipMemsetD16Async(hipDeviceptr_t dst, unsigned short value, size_t n, hipStream_t s) {
  return MemsetElems(dst, value, 2, n, s, true);
}
hipError_t hipMemsetD8Async(hipDeviceptr_t dst, unsigned char value, size_t n, hipStream_t s) {
  return MemsetElems(dst, value, 1, n, s, true);
}

hipError_t hipMemset(void* dst, int value, size_t n) {
  return MemsetElems(dst, static_cast<uint8_t>(value), 1, n, nullptr, false);
}
hipError_t hipMemsetAsync(void* dst, int value, size_t n, hipStream_t s) {
  return MemsetElems(dst, static_cast<uint8_t>(value), 1, n, s, true);
}
hipError_t hipMemsetD8(hipDeviceptr_t dst, unsigned char value, size_t n) {
  return MemsetElems(dst, value, 1, n, nullptr, false);
}
hipError_t hipMemsetD32(hipDeviceptr_t dst, int value, size_t n) {
  return MemsetElems(dst, static_cast<uint32_t>(value), 4, n, nullptr, false);
}
hipError_t hipMemsetD32Async(hipDeviceptr_t dst, int value, size_t n, hipStream_t s) {
  return MemsetElems(dst, static_cast<uint32_t>(value), 4, n, s, true);
}

}  // extern "C"
