// The node's GPU topology as plain data (see topology.h); how it is read from NVML,
// the CUDA driver or HIP is broker/io/topology_discovery.cpp.
#include "topology.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

namespace gpushare::broker {

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

Topology Unlinked(const std::vector<GpuInfo>& gpus) {
  std::vector<uint64_t> sizes;
  std::vector<std::string> names;
  for (const GpuInfo& g : gpus) {
    sizes.push_back(g.memory_bytes);
    names.push_back(g.name);
  }
  return Topology(std::move(sizes), std::move(names));
}

}  // namespace gpushare::broker
