// What admission asks of the cluster (docs/cluster.md): a tenant's cluster-wide quota,
// taken when one of its clients registers and given back when it hangs up. The daemon's
// ClusterAgent (broker/io/cluster_agent.h) answers over ZooKeeper on its own thread; the
// core only sees this interface, so it stays without I/O and tests can play the cluster.
#pragma once

#include <string>

#include "broker/policy/cluster_state.h"

namespace gpushare::broker {

class ClusterQuota {
 public:
  virtual ~ClusterQuota() = default;
  // Takes `amount` of `tenant`'s quota for a registering client: "" when granted, else
  // why not. `held`: the client already holds its memory (it re-registers after a broker
  // restart), so it is counted whatever the others hold. Returns within a bound.
  virtual std::string Take(const std::string& tenant, const QuotaAmount& amount, bool held) = 0;
  // The client is gone: what it took returns (never blocks).
  virtual void Give(const std::string& tenant, const QuotaAmount& amount) = 0;
};

}  // namespace gpushare::broker
