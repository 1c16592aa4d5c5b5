// The node's GPUs as the broker sees them: index, name, memory, compute units. Plain
// data that the policy and the core work on; broker/io/gpu_inventory.h reads it from
// NVML or HIP when the broker starts.
#pragma once

#include <cstdint>
#include <string>

namespace gpushare::broker {

struct GpuInfo {
  int index;
  std::string name;
  uint64_t memory_bytes;
  unsigned cu_count = 0;  // compute units (AMD), for CU masks; 0: unknown (NVML does not say)
};

}  // namespace gpushare::broker
