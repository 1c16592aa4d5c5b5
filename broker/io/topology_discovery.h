// Discovery of the node's GPU topology (the Topology of broker/policy/topology.h) from
// the GPU libraries, loaded at run time: I/O, kept apart from the pure model so that
// the policy library carries no library loading.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "broker/policy/gpu_info.h"
#include "broker/policy/topology.h"

namespace gpushare::broker {

// How the inventory's GPUs are linked, as NVML reports it: nvmlDeviceGetP2PStatus
// (NVLink capability first, then read capability: P2P over PCIe) and
// nvmlDeviceGetTopologyCommonAncestor for every pair, checked against the CUDA driver's
// cuDeviceCanAccessPeer. Names and sizes are the inventory's, so GPU i of the topology
// is GPU i of the ledger. nullopt with `error` set when NVML cannot be loaded or does
// not answer; a pair NVML cannot describe is kept as no P2P, with a note. Where NVML
// cannot be loaded (an AMD node), DiscoverTopologyHip answers instead.
std::optional<Topology> DiscoverTopology(const std::vector<GpuInfo>& gpus, std::string* error);

// The same as the HIP runtime (libamdhip64.so.5) reports it: hipDeviceCanAccessPeer for
// every pair. HIP says whether a pair has P2P, not over what or how far apart: a P2P
// pair is taken as PCIe with an unknown path level (a note says so).
std::optional<Topology> DiscoverTopologyHip(const std::vector<GpuInfo>& gpus, std::string* error);

}  // namespace gpushare::broker
