// The node's GPUs as the broker sees them: index, name, memory. Read from NVML (the
// real one, or simgpu's in tests) when the broker starts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpushare::broker {

struct GpuInfo {
  int index;
  std::string name;
  uint64_t memory_bytes;
};

// The GPUs NVML reports, or an empty list with `error` set.
std::vector<GpuInfo> DiscoverGpus(std::string* error);

// Per-process utilization of every GPU since the previous call
// (nvmlDeviceGetProcessUtilization), for the classifier. Quietly empty where NVML or
// the query is not available.
struct ProcessUtilization {
  int gpu;
  int32_t pid;
  unsigned sm_percent;
  unsigned mem_percent;
};
class UtilizationSampler {
 public:
  UtilizationSampler();
  std::vector<ProcessUtilization> Sample();

 private:
  void* get_ = nullptr;  // nvmlDeviceGetProcessUtilization
  std::vector<void*> devices_;
  unsigned long long last_us_ = 0;
};

}  // namespace gpushare::broker
