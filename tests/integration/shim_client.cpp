// A CUDA driver-API client for the shim's integration tests: it reaches the driver by
// one of the three routes real programs use (linked symbols, dlopen+dlsym, and
// cuGetProcAddress) and reports what it sees and what it can allocate.
//   shim_client ROUTE info            devices, names, totals and memory info
//   shim_client ROUTE fill DEV CHUNK  allocate CHUNK bytes until refused
//   shim_client ROUTE race DEV CHUNK THREADS   the same from several threads at once
//   shim_client ROUTE pitch DEV       a pitched and a managed allocation, then memory info
//   shim_client link families DEV     stream-ordered, pool, VMM and array allocations
//   shim_client link peer             peer queries and a pointer's device, between virtual GPUs 0 and 1
//   shim_client any replay FILE       every cuGetProcAddress_v2 lookup of FILE (name version flags);
//                                     counts failures and lookups answered with a hook
//   shim_client any nvml              what NVML shows (dlopen + dlsym, no CUDA call)
//   shim_client ROUTE nomem DEV       allocations while every operator new of this thread
//                                     throws (in the shim too): the API's error, then life goes on
// ROUTE: link | dlsym | getproc | getproc_v1 (cuGetProcAddress without _v2, as CUDA 11)
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <new>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/vendor/nvml_api.h"

// While set, every operator new of this thread throws std::bad_alloc: the executable's
// replacement is the one every library of the process (the shim, simgpu) calls.
static thread_local bool t_no_memory = false;

void* operator new(std::size_t bytes) {
  void* p = t_no_memory ? nullptr : std::malloc(bytes != 0 ? bytes : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct Api {
  decltype(&cuInit) init;
  decltype(&cuDeviceGetCount) count;
  decltype(&cuDeviceGet) get;
  decltype(&cuDeviceGetName) name;
  decltype(&cuDeviceTotalMem_v2) total;
  decltype(&cuDevicePrimaryCtxRetain) retain;
  decltype(&cuCtxSetCurrent) set_current;
  decltype(&cuMemGetInfo_v2) info;
  decltype(&cuMemAlloc_v2) alloc;
  decltype(&cuMemAllocPitch_v2) alloc_pitch;
  decltype(&cuMemAllocManaged) alloc_managed;
  decltype(&cuMemFree_v2) free;
  decltype(&cuGetErrorName) error_name;
};

Api Linked() {
  return {cuInit,
          cuDeviceGetCount,
          cuDeviceGet,
          cuDeviceGetName,
          cuDeviceTotalMem_v2,
          cuDevicePrimaryCtxRetain,
          cuCtxSetCurrent,
          cuMemGetInfo_v2,
          cuMemAlloc_v2,
          cuMemAllocPitch_v2,
          cuMemAllocManaged,
          cuMemFree_v2,
          cuGetErrorName};
}

template <typename T>
void Sym(void* lib, const char* name, T* out) {
  *out = reinterpret_cast<T>(dlsym(lib, name));
  if (*out == nullptr) {
    std::printf("missing symbol %s\n", name);
    std::exit(3);
  }
}

Api ByDlsym() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (lib == nullptr) std::exit(3);
  Api a;
  Sym(lib, "cuInit", &a.init);
  Sym(lib, "cuDeviceGetCount", &a.count);
  Sym(lib, "cuDeviceGet", &a.get);
  Sym(lib, "cuDeviceGetName", &a.name);
  Sym(lib, "cuDeviceTotalMem_v2", &a.total);
  Sym(lib, "cuDevicePrimaryCtxRetain", &a.retain);
  Sym(lib, "cuCtxSetCurrent", &a.set_current);
  Sym(lib, "cuMemGetInfo_v2", &a.info);
  Sym(lib, "cuMemAlloc_v2", &a.alloc);
  Sym(lib, "cuMemAllocPitch_v2", &a.alloc_pitch);
  Sym(lib, "cuMemAllocManaged", &a.alloc_managed);
  Sym(lib, "cuMemFree_v2", &a.free);
  Sym(lib, "cuGetErrorName", &a.error_name);
  return a;
}

// Every entry point of Api through `lookup(name, &fn)`, as a runtime fills its table.
template <typename Lookup>
Api LookUpAll(Lookup lookup) {
  auto get = [&](const char* name, auto* out) {
    void* fn = nullptr;
    if (lookup(name, &fn) != CUDA_SUCCESS || fn == nullptr) {
      std::printf("lookup failed %s\n", name);
      std::exit(3);
    }
    *out = reinterpret_cast<std::remove_reference_t<decltype(*out)>>(fn);
  };
  Api a;
  get("cuInit", &a.init);
  get("cuDeviceGetCount", &a.count);
  get("cuDeviceGet", &a.get);
  get("cuDeviceGetName", &a.name);
  get("cuDeviceTotalMem", &a.total);
  get("cuDevicePrimaryCtxRetain", &a.retain);
  get("cuCtxSetCurrent", &a.set_current);
  get("cuMemGetInfo", &a.info);
  get("cuMemAlloc", &a.alloc);
  get("cuMemAllocPitch", &a.alloc_pitch);
  get("cuMemAllocManaged", &a.alloc_managed);
  get("cuMemFree", &a.free);
  get("cuGetErrorName", &a.error_name);
  return a;
}

// As the CUDA runtime does: get cuGetProcAddress_v2, ask it for itself, then for all.
Api ByGetProcAddress() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  decltype(&cuGetProcAddress_v2) gpa;
  Sym(lib, "cuGetProcAddress_v2", &gpa);
  CUdriverProcAddressQueryResult status;
  void* self = nullptr;
  if (gpa("cuGetProcAddress", &self, 12000, 0, &status) != CUDA_SUCCESS) std::exit(3);
  gpa = reinterpret_cast<decltype(gpa)>(self);
  return LookUpAll([&](const char* name, void** fn) { return gpa(name, fn, 13000, 0, &status); });
}

// As a CUDA 11 runtime does: cuGetProcAddress (drivers before CUDA 12 have no _v2),
// asked for itself, then for all, at version 11.8. Says whether the driver has _v2 and
// whether what it handed out for cuMemAlloc is the shim's.
Api ByGetProcAddressV1() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  decltype(&cuGetProcAddress) gpa;
  Sym(lib, "cuGetProcAddress", &gpa);
  std::printf("has_v2=%d\n", dlsym(lib, "cuGetProcAddress_v2") != nullptr ? 1 : 0);
  void* self = nullptr;
  if (gpa("cuGetProcAddress", &self, 11080, 0) != CUDA_SUCCESS) std::exit(3);
  gpa = reinterpret_cast<decltype(gpa)>(self);
  const Api a = LookUpAll([&](const char* name, void** fn) { return gpa(name, fn, 11080, 0); });
  Dl_info info;
  const void* alloc = reinterpret_cast<const void*>(a.alloc);
  std::printf("cuMemAlloc_hooked=%d\n",
              dladdr(alloc, &info) && info.dli_fname && std::strstr(info.dli_fname, "libgpushare") ? 1 : 0);
  return a;
}

Api g;

const char* Name(CUresult r) {
  const char* n = "?";
  g.error_name(r, &n);
  return n;
}

void Open(int dev) {
  CUdevice d;
  CUcontext ctx;
  if (g.get(&d, dev) != CUDA_SUCCESS || g.retain(&ctx, d) != CUDA_SUCCESS || g.set_current(ctx) != CUDA_SUCCESS) {
    std::printf("cannot open device %d\n", dev);
    std::exit(4);
  }
}

void PrintInfo(int dev) {
  size_t free_b = 0, total_b = 0;
  g.info(&free_b, &total_b);
  std::printf("dev%d_free=%zu dev%d_total=%zu\n", dev, free_b, dev, total_b);
}

int NvmlInfo() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
  if (lib == nullptr) return 3;
  decltype(&nvmlInit_v2) init;
  decltype(&nvmlDeviceGetCount_v2) count;
  decltype(&nvmlDeviceGetHandleByIndex_v2) handle;
  decltype(&nvmlDeviceGetName) name;
  decltype(&nvmlDeviceGetIndex) index;
  decltype(&nvmlDeviceGetMemoryInfo) memory;
  Sym(lib, "nvmlInit_v2", &init);
  Sym(lib, "nvmlDeviceGetCount_v2", &count);
  Sym(lib, "nvmlDeviceGetHandleByIndex_v2", &handle);
  Sym(lib, "nvmlDeviceGetName", &name);
  Sym(lib, "nvmlDeviceGetIndex", &index);
  Sym(lib, "nvmlDeviceGetMemoryInfo", &memory);
  if (init() != NVML_SUCCESS) return 4;
  unsigned n = 0;
  count(&n);
  std::printf("nvml_count=%u\n", n);
  for (unsigned i = 0; i < n; ++i) {
    nvmlDevice_t d;
    char buf[96] = "";
    unsigned idx = 99;
    nvmlMemory_t mem{};
    handle(i, &d);
    name(d, buf, sizeof buf);
    index(d, &idx);
    memory(d, &mem);
    std::printf("nvml%u_name=%s nvml%u_index=%u nvml%u_total=%llu nvml%u_free=%llu\n", i, buf, i, idx, i, mem.total, i,
                mem.free);
  }
  nvmlDevice_t beyond;
  std::printf("nvml_beyond=%d\n", static_cast<int>(handle(n, &beyond)));
  return 0;
}

int Replay(const char* path) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  decltype(&cuGetProcAddress_v2) gpa;
  Sym(lib, "cuGetProcAddress_v2", &gpa);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 3;
  char line[256];
  int lookups = 0, failed = 0, hooked = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == ' ') continue;  // comments; the empty-name lookup
    char name[128];
    int version = 0;
    unsigned long long flags = 0;
    if (std::sscanf(line, "%127s %d %llu", name, &version, &flags) != 3) continue;
    void* fn = nullptr;
    CUdriverProcAddressQueryResult status;
    ++lookups;
    if (gpa(name, &fn, version, flags, &status) != CUDA_SUCCESS || fn == nullptr) {
      ++failed;
      std::printf("failed %s %d %llu\n", name, version, flags);
      continue;
    }
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_fname && std::strstr(info.dli_fname, "libgpushare")) ++hooked;
  }
  std::fclose(f);
  std::printf("lookups=%d failed=%d hooked=%d\n", lookups, failed, hooked);
  // The allocation entry points the runtime resolves must be the shim's.
  for (const char* name : {"cuMemAlloc", "cuMemFree", "cuMemGetInfo", "cuDeviceGetCount", "cuMemCreate"}) {
    void* fn = nullptr;
    CUdriverProcAddressQueryResult status;
    gpa(name, &fn, 13000, 0, &status);
    Dl_info info;
    const bool ours = fn && dladdr(fn, &info) && info.dli_fname && std::strstr(info.dli_fname, "libgpushare");
    std::printf("%s_hooked=%d\n", name, ours ? 1 : 0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 3) return 64;
  const std::string route = argv[1], cmd = argv[2];
  if (cmd == "nvml") return NvmlInfo();
  if (cmd == "replay" && argc == 4) return Replay(argv[3]);
  g = route == "link"         ? Linked()
      : route == "dlsym"      ? ByDlsym()
      : route == "getproc_v1" ? ByGetProcAddressV1()
                              : ByGetProcAddress();
  CUresult r = g.init(0);
  if (r != CUDA_SUCCESS) {
    std::printf("cuInit=%s\n", Name(r));
    return 5;
  }
  if (cmd == "info") {
    int n = 0;
    g.count(&n);
    std::printf("count=%d\n", n);
    for (int d = 0; d < n; ++d) {
      char name[128];
      size_t total = 0;
      g.name(name, sizeof name, d);
      g.total(&total, d);
      std::printf("dev%d_name=%s dev%d_totalmem=%zu\n", d, name, d, total);
      Open(d);
      PrintInfo(d);
    }
    CUdevice bad;
    std::printf("get_out_of_range=%s\n", Name(g.get(&bad, n)));
    return 0;
  }
  const int dev = argc > 3 ? std::atoi(argv[3]) : 0;
  Open(dev);
  if (cmd == "fill" && argc == 5) {
    const size_t chunk = std::strtoull(argv[4], nullptr, 10);
    std::vector<CUdeviceptr> held;
    CUdeviceptr p;
    while ((r = g.alloc(&p, chunk)) == CUDA_SUCCESS) held.push_back(p);
    std::printf("allocated=%zu stopped_by=%s\n", held.size() * chunk, Name(r));
    PrintInfo(dev);
    for (CUdeviceptr q : held) g.free(q);
    PrintInfo(dev);
    r = g.alloc(&p, chunk);  // freed memory is usable again
    std::printf("after_free=%s\n", Name(r));
    return 0;
  }
  if (cmd == "race" && argc == 6) {
    const size_t chunk = std::strtoull(argv[4], nullptr, 10);
    const int threads = std::atoi(argv[5]);
    std::atomic<size_t> total{0};
    std::vector<std::thread> pool;
    CUcontext ctx;
    CUdevice d;
    g.get(&d, dev);
    g.retain(&ctx, d);
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        g.set_current(ctx);
        CUdeviceptr p;
        while (g.alloc(&p, chunk) == CUDA_SUCCESS) total += chunk;
      });
    for (auto& t : pool) t.join();
    std::printf("allocated=%zu\n", total.load());
    return 0;
  }
  if (cmd == "nomem") {
    // Twice without memory (the shim logs the first escape only), then once with.
    CUdeviceptr p;
    t_no_memory = true;
    const CUresult first = g.alloc(&p, 1 << 20);
    const CUresult second = g.alloc(&p, 1 << 20);
    t_no_memory = false;
    std::printf("nomem_alloc=%s ", Name(first));
    std::printf("nomem_again=%s ", Name(second));
    std::printf("after=%s\n", Name(g.alloc(&p, 1 << 20)));
    PrintInfo(dev);
    return 0;
  }
  if (cmd == "pitch") {
    CUdeviceptr a, m;
    size_t pitch = 0;
    std::printf("pitch=%s ", Name(g.alloc_pitch(&a, &pitch, 1000, 1024, 4)));
    std::printf("pitch_bytes=%zu ", pitch);
    std::printf("managed=%s\n", Name(g.alloc_managed(&m, 64 << 20, CU_MEM_ATTACH_GLOBAL)));
    PrintInfo(dev);
    return 0;
  }
  if (cmd == "peer" && route == "link") {
    int can = -1, rank = -1, ordinal = -1;
    cuDeviceCanAccessPeer(&can, 0, 1);
    cuDeviceGetP2PAttribute(&rank, CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED, 0, 1);
    Open(1);
    CUdeviceptr p;
    cuMemAlloc_v2(&p, 1 << 20);
    cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p);
    CUdevice current = -1;
    cuCtxGetDevice(&current);
    char bus[32] = "";
    CUdevice back = -1;
    cuDeviceGetPCIBusId(bus, sizeof bus, 1);
    cuDeviceGetByPCIBusId(&back, bus);
    std::printf("can_access=%d p2p_access=%d pointer_ordinal=%d ctx_device=%d bus_roundtrip=%d\n", can, rank, ordinal,
                current, back);
    // Peer access and a peer copy between the two virtual GPUs' contexts, checked byte for byte.
    CUcontext c0 = nullptr, c1 = nullptr;
    CUdevice d0 = -1;
    cuDeviceGet(&d0, 0);
    cuDevicePrimaryCtxRetain(&c0, d0);
    cuCtxGetCurrent(&c1);
    cuCtxSetCurrent(c0);
    CUdeviceptr q;
    cuMemAlloc_v2(&q, 1 << 20);
    std::vector<unsigned char> in(1 << 20), out(1 << 20, 0);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<unsigned char>(i * 7);
    cuMemcpyHtoD_v2(q, in.data(), in.size());
    const CUresult enable = cuCtxEnablePeerAccess(c1, 0);
    const CUresult copy = cuMemcpyPeer(p, c1, q, c0, in.size());
    cuCtxSetCurrent(c1);
    cuMemcpyDtoH_v2(out.data(), p, out.size());
    std::printf("enable_peer=%s peer_copy=%s same_bytes=%d\n", Name(enable), Name(copy), in == out ? 1 : 0);
    return 0;
  }
  if (cmd == "families" && route == "link") {
    const size_t mib = 1 << 20;
    auto free_now = [&] {
      size_t f = 0, t = 0;
      cuMemGetInfo_v2(&f, &t);
      return f / mib;
    };
    int pools = -1;
    cuDeviceGetAttribute(&pools, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev);
    std::printf("pools_supported=%d\n", pools);
    CUstream s;
    cuStreamCreate(&s, 0);
    CUdeviceptr a, b;
    // Each step first, then what it left free (printf's arguments have no set order).
    CUresult r1 = cuMemAllocAsync(&a, 256 * mib, s);
    std::printf("async=%s free=%zu\n", Name(r1), free_now());
    cuMemFreeAsync(a, s);
    cuStreamSynchronize(s);
    std::printf("async_freed free=%zu\n", free_now());
    CUmemPoolProps props{};
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location = {CU_MEM_LOCATION_TYPE_DEVICE, dev};
    CUmemoryPool pool;
    r1 = cuMemPoolCreate(&pool, &props);
    CUresult r2 = cuMemAllocFromPoolAsync(&b, 128 * mib, pool, s);
    std::printf("pool=%s pool_alloc=%s free=%zu\n", Name(r1), Name(r2), free_now());
    std::printf("pool_too_big=%s\n", Name(cuMemAllocFromPoolAsync(&a, 1024 * mib, pool, s)));
    cuMemFreeAsync(b, s);
    cuStreamSynchronize(s);
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location = {CU_MEM_LOCATION_TYPE_DEVICE, dev};
    CUmemGenericAllocationHandle h1, h2;
    r1 = cuMemCreate(&h1, 512 * mib, &prop, 0);
    std::printf("vmm=%s free=%zu ", Name(r1), free_now());
    std::printf("vmm_too_big=%s ", Name(cuMemCreate(&h2, 768 * mib, &prop, 0)));
    cuMemRelease(h1);
    std::printf("vmm_released free=%zu\n", free_now());
    CUDA_ARRAY3D_DESCRIPTOR d{1024, 1024, 16, CU_AD_FORMAT_FLOAT, 1, 0};  // 64 MiB
    CUarray arr;
    r1 = cuArray3DCreate_v2(&arr, &d);
    std::printf("array=%s free=%zu ", Name(r1), free_now());
    cuArrayDestroy(arr);
    std::printf("array_destroyed free=%zu\n", free_now());
    return 0;
  }
  return 64;
}
