// simgpu's CUDA driver front, part two: streams, events, modules and libraries,
// launches, stream-ordered pools and virtual memory management.
#include "cuda_front.h"

using namespace simgpu;
using namespace simgpu::cuda;

namespace {

CUresult NewStream(CUstream* out, unsigned flags, int priority, const char* entry = __builtin_FUNCTION()) {
  SIM_CTX_AS(entry);
  if (out == nullptr || (flags & ~1u)) return CUDA_ERROR_INVALID_VALUE;
  auto* s = new Stream();
  s->ctx = ctx;
  s->device = ctx->device;
  s->flags = flags;
  s->priority = std::clamp(priority, -5, 0);
  proc->Track(s);
  *out = reinterpret_cast<CUstream>(s);
  return CUDA_SUCCESS;
}

CUresult EventRecord(CUevent h, CUstream s, const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  auto* e = reinterpret_cast<Event*>(h);
  if (!proc->Valid(e, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  SIM_STREAM(s);
  return ToCu(proc->RecordEvent(e, stream));
}

CUresult StreamCallback(CUstream h, std::function<void()> fn, const char* entry = __builtin_FUNCTION()) {
  SIM_INIT_AS(entry);
  SIM_STREAM(h);
  Work w;
  w.effect = [fn = std::move(fn)](uint64_t) { fn(); };
  proc->Submit(stream, std::move(w));
  return CUDA_SUCCESS;
}

CUresult PoolOf(Process* proc, CUmemoryPool h, MemPool** out) {
  auto* p = reinterpret_cast<MemPool*>(h);
  if (!proc->ValidPool(p)) return CUDA_ERROR_INVALID_VALUE;
  *out = p;
  return CUDA_SUCCESS;
}

bool ValidLocation(Process* proc, const CUmemLocation& loc) {
  return loc.type == CU_MEM_LOCATION_TYPE_DEVICE && ValidDevice(proc, loc.id);
}

}  // namespace

extern "C" {

// ---- streams ----

CUresult cuStreamCreate(CUstream* out, unsigned int flags) { return NewStream(out, flags, 0); }
CUresult cuStreamCreateWithPriority(CUstream* out, unsigned int flags, int priority) {
  return NewStream(out, flags, priority);
}

CUresult cuStreamDestroy_v2(CUstream h) {
  SIM_INIT();
  auto* s = reinterpret_cast<Stream*>(h);
  if (!proc->Valid(s, Tag::kStream)) return CUDA_ERROR_INVALID_HANDLE;
  // Work already queued still completes (as on real GPUs); the handle dies now.
  proc->Untrack(s);
  s->tag = Tag::kDead;
  Work w;
  w.effect = [s](uint64_t) { delete s; };
  proc->executor(s->device).Submit(std::move(w));
  return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream h) {
  SIM_INIT();
  SIM_STREAM(h);
  proc->SyncStream(stream);
  return CUDA_SUCCESS;
}

CUresult cuStreamQuery(CUstream h) {
  SIM_INIT();
  SIM_STREAM(h);
  return proc->executor(stream->device).Done(stream->last_seq.load()) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuStreamWaitEvent(CUstream h, CUevent ev, unsigned int) {
  SIM_INIT();
  SIM_STREAM(h);
  auto* e = reinterpret_cast<Event*>(ev);
  if (!proc->Valid(e, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  return ToCu(proc->WaitEvent(stream, e));
}

CUresult cuStreamGetFlags(CUstream h, unsigned int* flags) {
  SIM_INIT();
  SIM_STREAM(h);
  if (flags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *flags = stream->flags;
  return CUDA_SUCCESS;
}

CUresult cuStreamGetPriority(CUstream h, int* priority) {
  SIM_INIT();
  SIM_STREAM(h);
  if (priority == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *priority = stream->priority;
  return CUDA_SUCCESS;
}

CUresult cuStreamGetId(CUstream h, unsigned long long* id) {
  SIM_INIT();
  SIM_STREAM(h);
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *id = reinterpret_cast<unsigned long long>(stream);
  return CUDA_SUCCESS;
}

CUresult cuStreamGetCtx(CUstream h, CUcontext* pctx) {
  SIM_INIT();
  SIM_STREAM(h);
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pctx = reinterpret_cast<CUcontext>(stream->ctx);
  return CUDA_SUCCESS;
}

CUresult cuStreamGetDevice(CUstream h, CUdevice* dev) {
  SIM_INIT();
  SIM_STREAM(h);
  if (dev == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *dev = stream->device;
  return CUDA_SUCCESS;
}

CUresult cuStreamIsCapturing(CUstream h, CUstreamCaptureStatus* status) {
  SIM_INIT();
  SIM_STREAM(h);
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *status = CU_STREAM_CAPTURE_STATUS_NONE;  // graph capture is not simulated
  return CUDA_SUCCESS;
}

CUresult cuLaunchHostFunc(CUstream h, CUhostFn fn, void* data) {
  if (fn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return StreamCallback(h, [fn, data] { fn(data); });
}

CUresult cuStreamAddCallback(CUstream h, CUstreamCallback cb, void* data, unsigned int flags) {
  if (cb == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return StreamCallback(h, [cb, h, data] { cb(h, CUDA_SUCCESS, data); });
}

// ---- events ----

CUresult cuEventCreate(CUevent* out, unsigned int flags) {
  SIM_CTX();
  if (out == nullptr || (flags & ~0xfu)) return CUDA_ERROR_INVALID_VALUE;
  if ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING)) return CUDA_ERROR_INVALID_VALUE;
  auto* e = new Event();
  e->flags = flags;
  e->device = ctx->device;
  proc->Track(e);
  *out = reinterpret_cast<CUevent>(e);
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent h) {
  SIM_INIT();
  auto* e = reinterpret_cast<Event*>(h);
  if (!proc->Valid(e, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  proc->Untrack(e);
  e->tag = Tag::kDead;
  Work w;  // pending records still write to it: free it behind them
  w.effect = [e](uint64_t) { delete e; };
  proc->executor(e->device).Submit(std::move(w));
  return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent h, CUstream s) { return EventRecord(h, s); }
CUresult cuEventRecordWithFlags(CUevent h, CUstream s, unsigned int) { return EventRecord(h, s); }

CUresult cuEventQuery(CUevent h) {
  SIM_INIT();
  auto* e = reinterpret_cast<Event*>(h);
  if (!proc->Valid(e, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  const uint64_t seq = e->seq.load();
  return seq == 0 || proc->executor(e->device).Done(seq) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuEventSynchronize(CUevent h) {
  SIM_INIT();
  auto* e = reinterpret_cast<Event*>(h);
  if (!proc->Valid(e, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  if (uint64_t seq = e->seq.load()) proc->executor(e->device).Wait(seq);
  proc->TrimPoolsAtSync();
  return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
  SIM_INIT();
  auto* a = reinterpret_cast<Event*>(start);
  auto* b = reinterpret_cast<Event*>(end);
  if (ms == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!proc->Valid(a, Tag::kEvent) || !proc->Valid(b, Tag::kEvent)) return CUDA_ERROR_INVALID_HANDLE;
  if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING) return CUDA_ERROR_INVALID_HANDLE;
  if (a->seq.load() == 0 || b->seq.load() == 0) return CUDA_ERROR_INVALID_HANDLE;
  if (!proc->executor(a->device).Done(a->seq.load()) || !proc->executor(b->device).Done(b->seq.load()))
    return CUDA_ERROR_NOT_READY;
  *ms = static_cast<float>((static_cast<double>(b->time_ns.load()) - static_cast<double>(a->time_ns.load())) / 1e6);
  return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }

// ---- modules, libraries, functions ----

CUresult cuModuleLoadData(CUmodule* out, const void* image) {
  SIM_CTX();
  (void)ctx;
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return NewModule(proc, image, reinterpret_cast<Module**>(out));
}

CUresult cuModuleLoadDataEx(CUmodule* out, const void* image, unsigned int, CUjit_option*, void**) {
  return cuModuleLoadData(out, image);
}

CUresult cuModuleLoadFatBinary(CUmodule* out, const void* image) { return cuModuleLoadData(out, image); }

CUresult cuModuleLoad(CUmodule* out, const char* path) {
  SIM_CTX();
  (void)ctx;
  if (out == nullptr || path == nullptr) return CUDA_ERROR_INVALID_VALUE;
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return CUDA_ERROR_FILE_NOT_FOUND;
  std::string image;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) image.append(buf, n);
  std::fclose(f);
  return NewModule(proc, image.c_str(), reinterpret_cast<Module**>(out));
}

CUresult cuModuleUnload(CUmodule h) {
  SIM_INIT();
  auto* m = reinterpret_cast<Module*>(h);
  if (!proc->Valid(m, Tag::kModule)) return CUDA_ERROR_INVALID_HANDLE;
  for (auto& [name, f] : m->functions) {
    proc->Untrack(f.get());
    f->tag = Tag::kDead;
  }
  proc->Retire(m);
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* out, CUmodule h, const char* name) {
  SIM_INIT();
  return ModuleFunction(proc, reinterpret_cast<Module*>(h), name, reinterpret_cast<Function**>(out));
}

CUresult cuModuleGetGlobal_v2(CUdeviceptr*, size_t*, CUmodule h, const char*) {
  SIM_INIT();
  if (!proc->Valid(reinterpret_cast<Module*>(h), Tag::kModule)) return CUDA_ERROR_INVALID_HANDLE;
  return CUDA_ERROR_NOT_FOUND;  // module globals are not simulated
}

CUresult cuLibraryLoadData(CUlibrary* out, const void* code, CUjit_option*, void**, unsigned int, CUlibraryOption*,
                           void**, unsigned int) {
  SIM_INIT();
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return NewModule(proc, code, reinterpret_cast<Module**>(out));  // a library is a context-free module
}

CUresult cuLibraryUnload(CUlibrary h) { return cuModuleUnload(reinterpret_cast<CUmodule>(h)); }

CUresult cuLibraryGetKernel(CUkernel* out, CUlibrary h, const char* name) {
  SIM_INIT();
  return ModuleFunction(proc, reinterpret_cast<Module*>(h), name, reinterpret_cast<Function**>(out));
}

CUresult cuLibraryGetModule(CUmodule* out, CUlibrary h) {
  SIM_INIT();
  if (!proc->Valid(reinterpret_cast<Module*>(h), Tag::kModule)) return CUDA_ERROR_INVALID_HANDLE;
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = reinterpret_cast<CUmodule>(h);
  return CUDA_SUCCESS;
}

CUresult cuKernelGetFunction(CUfunction* out, CUkernel k) {
  SIM_CTX();
  (void)ctx;
  if (AsFunction(proc, k) == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = reinterpret_cast<CUfunction>(k);
  return CUDA_SUCCESS;
}

CUresult cuFuncGetName(const char** name, CUfunction h) {
  SIM_INIT();
  Function* f = AsFunction(proc, h);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *name = f->name.c_str();
  return CUDA_SUCCESS;
}

CUresult cuKernelGetName(const char** name, CUkernel k) { return cuFuncGetName(name, reinterpret_cast<CUfunction>(k)); }

CUresult cuFuncGetModule(CUmodule* out, CUfunction h) {
  SIM_INIT();
  Function* f = AsFunction(proc, h);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = reinterpret_cast<CUmodule>(f->module);
  return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int* value, CUfunction_attribute attr, CUfunction h) {
  SIM_INIT();
  Function* f = AsFunction(proc, h);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (attr) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *value = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: *value = 90; break;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *value = 90; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = f->max_dynamic_shared; break;
    default: *value = 0;
  }
  return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction h, CUfunction_attribute attr, int value) {
  SIM_INIT();
  Function* f = AsFunction(proc, h);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (attr == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
    if (value < 0 || value > 232448) return CUDA_ERROR_INVALID_VALUE;
    f->max_dynamic_shared = value;
  }
  return CUDA_SUCCESS;
}

CUresult cuKernelSetAttribute(CUfunction_attribute attr, int value, CUkernel k, CUdevice) {
  return cuFuncSetAttribute(reinterpret_cast<CUfunction>(k), attr, value);
}

CUresult cuKernelGetAttribute(int* value, CUfunction_attribute attr, CUkernel k, CUdevice) {
  return cuFuncGetAttribute(value, attr, reinterpret_cast<CUfunction>(k));
}

CUresult cuFuncSetCacheConfig(CUfunction h, CUfunc_cache) {
  SIM_INIT();
  return AsFunction(proc, h) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// ---- launches ----

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, CUstream s, void**, void**) {
  SIM_INIT();
  return LaunchOn(proc, f, gx, gy, gz, bx, by, bz, shared, s);
}

CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                   unsigned int by, unsigned int bz, unsigned int shared, CUstream s, void**) {
  SIM_INIT();
  return LaunchOn(proc, f, gx, gy, gz, bx, by, bz, shared, s);
}

CUresult cuLaunchKernelEx(const CUlaunchConfig* c, CUfunction f, void**, void**) {
  SIM_INIT();
  if (c == nullptr || (c->numAttrs > 0 && c->attrs == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  return LaunchOn(proc, f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,
                  c->sharedMemBytes, c->hStream);
}

// ---- stream-ordered allocation ----

CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* out, CUdevice dev) {
  SIM_INIT();
  SIM_MEMPOOLS();
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *out = reinterpret_cast<CUmemoryPool>(proc->DefaultPool(dev));
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetMemPool(CUmemoryPool* out, CUdevice dev) {
  SIM_INIT();
  SIM_MEMPOOLS();
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  *out = reinterpret_cast<CUmemoryPool>(proc->CurrentPool(dev));
  return CUDA_SUCCESS;
}

CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool h) {
  SIM_INIT();
  SIM_MEMPOOLS();
  if (!ValidDevice(proc, dev)) return CUDA_ERROR_INVALID_DEVICE;
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  if (pool->device != dev) return CUDA_ERROR_INVALID_VALUE;
  proc->SetCurrentPool(dev, pool);
  return CUDA_SUCCESS;
}

CUresult cuMemPoolCreate(CUmemoryPool* out, const CUmemPoolProps* props) {
  SIM_INIT();
  SIM_MEMPOOLS();
  if (out == nullptr || props == nullptr || props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
      !ValidLocation(proc, props->location))
    return CUDA_ERROR_INVALID_VALUE;
  MemPool* pool;
  SIM_TRY(ToCu(proc->CreatePool(props->location.id, &pool)));
  *out = reinterpret_cast<CUmemoryPool>(pool);
  return CUDA_SUCCESS;
}

CUresult cuMemPoolDestroy(CUmemoryPool h) {
  SIM_INIT();
  SIM_MEMPOOLS();
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  return ToCu(proc->DestroyPool(pool));
}

CUresult cuMemPoolTrimTo(CUmemoryPool h, size_t keep) {
  SIM_INIT();
  SIM_MEMPOOLS();
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  proc->PoolTrim(pool, keep);
  return CUDA_SUCCESS;
}

CUresult cuMemPoolSetAttribute(CUmemoryPool h, CUmemPool_attribute attr, void* value) {
  SIM_INIT();
  SIM_MEMPOOLS();
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(proc->pool_mutex());
  switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: pool->release_threshold = *static_cast<cuuint64_t*>(value); break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
      if (*static_cast<cuuint64_t*>(value) != 0) return CUDA_ERROR_INVALID_VALUE;
      pool->reserved_high = pool->reserved;
      break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
      if (*static_cast<cuuint64_t*>(value) != 0) return CUDA_ERROR_INVALID_VALUE;
      pool->used_high = pool->used;
      break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult cuMemPoolGetAttribute(CUmemoryPool h, CUmemPool_attribute attr, void* value) {
  SIM_INIT();
  SIM_MEMPOOLS();
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(proc->pool_mutex());
  auto* v64 = static_cast<cuuint64_t*>(value);
  switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *v64 = pool->release_threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *v64 = pool->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *v64 = pool->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *v64 = pool->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *v64 = pool->used_high; break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *static_cast<int*>(value) = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytes, CUmemoryPool h, CUstream s) {
  SIM_INIT();
  SIM_MEMPOOLS();
  MemPool* pool;
  SIM_TRY(PoolOf(proc, h, &pool));
  SIM_STREAM(s);
  if (dptr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->PoolAllocate(pool, bytes, dptr));
}

CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream s) {
  SIM_INIT();
  SIM_MEMPOOLS();
  SIM_STREAM(s);
  if (dptr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->PoolAllocate(proc->CurrentPool(stream->device), bytes, dptr));
}

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
  SIM_INIT();
  SIM_MEMPOOLS();
  SIM_STREAM(s);
  return ToCu(proc->PoolFree(dptr, stream));
}

// ---- virtual memory management ----

CUresult cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                       CUmemAllocationGranularity_flags) {
  SIM_INIT();
  if (granularity == nullptr || prop == nullptr || !ValidLocation(proc, prop->location))
    return CUDA_ERROR_INVALID_VALUE;
  *granularity = kVmmGranularity;
  return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                     unsigned long long flags) {
  SIM_INIT();
  if (handle == nullptr || prop == nullptr || flags != 0 || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
      !ValidLocation(proc, prop->location))
    return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->VmmCreate(prop->location.id, size, handle));
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  SIM_INIT();
  return ToCu(proc->VmmRelease(handle));
}

CUresult cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr, unsigned long long flags) {
  SIM_INIT();
  if (ptr == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->VmmReserve(size, alignment, ptr));
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  SIM_INIT();
  return ToCu(proc->VmmFree(ptr, size));
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags) {
  SIM_INIT();
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->VmmMap(ptr, size, offset, handle));
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
  SIM_INIT();
  return ToCu(proc->VmmUnmap(ptr, size));
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  SIM_INIT();
  if (desc == nullptr || count == 0) return CUDA_ERROR_INVALID_VALUE;
  bool rw = false;
  for (size_t i = 0; i < count; ++i) {
    if (!ValidLocation(proc, desc[i].location)) return CUDA_ERROR_INVALID_DEVICE;
    rw = rw || desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  }
  return ToCu(proc->VmmSetAccess(ptr, size, rw));
}

CUresult cuMemGetAccess(unsigned long long* flags, const CUmemLocation* location, CUdeviceptr ptr) {
  SIM_INIT();
  if (flags == nullptr || location == nullptr) return CUDA_ERROR_INVALID_VALUE;
  Range r;
  if (!proc->Lookup(ptr, nullptr, &r) || r.kind != MemKind::kVmmMapping) return CUDA_ERROR_INVALID_VALUE;
  *flags = r.accessible ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_NONE;
  return CUDA_SUCCESS;
}

CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle* handle, void* addr) {
  SIM_INIT();
  if (handle == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return ToCu(proc->VmmRetain(Ptr(addr), handle));
}

CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp* prop, CUmemGenericAllocationHandle handle) {
  SIM_INIT();
  int device;
  uint64_t size;
  if (prop == nullptr || !proc->VmmInfo(handle, &device, &size)) return CUDA_ERROR_INVALID_VALUE;
  *prop = CUmemAllocationProp{};
  prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop->location.id = device;
  return CUDA_SUCCESS;
}

}  // extern "C"
