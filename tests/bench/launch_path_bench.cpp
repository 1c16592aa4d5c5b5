// What the shim adds to a launch and to an allocation, against a no-op driver
// (noop_cuda.cpp), reached as the CUDA runtime reaches the driver: dlopen libcuda.so.1,
// dlsym cuGetProcAddress_v2, and every entry point through it. Run plainly and under
// LD_PRELOAD=libgpushare.so (standalone or with a broker); run_launch_path.sh
// interleaves the runs and prints the differences, and checks with `--count` that the
// broker counted every launch.
#include <benchmark/benchmark.h>
#include <cuda.h>
#include <dlfcn.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

struct Api {
  decltype(&cuInit) init = nullptr;
  decltype(&cuDevicePrimaryCtxRetain) retain = nullptr;
  decltype(&cuCtxSetCurrent) set_current = nullptr;
  decltype(&cuLaunchKernel) launch = nullptr;
  decltype(&cuMemAlloc_v2) alloc = nullptr;
  decltype(&cuMemFree_v2) free = nullptr;
  CUcontext ctx = nullptr;

  Api() {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    auto lookup = lib ? reinterpret_cast<decltype(&cuGetProcAddress_v2)>(dlsym(lib, "cuGetProcAddress_v2")) : nullptr;
    if (lookup == nullptr) {
      std::fprintf(stderr, "launch_path_bench: no libcuda.so.1 with cuGetProcAddress_v2\n");
      std::exit(1);
    }
    auto get = [&](const char* name, auto* fn, int version) {
      void* p = nullptr;
      CUdriverProcAddressQueryResult status;
      if (lookup(name, &p, version, CU_GET_PROC_ADDRESS_DEFAULT, &status) != CUDA_SUCCESS || p == nullptr) {
        std::fprintf(stderr, "launch_path_bench: the driver has no %s\n", name);
        std::exit(1);
      }
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(p);
    };
    get("cuInit", &init, 2000);
    get("cuDevicePrimaryCtxRetain", &retain, 7000);
    get("cuCtxSetCurrent", &set_current, 4000);
    get("cuLaunchKernel", &launch, 4000);
    get("cuMemAlloc", &alloc, 3020);
    get("cuMemFree", &free, 3020);
    init(0);
    retain(&ctx, 0);
  }
};

Api& A() {
  static Api api;
  return api;
}

CUfunction Tiny() { return reinterpret_cast<CUfunction>(0x1000); }

// Launches on GPU 0 (one thread, or each of several), as fast as the caller can.
void BM_Launch(benchmark::State& state) {
  Api& a = A();
  a.set_current(a.ctx);
  for (auto _ : state)
    benchmark::DoNotOptimize(a.launch(Tiny(), 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Launch)->UseRealTime();
BENCHMARK(BM_Launch)->Threads(2)->UseRealTime();
BENCHMARK(BM_Launch)->Threads(4)->UseRealTime();

// cuMemAlloc + cuMemFree of 1 MiB in a tight loop.
void BM_AllocFree(benchmark::State& state) {
  Api& a = A();
  a.set_current(a.ctx);
  for (auto _ : state) {
    CUdeviceptr p = 0;
    if (a.alloc(&p, 1 << 20) != CUDA_SUCCESS) {
      state.SkipWithError("cuMemAlloc failed");
      break;
    }
    a.free(p);
  }
}
BENCHMARK(BM_AllocFree)->UseRealTime();

// `--count SECONDS`: launches flat out for that long on one thread, then (after the
// broker's next polls) prints how many launches the driver took and the broker's
// status, whose "records" for this pid should be the same number.
int CountCheck(double seconds) {
  Api& a = A();
  a.set_current(a.ctx);
  uint64_t launches = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end)
    for (int i = 0; i < 4096; ++i)
      launches += a.launch(Tiny(), 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr) == CUDA_SUCCESS;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::printf("launches=%llu seconds=%.2f pid=%d\n", static_cast<unsigned long long>(launches), seconds, getpid());
  std::fflush(stdout);
  const char* smi = std::getenv("GPUSHARE_SMI");
  const char* socket = std::getenv("GPUSHARE_SOCKET");
  if (smi == nullptr || socket == nullptr) return 0;
  const std::string command = std::string("env -u LD_PRELOAD ") + smi + " --json --socket " + socket;
  return std::system(command.c_str()) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--count") == 0) return CountCheck(std::atof(argv[2]));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
