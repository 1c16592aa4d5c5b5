// Discovery of the node's GPUs (GpuInfo, broker/policy/gpu_info.h) from NVML (the real
// one, or simgpu's in tests), else the HIP runtime, when the broker starts; and the
// per-process utilization sampler. I/O: the libraries are loaded at run time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "broker/policy/gpu_info.h"

namespace gpushare::broker {

// The GPUs NVML reports; where NVML cannot be loaded (an AMD node), those the HIP
// runtime reports (DiscoverGpusHip). An empty list with `error` set if neither answers.
std::vector<GpuInfo> DiscoverGpus(std::string* error);
// The GPUs the HIP runtime (libamdhip64.so.5) reports, with their CU counts.
std::vector<GpuInfo> DiscoverGpusHip(std::string* error);

// NVML's devices in index order (a null handle where NVML gives none) and the library,
// for the samplers' own lookups (dlsym). `lib` null and no handles where NVML, its count
// or its handle lookup is not available.
struct NvmlDevices {
  void* lib = nullptr;
  std::vector<void*> handles;
};
NvmlDevices OpenNvmlDevices();

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

// What NVML says a process holds on a GPU (nvmlDeviceGetComputeRunningProcesses): the
// broker's check on the holdings a re-registering client claims. nullopt where NVML,
// the query or the GPU is not available, or where NVML lists a pid this broker cannot
// see (NVML's pids are the host's: a broker in its own pid namespace) — then the claim
// is bounded by the ledger only; 0 for a process NVML does not list on that GPU.
class ProcessMemoryReader {
 public:
  ProcessMemoryReader();
  std::optional<uint64_t> Held(int32_t pid, int gpu) const;

 private:
  void* get_ = nullptr;  // nvmlDeviceGetComputeRunningProcesses_v3
  std::vector<void*> devices_;
};

}  // namespace gpushare::broker
