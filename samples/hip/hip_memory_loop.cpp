// hip_memory_loop: a memory-bound load, the HIP twin of memory_loop. Launches a buffer-
// copy kernel (dst[i] = src[i], 16 bytes per element, grid-stride loop) back to back on
// one stream for --seconds and reports launch rate and bandwidth. Named
// simgpu_memory_500us: 500 us of memory traffic per launch on simgpu.
#include "hip_common.h"

#if defined(__HIP__)
SAMPLE_KERNEL void simgpu_memory_500us(uint4* dst, const uint4* src, unsigned n) {
  const unsigned stride = gridDim.x * blockDim.x;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}
#else
SAMPLE_KERNEL void simgpu_memory_500us(void*, const void*, unsigned) {}
#endif

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--device", "--seconds", "--size"},
                     "[--seconds S (default 2)] [--size BYTES per buffer (default 256MiB)] [--device D]");
  const double seconds = args.Double("--seconds", 2.0);
  if (seconds <= 0) args.Fail("--seconds: expected a positive number");
  const uint64_t bytes = args.Bytes("--size", 256ull << 20);
  if (bytes < 16 || bytes % 16 != 0 || bytes / 16 > (1u << 31))
    args.Fail("--size: expected a multiple of 16 bytes, at most 32GiB");
  unsigned n = static_cast<unsigned>(bytes / 16);  // 16-byte elements, the kernel's u32 parameter

  samples::HipDevice d = samples::OpenHipDevice(args.Int("--device", 0));
  const unsigned block = 256, grid = static_cast<unsigned>(d.compute_units) * 8;  // 2048 threads per CU

  void *src = nullptr, *dst = nullptr;
  HIP_CHECK(hipMalloc(&src, bytes));
  HIP_CHECK(hipMalloc(&dst, bytes));
  HIP_CHECK(hipMemsetD32(src, 0x3F800000, bytes / 4));  // 1.0f everywhere
  hipStream_t stream = nullptr;
  HIP_CHECK(hipStreamCreate(&stream));

  void* params[] = {&dst, &src, &n};
  auto launch = [&] {
    HIP_CHECK(hipLaunchKernel(reinterpret_cast<const void*>(&simgpu_memory_500us), dim3(grid), dim3(block), params, 0,
                              stream));
  };
  launch();  // warm-up (code object load, first launch), not counted
  HIP_CHECK(hipStreamSynchronize(stream));
  const samples::LoopResult r = samples::HipLaunchFor(seconds, stream, launch);
  const double launches = static_cast<double>(r.launches);
  std::printf("memory_loop: launches=%lld elapsed_s=%.3f launches_per_s=%.1f approx_GBps=%.1f\n", r.launches,
              r.elapsed_s, launches / r.elapsed_s, 2.0 * static_cast<double>(bytes) * launches / r.elapsed_s / 1e9);

  HIP_CHECK(hipStreamDestroy(stream));
  HIP_CHECK(hipFree(src));
  HIP_CHECK(hipFree(dst));
  return 0;
}
