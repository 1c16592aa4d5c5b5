// The broker's side of the cluster (docs/cluster.md), on a thread of its own with its
// own ZooKeeper session: it publishes the node as an ephemeral znode, publishes the
// node's meter rows, and takes and gives back tenants' cluster quotas with versioned
// writes. The broker's loop hands it work and never waits on ZooKeeper, except a
// registration that needs a cluster grant: that waits for the answer, at most
// [cluster] grant_timeout_ms. When ZooKeeper is unreachable it fails static: what is
// held stays held, what is given back is written when the session returns, and new
// grants are refused (or, with unreachable = "allow", granted locally and written later).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "broker/core/cluster_quota.h"
#include "broker/policy/cluster_state.h"

namespace gpushare::broker {

class ZkSession;

class ClusterAgent : public ClusterQuota {
 public:
  // `node`: this node's name (ClusterConfig::node, else the host name).
  ClusterAgent(const ClusterConfig& config, std::string node);
  ~ClusterAgent() override;  // closes the session: the node leaves the view at once
  ClusterAgent(const ClusterAgent&) = delete;
  ClusterAgent& operator=(const ClusterAgent&) = delete;

  std::string Take(const std::string& tenant, const QuotaAmount& amount, bool held) override;
  void Give(const std::string& tenant, const QuotaAmount& amount) override;

  // The node's record (the latest wins; written at most every publish interval).
  void PublishNode(NodeRecord node);
  // The node's meter rows (the latest wins).
  void PublishMeter(NodeMeter meter);
  // A reloaded config's quotas.
  void SetQuotas(std::map<std::string, ClusterTenantQuota> quotas);
  bool connected() const { return connected_.load(std::memory_order_relaxed); }
  const std::string& node() const { return node_; }

 private:
  struct TakeRequest {
    std::string tenant;
    QuotaAmount amount;
    bool done = false;
    bool abandoned = false;  // the registration stopped waiting: undo a late grant
    std::string refusal;
  };
  void Run();
  void Step(ZkSession& zk);
  // Writes this node's entry of /quota/TENANT as `want` if the quota allows (`check`);
  // "" when written, else the refusal or the ZooKeeper error.
  std::string WriteQuota(ZkSession& zk, const std::string& tenant, const QuotaAmount& want, bool check);
  void Answer(const std::shared_ptr<TakeRequest>& request, ZkSession& zk);
  void NoteConnected(bool now);

  const ClusterConfig config_;
  const ClusterPaths paths_;
  const std::string node_;
  std::atomic<bool> connected_{false};

  std::mutex mu_;
  std::condition_variable wake_;       // the agent: work arrived
  std::condition_variable answered_;   // a registration: its request was answered
  bool stop_ = false;
  std::map<std::string, ClusterTenantQuota> quotas_;
  std::map<std::string, QuotaAmount> held_;  // what this node's clients hold, the truth for our entries
  std::set<std::string> dirty_;              // tenants whose entry must be rewritten from held_
  std::deque<std::shared_ptr<TakeRequest>> takes_;
  std::optional<NodeRecord> node_record_;
  bool node_dirty_ = false;
  std::optional<NodeMeter> meter_;
  uint64_t last_unreachable_log_ns_ = 0;

  uint64_t generation_ = 0;       // of the session the ephemeral node was made in (agent thread)
  uint64_t last_node_write_ns_ = 0;
  std::thread thread_;
};

// The node's name when [cluster] node is not set: the host name, made a znode name.
std::string DefaultNodeName();

}  // namespace gpushare::broker
