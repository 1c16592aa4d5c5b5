// Shared helpers for the HIP samples: HIP_CHECK for runtime calls, opening a device,
// the launch loop, and how a kernel is declared so that one source builds two ways:
// with hipcc for a real ROCm GPU (__global__ kernels) or with g++ for simgpu, where a
// kernel is a plain exported host function that simgpu names by its symbol (dladdr).
#pragma once

#if defined(__HIP__)
#include <hip/hip_runtime.h>
// On a real GPU the kernel runs: its body is device code.
#define SAMPLE_KERNEL extern "C" __global__
#else
#include <hip/hip_runtime_api.h>
// On simgpu nothing runs: the host symbol carries the kernel's name (link with -rdynamic).
#define SAMPLE_KERNEL extern "C" __attribute__((visibility("default"), noinline))
#endif

#define SAMPLES_NO_CUDA  // options, sizes and timing only: no CUDA header on a ROCm machine
#include "../common.h"

// Runs a HIP call; on failure prints the call, its hipError_t name, file and line, and exits 1.
#define HIP_CHECK(call) ::samples::HipCheck((call), #call, __FILE__, __LINE__)

namespace samples {

inline void HipCheck(hipError_t r, const char* call, const char* file, int line) {
  if (r == hipSuccess) return;
  std::fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", file, line, call, hipGetErrorName(r), static_cast<int>(r));
  std::exit(1);
}

struct HipDevice {
  int ordinal = 0;
  std::string name;
  int compute_units = 0;
};

inline HipDevice OpenHipDevice(long long ordinal) {
  HipDevice d;
  d.ordinal = static_cast<int>(ordinal);
  HIP_CHECK(hipSetDevice(d.ordinal));
  hipDeviceProp_t prop;
  HIP_CHECK(hipGetDeviceProperties(&prop, d.ordinal));
  d.name = prop.name;
  d.compute_units = prop.multiProcessorCount;
  return d;
}

// On simgpu kernels take time but compute nothing; its runtime says so by exporting
// simgpuHipRuntime, which no real HIP runtime has (names prove nothing).
inline bool OnHipSimulator() { return dlsym(RTLD_DEFAULT, "simgpuHipRuntime") != nullptr; }

template <class Launch>
LoopResult HipLaunchFor(double seconds, hipStream_t stream, Launch launch) {
  return LaunchLoop(seconds, launch, [&] { HIP_CHECK(hipStreamSynchronize(stream)); });
}

}  // namespace samples
