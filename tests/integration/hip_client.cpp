// An unmodified-style HIP runtime client for hip_test: built with g++ against Debian's
// HIP headers and linked with -lamdhip64 (run on simgpu's libamdhip64.so.5, with the
// shim preloaded). Kernels are host functions simgpu names by dladdr (-rdynamic).
//   hip_client info                     -> count=N, then per device its name and memory views
//   hip_client fill DEV CHUNK FAMILY    -> allocates CHUNK bytes at a time with FAMILY until
//                                          refused: allocated=, stopped_by=, after_free=, ...
//   hip_client where DEV                -> what the runtime says of device DEV and memory on it
//   hip_client dlsym-fill DEV CHUNK     -> fill with hipMalloc found by dlsym on a dlopen handle
//   hip_client serve                    -> one command a line on stdin: "alloc DEV BYTES",
//                                          "launch N", "copy N", "graph N", "quit"; one answer
//                                          line each
//   hip_client sched --seconds S --start-at NS [--via dlsym]
//                                       -> saturating 500 us kernels; a timeline like sched_worker's
#include <dlfcn.h>
#include <hip/hip_ext.h>
#include <hip/hip_runtime_api.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "monotonic_clock.h"

extern "C" __attribute__((visibility("default"))) void simgpu_compute_500us() {}

using testing_support::MonotonicNs;
using testing_support::MsSince;
using testing_support::SleepUntil;

namespace {

constexpr size_t kMiB = 1 << 20;

const char* Name(hipError_t e) { return hipGetErrorName(e); }

#define CHECK(call)                                                                       \
  do {                                                                                    \
    hipError_t e_ = (call);                                                               \
    if (e_ != hipSuccess) {                                                               \
      std::printf("error: %s failed: %s (%s:%d)\n", #call, Name(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

// One allocation of any family, and how to give it back.
struct Allocation {
  std::string family;
  void* ptr = nullptr;
  hipArray* array = nullptr;
  hipMemGenericAllocationHandle_t handle = nullptr;
};

hipError_t Allocate(const std::string& family, int dev, size_t bytes, Allocation* a) {
  a->family = family;
  const size_t width = 16384;                           // array elements (float) per row
  const size_t rows = bytes / (width * sizeof(float));  // rows of floats making `bytes`
  const hipChannelFormatDesc f32{32, 0, 0, 0, hipChannelFormatKindFloat};
  if (family == "malloc") return hipMalloc(&a->ptr, bytes);
  if (family == "extflags") return hipExtMallocWithFlags(&a->ptr, bytes, hipDeviceMallocDefault);
  if (family == "managed") return hipMallocManaged(&a->ptr, bytes, hipMemAttachGlobal);
  if (family == "pitch") {
    size_t pitch = 0;
    return hipMallocPitch(&a->ptr, &pitch, kMiB, bytes / kMiB);
  }
  if (family == "3d") {
    hipPitchedPtr p{};
    hipError_t e = hipMalloc3D(&p, make_hipExtent(kMiB, bytes / kMiB / 4, 4));
    a->ptr = p.ptr;
    return e;
  }
  if (family == "async") {
    hipError_t e = hipMallocAsync(&a->ptr, bytes, nullptr);
    return e == hipSuccess ? hipStreamSynchronize(nullptr) : e;
  }
  if (family == "pool") {
    hipMemPool_t pool;
    if (hipError_t e = hipDeviceGetDefaultMemPool(&pool, dev); e != hipSuccess) return e;
    hipError_t e = hipMallocFromPoolAsync(&a->ptr, bytes, pool, nullptr);
    return e == hipSuccess ? hipStreamSynchronize(nullptr) : e;
  }
  if (family == "array") return hipMallocArray(&a->array, &f32, width, rows, hipArrayDefault);
  if (family == "array3d") return hipMalloc3DArray(&a->array, &f32, make_hipExtent(width, rows / 4, 4), 0);
  if (family == "arraycreate") {
    HIP_ARRAY_DESCRIPTOR d{width, rows, HIP_AD_FORMAT_FLOAT, 1};
    return hipArrayCreate(&a->array, &d);
  }
  if (family == "vmm") {
    hipMemAllocationProp prop{};
    prop.type = hipMemAllocationTypePinned;
    prop.location.type = hipMemLocationTypeDevice;
    prop.location.id = dev;
    return hipMemCreate(&a->handle, bytes, &prop, 0);
  }
  std::printf("error: unknown family %s\n", family.c_str());
  std::exit(2);
}

hipError_t Free(const Allocation& a) {
  if (a.family == "async" || a.family == "pool") {
    hipError_t e = hipFreeAsync(a.ptr, nullptr);
    return e == hipSuccess ? hipStreamSynchronize(nullptr) : e;
  }
  if (a.family == "array" || a.family == "array3d") return hipFreeArray(a.array);
  if (a.family == "arraycreate") return hipArrayDestroy(a.array);
  if (a.family == "vmm") return hipMemRelease(a.handle);
  return hipFree(a.ptr);
}

void PrintMemInfo(const char* label, int dev) {
  size_t free_bytes = 0, total = 0;
  CHECK(hipSetDevice(dev));
  CHECK(hipMemGetInfo(&free_bytes, &total));
  std::printf("%s_free=%zu %s_total=%zu\n", label, free_bytes, label, total);
}

int Info() {
  int count = 0;
  CHECK(hipGetDeviceCount(&count));
  std::printf("count=%d\n", count);
  for (int d = 0; d < count; ++d) {
    char name[256] = "";
    CHECK(hipDeviceGetName(name, sizeof name, d));
    hipDeviceProp_t prop{};
    CHECK(hipGetDeviceProperties(&prop, d));
    size_t total_mem = 0;
    CHECK(hipDeviceTotalMem(&total_mem, d));
    char bus[64] = "";
    CHECK(hipDeviceGetPCIBusId(bus, sizeof bus, d));
    std::printf("dev%d_name=%s dev%d_totalmem=%zu dev%d_props_total=%zu dev%d_bus=%s\n", d, name, d, total_mem, d,
                prop.totalGlobalMem, d, bus);
    const std::string label = "dev" + std::to_string(d);
    PrintMemInfo(label.c_str(), d);
  }
  return 0;
}

int Fill(int dev, size_t chunk, const std::string& family) {
  CHECK(hipSetDevice(dev));
  std::vector<Allocation> held;
  hipError_t stop = hipSuccess;
  for (int i = 0; i < 1024; ++i) {
    Allocation a;
    stop = Allocate(family, dev, chunk, &a);
    if (stop != hipSuccess) break;
    held.push_back(a);
  }
  std::printf("allocated=%zu stopped_by=%s\n", held.size() * chunk, Name(stop));
  PrintMemInfo("full", dev);
  if (held.empty()) return 1;
  CHECK(Free(held.back()));
  held.pop_back();
  Allocation again;
  std::printf("after_free=%s\n", Name(Allocate(family, dev, chunk, &again)));
  held.push_back(again);
  for (const Allocation& a : held) CHECK(Free(a));
  PrintMemInfo("emptied", dev);
  return 0;
}

int Where(int dev) {
  CHECK(hipSetDevice(dev));
  int current = -1;
  CHECK(hipGetDevice(&current));
  char name[256] = "", bus[64] = "";
  CHECK(hipDeviceGetName(name, sizeof name, dev));
  CHECK(hipDeviceGetPCIBusId(bus, sizeof bus, dev));
  int by_bus = -1;
  CHECK(hipDeviceGetByPCIBusId(&by_bus, bus));
  void* p = nullptr;
  CHECK(hipMalloc(&p, kMiB));
  hipPointerAttribute_t attr{};
  CHECK(hipPointerGetAttributes(&attr, p));
  int count = 0;
  CHECK(hipGetDeviceCount(&count));
  int can = -1;
  if (count > 1) CHECK(hipDeviceCanAccessPeer(&can, dev, 1 - dev));
  std::printf("current=%d name=%s by_bus=%d ptr_device=%d can_peer=%d\n", current, name, by_bus, attr.device, can);
  CHECK(hipFree(p));
  // A device this process cannot see.
  std::printf("set_invisible=%s\n", Name(hipSetDevice(count)));
  return 0;
}

// A program that finds the runtime's functions with dlopen and dlsym (as frameworks do).
int DlsymFill(int dev, size_t chunk) {
  void* h = dlopen("libamdhip64.so.5", RTLD_NOW);
  if (h == nullptr) return 1;
  auto set_device = reinterpret_cast<hipError_t (*)(int)>(dlsym(h, "hipSetDevice"));
  auto malloc_fn = reinterpret_cast<hipError_t (*)(void**, size_t)>(dlsym(h, "hipMalloc"));
  auto free_fn = reinterpret_cast<hipError_t (*)(void*)>(dlsym(h, "hipFree"));
  auto info_fn = reinterpret_cast<hipError_t (*)(size_t*, size_t*)>(dlsym(h, "hipMemGetInfo"));
  if (!set_device || !malloc_fn || !free_fn || !info_fn) return 1;
  CHECK(set_device(dev));
  std::vector<void*> held;
  hipError_t stop = hipSuccess;
  for (void* p = nullptr; held.size() < 1024 && (stop = malloc_fn(&p, chunk)) == hipSuccess;) held.push_back(p);
  size_t free_bytes = 0, total = 0;
  CHECK(info_fn(&free_bytes, &total));
  std::printf("allocated=%zu stopped_by=%s full_free=%zu full_total=%zu\n", held.size() * chunk, Name(stop), free_bytes,
              total);
  for (void* p : held) CHECK(free_fn(p));
  return 0;
}

void LaunchOne(hipStream_t stream) {
  CHECK(hipLaunchKernel(reinterpret_cast<const void*>(&simgpu_compute_500us), dim3(1), dim3(128), nullptr, 0, stream));
}

int Serve() {
  std::vector<void*> held;
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "alloc") {
      int dev = 0;
      size_t bytes = 0;
      in >> dev >> bytes;
      void* p = nullptr;
      hipError_t e = hipSetDevice(dev);
      if (e == hipSuccess) e = hipMalloc(&p, bytes);
      if (e == hipSuccess) held.push_back(p);
      std::printf("alloc=%s\n", e == hipSuccess ? "ok" : Name(e));
    } else if (cmd == "launch") {  // N kernels through each of five launch calls
      int n = 0;
      in >> n;
      const void* f = reinterpret_cast<const void*>(&simgpu_compute_500us);
      // A module function: simgpu loads a module image naming its entry points.
      static const char kImage[] =
          ".version 7.8\n.target sm_70\n.address_size 64\n"
          ".visible .entry simgpu_compute_500us() { ret; }\n";
      hipModule_t module;
      hipFunction_t fn;
      CHECK(hipModuleLoadData(&module, kImage));
      CHECK(hipModuleGetFunction(&fn, module, "simgpu_compute_500us"));
      for (int i = 0; i < n; ++i) {
        LaunchOne(nullptr);
        CHECK(hipExtLaunchKernel(f, dim3(1), dim3(128), nullptr, 0, nullptr, nullptr, nullptr, 0));
        CHECK(hipLaunchCooperativeKernel(f, dim3(1), dim3(128), nullptr, 0, nullptr));
        CHECK(hipModuleLaunchKernel(fn, 1, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr));
        CHECK(hipExtModuleLaunchKernel(fn, 128, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr));
      }
      std::printf("launched=%s\n", Name(hipDeviceSynchronize()));
      CHECK(hipModuleUnload(module));
    } else if (cmd == "graph") {  // one kernel captured into a graph, the graph launched N times
      int n = 0;
      in >> n;
      hipStream_t stream;
      CHECK(hipStreamCreateWithFlags(&stream, hipStreamNonBlocking));
      hipGraph_t graph;
      hipGraphExec_t exec;
      CHECK(hipStreamBeginCapture(stream, hipStreamCaptureModeGlobal));
      LaunchOne(stream);
      CHECK(hipStreamEndCapture(stream, &graph));
      CHECK(hipGraphInstantiate(&exec, graph, nullptr, nullptr, 0));
      for (int i = 0; i < n; ++i) CHECK(hipGraphLaunch(exec, stream));
      std::printf("graphed=%s\n", Name(hipStreamSynchronize(stream)));
      CHECK(hipGraphExecDestroy(exec));
      CHECK(hipGraphDestroy(graph));
      CHECK(hipStreamDestroy(stream));
    } else if (cmd == "copy") {  // N each of an upload, a memset and a download of 4 KiB
      int n = 0;
      in >> n;
      std::vector<char> host(4096);
      void* dev = nullptr;
      CHECK(hipMalloc(&dev, host.size()));
      for (int i = 0; i < n; ++i) {
        CHECK(hipMemcpyHtoDAsync(dev, host.data(), host.size(), nullptr));
        CHECK(hipMemsetAsync(dev, 1, host.size(), nullptr));
        CHECK(hipMemcpyAsync(host.data(), dev, host.size(), hipMemcpyDeviceToHost, nullptr));
      }
      std::printf("copied=%s\n", Name(hipDeviceSynchronize()));
      CHECK(hipFree(dev));
    } else if (cmd == "quit") {
      break;
    } else {
      std::printf("unknown=%s\n", cmd.c_str());
    }
    std::fflush(stdout);
  }
  for (void* p : held) CHECK(hipFree(p));
  return 0;
}

// As sched_worker, through the HIP runtime: 16 launches in flight on one stream, a
// completion counted when its event is waited for, a timeline every 50 ms.
int Sched(double seconds, uint64_t start_ns) {
  hipStream_t stream;
  CHECK(hipStreamCreateWithFlags(&stream, hipStreamNonBlocking));
  constexpr int kInFlight = 16;
  hipEvent_t events[kInFlight];
  for (hipEvent_t& e : events) CHECK(hipEventCreateWithFlags(&e, hipEventDisableTiming));
  if (start_ns == 0) start_ns = MonotonicNs();
  const uint64_t end_ns = start_ns + uint64_t(seconds * 1e9);
  std::atomic<long long> done{0};
  SleepUntil(start_ns);
  testing_support::TimelinePrinter timeline(start_ns, done);
  long long launched = 0;
  while (MonotonicNs() < end_ns) {
    hipEvent_t& slot = events[launched % kInFlight];
    if (launched >= kInFlight) {
      CHECK(hipEventSynchronize(slot));
      ++done;
    }
    LaunchOne(stream);
    CHECK(hipEventRecord(slot, stream));
    if (launched++ == 0) std::printf("first_launch t_ms=%.1f\n", MsSince(start_ns));
  }
  for (long long i = std::max(0LL, launched - kInFlight); i < launched; ++i) {
    CHECK(hipEventSynchronize(events[i % kInFlight]));
    ++done;
  }
  timeline.Stop();
  std::printf("summary launched=%lld done=%lld\n", launched, done.load());
  for (hipEvent_t e : events) CHECK(hipEventDestroy(e));
  CHECK(hipStreamDestroy(stream));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "info") return Info();
  if (cmd == "fill" && argc == 5) return Fill(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10), argv[4]);
  if (cmd == "where" && argc == 3) return Where(std::atoi(argv[2]));
  if (cmd == "dlsym-fill" && argc == 4) return DlsymFill(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  if (cmd == "serve") return Serve();
  if (cmd == "sched") {
    double seconds = 5;
    uint64_t start_ns = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
      if (std::string(argv[i]) == "--seconds") seconds = std::strtod(argv[i + 1], nullptr);
      if (std::string(argv[i]) == "--start-at") start_ns = std::strtoull(argv[i + 1], nullptr, 10);
    }
    return Sched(seconds, start_ns);
  }
  std::fprintf(
      stderr,
      "usage: hip_client info | fill DEV CHUNK FAMILY | where DEV | dlsym-fill DEV CHUNK | serve | sched [--seconds S] "
      "[--start-at NS]\n");
  return 2;
}
