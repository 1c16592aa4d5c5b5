// Where a registering client's virtual GPUs go, and why: a pure, explainable policy
// over the node's topology and what the broker knows of each GPU (memory, measured
// demand, class mix). Ranks of one distributed job get distinct GPUs (NCCL refuses two
// ranks on one GPU), close to the job's other ranks; a multi-GPU client gets a
// P2P-connected set when one exists; compute-bound clients are spread before they are
// stacked. Admission (whether the tenant's cap can be met) stays in the broker: here a
// GPU where it cannot is only ranked last. Round-robin and least-memory-held are kept
// as baselines for the placement study (tools/placement_sim.cpp, docs/placement.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "classifier.h"
#include "topology.h"

namespace gpushare::broker {

// What the broker knows of one physical GPU when a client registers.
struct GpuLoad {
  uint64_t held_bytes = 0;      // held by all clients (NodeLedger::GpuHeld)
  uint64_t promised_bytes = 0;  // caps of the other tenants with clients there (what admission checks)
  bool tenant_present = false;  // the requesting tenant has a client there: its cap is counted already
  double demand = 0;            // measured: the sum of the GPU shares of the clients there
  int compute_clients = 0;      // heavy compute-bound clients there
  int memory_clients = 0;       // memory-bound (or copy-bound) clients there
  int clients = 0;              // all clients there, whatever their class
};

// Another rank of the requesting client's job, already placed.
struct JobPeer {
  int rank = -1;  // -1: unknown
  int gpu = -1;   // the physical GPU it uses
};

struct PolicyRequest {
  int device_count = 1;    // virtual GPUs wanted; 0: every GPU the tenant may use (a rank of a job: one)
  std::vector<int> asked;  // physical GPUs in virtual order; non-empty: honoured if allowed
  std::optional<std::vector<int>> allowed;         // the tenant's GPUs; nullopt: all
  std::optional<uint64_t> cap_bytes;               // the tenant's cap per GPU; nullopt: uncapped
  WorkClass expected_class = WorkClass::kUnknown;  // the client's own, when known (profile, earlier run)
  std::vector<WorkClass> tenant_classes;           // current classes of the tenant's other clients
  std::string tenant;
  // A rank of a distributed job (both known) gets GPUs apart from the job's other
  // ranks; a client with a job but no rank is placed as any client.
  std::string job;                 // "": not part of a distributed job
  int rank = -1;                   // -1: unknown
  std::vector<JobPeer> job_peers;  // the job's other ranks (those with a known rank)
};

struct PolicyDecision {
  std::vector<int> physical;                      // virtual i -> physical[i]; empty when refused
  std::string refusal;                            // non-empty: cannot place, and why (sent to the client)
  std::string warning;                            // placed, but the user should know (e.g. no P2P between ranks)
  WorkClass assumed_class = WorkClass::kCompute;  // kCompute or kMemory: what the mix was judged by
  // Why, for `gpushare-smi --explain`: who asked for what, one line per GPU (its score
  // and the terms of it), the sets weighed (multi-GPU), and the decision.
  std::vector<std::string> explanation;
};

class PlacementPolicy {
 public:
  // A GPU's score is the sum of these terms (higher is better); the defaults are the
  // ones docs/placement.md studies.
  struct Weights {
    double headroom = 1.0;     // x memory neither held nor promised there / the largest GPU's memory
    double demand = 1.0;       // x measured demand (sum of GPU shares)
    double same_class = 2.0;   // per heavy client of the client's class there (compute beside compute...)
    double other_class = 0.5;  // per heavy client of the other class (memory beside compute interferes less)
    double client = 0.1;       // per client there, whatever its class: spreads idle ones too
    double cap_unmet = 10.0;   // the tenant's cap cannot be met there: ranked after every GPU where it can
    // The value of a link (between a GPU and the job's other ranks, or between the GPUs of a set).
    double nvlink = 1.5;
    double pcie_one_switch = 1.0;   // PIX
    double pcie_switches = 0.9;     // PXB
    double pcie_host_bridge = 0.8;  // PHB
    double pcie_far = 0.7;          // NODE, SYS or unknown, where P2P is still allowed
  };

  PlacementPolicy() = default;
  explicit PlacementPolicy(Weights weights) : weights_(weights) {}
  const Weights& weights() const { return weights_; }

  // `gpus` has one entry per GPU of `topology`.
  PolicyDecision Place(const Topology& topology, const std::vector<GpuLoad>& gpus, const PolicyRequest& request) const;

  // The value of the link between two GPUs (0 for no P2P).
  double LinkValue(const Topology& topology, int a, int b) const;

 private:
  Weights weights_;
};

// Baselines for the placement study. Both honour `asked` as Place does and resolve
// device_count the same way; neither knows of topology, classes or jobs.
// Round-robin: the next GPUs the tenant may use from `*cursor` on (which advances).
PolicyDecision PlaceRoundRobin(const Topology& topology, const PolicyRequest& request, int* cursor);
// Least memory held first, lowest index on ties (`placement = "least-loaded"`).
PolicyDecision PlaceLeastMemoryHeld(const Topology& topology, const std::vector<GpuLoad>& gpus,
                                    const PolicyRequest& request);

}  // namespace gpushare::broker
