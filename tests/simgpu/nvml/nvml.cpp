// simgpu's NVML front (libnvidia-ml.so.1): device identity, node-wide memory,
// utilization and per-process samples from the shared node, and P2P/NVLink topology
// from the config. It attaches to the node read-only: no process slot of its own.
#include <strings.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "common/vendor/nvml_api.h"
#include "node.h"

using namespace simgpu;

struct nvmlDevice_st {
  int index;
};

namespace {

std::mutex g_mu;
int g_init_count = 0;
std::unique_ptr<NodeConfig> g_config;
std::unique_ptr<Node> g_node;
nvmlDevice_st g_devices[kMaxGpus];

#define NVML_READY() \
  if (g_node == nullptr) return NVML_ERROR_UNINITIALIZED

int IndexOf(nvmlDevice_t h) {
  if (g_node == nullptr || h == nullptr || h < g_devices || h >= g_devices + g_node->gpu_count()) return -1;
  return h->index;
}

#define NVML_DEVICE(h)        \
  NVML_READY();               \
  const int dev = IndexOf(h); \
  if (dev < 0) return NVML_ERROR_INVALID_ARGUMENT

// A fault a test armed for this entry point (simgpuControlFailCall with an nvmlReturn_t,
// e.g. NVML_ERROR_GPU_IS_LOST): the call returns it and does nothing.
#define NVML_FAULT(name)                                                                                \
  if (int armed = 0; g_node->AnyFaultArmed() && g_node->TakeFault(FaultKind::kCall, name, dev, &armed)) \
  return static_cast<nvmlReturn_t>(armed)

nvmlReturn_t Init() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_init_count++ > 0) return NVML_SUCCESS;
  std::string error;
  auto cfg = LoadConfigFromEnv(&error);
  if (cfg) {
    g_config = std::make_unique<NodeConfig>(std::move(*cfg));
    const char* name = std::getenv("SIMGPU_NODE");
    g_node = Node::Attach(*g_config, name ? name : "", /*claim_slot=*/false, &error);
  }
  if (!g_node) {
    std::fprintf(stderr, "simgpu nvml: %s\n", error.c_str());
    g_init_count = 0;
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  for (int i = 0; i < kMaxGpus; ++i) g_devices[i].index = i;
  return NVML_SUCCESS;
}

void CopyString(char* dst, unsigned len, const std::string& s) { std::snprintf(dst, len, "%s", s.c_str()); }

nvmlReturn_t FillString(char* dst, unsigned len, const std::string& s) {
  if (dst == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (len < s.size() + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
  CopyString(dst, len, s);
  return NVML_SUCCESS;
}

void FillPci(int dev, nvmlPciInfo_t* pci) {
  const std::string& id = g_config->gpus[dev].pci_bus_id;  // dddd:bb:dd.f
  *pci = nvmlPciInfo_t{};
  unsigned dom = 0, bus = 0, device = 0, fn = 0;
  std::sscanf(id.c_str(), "%x:%x:%x.%x", &dom, &bus, &device, &fn);
  pci->domain = dom;
  pci->bus = bus;
  pci->device = device;
  pci->pciDeviceId = 0x233010de;  // H100 SXM device id, NVIDIA vendor id
  pci->pciSubSystemId = 0x16c110de;
  std::snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", dom, bus, device, fn);
  std::snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", dom, bus, device, fn);
}

// NVLink links of a GPU: one per NVLink peer, numbered in peer order.
int NvlinkPeer(int dev, unsigned link) {
  unsigned n = 0;
  for (size_t p = 0; p < g_config->gpus.size(); ++p)
    if (g_config->link(dev, static_cast<int>(p)) == LinkKind::kNvlink && n++ == link) return static_cast<int>(p);
  return -1;
}

nvmlReturn_t RunningProcesses(int dev, unsigned* count, nvmlProcessInfo_t* infos, bool v1) {
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  auto procs = g_node->Processes(dev);
  if (*count < procs.size() || (infos == nullptr && !procs.empty())) {
    *count = static_cast<unsigned>(procs.size());
    return NVML_ERROR_INSUFFICIENT_SIZE;
  }
  *count = static_cast<unsigned>(procs.size());
  for (size_t i = 0; i < procs.size(); ++i) {
    if (v1) {  // nvmlProcessInfo_v1_t: {pid, usedGpuMemory}
      struct V1 {
        unsigned int pid;
        unsigned long long usedGpuMemory;
      };
      reinterpret_cast<V1*>(infos)[i] = V1{static_cast<unsigned>(procs[i].pid), procs[i].used_bytes};
    } else {
      infos[i] = nvmlProcessInfo_t{static_cast<unsigned>(procs[i].pid), procs[i].used_bytes, 0xFFFFFFFFu, 0xFFFFFFFFu};
    }
  }
  return NVML_SUCCESS;
}

}  // namespace

extern "C" {

nvmlReturn_t nvmlInit_v2() { return Init(); }
nvmlReturn_t nvmlInit() { return Init(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int) { return Init(); }

nvmlReturn_t nvmlShutdown() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (--g_init_count == 0) {
    g_node.reset();
    g_config.reset();
  }
  return NVML_SUCCESS;
}

const char* nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    case NVML_ERROR_NO_DATA: return "No Data";
    default: return "Unknown Error";
  }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char* version, unsigned int len) {
  NVML_READY();
  return FillString(version, len, "580.00.00");
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char* version, unsigned int len) {
  NVML_READY();
  return FillString(version, len, "13.580.00");
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int* version) {
  NVML_READY();
  if (version == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *version = g_config->nvml_driver_version != 0 ? g_config->nvml_driver_version : g_config->driver_version;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int* version) { return nvmlSystemGetCudaDriverVersion(version); }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  NVML_READY();
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *count = static_cast<unsigned>(g_node->gpu_count());
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int* count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  NVML_READY();
  if (device == nullptr || index >= static_cast<unsigned>(g_node->gpu_count())) return NVML_ERROR_INVALID_ARGUMENT;
  *device = &g_devices[index];
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t* device) {
  return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char* uuid, nvmlDevice_t* device) {
  NVML_READY();
  if (uuid == nullptr || device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  for (int i = 0; i < g_node->gpu_count(); ++i) {
    if (strcasecmp(g_config->gpus[i].uuid.c_str(), uuid) == 0) {
      *device = &g_devices[i];
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, nvmlDevice_t* device) {
  NVML_READY();
  if (bus_id == nullptr || device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned dom = 0, bus = 0, dv = 0, fn = 0;
  if (std::sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dv, &fn) != 4) return NVML_ERROR_INVALID_ARGUMENT;
  for (int i = 0; i < g_node->gpu_count(); ++i) {
    nvmlPciInfo_t pci;
    FillPci(i, &pci);
    if (pci.domain == dom && pci.bus == bus && pci.device == dv) {
      *device = &g_devices[i];
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char* bus_id, nvmlDevice_t* device) {
  return nvmlDeviceGetHandleByPciBusId_v2(bus_id, device);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t h, unsigned int* index) {
  NVML_DEVICE(h);
  if (index == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *index = static_cast<unsigned>(dev);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned int* minor) { return nvmlDeviceGetIndex(h, minor); }

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char* name, unsigned int len) {
  NVML_DEVICE(h);
  return FillString(name, len, g_config->gpus[dev].name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char* uuid, unsigned int len) {
  NVML_DEVICE(h);
  return FillString(uuid, len, g_config->gpus[dev].uuid);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t h, nvmlPciInfo_t* pci) {
  NVML_DEVICE(h);
  if (pci == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  FillPci(dev, pci);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t h, nvmlPciInfo_t* pci) { return nvmlDeviceGetPciInfo_v3(h, pci); }
nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t h, nvmlPciInfo_t* pci) { return nvmlDeviceGetPciInfo_v3(h, pci); }

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int* major, int* minor) {
  NVML_DEVICE(h);
  if (major == nullptr || minor == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *major = g_config->gpus[dev].cc_major;
  *minor = g_config->gpus[dev].cc_minor;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t* mem) {
  NVML_DEVICE(h);
  NVML_FAULT("nvmlDeviceGetMemoryInfo");
  if (mem == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  const uint64_t total = g_node->capacity(dev), used = std::min(g_node->Used(dev), total);
  *mem = nvmlMemory_t{total, total - used, used};
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t* mem) {
  NVML_DEVICE(h);
  NVML_FAULT("nvmlDeviceGetMemoryInfo_v2");
  if (mem == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (mem->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  const uint64_t total = g_node->capacity(dev), used = std::min(g_node->Used(dev), total);
  mem->total = total;
  mem->reserved = 0;
  mem->free = total - used;
  mem->used = used;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, nvmlUtilization_t* util) {
  NVML_DEVICE(h);
  if (util == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned mem = 0;
  util->gpu = g_node->DeviceUtilization(dev, 1000000000ull, &mem);
  util->memory = mem;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int* count, nvmlProcessInfo_t* infos) {
  NVML_DEVICE(h);
  return RunningProcesses(dev, count, infos, false);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int* count, nvmlProcessInfo_t* infos) {
  NVML_DEVICE(h);
  return RunningProcesses(dev, count, infos, false);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t h, unsigned int* count, nvmlProcessInfo_t* infos) {
  NVML_DEVICE(h);
  return RunningProcesses(dev, count, infos, true);
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t h, nvmlProcessUtilizationSample_t* samples,
                                             unsigned int* count, unsigned long long last_seen_us) {
  NVML_DEVICE(h);
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  auto utils = g_node->ProcessUtilization(dev, last_seen_us * 1000ull);
  if (utils.empty()) {
    *count = 0;
    return NVML_ERROR_NOT_FOUND;
  }
  if (samples == nullptr || *count < utils.size()) {
    *count = static_cast<unsigned>(utils.size());
    return NVML_ERROR_INSUFFICIENT_SIZE;
  }
  *count = static_cast<unsigned>(utils.size());
  for (size_t i = 0; i < utils.size(); ++i)
    samples[i] = nvmlProcessUtilizationSample_t{
        static_cast<unsigned>(utils[i].pid), utils[i].time_ns / 1000, utils[i].sm_percent, utils[i].mem_percent, 0, 0};
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuP2PCapsIndex_t cap,
                                    nvmlGpuP2PStatus_t* status) {
  NVML_DEVICE(a);
  const int other = IndexOf(b);
  if (other < 0) return NVML_ERROR_INVALID_ARGUMENT;
  if (status == nullptr || cap >= NVML_P2P_CAPS_INDEX_UNKNOWN) return NVML_ERROR_INVALID_ARGUMENT;
  const LinkKind link = other == dev ? LinkKind::kNone : g_config->link(dev, other);
  bool ok = link != LinkKind::kNone;
  if (cap == NVML_P2P_CAPS_INDEX_NVLINK || cap == NVML_P2P_CAPS_INDEX_ATOMICS) ok = link == LinkKind::kNvlink;
  if (cap == NVML_P2P_CAPS_INDEX_PCI) ok = link == LinkKind::kPcie;
  *status = ok && g_config->nvml_p2p ? NVML_P2P_STATUS_OK : NVML_P2P_STATUS_NOT_SUPPORTED;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuTopologyLevel_t* level) {
  NVML_DEVICE(a);
  const int other = IndexOf(b);
  if (other < 0) return NVML_ERROR_INVALID_ARGUMENT;
  if (level == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (other == dev) {
    *level = NVML_TOPOLOGY_INTERNAL;
    return NVML_SUCCESS;
  }
  switch (g_config->link(dev, other)) {
    case LinkKind::kPcie: *level = NVML_TOPOLOGY_SINGLE; break;  // peers behind one PCIe switch
    case LinkKind::kNvlink: *level = NVML_TOPOLOGY_NODE; break;  // NVLink; PCIe path via the host
    case LinkKind::kNone: *level = NVML_TOPOLOGY_SYSTEM; break;
  }
  return NVML_SUCCESS;
}

// Bytes over the link since the previous query of the same counter, per second (NVML
// answers for its last 20 ms; the first query here answers 0).
nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t h, nvmlPcieUtilCounter_t counter, unsigned int* value) {
  NVML_DEVICE(h);
  if (value == nullptr || counter >= NVML_PCIE_UTIL_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
  static std::mutex mu;
  static uint64_t last_bytes[kMaxGpus][2], last_ns[kMaxGpus][2];
  std::lock_guard<std::mutex> lock(mu);
  const bool rx = counter == NVML_PCIE_UTIL_RX_BYTES;
  const uint64_t bytes = g_node->PcieBytes(dev, rx), now = MonotonicNs();
  uint64_t &lb = last_bytes[dev][rx], &ln = last_ns[dev][rx];
  const double kb_per_s =
      ln == 0 || now <= ln ? 0.0 : static_cast<double>(bytes - lb) / 1024.0 * 1e9 / static_cast<double>(now - ln);
  lb = bytes;
  ln = now;
  *value = static_cast<unsigned>(std::min(kb_per_s, 4e9));
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int* current, unsigned int* pending) {
  NVML_DEVICE(h);
  if (current == nullptr || pending == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *current = *pending = g_config->gpus[dev].mig ? 1 : 0;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t h, unsigned int* gen) {
  NVML_DEVICE(h);
  if (gen == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *gen = static_cast<unsigned>(g_config->gpus[dev].pcie_generation);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t h, unsigned int* width) {
  NVML_DEVICE(h);
  if (width == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *width = static_cast<unsigned>(g_config->gpus[dev].pcie_width);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t h, unsigned int link, nvmlEnableState_t* active) {
  NVML_DEVICE(h);
  if (active == nullptr || link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
  if (NvlinkPeer(dev, 0) < 0) return NVML_ERROR_NOT_SUPPORTED;  // no NVLink on this GPU
  *active = NvlinkPeer(dev, link) >= 0 ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t h, unsigned int link, nvmlPciInfo_t* pci) {
  NVML_DEVICE(h);
  if (pci == nullptr || link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
  const int peer = NvlinkPeer(dev, link);
  if (peer < 0) return NVML_ERROR_NOT_SUPPORTED;
  FillPci(peer, pci);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo(nvmlDevice_t h, unsigned int link, nvmlPciInfo_t* pci) {
  return nvmlDeviceGetNvLinkRemotePciInfo_v2(h, link, pci);
}

}  // extern "C"
