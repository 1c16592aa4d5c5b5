// Where a registering client's virtual GPUs go: the load of every GPU as its tenant sees
// it (memory held and promised, demand, class mix, from the ledger, the scheduler and
// the classifiers), the decision of the configured policy (placement_policy.h), and
// the plans of distributed jobs, each planned as one set when its first rank comes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/policy/config.h"
#include "broker/policy/gpu_info.h"
#include "broker/policy/ledger.h"
#include "broker/policy/placement_policy.h"
#include "broker/policy/scheduler.h"
#include "broker/policy/topology.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

class PlacementService {
 public:
  // Every pointer is the broker's and outlives this; `clock` is read at each use.
  PlacementService(const std::vector<GpuInfo>& gpus, const BrokerConfig* config, const ClientRegistry* clients,
                   const NodeLedger* ledger, const Scheduler* scheduler, const WorkTracker* work,
                   const std::function<uint64_t()>* clock);

  // How the GPUs are connected; by default none has P2P. Ignored (false) unless it
  // describes as many GPUs as the ledger has.
  bool SetTopology(Topology topology);
  const Topology& topology() const { return topology_; }

  // The decision for a registering client of `tenant` whose cap is `cap`.
  PolicyDecision Place(const std::string& tenant, const std::optional<uint64_t>& cap, const TenantTerms& terms,
                       const protocol::Hello& hello);
  // A re-registering rank's map is its job's plan: later ranks of the job get the same.
  void KeepPlan(const std::string& tenant, const std::string& job, const std::vector<int>& physical);
  // A client of `tenant`'s `job` left: the job's plan goes once its last rank is gone.
  void ClientLeft(const std::string& tenant, const std::string& job);

 private:
  std::vector<GpuLoad> Loads(const std::string& tenant) const;
  PolicyDecision PlaceRank(const PolicyRequest& request, int job_size, const std::vector<GpuLoad>& loads);
  WorkClass ClassOf(ClientId id) const;  // its measured class, else the one placement assumed
  // The virtual GPUs a client works on: a rank of a planned job, its own; others,
  // those where it holds memory or has run (else its virtual 0).
  std::vector<int> WorkDevices(ClientId id, const ClientRecord& c) const;

  const BrokerConfig* config_;
  const ClientRegistry* clients_;
  const NodeLedger* ledger_;
  const Scheduler* scheduler_;
  const WorkTracker* work_;
  const std::function<uint64_t()>* clock_;
  Topology topology_;
  PlacementPolicy policy_;
  int round_robin_cursor_ = 0;
  // A job's GPUs in local-rank order, planned when its first rank registers and kept
  // while any of its ranks lives. Keyed by tenant and job: tenants never share jobs.
  std::map<std::pair<std::string, std::string>, std::vector<int>> job_plans_;
};

}  // namespace gpushare::broker
