// gpushare-manager (docs/cluster.md): the cluster's active/standby manager. Managers
// elect a leader through ZooKeeper (ephemeral sequential znodes: the lowest leads);
// the leader reads every node's record, the tenants' quota records and the nodes'
// meter rows, gives back quota held by nodes that are gone, and answers the cluster
// view and cluster-wide usage and bills on its Unix socket (the broker's protocol:
// Status and Usage), which `gpushare-smi --cluster` asks. A standby answers only who
// leads, and takes over when the leader's session ends.
#pragma once

#include <string>

namespace gpushare::broker {

struct ManagerOptions {
  std::string config_path;  // TOML: [cluster] (where), [billing] (rates), [tenants] (who may read usage)
  std::string socket_path;
  std::string name;  // "" : the host name and pid
};

// Runs until SIGTERM or SIGINT; returns the exit status.
int RunManager(const ManagerOptions& options);

}  // namespace gpushare::broker
