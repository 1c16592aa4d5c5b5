// simgpu's node description: which simulated GPUs exist, how they are linked and what
// work costs. Parsed once per process from SIMGPU_CONFIG (JSON) or the built-in default.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace simgpu {

inline constexpr int kMaxGpus = 16;
inline constexpr int kMaxCus = 256;  // compute units a CU mask can address (HIP front)

enum class LinkKind { kNone = 0, kPcie = 1, kNvlink = 2 };
enum class WorkClass { kCompute = 0, kMemory = 1 };

struct GpuConfig {
  std::string name;
  uint64_t memory_bytes = 0;
  int sms = 0;
  std::string pci_bus_id;  // "0000:01:00.0"
  std::string uuid;        // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  int cc_major = 9;
  int cc_minor = 0;
  double memory_bandwidth_gbps = 2000.0;  // device-to-device copies
  uint64_t context_memory_bytes = 0;      // charged while a context exists on the GPU
  int cus = 0;                            // compute units (HIP's multiProcessorCount); default sms
  int memory_saturation_cus = 0;          // CUs that saturate memory bandwidth; default cus / 4
  std::string gcn_arch = "gfx90a";        // hipDeviceProp_t::gcnArchName
  bool mig = false;                       // NVML's MIG mode (current), for gpushare-doctor
  int pcie_generation = 4;                // NVML's current PCIe link
  int pcie_width = 16;
};

struct KernelCost {
  double us = 0;
  WorkClass work_class = WorkClass::kCompute;
};

struct NodeConfig {
  std::vector<GpuConfig> gpus;
  // links[i][j]: what connects GPU i and GPU j (symmetric; diagonal unused).
  std::array<std::array<LinkKind, kMaxGpus>, kMaxGpus> links{};
  uint32_t timeslice_us = 2000;
  double default_kernel_us = 10.0;
  double pcie_bandwidth_gbps = 25.0;  // host<->device and non-NVLink peer copies
  double nvlink_bandwidth_gbps = 300.0;
  int driver_version = 13000;
  // What NVML says the driver supports (nvmlSystemGetCudaDriverVersion); 0: driver_version.
  // A fault for gpushare-doctor: a libcuda and an NVML from different drivers.
  int nvml_driver_version = 0;
  // false: NVML answers "not supported" to every P2P status query while the driver
  // still allows peer access by `links` (as NVML does on some boards).
  bool nvml_p2p = true;
  std::map<std::string, KernelCost> kernels;  // exact-name overrides of the cost model
  std::string source;                         // file path, or "<default>"

  LinkKind link(int a, int b) const { return links[a][b]; }
};

// Parses a JSON document. On error returns nullopt and sets `error` to a message that
// names the offending field (e.g. "gpus[1].memory: expected a positive integer").
std::optional<NodeConfig> ParseConfig(const std::string& json_text, const std::string& source, std::string* error);

// The default node: two GPUs of 16 GiB with P2P (PCIe) between them.
NodeConfig DefaultConfig();

// Loads SIMGPU_CONFIG if set, else the default. Errors as ParseConfig (plus I/O errors).
std::optional<NodeConfig> LoadConfigFromEnv(std::string* error);
// Loads the file at `path` (null or empty: the default node), as LoadConfigFromEnv.
std::optional<NodeConfig> LoadConfig(const char* path, std::string* error);

// Stable text identity of a config, used to name the node's shared segment.
std::string ConfigFingerprint(const NodeConfig& config);

}  // namespace simgpu
