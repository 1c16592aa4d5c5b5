// simgpu's CUDA driver front: the libcuda.so.1 entry points, translated onto Process.
// Devices, contexts, memory, copies. Symbols carry their real ABI names (cuMemAlloc_v2,
// …); the entry-point table generated from the toolkit says which name and version
// each answers.
#include "cuda_front.h"

using namespace simgpu;
using namespace simgpu::cuda;

extern "C" {

// Not a CUDA entry point: the samples look it up (dlsym) to know that kernels here take
// modeled time but compute nothing. No real driver exports it, so a GPU whatever its
// name is never taken for the simulator, nor a simulated GPU for a real one.
const char* simgpuCudaDriver() { return "simgpu"; }

// ---- initialization, versions, errors ----

CUresult cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  // As with real drivers, a child forked after initialization cannot use CUDA: its
  // parent's queues and node slot are not its own.
  static std::once_flag fork_guard;
  std::call_once(fork_guard, [] {
    pthread_atfork(nullptr, nullptr, [] {
      g_process.store(nullptr);
      g_forked_child = true;
    });
  });
  if (g_forked_child) return CUDA_ERROR_NOT_INITIALIZED;
  Process* p = Process::Get(nullptr);  // prints the reason once on failure
  if (p == nullptr) return CUDA_ERROR_NO_DEVICE;
  g_process.store(p, std::memory_order_release);
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::string error;
  Process* p = g_process.load();
  *version = p ? p->config().driver_version : 13000;
  return CUDA_SUCCESS;
}

CUresult cuGetExportTable(const void** table, const CUuuid*) {
  if (table) *table = nullptr;
  return CUDA_ERROR_NOT_SUPPORTED;  // private runtime tables are not simulated
}

CUresult cuProfilerStart() { return CUDA_SUCCESS; }
CUresult cuProfilerStop() { return CUDA_SUCCESS; }

// ---- devices ----

CUresult cuDeviceGetCount(int* count) {
  SIM_INIT();
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = proc->device_count();
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  SIM_INIT();
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  SIM_INIT();
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, static_cast<size_t>(len), "%s", proc->gpu(dev).name.c_str());
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  SIM_INIT();
  if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = proc->gpu(dev).memory_bytes;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attr, CUdevice dev) {
  SIM_INIT();
  if (value == nullptr || attr <= 0 || attr >= CU_DEVICE_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *value = DeviceAttribute(proc, attr, dev);
  return CUDA_SUCCESS;
}

CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice dev) {
  SIM_INIT();
  if (major == nullptr || minor == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *major = proc->gpu(dev).cc_major;
  *minor = proc->gpu(dev).cc_minor;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) {
  SIM_INIT();
  if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  UuidBytes(proc->gpu(dev).uuid, reinterpret_cast<unsigned char*>(uuid->bytes));
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice dev) { return cuDeviceGetUuid(uuid, dev); }

CUresult cuDeviceGetLuid(char*, unsigned int*, CUdevice) { return CUDA_ERROR_NOT_SUPPORTED; }

CUresult cuDeviceGetPCIBusId(char* bus_id, int len, CUdevice dev) {
  SIM_INIT();
  if (bus_id == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(bus_id, static_cast<size_t>(len), "%s", proc->gpu(dev).pci_bus_id.c_str());
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetByPCIBusId(CUdevice* dev, const char* bus_id) {
  SIM_INIT();
  if (dev == nullptr || bus_id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (int d = 0; d < proc->device_count(); ++d) {
    if (strcasecmp(proc->gpu(d).pci_bus_id.c_str(), bus_id) == 0 ||
        strcasecmp(proc->gpu(d).pci_bus_id.c_str() + 5, bus_id) == 0) {  // "bb:dd.f" form
      *dev = d;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuDeviceCanAccessPeer(int* can, CUdevice dev, CUdevice peer) {
  SIM_INIT();
  if (can == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev) || !ValidDevice(proc, peer)) return CUDA_ERROR_INVALID_DEVICE;
  *can = dev != peer && proc->config().link(dev, peer) != LinkKind::kNone;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetP2PAttribute(int* value, CUdevice_P2PAttribute attr, CUdevice src, CUdevice dst) {
  SIM_INIT();
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, src) || !ValidDevice(proc, dst) || src == dst) return CUDA_ERROR_INVALID_DEVICE;
  const LinkKind link = proc->config().link(src, dst);
  switch (attr) {
    case CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK: *value = link == LinkKind::kNvlink ? 0 : 1; break;
    case CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED: *value = link != LinkKind::kNone; break;
    case CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED: *value = link == LinkKind::kNvlink; break;
    case CU_DEVICE_P2P_ATTRIBUTE_CUDA_ARRAY_ACCESS_SUPPORTED: *value = link != LinkKind::kNone; break;
    case CU_DEVICE_P2P_ATTRIBUTE_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED: *value = 0; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetExecAffinitySupport(int* supported, CUexecAffinityType, CUdevice dev) {
  SIM_INIT();
  if (supported == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *supported = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetTexture1DLinearMaxWidth(size_t* width, CUarray_format, unsigned, CUdevice dev) {
  SIM_INIT();
  if (width == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *width = 1u << 27;
  return CUDA_SUCCESS;
}

// ---- contexts ----

CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  SIM_INIT();
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  SIM_TRY(ToCu(proc->ActivatePrimary(dev)));
  proc->RetainPrimary(dev);
  *pctx = reinterpret_cast<CUcontext>(proc->PrimaryContext(dev));
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  SIM_INIT();
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  return ToCu(proc->ReleasePrimary(dev));
}

CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags) {
  SIM_INIT();
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  if (flags & ~0xffu) return CUDA_ERROR_INVALID_VALUE;
  proc->PrimaryContext(dev)->flags = flags;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int* flags, int* active) {
  SIM_INIT();
  if (flags == nullptr || active == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *flags = proc->PrimaryContext(dev)->flags;
  *active = proc->PrimaryRefs(dev) > 0;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  SIM_INIT();
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  proc->SyncDevice(dev);
  return CUDA_SUCCESS;
}

static CUresult CreateAndPush(CUcontext* pctx, unsigned flags, CUdevice dev, const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  if (pctx == nullptr || (flags & ~0xffu)) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  Context* c = nullptr;
  SIM_TRY(ToCu(proc->CreateContext(dev, flags, &c)));
  Process::context_stack.push_back(c);
  *pctx = reinterpret_cast<CUcontext>(c);
  return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int flags, CUdevice dev) { return CreateAndPush(pctx, flags, dev); }

CUresult cuCtxCreate_v3(CUcontext* pctx, CUexecAffinityParam* params, int num, unsigned int flags, CUdevice dev) {
  if (params != nullptr && num > 0) return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
  return CreateAndPush(pctx, flags, dev);
}

CUresult cuCtxCreate_v4(CUcontext* pctx, CUctxCreateParams* params, unsigned int flags, CUdevice dev) {
  if (params != nullptr && (params->numExecAffinityParams > 0 || params->cigParams != nullptr))
    return CUDA_ERROR_NOT_SUPPORTED;
  return CreateAndPush(pctx, flags, dev);
}

CUresult cuCtxDestroy_v2(CUcontext c) {
  SIM_INIT();
  return ToCu(proc->DestroyContext(reinterpret_cast<Context*>(c)));
}

CUresult cuCtxPushCurrent_v2(CUcontext c) {
  SIM_INIT();
  auto* ctx = reinterpret_cast<Context*>(c);
  if (!proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  Process::context_stack.push_back(ctx);
  return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent_v2(CUcontext* pctx) {
  SIM_INIT();
  auto& stack = Process::context_stack;
  if (stack.empty()) return CUDA_ERROR_INVALID_CONTEXT;
  if (pctx) *pctx = reinterpret_cast<CUcontext>(stack.back());
  stack.pop_back();
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext c) {
  SIM_INIT();
  auto& stack = Process::context_stack;
  if (c == nullptr) {
    if (!stack.empty()) stack.pop_back();
    return CUDA_SUCCESS;
  }
  auto* ctx = reinterpret_cast<Context*>(c);
  if (!proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (stack.empty())
    stack.push_back(ctx);
  else
    stack.back() = ctx;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* pctx) {
  SIM_INIT();
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pctx = reinterpret_cast<CUcontext>(Current());
  return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice* device) {
  SIM_CTX();
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *device = ctx->device;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice_v2(CUdevice* device, CUcontext c) {
  SIM_INIT();
  if (c == nullptr) return cuCtxGetDevice(device);
  auto* ctx = reinterpret_cast<Context*>(c);
  if (!proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *device = ctx->device;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetFlags(unsigned int* flags) {
  SIM_CTX();
  if (flags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *flags = ctx->flags;
  return CUDA_SUCCESS;
}

CUresult cuCtxSetFlags(unsigned int flags) {
  SIM_CTX();
  ctx->flags = flags;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetId(CUcontext c, unsigned long long* id) {
  SIM_INIT();
  auto* ctx = c ? reinterpret_cast<Context*>(c) : Current();
  if (ctx == nullptr || !proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *id = ctx->id;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetApiVersion(CUcontext c, unsigned int* version) {
  SIM_INIT();
  auto* ctx = c ? reinterpret_cast<Context*>(c) : Current();
  if (ctx == nullptr || !proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = 3020;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize() {
  SIM_CTX();
  proc->SyncDevice(ctx->device);
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize_v2(CUcontext c) {
  SIM_INIT();
  if (c == nullptr) return cuCtxSynchronize();
  auto* ctx = reinterpret_cast<Context*>(c);
  if (!proc->ValidContext(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  proc->SyncDevice(ctx->device);
  return CUDA_SUCCESS;
}

CUresult cuCtxGetLimit(size_t* value, CUlimit limit) {
  SIM_CTX();
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (limit) {
    case CU_LIMIT_STACK_SIZE: *value = 1024; break;
    case CU_LIMIT_PRINTF_FIFO_SIZE: *value = 1 << 20; break;
    case CU_LIMIT_MALLOC_HEAP_SIZE: *value = 8 << 20; break;
    case CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH: *value = 2; break;
    case CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT: *value = 2048; break;
    case CU_LIMIT_MAX_L2_FETCH_GRANULARITY: *value = 64; break;
    case CU_LIMIT_PERSISTING_L2_CACHE_SIZE: *value = 0; break;
    default: return CUDA_ERROR_UNSUPPORTED_LIMIT;
  }
  return CUDA_SUCCESS;
}

CUresult cuCtxSetLimit(CUlimit limit, size_t) {
  SIM_CTX();
  return limit < CU_LIMIT_MAX ? CUDA_SUCCESS : CUDA_ERROR_UNSUPPORTED_LIMIT;
}

CUresult cuCtxGetCacheConfig(CUfunc_cache* config) {
  SIM_CTX();
  if (config == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *config = CU_FUNC_CACHE_PREFER_NONE;
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCacheConfig(CUfunc_cache) {
  SIM_CTX();
  return CUDA_SUCCESS;
}

CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
  SIM_CTX();
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return CUDA_SUCCESS;
}

CUresult cuCtxResetPersistingL2Cache() {
  SIM_CTX();
  return CUDA_SUCCESS;
}

CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags) {
  SIM_CTX();
  auto* other = reinterpret_cast<Context*>(peer);
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (!proc->ValidContext(other)) return CUDA_ERROR_INVALID_CONTEXT;
  if (other->device == ctx->device || proc->config().link(ctx->device, other->device) == LinkKind::kNone)
    return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
  std::lock_guard<std::mutex> lock(ctx->mu);
  if (!ctx->peers.insert(other).second) return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
  return CUDA_SUCCESS;
}

CUresult cuCtxDisablePeerAccess(CUcontext peer) {
  SIM_CTX();
  auto* other = reinterpret_cast<Context*>(peer);
  if (!proc->ValidContext(other)) return CUDA_ERROR_INVALID_CONTEXT;
  std::lock_guard<std::mutex> lock(ctx->mu);
  return ctx->peers.erase(other) ? CUDA_SUCCESS : CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
}

// ---- memory ----

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  SIM_CTX();
  if (free_bytes == nullptr || total_bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const uint64_t cap = proc->node().capacity(ctx->device), used = proc->node().Used(ctx->device);
  *total_bytes = cap;
  *free_bytes = used >= cap ? 0 : cap - used;
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  SIM_CTX();
  if (dptr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->Allocate(ctx->device, bytes, MemKind::kDevice, dptr));
}

CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t width, size_t height, unsigned int elem) {
  SIM_CTX();
  if (dptr == nullptr || pitch == nullptr || width == 0 || height == 0) return CUDA_ERROR_INVALID_VALUE;
  if (elem != 4 && elem != 8 && elem != 16) return CUDA_ERROR_INVALID_VALUE;
  const size_t p = (width + 511) / 512 * 512;
  SIM_TRY(ToCu(proc->Allocate(ctx->device, p * height, MemKind::kDevice, dptr)));
  *pitch = p;
  return CUDA_SUCCESS;
}

CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int flags) {
  SIM_CTX();
  if (dptr == nullptr || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
    return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->Allocate(ctx->device, bytes, MemKind::kManaged, dptr));
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  SIM_INIT();
  return ToCu(proc->Free(dptr));
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* size, CUdeviceptr dptr) {
  SIM_INIT();
  uint64_t b;
  Range r;
  if (!proc->Lookup(dptr, &b, &r)) return CUDA_ERROR_NOT_FOUND;
  if (base) *base = b;
  if (size) *size = r.size;
  return CUDA_SUCCESS;
}

CUresult cuMemAllocHost_v2(void** pp, size_t bytes) {
  SIM_CTX();
  if (pp == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  proc->AddPinned(Ptr(p), bytes);
  *pp = p;
  return CUDA_SUCCESS;
}

CUresult cuMemHostAlloc(void** pp, size_t bytes, unsigned int) { return cuMemAllocHost_v2(pp, bytes); }

CUresult cuMemFreeHost(void* p) {
  SIM_INIT();
  if (!proc->RemovePinned(Ptr(p))) return CUDA_ERROR_INVALID_VALUE;
  std::free(p);
  return CUDA_SUCCESS;
}

CUresult cuMemHostRegister_v2(void* p, size_t bytes, unsigned int) {
  SIM_CTX();
  if (p == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  if (proc->IsPinned(Ptr(p))) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  proc->AddPinned(Ptr(p), bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemHostUnregister(void* p) {
  SIM_INIT();
  return proc->RemovePinned(Ptr(p)) ? CUDA_SUCCESS : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* dptr, void* p, unsigned int flags) {
  SIM_CTX();
  if (dptr == nullptr || flags != 0 || !proc->IsPinned(Ptr(p))) return CUDA_ERROR_INVALID_VALUE;
  *dptr = Ptr(p);  // unified addressing: the same address on both sides
  return CUDA_SUCCESS;
}

CUresult cuMemHostGetFlags(unsigned int* flags, void* p) {
  SIM_INIT();
  if (flags == nullptr || !proc->IsPinned(Ptr(p))) return CUDA_ERROR_INVALID_VALUE;
  *flags = CU_MEMHOSTALLOC_DEVICEMAP;
  return CUDA_SUCCESS;
}

CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attr, CUdeviceptr ptr) {
  SIM_INIT();
  if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  uint64_t base = 0;
  Range r;
  const bool dev = proc->Lookup(ptr, &base, &r);
  const bool pinned = !dev && proc->IsPinned(ptr);
  if (!dev && !pinned) return CUDA_ERROR_INVALID_VALUE;
  switch (attr) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
      *static_cast<CUcontext*>(data) = reinterpret_cast<CUcontext>(proc->PrimaryContext(dev ? r.device : 0));
      break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      *static_cast<unsigned*>(data) = dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
      break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *static_cast<CUdeviceptr*>(data) = ptr; break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
      if (dev && r.kind != MemKind::kManaged) return CUDA_ERROR_INVALID_VALUE;
      *static_cast<void**>(data) = reinterpret_cast<void*>(ptr);
      break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *static_cast<unsigned*>(data) = dev && r.kind == MemKind::kManaged; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *static_cast<int*>(data) = dev ? r.device : 0; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *static_cast<CUdeviceptr*>(data) = dev ? base : ptr; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *static_cast<size_t*>(data) = dev ? r.size : 0; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *static_cast<unsigned*>(data) = 1; break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: *static_cast<unsigned long long*>(data) = dev ? base : ptr; break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: *static_cast<unsigned*>(data) = 1; break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
      *static_cast<CUmemoryPool*>(data) = reinterpret_cast<CUmemoryPool>(dev ? r.pool : nullptr);
      break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: *static_cast<unsigned*>(data) = 0; break;
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: *static_cast<unsigned long long*>(data) = 0; break;
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

CUresult cuPointerGetAttributes(unsigned int n, CUpointer_attribute* attrs, void** data, CUdeviceptr ptr) {
  SIM_INIT();
  if (attrs == nullptr || data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < n; ++i) {
    CUresult r = cuPointerGetAttribute(data[i], attrs[i], ptr);
    if (r == CUDA_ERROR_INVALID_VALUE && attrs[i] == CU_POINTER_ATTRIBUTE_MEMORY_TYPE) {
      *static_cast<unsigned*>(data[i]) = 0;  // unregistered host memory: type 0, not an error
    } else if (r != CUDA_SUCCESS && r != CUDA_ERROR_INVALID_VALUE) {
      return r;
    }
  }
  return CUDA_SUCCESS;
}

CUresult cuArrayCreate_v2(CUarray* handle, const CUDA_ARRAY_DESCRIPTOR* d) {
  if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUDA_ARRAY3D_DESCRIPTOR d3{d->Width, d->Height, 0, d->Format, d->NumChannels, 0};
  return NewArray(&d3, 1, reinterpret_cast<Array**>(handle));
}

CUresult cuArray3DCreate_v2(CUarray* handle, const CUDA_ARRAY3D_DESCRIPTOR* d) {
  return NewArray(d, 1, reinterpret_cast<Array**>(handle));
}

CUresult cuMipmappedArrayCreate(CUmipmappedArray* handle, const CUDA_ARRAY3D_DESCRIPTOR* d, unsigned int levels) {
  return NewArray(d, static_cast<int>(levels), reinterpret_cast<Array**>(handle));
}

CUresult cuArrayDestroy(CUarray a) { return DestroyArray(a); }
CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { return DestroyArray(a); }

CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR* d, CUarray h) {
  SIM_INIT();
  auto* a = reinterpret_cast<Array*>(h);
  if (!proc->Valid(a, Tag::kArray)) return CUDA_ERROR_INVALID_HANDLE;
  if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *d = CUDA_ARRAY3D_DESCRIPTOR{a->width,    a->height, a->depth, static_cast<CUarray_format>(a->format),
                               a->channels, a->flags};
  return CUDA_SUCCESS;
}

CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR* d, CUarray h) {
  CUDA_ARRAY3D_DESCRIPTOR d3;
  SIM_TRY(cuArray3DGetDescriptor_v2(&d3, h));
  if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *d = CUDA_ARRAY_DESCRIPTOR{d3.Width, d3.Height, d3.Format, d3.NumChannels};
  return CUDA_SUCCESS;
}

// ---- copies and memsets ----

CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) { return CopyGeneric(dst, src, n, nullptr, false); }
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
  return CopyGeneric(dst, src, n, s, true);
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
  return CopyTyped(dst, true, Ptr(src), false, n, nullptr, false);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
  return CopyTyped(Ptr(dst), false, src, true, n, nullptr, false);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  return CopyTyped(dst, true, src, true, n, nullptr, false);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
  return CopyTyped(dst, true, Ptr(src), false, n, s, true);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) {
  return CopyTyped(Ptr(dst), false, src, true, n, s, true);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
  return CopyTyped(dst, true, src, true, n, s, true);
}
CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext, CUdeviceptr src, CUcontext, size_t n) {
  return CopyTyped(dst, true, src, true, n, nullptr, false);
}
CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext, CUdeviceptr src, CUcontext, size_t n, CUstream s) {
  return CopyTyped(dst, true, src, true, n, s, true);
}
CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D* c) { return Copy2DGeneric(c, nullptr, false); }
CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D* c) { return Copy2DGeneric(c, nullptr, false); }
CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D* c, CUstream s) { return Copy2DGeneric(c, s, true); }

CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
  return MemsetGeneric(d, 0, v, 1, n, 1, nullptr, false);
}
CUresult cuMemsetD16_v2(CUdeviceptr d, unsigned short v, size_t n) {
  return MemsetGeneric(d, 0, v, 2, n, 1, nullptr, false);
}
CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned int v, size_t n) {
  return MemsetGeneric(d, 0, v, 4, n, 1, nullptr, false);
}
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
  return MemsetGeneric(d, 0, v, 1, n, 1, s, true);
}
CUresult cuMemsetD16Async(CUdeviceptr d, unsigned short v, size_t n, CUstream s) {
  return MemsetGeneric(d, 0, v, 2, n, 1, s, true);
}
CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
  return MemsetGeneric(d, 0, v, 4, n, 1, s, true);
}
CUresult cuMemsetD2D8_v2(CUdeviceptr d, size_t p, unsigned char v, size_t w, size_t h) {
  return MemsetGeneric(d, p, v, 1, w, h, nullptr, false);
}
CUresult cuMemsetD2D16_v2(CUdeviceptr d, size_t p, unsigned short v, size_t w, size_t h) {
  return MemsetGeneric(d, p, v, 2, w, h, nullptr, false);
}
CUresult cuMemsetD2D32_v2(CUdeviceptr d, size_t p, unsigned int v, size_t w, size_t h) {
  return MemsetGeneric(d, p, v, 4, w, h, nullptr, false);
}
CUresult cuMemsetD2D8Async(CUdeviceptr d, size_t p, unsigned char v, size_t w, size_t h, CUstream s) {
  return MemsetGeneric(d, p, v, 1, w, h, s, true);
}
CUresult cuMemsetD2D16Async(CUdeviceptr d, size_t p, unsigned short v, size_t w, size_t h, CUstream s) {
  return MemsetGeneric(d, p, v, 2, w, h, s, true);
}
CUresult cuMemsetD2D32Async(CUdeviceptr d, size_t p, unsigned int v, size_t w, size_t h, CUstream s) {
  return MemsetGeneric(d, p, v, 4, w, h, s, true);
}

}  // extern "C"
