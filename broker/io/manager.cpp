// The cluster manager (see manager.h). A thread of its own keeps the ZooKeeper session,
// the election and the view; the main thread answers tools from the latest view.
#include "manager.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>  // the error codes

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker/core/metering.h"
#include "broker/io/broker_log.h"
#include "broker/io/cluster_agent.h"
#include "broker/io/socket_listeners.h"
#include "broker/policy/cluster_state.h"
#include "broker/policy/config.h"
#include "common/base/futex.h"
#include "common/protocol/socket_io.h"
#include "zk_session.h"

namespace gpushare::broker {
namespace {

using json = nlohmann::json;

constexpr auto kScanEvery = std::chrono::milliseconds(250);
// Quota held by a node whose record has been gone this long is given back: its session
// has already expired (the record is ephemeral); the grace covers a node that has just
// connected and taken quota before its record is written.
constexpr uint64_t kReclaimGraceNs = 2'000'000'000;
constexpr int kRequestTimeoutMs = 1000;  // a tool that sends no whole request by then is dropped

uint64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

json Optional(const std::optional<uint64_t>& v) { return v ? json(*v) : json(nullptr); }
json AmountJson(const QuotaAmount& a) { return {{"instances", a.instances}, {"memory", a.memory_bytes}}; }

// What the leader read in one scan.
struct Scan {
  std::vector<NodeRecord> nodes;
  std::map<std::string, QuotaRecord> quotas;  // by tenant
  std::vector<UsageRow> rows;                 // every node's
  std::map<std::string, size_t> rows_by_node;
  json malformed = json::array();  // {"znode", "error"}: skipped, never trusted
};

class Manager {
 public:
  Manager(BrokerConfig config, std::string name)
      : config_(std::move(config)), paths_(config_.cluster.name), name_(std::move(name)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Manager() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  // The reply to a Status request: the cluster view, or why this manager has none.
  std::string Status() {
    std::lock_guard lock(mu_);
    if (!leading_) return NotLeading().dump();
    return view_.dump(-1, ' ', false, json::error_handler_t::replace);
  }

  // The reply to a Usage request: usage or a bill over every node's rows.
  std::string Usage(const PeerCredentials& peer, const std::string& request) {
    std::vector<UsageRow> rows;
    {
      std::lock_guard lock(mu_);
      if (!leading_) return NotLeading().dump();
      rows = rows_;
    }
    return AnswerUsage(config_, peer, geteuid(), request, DayOf(RealtimeNs()),
                       [&](int64_t since, int64_t until, const std::string& tenant, std::string*) {
                         std::vector<UsageRow> out;
                         for (const UsageRow& r : rows)
                           if (r.day.day >= since && r.day.day < until && (tenant.empty() || r.session.tenant == tenant))
                             out.push_back(r);
                         return std::optional<std::vector<UsageRow>>(std::move(out));
                       });
  }

 private:
  json NotLeading() const {
    if (!connected_) return {{"error", "manager \"" + name_ + "\" is not connected to ZooKeeper"}};
    return {{"error", "manager \"" + name_ + "\" is a standby; the leader is \"" + leader_ + "\""},
            {"leader", leader_}};
  }

  void Run() {
    ZkSession zk(config_.cluster.zookeeper, config_.cluster.session_timeout_ms);
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      Step(zk);
      lock.lock();
      if (!stop_) wake_.wait_for(lock, kScanEvery);
    }
    lock.unlock();
    zk.Close();  // our election znode goes now: a standby leads at its next scan
  }

  void Step(ZkSession& zk) {
    const bool up = zk.Ensure();
    if (up != connected_) {
      if (up)
        Log(LogLevel::kInfo, "connected to ZooKeeper %s (cluster \"%s\")", config_.cluster.zookeeper.c_str(),
            config_.cluster.name.c_str());
      else
        Log(LogLevel::kWarn, "ZooKeeper %s unreachable", config_.cluster.zookeeper.c_str());
    }
    {
      std::lock_guard lock(mu_);
      connected_ = up;
      if (!up) leading_ = false;  // another manager may lead by now
    }
    if (!up) return;
    std::optional<std::pair<std::string, std::vector<std::string>>> election = Elect(zk);
    if (!election) return;
    const bool leading = election->first == name_;
    if (leading != was_leading_)
      Log(LogLevel::kInfo, leading ? "leading cluster \"%s\"" : "standby in cluster \"%s\"",
          config_.cluster.name.c_str());
    was_leading_ = leading;
    if (!leading) {
      std::lock_guard lock(mu_);
      leading_ = false;
      leader_ = election->first;
      return;
    }
    Scan scan = Read(zk);
    Reclaim(zk, &scan);
    json view = View(scan, election->second);
    std::lock_guard lock(mu_);
    leading_ = true;
    leader_ = name_;
    view_ = std::move(view);
    rows_ = std::move(scan.rows);
  }

  // Our candidacy (made again in each new session) and who leads: the lowest sequence.
  // The leader's name and every candidate's, in order; nullopt when ZooKeeper failed.
  std::optional<std::pair<std::string, std::vector<std::string>>> Elect(ZkSession& zk) {
    if (zk.generation() != generation_) {
      candidate_.clear();
      if (zk.EnsurePath(paths_.manager()) != ZOK) return std::nullopt;
      std::string created;
      if (zk.Create(paths_.manager() + "/m-", name_, ZkSession::kEphemeralSequential(), &created) != ZOK)
        return std::nullopt;
      candidate_ = created.substr(created.rfind('/') + 1);
      generation_ = zk.generation();
    }
    std::vector<std::string> children;
    if (zk.Children(paths_.manager(), &children) != ZOK) return std::nullopt;
    // "m-0000000012": the suffix orders them (ZooKeeper pads it to ten digits).
    std::sort(children.begin(), children.end(), [](const std::string& a, const std::string& b) {
      return a.substr(a.size() - std::min<size_t>(a.size(), 10)) < b.substr(b.size() - std::min<size_t>(b.size(), 10));
    });
    if (std::find(children.begin(), children.end(), candidate_) == children.end()) {
      generation_ = 0;  // our candidacy is gone (deleted by hand?): stand again next scan
      return std::nullopt;
    }
    std::vector<std::string> names;
    for (const std::string& c : children) {
      std::string name;
      if (zk.Get(paths_.manager() + "/" + c, &name, nullptr) == ZOK) names.push_back(name.substr(0, 128));
    }
    // Our own znode holds our name, so a leader is always named.
    const std::string leader = children.front() == candidate_ ? name_ : (names.empty() ? "" : names.front());
    return std::make_pair(leader, names);
  }

  // Every node's record, quota record and meter; what cannot be decoded is listed, not used.
  Scan Read(ZkSession& zk) {
    Scan scan;
    const auto each = [&](const std::string& dir, const auto& take) {
      std::vector<std::string> children;
      if (zk.Children(dir, &children) != ZOK) return;
      for (const std::string& c : children) {
        std::string text, error;
        int32_t version = 0;
        if (zk.Get(dir + "/" + c, &text, &version) != ZOK) continue;  // gone since the listing
        if (!ValidZnodeName(c)) error = "not a node or tenant name";
        if (error.empty()) take(c, text, &error);
        if (!error.empty()) scan.malformed.push_back({{"znode", dir + "/" + c}, {"error", error}});
      }
    };
    each(paths_.nodes(), [&](const std::string& name, const std::string& text, std::string* error) {
      auto n = DecodeNode(text, error);
      if (n && n->name != name) *error = "names node \"" + n->name + "\"";
      if (n && error->empty()) scan.nodes.push_back(std::move(*n));
    });
    each(paths_.quota(), [&](const std::string& tenant, const std::string& text, std::string* error) {
      if (auto q = DecodeQuota(text, error)) scan.quotas[tenant] = std::move(*q);
    });
    each(paths_.meter(), [&](const std::string& node, const std::string& text, std::string* error) {
      auto m = DecodeMeter(text, error);
      if (m && m->node != node) *error = "names node \"" + m->node + "\"";
      if (!m || !error->empty()) return;
      scan.rows_by_node[node] = m->rows.size();
      for (UsageRow& r : m->rows) scan.rows.push_back(std::move(r));
    });
    return scan;
  }

  // Quota held by nodes that are gone returns to the cluster (versioned writes: a node
  // writing its own entry at once makes ours fail, and we read again next scan).
  void Reclaim(ZkSession& zk, Scan* scan) {
    const uint64_t now = MonotonicNs();
    std::map<std::string, bool> live;
    for (const NodeRecord& n : scan->nodes) live[n.name] = true;
    std::map<std::string, uint64_t> absent;
    for (auto& [tenant, record] : scan->quotas) {
      std::vector<std::string> gone;
      for (const auto& [node, amount] : record.held) {
        if (live.count(node)) continue;
        const uint64_t since = absent_since_.count(node) ? absent_since_[node] : now;
        absent[node] = since;
        if (now - since >= kReclaimGraceNs) gone.push_back(node);
      }
      if (gone.empty()) continue;
      const std::string path = paths_.tenant_quota(tenant);
      std::string text, error;
      int32_t version = 0;
      if (zk.Get(path, &text, &version) != ZOK) continue;
      auto current = DecodeQuota(text, &error);
      if (!current) continue;
      for (const std::string& node : gone) current->held.erase(node);
      if (zk.Set(path, EncodeQuota(*current), version) == ZOK) {
        for (const std::string& node : gone) {
          Log(LogLevel::kInfo, "node \"%s\" is gone: its %llu instance(s) of tenant \"%s\" returned to the cluster",
              node.c_str(), static_cast<unsigned long long>(record.held[node].instances), tenant.c_str());
          ++reclaimed_;
        }
        record = std::move(*current);
      }
    }
    absent_since_ = std::move(absent);
  }

  json View(const Scan& scan, const std::vector<std::string>& managers) const {
    json nodes = json::array();
    uint64_t gpus = 0, memory_total = 0, memory_used = 0, clients = 0;
    for (const NodeRecord& n : scan.nodes) {
      json g = json::array();
      for (const NodeGpu& gpu : n.gpus) {
        g.push_back({{"index", gpu.index},
                     {"name", gpu.name},
                     {"memory_total", gpu.memory_total},
                     {"memory_used", gpu.memory_used},
                     {"memory_promised", gpu.memory_promised}});
        ++gpus;
        memory_total += gpu.memory_total;
        memory_used += gpu.memory_used;
      }
      json quota = json::object();
      for (const auto& [t, a] : n.quota_held) quota[t] = AmountJson(a);
      clients += n.clients;
      auto rows = scan.rows_by_node.find(n.name);
      nodes.push_back({{"name", n.name},
                       {"version", n.version},
                       {"health", n.health},
                       {"updated_unix_ms", n.updated_unix_ms},
                       {"clients", n.clients},
                       {"gpus", g},
                       {"free_instances", n.free_instances},
                       {"quota_held", quota},
                       {"meter_rows", rows == scan.rows_by_node.end() ? 0 : rows->second}});
    }
    json tenants = json::array();
    std::map<std::string, bool> named;
    for (const auto& [t, _] : config_.cluster.tenants) named[t] = true;
    for (const auto& [t, _] : scan.quotas) named[t] = true;
    for (const auto& [t, _] : named) {
      auto limit = config_.cluster.tenants.find(t);
      auto record = scan.quotas.find(t);
      const QuotaRecord empty;
      const QuotaRecord& r = record == scan.quotas.end() ? empty : record->second;
      json by_node = json::object();
      for (const auto& [node, a] : r.held) by_node[node] = AmountJson(a);
      const QuotaAmount total = r.Total();
      tenants.push_back(
          {{"tenant", t},
           {"max_instances", limit == config_.cluster.tenants.end() ? json(nullptr) : Optional(limit->second.max_instances)},
           {"max_memory", limit == config_.cluster.tenants.end() ? json(nullptr) : Optional(limit->second.max_memory)},
           {"instances", total.instances},
           {"memory", total.memory_bytes},
           {"by_node", by_node}});
    }
    return {{"cluster", config_.cluster.name},
            {"leader", name_},
            {"managers", managers},
            {"nodes", nodes},
            {"tenants", tenants},
            {"totals",
             {{"nodes", scan.nodes.size()},
              {"gpus", gpus},
              {"memory_total", memory_total},
              {"memory_used", memory_used},
              {"clients", clients}}},
            {"reclaimed", reclaimed_},
            {"malformed", scan.malformed}};
  }

  const BrokerConfig config_;
  const ClusterPaths paths_;
  const std::string name_;
  std::thread thread_;
  // The ZooKeeper thread's own.
  uint64_t generation_ = 0;
  std::string candidate_;
  bool was_leading_ = false;
  std::map<std::string, uint64_t> absent_since_;  // nodes holding quota without a record, since
  uint64_t reclaimed_ = 0;
  // Shared with the main thread.
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool connected_ = false;
  bool leading_ = false;
  std::string leader_;
  json view_;
  std::vector<UsageRow> rows_;
};

// Anyone may ask; usage is answered per SO_PEERCRED.
int ListenManager(const std::string& path, std::string* error) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  return ListenUnix(path, geteuid(), getegid(), 0666, 0, "a manager", error);
}

// One tool's request, answered; the connection is closed after.
void Serve(Manager& manager, int fd) {
  ucred cred{};
  socklen_t length = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return;
  std::vector<uint8_t> buffer;
  std::string error;
  auto m = protocol::Receive(fd, &buffer, kRequestTimeoutMs, &error);
  if (!m) return;
  const std::string text(m->payload.begin(), m->payload.end());
  if (m->type == protocol::Type::kStatus) {
    protocol::SendAll(fd, protocol::EncodeText(protocol::Type::kStatusReply, manager.Status()));
  } else if (m->type == protocol::Type::kUsage) {
    const PeerCredentials peer{cred.pid, cred.uid, cred.gid};
    protocol::SendAll(fd, protocol::EncodeText(protocol::Type::kUsageReply, manager.Usage(peer, text)));
  }
}

}  // namespace

int RunManager(const ManagerOptions& options) {
  LogProgram() = "gpushare-manager";
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT}) sigaddset(&signals, s);
  sigprocmask(SIG_BLOCK, &signals, nullptr);  // before the threads: signalfd reads them
  signal(SIGPIPE, SIG_IGN);
  std::string error;
  auto config = LoadBrokerConfig(options.config_path, &error);
  if (!config) {
    Log(LogLevel::kError, "%s", error.c_str());
    return 2;
  }
  if (!config->cluster.enabled()) {
    Log(LogLevel::kError, "%s: no [cluster] zookeeper: a manager needs the cluster's ZooKeeper",
        options.config_path.c_str());
    return 2;
  }
  const std::string name = options.name.empty() ? DefaultNodeName() + "-" + std::to_string(getpid()) : options.name;
  if (!ValidZnodeName(name)) {
    Log(LogLevel::kError, "--name \"%s\": expected 1 to 128 letters, digits, '.', '_' or '-'", name.c_str());
    return 2;
  }
  const int listen_fd = ListenManager(options.socket_path, &error);
  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (listen_fd < 0 || signal_fd < 0) {
    Log(LogLevel::kError, "%s", listen_fd < 0 ? error.c_str() : "signalfd failed");
    return 1;
  }
  Log(LogLevel::kInfo, "manager \"%s\" of cluster \"%s\" listening on %s", name.c_str(), config->cluster.name.c_str(),
      options.socket_path.c_str());
  {
    Manager manager(std::move(*config), name);
    for (;;) {
      pollfd fds[2] = {{signal_fd, POLLIN, 0}, {listen_fd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo si;
        if (read(signal_fd, &si, sizeof si) == sizeof si) Log(LogLevel::kInfo, "signal %u: stopping", si.ssi_signo);
        break;
      }
      if (fds[1].revents & POLLIN) {
        const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        Serve(manager, fd);
        close(fd);
      }
    }
  }
  close(listen_fd);
  unlink(options.socket_path.c_str());
  return 0;
}

}  // namespace gpushare::broker
