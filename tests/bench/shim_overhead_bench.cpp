// Per-call cost of driver entry points as an application sees them. Run once plain
// and once under LD_PRELOAD=libgpushare.so (run_shim_overhead.sh does both and
// prints the difference): launch, allocate+free, hooked and unhooked pass-through.
#include <benchmark/benchmark.h>
#include <cuda.h>

#include <cstdlib>

namespace {

struct Driver {
  CUcontext ctx = nullptr;
  CUfunction tiny = nullptr;
  Driver() {
    cuInit(0);
    CUdevice dev;
    cuDeviceGet(&dev, 0);
    cuDevicePrimaryCtxRetain(&ctx, dev);
    cuCtxSetCurrent(ctx);
    static const char* ptx = ".version 7.8\n.target sm_70\n.address_size 64\n.visible .entry tiny() { ret; }\n";
    CUmodule m;
    cuModuleLoadData(&m, ptx);
    cuModuleGetFunction(&tiny, m, "tiny");
  }
};

Driver& D() {
  static Driver d;
  cuCtxSetCurrent(d.ctx);
  return d;
}

void BM_LaunchKernel(benchmark::State& state) {
  Driver& d = D();
  int n = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cuLaunchKernel(d.tiny, 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr));
    if (++n % 1024 == 0) {  // keep the queue short, outside the measured time
      state.PauseTiming();
      cuCtxSynchronize();
      state.ResumeTiming();
    }
  }
  cuCtxSynchronize();
}
BENCHMARK(BM_LaunchKernel);

void BM_MemAllocFree(benchmark::State& state) {
  D();
  for (auto _ : state) {
    CUdeviceptr p;
    cuMemAlloc(&p, 1 << 20);
    cuMemFree(p);
  }
}
BENCHMARK(BM_MemAllocFree);

void BM_HookedPassThrough(benchmark::State& state) {  // cuDeviceGetAttribute: device ordinal translated
  D();
  int v = 0;
  for (auto _ : state) benchmark::DoNotOptimize(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0));
}
BENCHMARK(BM_HookedPassThrough);

void BM_UnhookedCall(benchmark::State& state) {  // cuCtxGetCurrent: bound straight to the driver
  D();
  CUcontext c;
  for (auto _ : state) benchmark::DoNotOptimize(cuCtxGetCurrent(&c));
}
BENCHMARK(BM_UnhookedCall);

void BM_MemGetInfo(benchmark::State& state) {
  D();
  size_t f, t;
  for (auto _ : state) benchmark::DoNotOptimize(cuMemGetInfo(&f, &t));
}
BENCHMARK(BM_MemGetInfo);

}  // namespace

BENCHMARK_MAIN();
