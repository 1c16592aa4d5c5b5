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

}  // namespace gpushare::broker
