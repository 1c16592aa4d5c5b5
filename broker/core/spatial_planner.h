// Spatial sharing as the broker carries it out: every GPU's CU masks planned from its
// scheduled flows' classes (SpatialPolicy, broker/policy/spatial.h), and those that
// changed handed to the scheduler and to the clients' channels. A client that pauses
// keeps its mask (its class from before the pause counts). Under MPS a flow's "mask" is
// its SM share in percent units, fixed before its context was made: only the scheduler
// learns it (the client's share is in its environment), and it is lifted for every
// flow while no MPS daemon runs.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/policy/config.h"
#include "broker/policy/gpu_info.h"
#include "broker/policy/scheduler.h"
#include "broker/policy/spatial.h"

namespace gpushare::broker {

class SpatialPlanner {
 public:
  // Every pointer is the broker's and outlives this; `channels` is not null when Update runs.
  // `mps_pipe`: where the MPS daemon serves, "" while none runs (spatial = "mps").
  SpatialPlanner(const BrokerConfig* config, const std::vector<GpuInfo>* gpus, const ClientRegistry* clients,
                 const WorkTracker* work, Scheduler* scheduler, ChannelHost* channels, const std::string* mps_pipe)
      : config_(config),
        gpus_(gpus),
        clients_(clients),
        work_(work),
        scheduler_(scheduler),
        channels_(channels),
        mps_pipe_(mps_pipe) {}

  // Plans every GPU again and publishes what changed (and lifts the masks of flows
  // that no longer have one).
  void Update(uint64_t now);
  // Whether any flow has a CU mask in force.
  bool active() const { return !spatial_.empty(); }
  // The mask in force for a client's virtual GPU, nullptr if none.
  const SpatialAssignment* Find(ClientId id, int device) const;

 private:
  const BrokerConfig* config_;
  const std::vector<GpuInfo>* gpus_;
  const ClientRegistry* clients_;
  const WorkTracker* work_;
  Scheduler* scheduler_;
  ChannelHost* channels_;
  const std::string* mps_pipe_;
  std::map<std::pair<ClientId, int>, SpatialAssignment> spatial_;  // flows with a CU mask in force
  std::map<ClientId, WorkClass> spatial_class_;                    // a client's last class but idle
};

}  // namespace gpushare::broker
