// The node topologies the placement issue names, for the placement tests: 2 GPUs with
// P2P; 4 GPUs as two NVLink pairs; 8 GPUs behind two PCIe switches; mixed memory sizes.
#pragma once

#include <vector>

#include "broker/policy/topology.h"

namespace gpushare::broker::test_topologies {

inline constexpr uint64_t kGiB = 1ull << 30;

inline Topology TwoGpusWithP2p() {
  Topology t({16 * kGiB, 16 * kGiB});
  t.Connect(0, 1, Link::kPcie, PathLevel::kSingleSwitch);
  return t;
}

// 0=1 and 2=3 over NVLink bridges; across the pairs PCIe through the host bridge.
inline Topology FourGpusAsTwoNvlinkPairs() {
  Topology t(std::vector<uint64_t>(4, 80 * kGiB));
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) t.Connect(a, b, Link::kPcie, PathLevel::kHostBridge);
  t.Connect(0, 1, Link::kNvlink);
  t.Connect(2, 3, Link::kNvlink);
  return t;
}

// GPUs 0-3 behind one PCIe switch, 4-7 behind another, on different sockets: P2P only
// within a switch.
inline Topology EightGpusBehindTwoSwitches() {
  Topology t(std::vector<uint64_t>(8, 80 * kGiB));
  for (int a = 0; a < 8; ++a)
    for (int b = a + 1; b < 8; ++b)
      if (a / 4 == b / 4) t.Connect(a, b, Link::kPcie, PathLevel::kSingleSwitch);
  return t;
}

// Two 24 GiB and two 80 GiB GPUs, all behind one switch.
inline Topology MixedMemorySizes() {
  Topology t({24 * kGiB, 80 * kGiB, 80 * kGiB, 24 * kGiB});
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) t.Connect(a, b, Link::kPcie, PathLevel::kSingleSwitch);
  return t;
}

}  // namespace gpushare::broker::test_topologies
