// A HIP client for the spatial-sharing test, built with g++ (no hipcc): its kernels are
// host functions named by simgpu's convention, launched with hipLaunchKernel. It keeps
// the GPU busy with `memory` or `compute` kernels of 500 us for SECONDS and starts a new
// stream every STREAM_MS (a CU mask applies to streams created after it was
// published), then prints what it did:
//   spatial_worker memory|compute SECONDS STREAM_MS
//   -> "mask WORDS HEX" when a stream's CU mask changes (hipExtStreamGetCUMask), and at
//      the end "kernels N after_warmup M" (M: kernels finished after the first second).
#include <hip/hip_ext.h>
#include <hip/hip_runtime_api.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <string>

extern "C" __attribute__((visibility("default"))) void simgpu_memory_500us() {}
extern "C" __attribute__((visibility("default"))) void simgpu_compute_500us() {}

namespace {

double NowS() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

#define CHECK(call)                                                                           \
  do {                                                                                        \
    hipError_t e = (call);                                                                    \
    if (e != hipSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, hipGetErrorName(e)); \
      return 1;                                                                               \
    }                                                                                         \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: spatial_worker memory|compute SECONDS STREAM_MS\n");
    return 2;
  }
  const bool memory = std::strcmp(argv[1], "memory") == 0;
  const double seconds = std::atof(argv[2]);
  const double stream_s = std::atof(argv[3]) / 1000;
  const void* kernel = memory ? reinterpret_cast<const void*>(&simgpu_memory_500us)
                              : reinterpret_cast<const void*>(&simgpu_compute_500us);
  CHECK(hipSetDevice(0));
  const double start = NowS();
  long kernels = 0, after_warmup = 0;
  std::string last_mask = "none";
  while (NowS() - start < seconds) {
    hipStream_t stream;
    CHECK(hipStreamCreate(&stream));
    uint32_t words[16] = {};
    std::string mask = "none";
    if (hipExtStreamGetCUMask(stream, 16, words) == hipSuccess) {
      char hex[16 * 9 + 1] = "";
      int used = 16;
      while (used > 0 && words[used - 1] == 0) --used;
      for (int i = used - 1; i >= 0; --i)
        std::snprintf(hex + std::strlen(hex), 10, i == used - 1 ? "%x" : "%08x", words[i]);
      mask = std::to_string(used) + " 0x" + (used == 0 ? std::string("0") : std::string(hex));
    }
    if (mask != last_mask) {
      std::printf("mask %s\n", mask.c_str());
      std::fflush(stdout);
      last_mask = mask;
    }
    const double stream_start = NowS();
    while (NowS() - stream_start < stream_s && NowS() - start < seconds) {
      for (int i = 0; i < 4; ++i) CHECK(hipLaunchKernel(kernel, dim3(1), dim3(1), nullptr, 0, stream));
      CHECK(hipStreamSynchronize(stream));
      kernels += 4;
      if (NowS() - start >= 1.0) after_warmup += 4;
    }
    CHECK(hipStreamDestroy(stream));
  }
  std::printf("kernels %ld after_warmup %ld\n", kernels, after_warmup);
  return 0;
}
