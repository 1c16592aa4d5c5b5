// Collective communicators (NCCL/RCCL) as their ranks report them, gathered per tenant
// by communicator id: who the members are, on which GPUs, and a warning when two ranks
// share a GPU or a pair has no P2P (data through host memory).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "broker/core/client_registry.h"
#include "broker/policy/topology.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

// A collective communicator (NCCL/RCCL) as its ranks reported it, per tenant.
struct Communicator {
  struct Member {
    ClientId client;
    int32_t pid;
    int rank;
    int device;  // virtual
    int gpu;     // physical, -1 if the client named no GPU of its own
    uint64_t handle;
  };
  uint32_t nranks = 0;
  std::vector<Member> members;
};

class Communicators {
 public:
  using Map = std::map<std::pair<std::string, uint64_t>, Communicator>;  // by tenant and comm id

  // `topology` is the broker's current one (read at each use).
  explicit Communicators(const Topology* topology) : topology_(topology) {}

  // Client `conn` (registered as `c`) joined or left a communicator: a warning about
  // it for the client, or "".
  std::string Report(ClientId conn, const ClientRecord& c, const protocol::Comm& m);
  // The client is gone: its places in communicators with it.
  void RemoveClient(ClientId conn);
  std::string Warning(const Communicator& comm) const;
  const Map& all() const { return comms_; }

 private:
  const Topology* topology_;
  Map comms_;
};

}  // namespace gpushare::broker
