// What gpushare-smi prints: the node as JSON (GPUs, clients with their devices, shares,
// classes and placement, communicators, topology), read from the broker's parts so
// that no share or class is computed a second time for the report.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/core/communicators.h"
#include "broker/core/spatial_planner.h"
#include "broker/core/weights.h"
#include "broker/policy/config.h"
#include "broker/policy/gpu_info.h"
#include "broker/policy/ledger.h"
#include "broker/policy/scheduler.h"
#include "broker/policy/topology.h"

namespace gpushare::broker {

// The parts the report reads, at `now`. `channels` may be null.
struct StatusSources {
  const std::vector<GpuInfo>& gpus;
  const NodeLedger& ledger;
  const ClientRegistry& clients;
  const WorkTracker& work;
  const Weights& weights;
  const Scheduler& scheduler;
  const SpatialPlanner& spatial;
  const Communicators& comms;
  const Topology& topology;
  ChannelHost* channels;
  uint64_t now;
  const BrokerConfig* config = nullptr;  // its profiles and reservation: the "vgpu" inventory
  // Whether the viewer may see a tenant's clients and communicators (visibility.h);
  // null: everything. GPUs' totals are shown to all.
  std::function<bool(const std::string& tenant)> may_see;
};

// The JSON text (the contract of docs/configuration.md and DESIGN.md: gpus[], clients[],
// and hidden_clients: how many clients the viewer may not see).
std::string StatusJson(const StatusSources& s);

}  // namespace gpushare::broker
