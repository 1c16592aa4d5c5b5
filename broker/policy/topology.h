// How the node's GPUs are connected, for placement: which pairs can reach each other's
// memory directly (P2P), over NVLink or PCIe, and how far apart the PCIe path is. Read
// at start by broker/io/topology_discovery.h (NVML, the real one or simgpu's) or built
// from explicit data in tests and the placement study. Plain data: no NVML type here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gpu_info.h"

namespace gpushare::broker {

// What carries peer-to-peer traffic between two GPUs.
enum class Link {
  kNone,    // no P2P: NCCL and peer copies go through host memory
  kPcie,    // P2P over PCIe
  kNvlink,  // P2P over NVLink (or NVSwitch)
};
const char* LinkName(Link link);  // "no P2P", "PCIe", "NVLink"

// Where two GPUs' PCIe paths meet (NVML's common ancestor; the values are NVML's, so a
// level can be compared with another: lower is closer). It ranks PCIe pairs: behind one
// switch is better than across the host bridge.
enum class PathLevel {
  kSame = 0,               // the same GPU (or one board)
  kSingleSwitch = 10,      // one PCIe switch
  kMultipleSwitches = 20,  // several switches, no host bridge
  kHostBridge = 30,        // the CPU's host bridge
  kNumaNode = 40,          // host bridges of one NUMA node
  kSystem = 50,            // across CPU sockets (SMP interconnect)
  kUnknown = 60,
};
// nvidia-smi's words: "X", "PIX", "PXB", "PHB", "NODE", "SYS", "?".
const char* PathLevelName(PathLevel level);

struct Topology {
  Topology() = default;
  // GPUs of these sizes with no P2P between any two; Connect adds the links. `names`
  // may be empty ("GPU i").
  explicit Topology(std::vector<uint64_t> memory_bytes, std::vector<std::string> names = {});

  // Sets the link between a and b (both ways). `level` is where their PCIe paths meet.
  void Connect(int a, int b, Link link, PathLevel level = PathLevel::kSingleSwitch);

  Link link(int a, int b) const;
  PathLevel level(int a, int b) const;
  bool p2p(int a, int b) const { return link(a, b) != Link::kNone; }
  uint64_t largest_memory_bytes() const;

  // A matrix in the manner of `nvidia-smi topo -m`: NV (NVLink), PIX/PXB/PHB/NODE/SYS
  // (PCIe P2P, by where the paths meet), "-" (no P2P).
  std::string Describe() const;

  int gpu_count = 0;
  std::vector<uint64_t> memory_bytes;
  std::vector<std::string> names;
  std::vector<Link> links;         // gpu_count x gpu_count, row-major; symmetric
  std::vector<PathLevel> levels;   // likewise
  std::vector<std::string> notes;  // what discovery could not learn (treated as no P2P)
};

// The GPUs of the broker's inventory (gpu_info.h), in its order, with no link yet.
Topology Unlinked(const std::vector<GpuInfo>& gpus);

}  // namespace gpushare::broker
