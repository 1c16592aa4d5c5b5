// compute_loop: a compute-bound load. Launches a dependent-FMA PTX kernel back to back on
// one stream for --seconds and reports the launch rate. The kernel is named
// simgpu_compute_500us, so simgpu models each launch as 500 us of compute.
#include "common.h"
#include "compute_kernel.h"

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--device", "--seconds", "--iters"},
                     "[--seconds S (default 2)] [--iters K (default 20000, ~0.5 ms per launch on an H100)] "
                     "[--device D]");
  const double seconds = args.Double("--seconds", 2.0);
  if (seconds <= 0) args.Fail("--seconds: expected a positive number");
  const long long iters_arg = args.Int("--iters", 20000);
  if (iters_arg < 0 || iters_arg > UINT32_MAX) args.Fail("--iters: expected 0 to 4294967295");
  unsigned iters = static_cast<unsigned>(iters_arg);

  samples::Device d = samples::OpenDevice(args.Int("--device", 0));
  int sms = 0;
  CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d.dev));
  const unsigned block = 256, grid = static_cast<unsigned>(sms) * 4;  // 1024 threads per SM

  CUdeviceptr out = 0;
  CHECK(cuMemAlloc(&out, size_t{grid} * block * sizeof(float)));
  CUmodule module = samples::LoadPtx(samples::kComputePtx);
  CUfunction fn = nullptr;
  CHECK(cuModuleGetFunction(&fn, module, samples::kComputeKernel));
  CUstream stream = nullptr;
  CHECK(cuStreamCreate(&stream, CU_STREAM_DEFAULT));

  void* params[] = {&out, &iters};
  auto launch = [&] { CHECK(cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, stream, params, nullptr)); };
  launch();  // warm-up (JIT, first launch), not counted
  CHECK(cuStreamSynchronize(stream));
  const samples::LoopResult r = samples::LaunchFor(seconds, stream, launch);
  std::printf("compute_loop: launches=%lld elapsed_s=%.3f launches_per_s=%.1f\n", r.launches, r.elapsed_s,
              static_cast<double>(r.launches) / r.elapsed_s);

  CHECK(cuStreamDestroy(stream));
  CHECK(cuModuleUnload(module));
  CHECK(cuMemFree(out));
  samples::CloseDevice(d);
  return 0;
}
