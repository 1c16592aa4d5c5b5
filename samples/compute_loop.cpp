// compute_loop: a compute-bound load. Launches a dependent-FMA PTX kernel back to back on
// one stream for --seconds and reports the launch rate. The kernel is named
// simgpu_compute_500us, so simgpu models each launch as 500 us of compute.
#include "common.h"

namespace {

// Each thread runs `iters` iterations of 4 dependent FMAs (x = x * 0.9999 + 0.0001, which
// stays in [0, 1]) and stores x to out[index] so the loop is not optimized away.
const char kPtx[] = R"PTX(
.version 7.8
.target sm_70
.address_size 64

.visible .entry simgpu_compute_500us(
    .param .u64 simgpu_compute_500us_param_out,
    .param .u32 simgpu_compute_500us_param_iters
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<7>;
    .reg .f32 %f<2>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [simgpu_compute_500us_param_out];
    ld.param.u32 %r1, [simgpu_compute_500us_param_iters];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    cvt.rn.f32.u32 %f1, %r5;
    mul.rn.f32 %f1, %f1, 0f33800000;
    mov.u32 %r6, 0;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra STORE;
LOOP:
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    add.u32 %r6, %r6, 1;
    setp.lt.u32 %p2, %r6, %r1;
    @%p2 bra LOOP;
STORE:
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.f32 [%rd4], %f1;
    ret;
}
)PTX";

}  // namespace

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
  CUmodule module = samples::LoadPtx(kPtx);
  CUfunction fn = nullptr;
  CHECK(cuModuleGetFunction(&fn, module, "simgpu_compute_500us"));
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
