// The node's GPU topology as NVML (checked against the CUDA driver) or the HIP runtime
// reports it (see topology_discovery.h). Both are loaded at run time, as in
// gpu_inventory.cpp, so the broker builds and starts on machines without a driver.
#include "topology_discovery.h"

#include <dlfcn.h>

#include <array>
#include <cstdio>
#include <cstring>

#include "common/vendor/hip_api.h"
#include "common/vendor/nvml_api.h"

namespace gpushare::broker {

namespace {

namespace hip = gpushare::vendor::hip;

using P2PStatusFn = decltype(&nvmlDeviceGetP2PStatus);
using CommonAncestorFn = decltype(&nvmlDeviceGetTopologyCommonAncestor);

PathLevel LevelOf(nvmlGpuTopologyLevel_t level) {
  switch (level) {
    case NVML_TOPOLOGY_INTERNAL: return PathLevel::kSame;
    case NVML_TOPOLOGY_SINGLE: return PathLevel::kSingleSwitch;
    case NVML_TOPOLOGY_MULTIPLE: return PathLevel::kMultipleSwitches;
    case NVML_TOPOLOGY_HOSTBRIDGE: return PathLevel::kHostBridge;
    case NVML_TOPOLOGY_NODE: return PathLevel::kNumaNode;
    case NVML_TOPOLOGY_SYSTEM: return PathLevel::kSystem;
  }
  return PathLevel::kUnknown;
}

// A PCI address as numbers: NVML writes "00000000:17:00.0", the CUDA driver
// "0000:17:00.0"; both name the same GPU.
std::optional<std::array<unsigned, 4>> PciAddress(const char* text) {
  std::array<unsigned, 4> a{};
  if (std::sscanf(text, "%x:%x:%x.%x", &a[0], &a[1], &a[2], &a[3]) != 4) return std::nullopt;
  return a;
}

// The CUDA driver's word on each pair, where it can be asked: NCCL and peer copies go
// by cuDeviceCanAccessPeer whatever NVML says (NVML answers "not supported" for some
// boards the driver does run P2P on, and the reverse happens with IOMMU settings). The
// driver is matched to NVML by PCI address; the broker creates no context (cuInit and
// device queries only). Plain C types: the broker does not include CUDA headers.
void CheckWithDriver(Topology* t, const std::vector<std::optional<std::array<unsigned, 4>>>& nvml_pci,
                     std::vector<std::string>* notes) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return;
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  using GetFn = int (*)(int*, int);
  using BusIdFn = int (*)(char*, int, int);
  using PeerFn = int (*)(int*, int, int);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "cuDeviceGetCount"));
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto bus_id = reinterpret_cast<BusIdFn>(dlsym(lib, "cuDeviceGetPCIBusId"));
  auto can_access = reinterpret_cast<PeerFn>(dlsym(lib, "cuDeviceCanAccessPeer"));
  int n = 0;
  if (!init || !count || !get || !bus_id || !can_access || init(0) != 0 || count(&n) != 0) return;
  std::vector<int> device(t->gpu_count, -1);  // NVML index -> CUDA device
  for (int ordinal = 0; ordinal < n; ++ordinal) {
    int dev = 0;
    char bus[32] = "";
    if (get(&dev, ordinal) != 0 || bus_id(bus, sizeof bus, dev) != 0) continue;
    for (int g = 0; g < t->gpu_count; ++g)
      if (nvml_pci[g] && nvml_pci[g] == PciAddress(bus)) device[g] = dev;
  }
  for (int a = 0; a < t->gpu_count; ++a)
    for (int b = a + 1; b < t->gpu_count; ++b) {
      if (device[a] < 0 || device[b] < 0) continue;
      int ab = 0, ba = 0;
      if (can_access(&ab, device[a], device[b]) != 0 || can_access(&ba, device[b], device[a]) != 0) continue;
      const bool driver_p2p = ab != 0 && ba != 0;
      const std::string pair = "GPUs " + std::to_string(a) + " and " + std::to_string(b);
      if (driver_p2p && !t->p2p(a, b)) {
        t->Connect(a, b, Link::kPcie, t->level(a, b));
        notes->push_back(pair + ": the CUDA driver allows peer access where NVML reports no P2P: taken as PCIe P2P");
      } else if (!driver_p2p && t->p2p(a, b)) {
        t->Connect(a, b, Link::kNone, t->level(a, b));
        notes->push_back(pair + ": NVML reports P2P but the CUDA driver refuses peer access: taken as no P2P");
      }
    }
}

}  // namespace

std::optional<Topology> DiscoverTopology(const std::vector<GpuInfo>& gpus, std::string* error) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const std::string nvml = std::string("cannot load NVML (libnvidia-ml.so.1): ") + dlerror();
    std::string hip_error;
    std::optional<Topology> t = DiscoverTopologyHip(gpus, &hip_error);
    if (!t) *error = nvml + "; " + hip_error;
    return t;
  }
  auto init = reinterpret_cast<decltype(&nvmlInit_v2)>(dlsym(lib, "nvmlInit_v2"));
  auto handle = reinterpret_cast<decltype(&nvmlDeviceGetHandleByIndex_v2)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto p2p = reinterpret_cast<P2PStatusFn>(dlsym(lib, "nvmlDeviceGetP2PStatus"));
  auto ancestor = reinterpret_cast<CommonAncestorFn>(dlsym(lib, "nvmlDeviceGetTopologyCommonAncestor"));
  using PciInfoFn = decltype(&nvmlDeviceGetPciInfo_v3);
  auto pci_info = reinterpret_cast<PciInfoFn>(dlsym(lib, "nvmlDeviceGetPciInfo_v3"));
  if (!init || !handle || init() != NVML_SUCCESS) {
    *error = "NVML is present but does not answer (driver not loaded?)";
    return std::nullopt;
  }
  const size_t n = gpus.size();
  std::vector<nvmlDevice_t> devices(n, nullptr);
  std::vector<std::string> notes;
  std::vector<std::optional<std::array<unsigned, 4>>> pci(n);
  for (size_t i = 0; i < n; ++i) {
    if (handle(static_cast<unsigned>(gpus[i].index), &devices[i]) != NVML_SUCCESS) {
      devices[i] = nullptr;
      notes.push_back("GPU " + std::to_string(i) + ": NVML gives no handle; no P2P assumed");
      continue;
    }
    nvmlPciInfo_t info{};
    if (pci_info && pci_info(devices[i], &info) == NVML_SUCCESS) pci[i] = PciAddress(info.busId);
  }
  Topology t = Unlinked(gpus);
  if (!p2p) notes.push_back("this NVML has no nvmlDeviceGetP2PStatus: no P2P assumed between any GPUs");
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a + 1; b < n; ++b) {
      if (devices[a] == nullptr || devices[b] == nullptr) continue;
      nvmlGpuTopologyLevel_t nvml_level = NVML_TOPOLOGY_SYSTEM;
      const PathLevel level = ancestor && ancestor(devices[a], devices[b], &nvml_level) == NVML_SUCCESS
                                  ? LevelOf(nvml_level)
                                  : PathLevel::kUnknown;
      Link link = Link::kNone;
      if (p2p) {
        // NVLink capability first: an NVLink pair also answers OK for reads.
        nvmlGpuP2PStatus_t nvlink = NVML_P2P_STATUS_UNKNOWN, read = NVML_P2P_STATUS_UNKNOWN;
        const nvmlReturn_t rn = p2p(devices[a], devices[b], NVML_P2P_CAPS_INDEX_NVLINK, &nvlink);
        const nvmlReturn_t rr = p2p(devices[a], devices[b], NVML_P2P_CAPS_INDEX_READ, &read);
        if (rn == NVML_SUCCESS && nvlink == NVML_P2P_STATUS_OK)
          link = Link::kNvlink;
        else if (rr == NVML_SUCCESS && read == NVML_P2P_STATUS_OK)
          link = Link::kPcie;
        else if (rr != NVML_SUCCESS)
          notes.push_back("GPUs " + std::to_string(a) + " and " + std::to_string(b) +
                          ": P2P status unknown (NVML error " + std::to_string(static_cast<int>(rr)) +
                          "); no P2P assumed");
      }
      t.Connect(static_cast<int>(a), static_cast<int>(b), link, level);
    }
  }
  CheckWithDriver(&t, pci, &notes);
  t.notes = std::move(notes);
  return t;
}

std::optional<Topology> DiscoverTopologyHip(const std::vector<GpuInfo>& gpus, std::string* error) {
  void* lib = dlopen("libamdhip64.so.5", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    *error = std::string("cannot load HIP (libamdhip64.so.5): ") + dlerror();
    return std::nullopt;
  }
  auto peer = reinterpret_cast<hip::DeviceCanAccessPeerFn>(dlsym(lib, "hipDeviceCanAccessPeer"));
  const int n = static_cast<int>(gpus.size());
  Topology t = Unlinked(gpus);
  std::vector<std::string> notes;
  if (!peer) notes.push_back("this HIP runtime has no hipDeviceCanAccessPeer: no P2P assumed between any GPUs");
  bool any_p2p = false;
  for (int a = 0; a < n && peer; ++a) {
    for (int b = a + 1; b < n; ++b) {
      int ab = 0, ba = 0;
      const int ra = peer(&ab, gpus[a].index, gpus[b].index), rb = peer(&ba, gpus[b].index, gpus[a].index);
      if (ra != hip::kSuccess || rb != hip::kSuccess) {
        notes.push_back("GPUs " + std::to_string(a) + " and " + std::to_string(b) + ": P2P status unknown (HIP error " +
                        std::to_string(ra != hip::kSuccess ? ra : rb) + "); no P2P assumed");
        continue;
      }
      // Both ways, as NCCL/RCCL and peer copies need.
      if (ab != 0 && ba != 0) {
        t.Connect(a, b, Link::kPcie, PathLevel::kUnknown);
        any_p2p = true;
      }
    }
  }
  if (any_p2p) notes.push_back("HIP does not say what carries P2P: every P2P pair is taken as PCIe");
  t.notes = std::move(notes);
  return t;
}

}  // namespace gpushare::broker
