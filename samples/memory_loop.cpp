// memory_loop: a memory-bound load. Launches a PTX buffer-copy kernel (dst[i] = src[i],
// 16 bytes per element, grid-stride loop) back to back on one stream for --seconds and
// reports launch rate and bandwidth. Named simgpu_memory_500us: 500 us of memory on simgpu.
#include "common.h"

namespace {

const char kPtx[] = R"PTX(
.version 7.8
.target sm_70
.address_size 64

.visible .entry simgpu_memory_500us(
    .param .u64 simgpu_memory_500us_param_dst,
    .param .u64 simgpu_memory_500us_param_src,
    .param .u32 simgpu_memory_500us_param_n
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [simgpu_memory_500us_param_dst];
    ld.param.u64 %rd2, [simgpu_memory_500us_param_src];
    ld.param.u32 %r1, [simgpu_memory_500us_param_n];
    cvta.to.global.u64 %rd3, %rd1;
    cvta.to.global.u64 %rd4, %rd2;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    mov.u32 %r6, %nctaid.x;
    mul.lo.u32 %r7, %r6, %r3;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
LOOP:
    mul.wide.u32 %rd5, %r5, 16;
    add.s64 %rd6, %rd4, %rd5;
    add.s64 %rd7, %rd3, %rd5;
    ld.global.v4.u32 {%r8, %r9, %r10, %r11}, [%rd6];
    st.global.v4.u32 [%rd7], {%r8, %r9, %r10, %r11};
    add.u32 %r5, %r5, %r7;
    setp.lt.u32 %p2, %r5, %r1;
    @%p2 bra LOOP;
DONE:
    ret;
}
)PTX";

}  // namespace

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--device", "--seconds", "--size"},
                     "[--seconds S (default 2)] [--size BYTES per buffer (default 256MiB)] [--device D]");
  const double seconds = args.Double("--seconds", 2.0);
  if (seconds <= 0) args.Fail("--seconds: expected a positive number");
  const uint64_t bytes = args.Bytes("--size", 256ull << 20);
  if (bytes < 16 || bytes % 16 != 0 || bytes / 16 > (1u << 31))
    args.Fail("--size: expected a multiple of 16 bytes, at most 32GiB");
  unsigned n = static_cast<unsigned>(bytes / 16);  // 16-byte elements, the kernel's u32 parameter

  samples::Device d = samples::OpenDevice(args.Int("--device", 0));
  int sms = 0;
  CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d.dev));
  const unsigned block = 256, grid = static_cast<unsigned>(sms) * 8;  // 2048 threads per SM

  CUdeviceptr src = 0, dst = 0;
  CHECK(cuMemAlloc(&src, bytes));
  CHECK(cuMemAlloc(&dst, bytes));
  CHECK(cuMemsetD32(src, 0x3F800000u, bytes / 4));  // 1.0f everywhere
  CUmodule module = samples::LoadPtx(kPtx);
  CUfunction fn = nullptr;
  CHECK(cuModuleGetFunction(&fn, module, "simgpu_memory_500us"));
  CUstream stream = nullptr;
  CHECK(cuStreamCreate(&stream, CU_STREAM_DEFAULT));

  void* params[] = {&dst, &src, &n};
  auto launch = [&] { CHECK(cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, stream, params, nullptr)); };
  launch();  // warm-up (JIT, first launch), not counted
  CHECK(cuStreamSynchronize(stream));
  const samples::LoopResult r = samples::LaunchFor(seconds, stream, launch);
  const double launches = static_cast<double>(r.launches);
  std::printf("memory_loop: launches=%lld elapsed_s=%.3f launches_per_s=%.1f approx_GBps=%.1f\n", r.launches,
              r.elapsed_s, launches / r.elapsed_s, 2.0 * static_cast<double>(bytes) * launches / r.elapsed_s / 1e9);

  CHECK(cuStreamDestroy(stream));
  CHECK(cuModuleUnload(module));
  CHECK(cuMemFree(src));
  CHECK(cuMemFree(dst));
  samples::CloseDevice(d);
  return 0;
}
