// hip_compute_loop: a compute-bound load, the HIP twin of compute_loop. Launches a
// dependent-FMA kernel back to back on one stream for --seconds and reports the launch
// rate. The kernel is named simgpu_compute_500us: 500 us of compute per launch on simgpu.
#include "hip_common.h"

// Each thread runs `iters` iterations of 4 dependent FMAs (x = x * 0.9999 + 0.0001, which
// stays in [0, 1]) and stores x to out[index] so the loop is not optimized away.
#if defined(__HIP__)
SAMPLE_KERNEL void simgpu_compute_500us(float* out, unsigned iters) {
  const unsigned index = blockIdx.x * blockDim.x + threadIdx.x;
  float x = static_cast<float>(index) * 5.9604645e-8f;
  for (unsigned i = 0; i < iters; ++i) {
    x = fmaf(x, 0.9999f, 0.0001f);
    x = fmaf(x, 0.9999f, 0.0001f);
    x = fmaf(x, 0.9999f, 0.0001f);
    x = fmaf(x, 0.9999f, 0.0001f);
  }
  out[index] = x;
}
#else
SAMPLE_KERNEL void simgpu_compute_500us(float*, unsigned) {}
#endif

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--device", "--seconds", "--iters"},
                     "[--seconds S (default 2)] [--iters K (default 20000, ~0.5 ms per launch on an MI250)] "
                     "[--device D]");
  const double seconds = args.Double("--seconds", 2.0);
  if (seconds <= 0) args.Fail("--seconds: expected a positive number");
  const long long iters_arg = args.Int("--iters", 20000);
  if (iters_arg < 0 || iters_arg > UINT32_MAX) args.Fail("--iters: expected 0 to 4294967295");
  unsigned iters = static_cast<unsigned>(iters_arg);

  samples::HipDevice d = samples::OpenHipDevice(args.Int("--device", 0));
  const unsigned block = 256, grid = static_cast<unsigned>(d.compute_units) * 4;  // 1024 threads per CU

  float* out = nullptr;
  HIP_CHECK(hipMalloc(reinterpret_cast<void**>(&out), size_t{grid} * block * sizeof(float)));
  hipStream_t stream = nullptr;
  HIP_CHECK(hipStreamCreate(&stream));

  void* params[] = {&out, &iters};
  auto launch = [&] {
    HIP_CHECK(hipLaunchKernel(reinterpret_cast<const void*>(&simgpu_compute_500us), dim3(grid), dim3(block), params, 0,
                              stream));
  };
  launch();  // warm-up (code object load, first launch), not counted
  HIP_CHECK(hipStreamSynchronize(stream));
  const samples::LoopResult r = samples::HipLaunchFor(seconds, stream, launch);
  std::printf("compute_loop: launches=%lld elapsed_s=%.3f launches_per_s=%.1f\n", r.launches, r.elapsed_s,
              static_cast<double>(r.launches) / r.elapsed_s);

  HIP_CHECK(hipStreamDestroy(stream));
  HIP_CHECK(hipFree(out));
  return 0;
}
