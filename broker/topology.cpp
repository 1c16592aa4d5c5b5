// The node's GPU topology (see topology.h). NVML is loaded at run time, as in
// gpu_inventory.cpp, so the broker builds and starts on machines without a driver.
#include "topology.h"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

#include "common/vendor/hip_api.h"
#include "common/vendor/nvml_api.h"

namespace gpushare::broker {

namespace hip = gpushare::vendor::hip;

namespace {

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

}  // namespace

const char* LinkName(Link link) {
  switch (link) {
    case Link::kNone: return "no P2P";
    case Link::kPcie: return "PCIe";
    case Link::kNvlink: return "NVLink";
  }
  return "?";
}

const char* PathLevelName(PathLevel level) {
  switch (level) {
    case PathLevel::kSame: return "X";
    case PathLevel::kSingleSwitch: return "PIX";
    case PathLevel::kMultipleSwitches: return "PXB";
    case PathLevel::kHostBridge: return "PHB";
    case PathLevel::kNumaNode: return "NODE";
    case PathLevel::kSystem: return "SYS";
    case PathLevel::kUnknown: return "?";
  }
  return "?";
}

Topology::Topology(std::vector<uint64_t> memory, std::vector<std::string> gpu_names)
    : gpu_count(static_cast<int>(memory.size())), memory_bytes(std::move(memory)), names(std::move(gpu_names)) {
  names.resize(memory_bytes.size());
  for (int g = 0; g < gpu_count; ++g)
    if (names[g].empty()) names[g] = "GPU " + std::to_string(g);
  links.assign(static_cast<size_t>(gpu_count) * gpu_count, Link::kNone);
  levels.assign(links.size(), PathLevel::kUnknown);
  for (int g = 0; g < gpu_count; ++g) levels[static_cast<size_t>(g) * gpu_count + g] = PathLevel::kSame;
}

void Topology::Connect(int a, int b, Link link, PathLevel level) {
  if (a < 0 || b < 0 || a >= gpu_count || b >= gpu_count || a == b) return;
  links[static_cast<size_t>(a) * gpu_count + b] = links[static_cast<size_t>(b) * gpu_count + a] = link;
  levels[static_cast<size_t>(a) * gpu_count + b] = levels[static_cast<size_t>(b) * gpu_count + a] = level;
}

Link Topology::link(int a, int b) const {
  if (a < 0 || b < 0 || a >= gpu_count || b >= gpu_count || a == b) return Link::kNone;
  return links[static_cast<size_t>(a) * gpu_count + b];
}

PathLevel Topology::level(int a, int b) const {
  if (a < 0 || b < 0 || a >= gpu_count || b >= gpu_count) return PathLevel::kUnknown;
  return levels[static_cast<size_t>(a) * gpu_count + b];
}

uint64_t Topology::largest_memory_bytes() const {
  return memory_bytes.empty() ? 0 : *std::max_element(memory_bytes.begin(), memory_bytes.end());
}

std::string Topology::Describe() const {
  std::string out = "     ";
  char cell[16];
  for (int b = 0; b < gpu_count; ++b) {
    std::snprintf(cell, sizeof cell, " GPU%-2d", b);
    out += cell;
  }
  while (out.back() == ' ') out.pop_back();
  out += "\n";
  for (int a = 0; a < gpu_count; ++a) {
    std::snprintf(cell, sizeof cell, "GPU%-2d", a);
    out += cell;
    for (int b = 0; b < gpu_count; ++b) {
      const char* word = a == b                        ? "X"
                         : link(a, b) == Link::kNvlink ? "NV"
                         : link(a, b) == Link::kPcie   ? PathLevelName(level(a, b))
                                                       : "-";
      std::snprintf(cell, sizeof cell, " %-5s", word);
      out += cell;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += "\n";
  }
  return out;
}

namespace {

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

Topology Unlinked(const std::vector<GpuInfo>& gpus) {
  std::vector<uint64_t> sizes;
  std::vector<std::string> names;
  for (const GpuInfo& g : gpus) {
    sizes.push_back(g.memory_bytes);
    names.push_back(g.name);
  }
  return Topology(std::move(sizes), std::move(names));
}

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
