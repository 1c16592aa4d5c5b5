// The cluster's shared state as it lives in ZooKeeper (docs/cluster.md): what [cluster]
// configures, the node record each broker publishes, the quota record every broker of
// the cluster updates with versioned writes, and the meter rows a node publishes for the
// manager. Pure: text in, values out. Every decoder takes hostile input (anyone who can
// write the znodes) and answers a value or an error, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "billing.h"

namespace gpushare::broker {

// [cluster.tenants.NAME]: what a tenant may hold across every node of the cluster.
struct ClusterTenantQuota {
  std::optional<uint64_t> max_instances;  // registered clients (each a vGPU instance or a plain client)
  std::optional<uint64_t> max_memory;     // bytes promised to its clients (cap x GPUs), summed
};

// [cluster]: off unless `zookeeper` is set.
struct ClusterConfig {
  std::string zookeeper;                  // "host:port,host:port"; "" : no cluster
  std::string name = "default";           // znodes under /gpushare/NAME
  std::string node;                       // this node's name; "" : the host name
  uint32_t session_timeout_ms = 10000;    // a dead node leaves the view after this
  bool unreachable_allow = false;         // ZooKeeper unreachable: grant quota locally (true) or refuse
  uint32_t grant_timeout_ms = 2000;       // admission waits at most this for a cluster grant
  uint64_t publish_interval_ns = 2'000'000'000ull;  // the node record is rewritten at most this often
  std::map<std::string, ClusterTenantQuota> tenants;
  bool enabled() const { return !zookeeper.empty(); }
};

// Znode paths of a cluster.
struct ClusterPaths {
  explicit ClusterPaths(const std::string& cluster) : root("/gpushare/" + cluster) {}
  std::string root;
  std::string nodes() const { return root + "/nodes"; }      // ephemeral, one per live broker
  std::string quota() const { return root + "/quota"; }      // persistent, one per tenant with a quota
  std::string meter() const { return root + "/meter"; }      // persistent, one per node that metered
  std::string manager() const { return root + "/manager"; }  // election: ephemeral sequential
  std::string node(const std::string& n) const { return nodes() + "/" + n; }
  std::string tenant_quota(const std::string& t) const { return quota() + "/" + t; }
  std::string node_meter(const std::string& n) const { return meter() + "/" + n; }
};
// Node and tenant names become znode names: 1-128 of [A-Za-z0-9._-], not "." or "..".
bool ValidZnodeName(std::string_view name);

struct QuotaAmount {
  uint64_t instances = 0;
  uint64_t memory_bytes = 0;
  bool zero() const { return instances == 0 && memory_bytes == 0; }
  bool operator==(const QuotaAmount&) const = default;
};

// /quota/TENANT: what each node holds of the tenant's cluster quota. A node writes only
// its own entry, as an absolute value (idempotent), with the znode's version: two nodes
// taking at once cannot both see room that is only there for one.
struct QuotaRecord {
  std::map<std::string, QuotaAmount> held;  // by node
  QuotaAmount Total() const;
  QuotaAmount Others(const std::string& node) const;
};
std::string EncodeQuota(const QuotaRecord& record);
std::optional<QuotaRecord> DecodeQuota(std::string_view text, std::string* error);
// "" if `node` may hold `want` of the tenant beside what the others hold, else why not.
std::string QuotaRefusal(const QuotaRecord& record, const std::string& node, const QuotaAmount& want,
                         const ClusterTenantQuota& limit, const std::string& tenant);

// /nodes/NODE: a broker's inventory, rewritten on change (at most every publish interval).
struct NodeGpu {
  int index = 0;
  std::string name;
  uint64_t memory_total = 0;
  uint64_t memory_used = 0;
  uint64_t memory_promised = 0;
  bool operator==(const NodeGpu&) const = default;
};
struct NodeRecord {
  std::string name;
  std::string version;  // the broker's
  std::string health;   // "ok", or what is wrong
  uint64_t updated_unix_ms = 0;
  std::vector<NodeGpu> gpus;
  std::map<std::string, uint64_t> free_instances;  // by profile: how many more fit on the node
  uint64_t clients = 0;
  std::map<std::string, QuotaAmount> quota_held;  // by tenant
  bool operator==(const NodeRecord&) const = default;
};
std::string EncodeNode(const NodeRecord& node);
std::optional<NodeRecord> DecodeNode(std::string_view text, std::string* error);

// /meter/NODE: the node's meter rows of its recent days, whole (a node's rows are
// replaced at each publish, so reading them twice counts them once).
struct NodeMeter {
  std::string node;
  int64_t since_day = 0;  // rows from this day on
  std::vector<UsageRow> rows;
};
std::string EncodeMeter(const NodeMeter& meter);
std::optional<NodeMeter> DecodeMeter(std::string_view text, std::string* error);
// The meter as published: the newest days that fit in `max_bytes` of text (a znode holds
// at most 1 MiB); `since_day` says from which day on the rows are whole.
std::string EncodeMeterWithin(NodeMeter meter, size_t max_bytes);

}  // namespace gpushare::broker
