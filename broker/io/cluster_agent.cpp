// The broker's cluster agent (see cluster_agent.h).
#include "cluster_agent.h"

#include <unistd.h>
#include <zookeeper/zookeeper.h>  // the error codes

#include <algorithm>
#include <chrono>
#include <ctime>

#include "broker/io/broker_log.h"
#include "common/base/futex.h"
#include "zk_session.h"

namespace gpushare::broker {
namespace {

constexpr auto kIdleWake = std::chrono::milliseconds(100);  // session checks while nothing else happens
constexpr int kCasTries = 64;  // versioned-write retries under contention before giving up
constexpr size_t kMeterBytes = 900 * 1024;  // under ZooKeeper's 1 MiB value limit
constexpr uint64_t kUnreachableLogEveryNs = 1'000'000'000;

QuotaAmount Plus(QuotaAmount a, const QuotaAmount& b) {
  return QuotaAmount{a.instances + b.instances, a.memory_bytes + b.memory_bytes};
}
QuotaAmount Minus(QuotaAmount a, const QuotaAmount& b) {
  return QuotaAmount{a.instances - std::min(a.instances, b.instances),
                     a.memory_bytes - std::min(a.memory_bytes, b.memory_bytes)};
}

}  // namespace

std::string DefaultNodeName() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return "node";
  std::string name;
  for (const char* p = host; *p != '\0'; ++p) name += ValidZnodeName(std::string(1, *p)) ? *p : '-';
  return ValidZnodeName(name) ? name : "node";
}

ClusterAgent::ClusterAgent(const ClusterConfig& config, std::string node)
    : config_(config), paths_(config.name), node_(std::move(node)), quotas_(config.tenants) {
  thread_ = std::thread([this] { Run(); });
}

ClusterAgent::~ClusterAgent() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::string ClusterAgent::Take(const std::string& tenant, const QuotaAmount& amount, bool held) {
  std::unique_lock lock(mu_);
  // Refusals and local grants are logged at most once a second: the state change is
  // logged when it happens, and a client retrying must not flood the log.
  const uint64_t now = MonotonicNs();
  const bool log = now - last_unreachable_log_ns_ >= kUnreachableLogEveryNs;
  if (held || (!connected() && config_.unreachable_allow)) {
    if (!held && log) {
      last_unreachable_log_ns_ = now;
      Log(LogLevel::kWarn, "cluster: ZooKeeper unreachable: tenant \"%s\" granted locally (unreachable = \"allow\")",
          tenant.c_str());
    }
    held_[tenant] = Plus(held_[tenant], amount);
    dirty_.insert(tenant);
    wake_.notify_all();
    return "";
  }
  if (!connected()) {
    if (log) {
      last_unreachable_log_ns_ = now;
      Log(LogLevel::kWarn, "cluster: ZooKeeper unreachable: a new client of tenant \"%s\" refused (fail static)",
          tenant.c_str());
    }
    return "ZooKeeper is unreachable: no new grant of tenant \"" + tenant +
           "\"'s cluster quota until it is back (clients already admitted keep running)";
  }
  auto request = std::make_shared<TakeRequest>();
  request->tenant = tenant;
  request->amount = amount;
  takes_.push_back(request);
  wake_.notify_all();
  const bool done = answered_.wait_for(lock, std::chrono::milliseconds(config_.grant_timeout_ms),
                                       [&] { return request->done; });
  if (!done) {
    request->abandoned = true;
    Log(LogLevel::kWarn, "cluster: no answer from ZooKeeper within %u ms for tenant \"%s\": refused",
        config_.grant_timeout_ms, tenant.c_str());
    return "no answer from ZooKeeper within " + std::to_string(config_.grant_timeout_ms) + " ms";
  }
  return request->refusal;
}

void ClusterAgent::Give(const std::string& tenant, const QuotaAmount& amount) {
  std::lock_guard lock(mu_);
  held_[tenant] = Minus(held_[tenant], amount);
  dirty_.insert(tenant);
  wake_.notify_all();
}

void ClusterAgent::PublishNode(NodeRecord node) {
  std::lock_guard lock(mu_);
  if (node_record_ && *node_record_ == node) return;
  node_record_ = std::move(node);
  node_dirty_ = true;
  wake_.notify_all();
}

void ClusterAgent::PublishMeter(NodeMeter meter) {
  std::lock_guard lock(mu_);
  meter_ = std::move(meter);
  wake_.notify_all();
}

void ClusterAgent::SetQuotas(std::map<std::string, ClusterTenantQuota> quotas) {
  std::lock_guard lock(mu_);
  quotas_ = std::move(quotas);
}

void ClusterAgent::NoteConnected(bool now) {
  if (connected_.exchange(now) == now) return;
  if (now)
    Log(LogLevel::kInfo, "cluster: connected to ZooKeeper %s as node \"%s\" of cluster \"%s\"",
        config_.zookeeper.c_str(), node_.c_str(), config_.name.c_str());
  else
    Log(LogLevel::kWarn,
        "cluster: ZooKeeper %s unreachable: serving what is held, new cluster-quota grants %s (fail static)",
        config_.zookeeper.c_str(), config_.unreachable_allow ? "granted locally" : "refused");
}

void ClusterAgent::Run() {
  ZkSession zk(config_.zookeeper, config_.session_timeout_ms);
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    Step(zk);
    lock.lock();
    if (stop_) break;
    const bool work = !takes_.empty() || (!dirty_.empty() && connected()) || (meter_ && connected()) ||
                      (node_dirty_ && connected() && MonotonicNs() - last_node_write_ns_ >= config_.publish_interval_ns);
    if (!work) wake_.wait_for(lock, kIdleWake);
  }
  lock.unlock();
  zk.Close();  // the ephemeral node goes now, not a session timeout later
}

void ClusterAgent::Step(ZkSession& zk) {
  const bool up = zk.Ensure();
  NoteConnected(up);
  if (!up) {
    std::lock_guard lock(mu_);
    for (const auto& request : takes_) {
      request->refusal = "ZooKeeper is unreachable";
      request->done = true;
    }
    takes_.clear();
    answered_.notify_all();
    return;
  }
  if (zk.generation() != generation_) {
    // A new session: the paths may be new, the old ephemeral node is gone (or is a dead
    // session's, about to go), and our quota entries may be a previous run's.
    for (const std::string& p : {paths_.nodes(), paths_.quota(), paths_.meter(), paths_.manager()})
      if (int rc = zk.EnsurePath(p); rc != ZOK) {
        Log(LogLevel::kWarn, "cluster: %s: %s", p.c_str(), ZkSession::ErrorText(rc).c_str());
        return;
      }
    std::vector<std::string> tenants;
    zk.Children(paths_.quota(), &tenants);
    std::lock_guard lock(mu_);
    for (const std::string& t : tenants) dirty_.insert(t);
    for (const auto& [t, _] : held_) dirty_.insert(t);
    node_dirty_ = node_record_.has_value();
    generation_ = zk.generation();
    zk.Delete(paths_.node(node_), -1);  // a dead session's node of ours
    last_node_write_ns_ = 0;
  }
  // Registrations waiting for a grant, in order.
  for (;;) {
    std::shared_ptr<TakeRequest> request;
    {
      std::lock_guard lock(mu_);
      if (takes_.empty()) break;
      request = takes_.front();
      takes_.pop_front();
    }
    Answer(request, zk);
  }
  // Entries to rewrite: gives, and grants made while ZooKeeper was away.
  std::set<std::string> dirty;
  {
    std::lock_guard lock(mu_);
    dirty.swap(dirty_);
  }
  for (const std::string& tenant : dirty) {
    QuotaAmount want;
    {
      std::lock_guard lock(mu_);
      want = held_[tenant];
    }
    if (!WriteQuota(zk, tenant, want, false).empty()) {
      std::lock_guard lock(mu_);
      dirty_.insert(tenant);  // tried again at the next step
    } else if (want.zero()) {
      std::lock_guard lock(mu_);
      if (auto it = held_.find(tenant); it != held_.end() && it->second.zero()) held_.erase(it);
    }
  }
  // The node record, at most every publish interval.
  std::optional<std::string> node_text;
  std::optional<NodeMeter> meter;
  {
    std::lock_guard lock(mu_);
    if (node_dirty_ && node_record_ && MonotonicNs() - last_node_write_ns_ >= config_.publish_interval_ns) {
      NodeRecord n = *node_record_;
      n.name = node_;
      timespec ts{};
      clock_gettime(CLOCK_REALTIME, &ts);
      n.updated_unix_ms = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
      node_text = EncodeNode(n);
      node_dirty_ = false;
    }
    meter.swap(meter_);
  }
  if (node_text) {
    last_node_write_ns_ = MonotonicNs();
    int rc = zk.Set(paths_.node(node_), *node_text, -1);
    if (rc == ZNONODE) rc = zk.Create(paths_.node(node_), *node_text, ZkSession::kEphemeral());
    if (rc != ZOK) {
      Log(LogLevel::kWarn, "cluster: publishing node \"%s\": %s", node_.c_str(), ZkSession::ErrorText(rc).c_str());
      std::lock_guard lock(mu_);
      node_dirty_ = true;
    }
  }
  if (meter) {
    meter->node = node_;
    const std::string text = EncodeMeterWithin(*meter, kMeterBytes);
    int rc = zk.Set(paths_.node_meter(node_), text, -1);
    if (rc == ZNONODE) rc = zk.Create(paths_.node_meter(node_), text, 0);
    if (rc != ZOK) Log(LogLevel::kWarn, "cluster: publishing the meter: %s", ZkSession::ErrorText(rc).c_str());
  }
}

void ClusterAgent::Answer(const std::shared_ptr<TakeRequest>& request, ZkSession& zk) {
  QuotaAmount want;
  {
    std::lock_guard lock(mu_);
    if (request->abandoned) return;
    want = Plus(held_[request->tenant], request->amount);
  }
  const std::string refusal = WriteQuota(zk, request->tenant, want, true);
  std::lock_guard lock(mu_);
  if (refusal.empty()) {
    if (request->abandoned) {
      dirty_.insert(request->tenant);  // written too late: our entry goes back to what we hold
    } else {
      held_[request->tenant] = Plus(held_[request->tenant], request->amount);
    }
  }
  request->refusal = refusal;
  request->done = true;
  answered_.notify_all();
}

std::string ClusterAgent::WriteQuota(ZkSession& zk, const std::string& tenant, const QuotaAmount& want, bool check) {
  const std::string path = paths_.tenant_quota(tenant);
  std::optional<ClusterTenantQuota> limit;
  {
    std::lock_guard lock(mu_);
    if (auto it = quotas_.find(tenant); it != quotas_.end()) limit = it->second;
  }
  for (int attempt = 0; attempt < kCasTries; ++attempt) {
    std::string text;
    int32_t version = -1;
    int rc = zk.Get(path, &text, &version);
    QuotaRecord record;
    if (rc == ZOK) {
      std::string error;
      auto decoded = DecodeQuota(text, &error);
      if (!decoded) {
        // A value no broker wrote: refuse grants rather than guess what is held.
        Log(LogLevel::kError, "cluster: %s: malformed (%s)", path.c_str(), error.c_str());
        if (check) return "the cluster's quota record of tenant \"" + tenant + "\" is malformed: " + error;
      } else {
        record = std::move(*decoded);
      }
    } else if (rc == ZNONODE) {
      if (want.zero()) return "";  // nothing held, nothing recorded
    } else {
      return "ZooKeeper: " + ZkSession::ErrorText(rc);
    }
    auto mine = record.held.find(node_);
    if (!check && (mine == record.held.end() ? want.zero() : mine->second == want)) return "";  // already so
    if (check && limit) {
      if (std::string why = QuotaRefusal(record, node_, want, *limit, tenant); !why.empty()) return why;
    }
    if (want.zero())
      record.held.erase(node_);
    else
      record.held[node_] = want;
    rc = rc == ZNONODE ? zk.Create(path, EncodeQuota(record), 0) : zk.Set(path, EncodeQuota(record), version);
    if (rc == ZOK) return "";
    if (rc != ZBADVERSION && rc != ZNODEEXISTS) return "ZooKeeper: " + ZkSession::ErrorText(rc);
    // Another node wrote in between: read again.
  }
  return "tenant \"" + tenant + "\"'s cluster quota is contended: no write after " + std::to_string(kCasTries) +
         " tries";
}

}  // namespace gpushare::broker
