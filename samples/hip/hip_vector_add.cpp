// hip_vector_add: c[i] = a[i] + b[i] with a HIP kernel, timed with HIP events. On a real
// GPU it checks every element; on simgpu (kernels take time but compute nothing) it
// checks that copies round-trip (host -> device -> device -> host). Both check hipMemsetD32.
#include <algorithm>
#include <cstring>
#include <vector>

#include "hip_common.h"

#if defined(__HIP__)
SAMPLE_KERNEL void vector_add(const float* a, const float* b, float* c, unsigned n) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}
#else
SAMPLE_KERNEL void vector_add(const float*, const float*, float*, unsigned) {}
#endif

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--n", "--device"}, "[--n ELEMENTS (default 1048576)] [--device D]");
  const long long n_arg = args.Int("--n", 1 << 20);
  if (n_arg <= 0 || n_arg > UINT32_MAX) args.Fail("--n: expected 1 to 4294967295 elements");
  unsigned n = static_cast<unsigned>(n_arg);
  const size_t bytes = size_t{n} * sizeof(float);

  samples::HipDevice d = samples::OpenHipDevice(args.Int("--device", 0));
  const bool sim = samples::OnHipSimulator();

  std::vector<float> a(n), b(n), c(n);
  for (size_t i = 0; i < n; ++i) {  // exactly representable, so a + b is exact too
    a[i] = static_cast<float>(i % 1024) * 0.25f;
    b[i] = static_cast<float>(i % 4096) * 0.5f;
  }
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  HIP_CHECK(hipMalloc(reinterpret_cast<void**>(&da), bytes));
  HIP_CHECK(hipMalloc(reinterpret_cast<void**>(&db), bytes));
  HIP_CHECK(hipMalloc(reinterpret_cast<void**>(&dc), bytes));
  HIP_CHECK(hipMemcpy(da, a.data(), bytes, hipMemcpyHostToDevice));
  HIP_CHECK(hipMemcpy(db, b.data(), bytes, hipMemcpyHostToDevice));

  // hipMemsetD32 on c, read back, before the kernel overwrites it.
  const uint32_t kPattern = 0xDEADBEEF;
  HIP_CHECK(hipMemsetD32(dc, static_cast<int>(kPattern), n));
  std::vector<uint32_t> words(n);
  HIP_CHECK(hipMemcpy(words.data(), dc, bytes, hipMemcpyDeviceToHost));
  bool pass = std::all_of(words.begin(), words.end(), [&](uint32_t w) { return w == kPattern; });
  std::string verdict = pass ? "" : "hipMemsetD32 pattern not read back";

  hipEvent_t start = nullptr, stop = nullptr;
  HIP_CHECK(hipEventCreate(&start));
  HIP_CHECK(hipEventCreate(&stop));
  const unsigned block = 256, grid = n / block + (n % block != 0);
  void* params[] = {&da, &db, &dc, &n};
  HIP_CHECK(hipEventRecord(start, nullptr));
  HIP_CHECK(hipLaunchKernel(reinterpret_cast<const void*>(&vector_add), dim3(grid), dim3(block), params, 0, nullptr));
  HIP_CHECK(hipEventRecord(stop, nullptr));
  HIP_CHECK(hipEventSynchronize(stop));
  float ms = 0;
  HIP_CHECK(hipEventElapsedTime(&ms, start, stop));
  std::printf("vector_add: device=%d name=%s kernel_ms=%.3f\n", d.ordinal, d.name.c_str(), ms);
  HIP_CHECK(hipMemcpy(c.data(), dc, bytes, hipMemcpyDeviceToHost));

  if (pass && !sim) {  // real GPU: every element of c must be a + b
    for (size_t i = 0; i < n && pass; ++i) {
      if (c[i] != a[i] + b[i]) {
        pass = false;
        verdict =
            "c[" + std::to_string(i) + "] = " + std::to_string(c[i]) + ", expected " + std::to_string(a[i] + b[i]);
      }
    }
  } else if (pass) {  // simgpu: a -> c on the device, then c -> host, must be a
    HIP_CHECK(hipMemcpy(dc, da, bytes, hipMemcpyDeviceToDevice));
    std::fill(c.begin(), c.end(), 0.0f);
    HIP_CHECK(hipMemcpy(c.data(), dc, bytes, hipMemcpyDeviceToHost));
    if (std::memcmp(c.data(), a.data(), bytes) != 0) {
      pass = false;
      verdict = "host -> device -> device -> host round trip of a differs from a";
    }
  }

  HIP_CHECK(hipEventDestroy(start));
  HIP_CHECK(hipEventDestroy(stop));
  HIP_CHECK(hipFree(da));
  HIP_CHECK(hipFree(db));
  HIP_CHECK(hipFree(dc));

  if (!pass) {
    std::printf("vector_add: FAIL (%s)\n", verdict.c_str());
    return 1;
  }
  if (sim)
    std::printf("vector_add: PASS (round trip on simulator, %u elements)\n", n);
  else
    std::printf("vector_add: PASS (%u elements)\n", n);
  return 0;
}
