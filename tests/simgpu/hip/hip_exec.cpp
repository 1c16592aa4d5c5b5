// simgpu's HIP runtime front, part two: streams (CU masks included), events, modules,
// the kernel registry and launches, and stream capture into replayable graphs.
#include <dlfcn.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "hip_front.h"

using namespace simgpu;
using namespace simgpu::hip;

// Registration entry points that hipcc's generated code calls at start-up. They are not
// in the public headers; their C ABI is pointers only, so untyped pointers stand in.
extern "C" {
void** __hipRegisterFatBinary(const void* data);
void __hipRegisterFunction(void** modules, const void* host_function, char* device_function, const char* device_name,
                           unsigned int thread_limit, void* tid, void* bid, void* block_dim, void* grid_dim,
                           int* warp_size);
void __hipUnregisterFatBinary(void** modules);
}

namespace simgpu::hip {
namespace {

struct KernelRegistry {
  std::mutex mu;
  std::map<const void*, std::string> registered;  // __hipRegisterFunction names
  std::map<const void*, Function*> functions;
};

KernelRegistry& Registry() {
  static auto* r = new KernelRegistry();  // never destroyed: registration runs in static init and exit
  return *r;
}

// Graphs hold the operations captured from a stream, as closures replayed in order.
constexpr uint32_t kGraphMagic = 0x51a9a9a9, kGraphExecMagic = 0x51a9e0e0;
struct Graph {
  uint32_t magic = kGraphMagic;
  std::vector<CapturedOp> ops;
};
struct GraphExec {
  uint32_t magic = kGraphExecMagic;
  std::vector<CapturedOp> ops;
};

std::mutex g_graph_mu;
std::set<void*> g_graphs;
std::map<Stream*, Graph*> g_capturing;
std::atomic<int> g_capture_count{0};  // keeps the launch path lock-free when nothing captures

bool Capturing(Stream* s) {
  if (g_capture_count.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard<std::mutex> lock(g_graph_mu);
  return g_capturing.count(s) > 0;
}

}  // namespace

Function* KernelForHostFunction(Process* p, const void* host_function) {
  if (host_function == nullptr) return nullptr;
  KernelRegistry& r = Registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (auto it = r.functions.find(host_function); it != r.functions.end()) return it->second;
  std::string name;
  if (auto it = r.registered.find(host_function); it != r.registered.end()) {
    name = it->second;
  } else {
    Dl_info info;
    if (dladdr(host_function, &info) == 0 || info.dli_sname == nullptr || info.dli_saddr != host_function)
      return nullptr;
    name = info.dli_sname;
  }
  auto* f = new Function();
  f->name = name;
  p->Track(f);
  r.functions[host_function] = f;
  return f;
}

bool Capture(Stream* stream, CapturedOp op) {
  if (g_capture_count.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard<std::mutex> lock(g_graph_mu);
  auto it = g_capturing.find(stream);
  if (it == g_capturing.end()) return false;
  it->second->ops.push_back(std::move(op));
  return true;
}

}  // namespace simgpu::hip

namespace {

hipError_t NewStream(hipStream_t* out, unsigned flags, int priority, const uint32_t* mask, uint32_t mask_words,
                     const char* entry = __builtin_FUNCTION()) {
  HIP_DEVICE_AS(entry);
  if (out == nullptr || (flags & ~unsigned{hipStreamNonBlocking})) return Ret(hipErrorInvalidValue);
  auto* s = new Stream();
  s->ctx = proc->PrimaryContext(device);
  s->device = device;
  s->flags = flags;
  s->priority = std::clamp(priority, -1, 0);
  if (mask != nullptr) {
    const int cus = proc->gpu(device).cus;
    s->cu_mask.assign(mask, mask + mask_words);
    for (int cu = 0; cu < cus && cu / 32 < static_cast<int>(mask_words); ++cu)
      s->cus_enabled += (mask[cu / 32] >> (cu % 32)) & 1;
    if (s->cus_enabled == 0) {  // no compute unit of this device enabled
      delete s;
      return Ret(hipErrorInvalidValue);
    }
  }
  proc->AttachStream(s);
  proc->Track(s);
  *out = reinterpret_cast<hipStream_t>(s);
  return hipSuccess;
}

Event* AsEvent(Process* proc, hipEvent_t h) {
  auto* e = reinterpret_cast<Event*>(h);
  return proc->Valid(e, Tag::kEvent) ? e : nullptr;
}

hipError_t LaunchOn(Process* proc, Function* f, dim3 grid, dim3 block, size_t shared, hipStream_t h, hipEvent_t start,
                    hipEvent_t stop) {
  if (f == nullptr) return Ret(hipErrorInvalidDeviceFunction);
  HIP_STREAM(h);
  Event* e_start = start ? AsEvent(proc, start) : nullptr;
  Event* e_stop = stop ? AsEvent(proc, stop) : nullptr;
  if ((start && !e_start) || (stop && !e_stop)) return Ret(hipErrorInvalidHandle);
  if (shared > UINT32_MAX) return Ret(hipErrorInvalidValue);
  const LaunchGeometry geo{{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, static_cast<unsigned>(shared)};
  auto launch = [f, geo, e_start, e_stop](Process* p, Stream* s) {
    if (e_start) p->RecordEvent(e_start, s);
    Status st = p->Launch(s, f, geo);
    if (e_stop && st == Status::kOk) p->RecordEvent(e_stop, s);
    return st == Status::kInvalidValue ? hipErrorInvalidConfiguration : ToHip(st);
  };
  if (Capture(stream, launch)) return hipSuccess;
  return Ret(launch(proc, stream));
}

Function* AsFunction(Process* proc, hipFunction_t h) {
  auto* f = reinterpret_cast<Function*>(h);
  return proc->Valid(f, Tag::kFunction) ? f : nullptr;
}

}  // namespace

extern "C" {

// ---- kernel registration (hipcc start-up code) ----

void** __hipRegisterFatBinary(const void*) {
  static void* handle = nullptr;  // one module set: names are keyed by host function
  return &handle;
}

void __hipRegisterFunction(void**, const void* host_function, char*, const char* device_name, unsigned int, void*,
                           void*, void*, void*, int*) {
  if (host_function == nullptr || device_name == nullptr) return;
  KernelRegistry& r = Registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.registered[host_function] = device_name;
  if (auto it = r.functions.find(host_function); it != r.functions.end()) it->second->name = device_name;
}

void __hipUnregisterFatBinary(void**) {}

// ---- streams ----

hipError_t hipStreamCreate(hipStream_t* out) { return NewStream(out, hipStreamDefault, 0, nullptr, 0); }
hipError_t hipStreamCreateWithFlags(hipStream_t* out, unsigned int flags) {
  return NewStream(out, flags, 0, nullptr, 0);
}
hipError_t hipStreamCreateWithPriority(hipStream_t* out, unsigned int flags, int priority) {
  return NewStream(out, flags, priority, nullptr, 0);
}

hipError_t hipExtStreamCreateWithCUMask(hipStream_t* out, uint32_t words, const uint32_t* mask) {
  if (words == 0 || mask == nullptr) return Ret(hipErrorInvalidValue);
  return NewStream(out, hipStreamDefault, 0, mask, words);
}

hipError_t hipExtStreamGetCUMask(hipStream_t h, uint32_t words, uint32_t* mask) {
  HIP_INIT();
  if (words == 0 || mask == nullptr) return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  const int cus = proc->gpu(stream->device).cus;
  std::fill(mask, mask + words, 0u);
  for (int cu = 0; cu < cus && cu / 32 < static_cast<int>(words); ++cu) {
    const bool on = stream->cu_mask.empty() ||
                    (cu / 32 < static_cast<int>(stream->cu_mask.size()) && (stream->cu_mask[cu / 32] >> (cu % 32)) & 1);
    if (on) mask[cu / 32] |= 1u << (cu % 32);
  }
  return hipSuccess;
}

hipError_t hipStreamDestroy(hipStream_t h) {
  HIP_INIT();
  auto* s = reinterpret_cast<Stream*>(h);
  if (!proc->Valid(s, Tag::kStream)) return Ret(hipErrorInvalidHandle);
  {
    std::lock_guard<std::mutex> lock(g_graph_mu);
    if (auto it = g_capturing.find(s); it != g_capturing.end()) {  // an unfinished capture dies with it
      g_graphs.erase(it->second);
      delete it->second;
      g_capturing.erase(it);
      --g_capture_count;
    }
  }
  proc->DestroyStream(s);
  return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t h) {
  HIP_INIT();
  HIP_STREAM(h);
  if (Capturing(stream)) return Ret(hipErrorStreamCaptureUnsupported);
  proc->SyncStream(stream);
  return hipSuccess;
}

hipError_t hipStreamQuery(hipStream_t h) {
  HIP_INIT();
  HIP_STREAM(h);
  return proc->StreamIdle(stream) ? hipSuccess : hipErrorNotReady;  // not-ready is no error to remember
}

hipError_t hipStreamWaitEvent(hipStream_t h, hipEvent_t ev, unsigned int flags) {
  HIP_INIT();
  HIP_STREAM(h);
  Event* e = AsEvent(proc, ev);
  if (e == nullptr) return Ret(hipErrorInvalidHandle);
  if (flags != 0) return Ret(hipErrorInvalidValue);
  return Ret(ToHip(proc->WaitEvent(stream, e)));
}

hipError_t hipStreamGetFlags(hipStream_t h, unsigned int* flags) {
  HIP_INIT();
  HIP_STREAM(h);
  if (flags == nullptr) return Ret(hipErrorInvalidValue);
  *flags = stream->flags;
  return hipSuccess;
}

hipError_t hipStreamGetPriority(hipStream_t h, int* priority) {
  HIP_INIT();
  HIP_STREAM(h);
  if (priority == nullptr) return Ret(hipErrorInvalidValue);
  *priority = stream->priority;
  return hipSuccess;
}

int hipGetStreamDeviceId(hipStream_t h) {
  Process* proc = Proc();
  Stream* stream = nullptr;
  if (proc == nullptr || ResolveStream(proc, h, &stream) != hipSuccess) return -1;
  return stream->device;
}

// Callbacks run on the stream's queue, in stream order.
hipError_t hipStreamAddCallback(hipStream_t h, hipStreamCallback_t cb, void* data, unsigned int flags) {
  HIP_INIT();
  if (cb == nullptr || flags != 0) return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  Work w;
  w.effect = [cb, h, data](uint64_t) { cb(h, hipSuccess, data); };
  proc->Submit(stream, std::move(w));
  return hipSuccess;
}

// ---- events ----

hipError_t hipEventCreateWithFlags(hipEvent_t* out, unsigned flags) {
  HIP_DEVICE();
  const unsigned known = hipEventBlockingSync | hipEventDisableTiming | hipEventInterprocess | hipEventReleaseToDevice |
                         hipEventReleaseToSystem;
  if (out == nullptr || (flags & ~known)) return Ret(hipErrorInvalidValue);
  if ((flags & hipEventInterprocess) && !(flags & hipEventDisableTiming)) return Ret(hipErrorInvalidValue);
  auto* e = new Event();
  e->flags = flags;
  e->device = device;
  proc->Track(e);
  *out = reinterpret_cast<hipEvent_t>(e);
  return hipSuccess;
}

hipError_t hipEventCreate(hipEvent_t* out) { return hipEventCreateWithFlags(out, hipEventDefault); }

hipError_t hipEventDestroy(hipEvent_t h) {
  HIP_INIT();
  Event* e = AsEvent(proc, h);
  if (e == nullptr) return Ret(hipErrorInvalidHandle);
  proc->DestroyEvent(e);
  return hipSuccess;
}

hipError_t hipEventRecord(hipEvent_t h, hipStream_t s) {
  HIP_INIT();
  Event* e = AsEvent(proc, h);
  if (e == nullptr) return Ret(hipErrorInvalidHandle);
  HIP_STREAM(s);
  if (Capture(stream, [e](Process* p, Stream* st) { return ToHip(p->RecordEvent(e, st)); })) return hipSuccess;
  return Ret(ToHip(proc->RecordEvent(e, stream)));
}

hipError_t hipEventQuery(hipEvent_t h) {
  HIP_INIT();
  Event* e = AsEvent(proc, h);
  if (e == nullptr) return Ret(hipErrorInvalidHandle);
  return proc->EventDone(e) ? hipSuccess : hipErrorNotReady;
}

hipError_t hipEventSynchronize(hipEvent_t h) {
  HIP_INIT();
  Event* e = AsEvent(proc, h);
  if (e == nullptr) return Ret(hipErrorInvalidHandle);
  proc->SyncEvent(e);
  return hipSuccess;
}

hipError_t hipEventElapsedTime(float* ms, hipEvent_t start, hipEvent_t stop) {
  HIP_INIT();
  if (ms == nullptr) return Ret(hipErrorInvalidValue);
  Event* a = AsEvent(proc, start);
  Event* b = AsEvent(proc, stop);
  if (a == nullptr || b == nullptr) return Ret(hipErrorInvalidHandle);
  if ((a->flags | b->flags) & hipEventDisableTiming) return Ret(hipErrorInvalidHandle);
  if (a->seq.load() == 0 || b->seq.load() == 0) return Ret(hipErrorInvalidHandle);
  if (!proc->EventDone(a) || !proc->EventDone(b)) return Ret(hipErrorNotReady);
  *ms = static_cast<float>((static_cast<double>(b->time_ns.load()) - static_cast<double>(a->time_ns.load())) / 1e6);
  return hipSuccess;
}

// ---- modules and functions ----

hipError_t hipModuleLoadData(hipModule_t* out, const void* image) {
  HIP_DEVICE();
  (void)device;
  if (out == nullptr || image == nullptr) return Ret(hipErrorInvalidValue);
  *out = reinterpret_cast<hipModule_t>(proc->LoadModule(image));
  return hipSuccess;
}

hipError_t hipModuleLoadDataEx(hipModule_t* out, const void* image, unsigned int, hipJitOption*, void**) {
  return hipModuleLoadData(out, image);
}

hipError_t hipModuleLoad(hipModule_t* out, const char* path) {
  if (out == nullptr || path == nullptr) return Ret(hipErrorInvalidValue);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Ret(hipErrorFileNotFound);
  std::stringstream image;
  image << in.rdbuf();
  return hipModuleLoadData(out, image.str().c_str());
}

hipError_t hipModuleUnload(hipModule_t h) {
  HIP_INIT();
  auto* m = reinterpret_cast<Module*>(h);
  if (!proc->Valid(m, Tag::kModule)) return Ret(hipErrorInvalidHandle);
  for (auto& [name, f] : m->functions) {
    proc->Untrack(f.get());
    f->tag = Tag::kDead;
  }
  proc->Retire(m);
  return hipSuccess;
}

hipError_t hipModuleGetFunction(hipFunction_t* out, hipModule_t h, const char* name) {
  HIP_INIT();
  auto* m = reinterpret_cast<Module*>(h);
  if (!proc->Valid(m, Tag::kModule)) return Ret(hipErrorInvalidHandle);
  if (out == nullptr || name == nullptr) return Ret(hipErrorInvalidValue);
  Function* f = nullptr;
  HIP_TRY(ToHip(proc->ModuleFunction(m, name, &f)));
  *out = reinterpret_cast<hipFunction_t>(f);
  return hipSuccess;
}

const char* hipKernelNameRef(const hipFunction_t h) {
  Process* proc = Proc();
  Function* f = proc ? AsFunction(proc, h) : nullptr;
  return f ? f->name.c_str() : nullptr;
}

const char* hipKernelNameRefByPtr(const void* host_function, hipStream_t) {
  Process* proc = Proc();
  Function* f = proc ? KernelForHostFunction(proc, host_function) : nullptr;
  return f ? f->name.c_str() : nullptr;
}

hipError_t hipFuncGetAttributes(hipFuncAttributes* attr, const void* host_function) {
  HIP_INIT();
  if (attr == nullptr) return Ret(hipErrorInvalidValue);
  Function* f = KernelForHostFunction(proc, host_function);
  if (f == nullptr) return Ret(hipErrorInvalidDeviceFunction);
  *attr = hipFuncAttributes{};
  attr->maxDynamicSharedSizeBytes = f->max_dynamic_shared;
  attr->maxThreadsPerBlock = 1024;
  attr->numRegs = 32;
  attr->binaryVersion = 90;
  attr->ptxVersion = 90;
  return hipSuccess;
}

// ---- launches ----

hipError_t hipLaunchKernel(const void* host_function, dim3 grid, dim3 block, void**, size_t shared, hipStream_t s) {
  HIP_INIT();
  return LaunchOn(proc, KernelForHostFunction(proc, host_function), grid, block, shared, s, nullptr, nullptr);
}

hipError_t hipExtLaunchKernel(const void* host_function, dim3 grid, dim3 block, void**, size_t shared, hipStream_t s,
                              hipEvent_t start, hipEvent_t stop, int) {
  HIP_INIT();
  return LaunchOn(proc, KernelForHostFunction(proc, host_function), grid, block, shared, s, start, stop);
}

hipError_t hipLaunchCooperativeKernel(const void* host_function, dim3 grid, dim3 block, void**, unsigned int shared,
                                      hipStream_t s) {
  HIP_INIT();
  return LaunchOn(proc, KernelForHostFunction(proc, host_function), grid, block, shared, s, nullptr, nullptr);
}

hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                 unsigned int by, unsigned int bz, unsigned int shared, hipStream_t s, void**, void**) {
  HIP_INIT();
  Function* fn = AsFunction(proc, f);
  if (fn == nullptr) return Ret(hipErrorInvalidHandle);
  return LaunchOn(proc, fn, dim3(gx, gy, gz), dim3(bx, by, bz), shared, s, nullptr, nullptr);
}

// ---- stream capture and graphs ----

hipError_t hipStreamBeginCapture(hipStream_t h, hipStreamCaptureMode mode) {
  HIP_INIT();
  if (h == nullptr || h == hipStreamPerThread) return Ret(hipErrorStreamCaptureUnsupported);  // not the null stream
  if (mode < hipStreamCaptureModeGlobal || mode > hipStreamCaptureModeRelaxed) return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  std::lock_guard<std::mutex> lock(g_graph_mu);
  if (g_capturing.count(stream)) return Ret(hipErrorIllegalState);
  auto* g = new Graph();
  g_graphs.insert(g);
  g_capturing[stream] = g;
  ++g_capture_count;
  return hipSuccess;
}

hipError_t hipStreamEndCapture(hipStream_t h, hipGraph_t* out) {
  HIP_INIT();
  if (out == nullptr) return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  std::lock_guard<std::mutex> lock(g_graph_mu);
  auto it = g_capturing.find(stream);
  if (it == g_capturing.end()) return Ret(hipErrorIllegalState);
  *out = reinterpret_cast<hipGraph_t>(it->second);
  g_capturing.erase(it);
  --g_capture_count;
  return hipSuccess;
}

hipError_t hipStreamIsCapturing(hipStream_t h, hipStreamCaptureStatus* status) {
  HIP_INIT();
  if (status == nullptr) return Ret(hipErrorInvalidValue);
  HIP_STREAM(h);
  *status = Capturing(stream) ? hipStreamCaptureStatusActive : hipStreamCaptureStatusNone;
  return hipSuccess;
}

hipError_t hipGraphInstantiate(hipGraphExec_t* out, hipGraph_t graph, hipGraphNode_t* error_node, char* log,
                               size_t log_size) {
  HIP_INIT();
  (void)proc;
  if (out == nullptr) return Ret(hipErrorInvalidValue);
  if (error_node) *error_node = nullptr;
  if (log && log_size) log[0] = '\0';
  std::lock_guard<std::mutex> lock(g_graph_mu);
  auto* g = reinterpret_cast<Graph*>(graph);
  if (!g_graphs.count(g) || g->magic != kGraphMagic) return Ret(hipErrorInvalidValue);
  auto* exec = new GraphExec();
  exec->ops = g->ops;  // an executable graph is a snapshot: later edits of the graph do not reach it
  g_graphs.insert(exec);
  *out = reinterpret_cast<hipGraphExec_t>(exec);
  return hipSuccess;
}

hipError_t hipGraphLaunch(hipGraphExec_t h, hipStream_t s) {
  HIP_INIT();
  HIP_STREAM(s);
  std::vector<CapturedOp> ops;
  {
    std::lock_guard<std::mutex> lock(g_graph_mu);
    auto* exec = reinterpret_cast<GraphExec*>(h);
    if (!g_graphs.count(exec) || exec->magic != kGraphExecMagic) return Ret(hipErrorInvalidValue);
    ops = exec->ops;
  }
  for (CapturedOp& op : ops) HIP_TRY(op(proc, stream));
  return hipSuccess;
}

hipError_t hipGraphExecDestroy(hipGraphExec_t h) {
  std::lock_guard<std::mutex> lock(g_graph_mu);
  auto* exec = reinterpret_cast<GraphExec*>(h);
  if (!g_graphs.count(exec) || exec->magic != kGraphExecMagic) return Ret(hipErrorInvalidValue);
  g_graphs.erase(exec);
  delete exec;
  return hipSuccess;
}

hipError_t hipGraphDestroy(hipGraph_t h) {
  std::lock_guard<std::mutex> lock(g_graph_mu);
  auto* g = reinterpret_cast<Graph*>(h);
  if (!g_graphs.count(g) || g->magic != kGraphMagic) return Ret(hipErrorInvalidValue);
  for (auto& [stream, captured] : g_capturing)
    if (captured == g) return Ret(hipErrorIllegalState);  // still being captured into
  g_graphs.erase(g);
  delete g;
  return hipSuccess;
}

}  // extern "C"

// hipExtModuleLaunchKernel is a C++ symbol in the real library (hip_ext.h declares it
// outside extern "C"). Sizes are in work items: the grid is global / local, rounded up.
hipError_t hipExtModuleLaunchKernel(hipFunction_t f, uint32_t global_x, uint32_t global_y, uint32_t global_z,
                                    uint32_t local_x, uint32_t local_y, uint32_t local_z, size_t shared, hipStream_t s,
                                    void**, void**, hipEvent_t start, hipEvent_t stop, uint32_t) {
  HIP_INIT();
  Function* fn = AsFunction(proc, f);
  if (fn == nullptr) return Ret(hipErrorInvalidHandle);
  if (local_x == 0 || local_y == 0 || local_z == 0) return Ret(hipErrorInvalidConfiguration);
  auto up = [](uint32_t g, uint32_t l) { return (g + l - 1) / l; };
  return LaunchOn(proc, fn, dim3(up(global_x, local_x), up(global_y, local_y), up(global_z, local_z)),
                  dim3(local_x, local_y, local_z), shared, s, start, stop);
}
