// The broker daemon's I/O (see daemon.h). Everything it decides, BrokerCore decides.
#include "daemon.h"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <random>

#include "broker/core/broker_core.h"
#include "broker/policy/connection_gate.h"
#include "broker_log.h"
#include "cluster_agent.h"
#include "common/base/futex.h"
#include "common/base/version.h"
#include "gpu_inventory.h"
#include "meter_store.h"
#include "metrics_exporter.h"
#include "mps_control.h"
#include "service_notify.h"
#include "shm_channels.h"
#include "socket_listeners.h"
#include "topology_discovery.h"

namespace gpushare::broker {
namespace {

constexpr size_t kMaxPendingOutput = 8 << 20;          // a peer that reads nothing is dropped past this
constexpr uint64_t kRingDrainNs = 20'000'000;          // how often clients' rings are read
constexpr uint64_t kBusyRingDrainNs = 2'000'000;       // …while a client fills its ring fast
constexpr uint64_t kUtilizationEveryNs = 200'000'000;  // NVML per-process utilization
constexpr uint64_t kAcceptBackoffNs = 100'000'000;     // after EMFILE: wait, do not spin
constexpr uint64_t kFdsKeptBack = 64;                  // descriptors not given to connections
constexpr uint64_t kLogEveryNs = 1'000'000'000;        // a repeated refusal is logged once a second
// A session left open by a stopped broker ends if its client has not re-registered by
// then (a client re-registers at its next allocation or launch after the broker is back).
constexpr uint64_t kOrphanGraceNs = 300'000'000'000;
constexpr uint64_t kPruneEveryNs = 3600'000'000'000;  // retention
constexpr int64_t kClusterMeterDays = 62;  // the node's meter rows the cluster sees: this month and the last

uint64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Session ids start at random (below 2^62) so that two brokers on one database do not collide.
uint64_t FirstSessionId() {
  std::random_device rd;
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return (r & ((1ull << 62) - 1)) | (1ull << 40);
}

// Deletes usage older than the retention (a refusal is logged; the next prune tries again).
void Prune(MeterStore& store, uint32_t retention_days) {
  if (retention_days == 0) return;
  std::string error;
  if (!store.Prune(DayOf(RealtimeNs()) - static_cast<int64_t>(retention_days), &error))
    Log(LogLevel::kWarn, "metering: retention: %s", error.c_str());
}

struct Connection {
  int fd = -1;
  std::string via;  // the path of the socket it reached
  PeerCredentials peer;
  uint64_t opened_ns = 0;
  std::vector<uint8_t> in;
  std::vector<uint8_t> out;
  int pass_fd = -1;  // the client's channel, sent with the next bytes (its Welcome); not owned
};

// Sends what is pending, with `c->pass_fd` attached (SCM_RIGHTS) to the first byte
// sent: a client in its own IPC namespace maps its channel from it (docs/containers.md).
ssize_t SendPending(Connection* c) {
  if (c->pass_fd < 0) return send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  iovec iov{c->out.data(), c->out.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &c->pass_fd, sizeof(int));
  const ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n > 0) c->pass_fd = -1;
  return n;
}

// Descriptors the process may still open for connections: its soft limit, raised to
// the hard one at start (RaiseFdLimit), less those kept for the rest of the broker.
uint64_t FdRoom() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  return r.rlim_cur > kFdsKeptBack ? r.rlim_cur - kFdsKeptBack : 0;
}

void RaiseFdLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == r.rlim_max) return;
  const rlim_t was = r.rlim_cur;
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r) == 0)
    Log(LogLevel::kInfo, "descriptor limit raised from %llu to %llu", static_cast<unsigned long long>(was),
        static_cast<unsigned long long>(r.rlim_max));
}

// A warning that an attacker could repeat thousands of times a second: logged at most
// once per kLogEveryNs, with the number of times it was left out meanwhile.
class ThrottledLog {
 public:
  template <typename... Args>
  void Warn(uint64_t now, const char* fmt, Args... args) {
    if (last_ns_ != 0 && now - last_ns_ < kLogEveryNs) {
      ++suppressed_;
      return;
    }
    char line[512];
    std::snprintf(line, sizeof line, fmt, args...);
    if (suppressed_ > 0)
      Log(LogLevel::kWarn, "%s (and %llu more like it in the last second)", line,
          static_cast<unsigned long long>(suppressed_));
    else
      Log(LogLevel::kWarn, "%s", line);
    last_ns_ = now;
    suppressed_ = 0;
  }

 private:
  uint64_t last_ns_ = 0;
  uint64_t suppressed_ = 0;
};

class Daemon {
 public:
  Daemon(const DaemonOptions& options, BrokerConfig config, std::vector<GpuInfo> gpus, std::optional<Topology> topology,
         std::unique_ptr<MeterStore> store, std::vector<MeterSnapshot> open_sessions,
         std::unique_ptr<MetricsExporter> exporter, SocketListeners* listeners, MpsControl* mps,
         std::unique_ptr<ClusterAgent> cluster)
      : options_(options),
        listeners_(listeners),
        mps_(mps),
        gate_(config.limits, geteuid(), FdRoom()),
        handshake_timeout_ns_(uint64_t{config.limits.handshake_timeout_ms} * 1'000'000),
        metering_(config.metering),
        store_(std::move(store)),
        metrics_(config.metrics),
        exporter_(std::move(exporter)),
        cluster_publish_ns_(config.cluster.publish_interval_ns),
        cluster_(std::move(cluster)),
        cluster_zookeeper_(config.cluster.zookeeper),
        channels_("gpushare." + std::to_string(getpid())),
        core_(std::move(config), std::move(gpus), &channels_) {
    core_.SetProcessMemory([this](int32_t pid, int gpu) { return process_memory_.Held(pid, gpu); });
    core_.SetSocketHost(listeners_);
    core_.SetRefusalLog([this](const PeerCredentials& peer, const std::string& reason) {
      refused_hello_log_.Warn(MonotonicNs(), "pid %d (uid %u): registration refused: %s", peer.pid, peer.uid,
                              reason.c_str());
    });
    if (topology && !core_.SetTopology(std::move(*topology)))
      Log(LogLevel::kWarn, "topology: describes another number of GPUs than the inventory; treated as no P2P");
    if (store_) {
      if (!open_sessions.empty())
        Log(LogLevel::kInfo, "metering: %zu session(s) left open by the last broker; their clients may re-register",
            open_sessions.size());
      core_.AttachMeter(store_.get(), FirstSessionId(), std::move(open_sessions), RealtimeNs);
      last_flush_ns_ = last_prune_ns_ = MonotonicNs();
    }
    if (mps_ != nullptr) core_.SetMpsPipe(mps_->pipe_directory());
    RefreshMetrics(MonotonicNs());
    if (cluster_) {
      core_.SetClusterQuota(cluster_.get());
      PublishCluster(MonotonicNs());
    }
  }

  int Run(int signal_fd) {
    for (;;) {
      // At the connection limit, or backing off after EMFILE, the listening socket is
      // not polled (a negative fd is skipped): pending connections wait in its backlog
      // instead of waking the loop over and over.
      const bool listening = gate_.Listening() && MonotonicNs() >= accept_after_ns_;
      std::vector<pollfd> fds{{signal_fd, POLLIN, 0}};
      for (const auto& [fd, listener] : listeners_->by_fd()) fds.push_back({listening ? fd : -1, POLLIN, 0});
      const size_t first_connection = fds.size();
      std::vector<ClientId> ids;
      for (auto& [id, c] : connections_) {
        fds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
        ids.push_back(id);
      }
      int n = poll(fds.data(), fds.size(), PollTimeoutMs());
      if (n < 0 && errno != EINTR) {
        Log(LogLevel::kError, "poll: %s", std::strerror(errno));
        return 1;
      }
      Periodic();
      if (n <= 0) continue;
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo si;
        if (read(signal_fd, &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGHUP) {
            Reload();
          } else {
            Log(LogLevel::kInfo, "signal %u: stopping", si.ssi_signo);
            NotifyStopping();
            return 0;
          }
        }
      }
      // A reload or a SocketAdmin request may have closed a listener since the poll.
      for (size_t i = 1; i < first_connection; ++i)
        if ((fds[i].revents & POLLIN) && listeners_->by_fd().count(fds[i].fd) > 0) Accept(fds[i].fd);
      for (size_t i = 0; i < ids.size(); ++i)  // Periodic may have dropped some (DropSilent)
        if (fds[first_connection + i].revents != 0 && connections_.count(ids[i]) > 0)
          Serve(ids[i], fds[first_connection + i].revents);
      // Sessions that ended in this pass: written now, in one transaction.
      if (store_) {
        std::string error;
        if (!core_.FlushEndedMeter(&error)) NoteWrite(false, error);  // recovery: the interval's flush says
      }
    }
  }

  // Until the next quantum or revoke deadline, or the next ring drain while clients
  // are connected, the next handshake deadline, the end of an accept back-off, the
  // meter's next flush or the next /metrics snapshot; forever when there is none of these.
  int PollTimeoutMs() const {
    const uint64_t now = MonotonicNs();
    std::optional<uint64_t> wait;
    const auto until = [&](uint64_t deadline) {
      const uint64_t w = deadline > now ? deadline - now : 0;
      wait = std::min(wait.value_or(w), w);
    };
    if (core_.client_count() > 0) {
      until(now + (core_.rings_busy() ? kBusyRingDrainNs : kRingDrainNs));
      if (auto d = core_.NextDeadline()) until(*d);
    }
    if (store_) until(last_flush_ns_ + metering_.interval_ns);  // metering: the next flush, even idle
    if (exporter_) until(last_metrics_ns_ + metrics_.refresh_ns);  // a /metrics snapshot every refresh
    if (cluster_) until(last_cluster_ns_ + cluster_publish_ns_);  // the node record, for the cluster view
    if (accept_after_ns_ > now) until(accept_after_ns_);
    if (!core_.mps_pipe().empty()) until(now + 1'000'000'000ull);  // the MPS daemon's liveness
    for (const auto& [id, c] : connections_)
      if (core_.Client(id) == nullptr) until(c.opened_ns + handshake_timeout_ns_);
    if (!wait) return -1;
    return static_cast<int>(std::min<uint64_t>((*wait + 999'999) / 1'000'000, 60'000));
  }

  void Periodic() {
    const uint64_t now = MonotonicNs();
    DropSilent(now);
    if (core_.client_count() > 0 && now - last_utilization_ns_ >= kUtilizationEveryNs) {
      last_utilization_ns_ = now;
      for (const ProcessUtilization& u : sampler_.Sample()) core_.Utilization(u.pid, u.sm_percent, u.mem_percent);
    }
    if (mps_ != nullptr && !core_.mps_pipe().empty() && !mps_->Poll(now)) {
      Log(LogLevel::kError, "mps: the control daemon at %s stopped answering: co-located clients are time-sliced from now on",
          mps_->pipe_directory().c_str());
      core_.SetMpsPipe("");
    }
    core_.Poll();
    if (store_ && now - last_flush_ns_ >= metering_.interval_ns) FlushMeter(now);
    if (exporter_ && now - last_metrics_ns_ >= metrics_.refresh_ns) RefreshMetrics(now);
    if (cluster_ && now - last_cluster_ns_ >= cluster_publish_ns_) PublishCluster(now);
  }

  // The node's record to the cluster agent, which writes it if it changed.
  void PublishCluster(uint64_t now) {
    last_cluster_ns_ = now;
    NodeRecord node = core_.ClusterNode();
    node.version = kVersion;
    node.health = flush_ok_ ? "ok" : "metering: its database refuses writes";
    cluster_->PublishNode(std::move(node));
  }

  // The meter rows of the recent days, for the manager's cluster bill: what the store
  // holds after a flush (the agent encodes and writes them off this thread).
  void PublishClusterMeter() {
    const int64_t today = DayOf(RealtimeNs());
    std::string error;
    auto rows = store_->Read(today - kClusterMeterDays + 1, today + 1, "", &error);
    if (!rows) {
      Log(LogLevel::kWarn, "cluster: reading the meter to publish: %s", error.c_str());
      return;
    }
    cluster_->PublishMeter(NodeMeter{cluster_->node(), today - kClusterMeterDays + 1, std::move(*rows)});
  }

  // Off the scrape's thread: the exporter serves this snapshot until the next one.
  void RefreshMetrics(uint64_t now) {
    if (!exporter_) return;
    last_metrics_ns_ = now;
    exporter_->Refresh(core_, daemon_counters_);
  }

  // Off the clients' hot path: one transaction in the loop, every interval.
  void FlushMeter(uint64_t now) {
    last_flush_ns_ = now;
    core_.CloseMeterOrphans(kOrphanGraceNs);
    std::string error;
    NoteWrite(core_.FlushMeter(&error), error);
    if (cluster_) PublishClusterMeter();
    if (now - last_prune_ns_ >= kPruneEveryNs) {
      last_prune_ns_ = now;
      Prune(*store_, metering_.retention_days);
    }
  }

  // A failed write is logged once, and its recovery.
  void NoteWrite(bool ok, const std::string& error) {
    if (!ok && flush_ok_) Log(LogLevel::kError, "metering: %s (kept in memory, retried each interval)", error.c_str());
    if (ok && !flush_ok_) Log(LogLevel::kInfo, "metering: %s writable again", store_->path().c_str());
    flush_ok_ = ok;
  }

  ~Daemon() {
    // What live sessions used so far; they stay open for the next broker to continue.
    if (store_) FlushMeter(MonotonicNs());
    for (auto& [id, c] : connections_) close(c.fd);
  }

 private:
  void Accept(int listen_fd) {
    while (gate_.Listening()) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      const uint64_t now = MonotonicNs();
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: retrying at once would spin; pending peers wait.
          accept_after_ns_ = now + kAcceptBackoffNs;
          out_of_fds_log_.Warn(now, "accept: %s with %llu connections open; not accepting for 100 ms",
                               std::strerror(errno), static_cast<unsigned long long>(gate_.open()));
        }
        return;
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        close(fd);
        continue;
      }
      switch (gate_.Admit(cred.uid)) {
        case ConnectionGate::Verdict::kAccepted: break;
        case ConnectionGate::Verdict::kUidFull:
          close(fd);
          refused_log_.Warn(now, "pid %d (uid %u): refused, the uid has %u connections open ([limits] "
                            "max_connections_per_uid)", cred.pid, cred.uid, gate_.OpenBy(cred.uid));
          continue;
        case ConnectionGate::Verdict::kNodeFull:
          close(fd);
          refused_log_.Warn(now, "pid %d (uid %u): refused, %llu connections open (the rest are kept for root "
                            "and the broker's uid; [limits] max_connections)", cred.pid, cred.uid,
                            static_cast<unsigned long long>(gate_.open()));
          continue;
      }
      const ClientId id = next_id_++;
      Connection& c = connections_[id];
      c.fd = fd;
      c.via = listeners_->PathOf(listen_fd);
      c.peer = listeners_->Identify(c.via, PeerCredentials{cred.pid, cred.uid, cred.gid});
      c.opened_ns = now;
      core_.Open(id, c.peer);
    }
  }

  // Connections that have not registered (sent Hello) within the handshake timeout:
  // tools ask and hang up well within it; an idle one only holds a descriptor.
  void DropSilent(uint64_t now) {
    std::vector<ClientId> silent;
    for (const auto& [id, c] : connections_)
      if (now - c.opened_ns >= handshake_timeout_ns_ && core_.Client(id) == nullptr) silent.push_back(id);
    for (ClientId id : silent) {
      const Connection& c = connections_.at(id);
      silent_log_.Warn(now, "pid %d (uid %u): no Hello within %llu ms; dropped", c.peer.pid, c.peer.uid,
                       static_cast<unsigned long long>(handshake_timeout_ns_ / 1'000'000));
      Drop(id);
    }
  }

  void Serve(ClientId id, short revents) {
    Connection& c = connections_.at(id);
    bool gone = (revents & (POLLERR | POLLNVAL)) != 0;
    if (!gone && (revents & (POLLIN | POLLHUP))) {
      uint8_t chunk[65536];
      ssize_t n = recv(c.fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        c.in.insert(c.in.end(), chunk, chunk + n);
        std::string error;
        const bool was_client = core_.Client(id) != nullptr;
        if (!was_client) {  // a container's socket may have been bound since it connected
          c.peer = listeners_->Identify(c.via, c.peer);
          core_.Reidentify(id, c.peer);
        }
        if (!core_.Input(id, &c.in, &c.out, &error)) {
          Log(LogLevel::kWarn, "pid %d (uid %u): %s; dropped", c.peer.pid, c.peer.uid, error.c_str());
          gone = true;
        } else if (!was_client) {
          if (const ClientRecord* r = core_.Client(id)) {
            c.pass_fd = channels_.Descriptor(id);
            Log(LogLevel::kInfo, "pid %d (uid %u) joined as tenant \"%s\" on %zu GPU(s)%s%s", c.peer.pid, c.peer.uid,
                r->tenant.c_str(), r->physical.size(), c.peer.via == SocketKind::kMain ? "" : " via ",
                c.peer.socket_name.c_str());
          }
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        gone = true;
      }
    }
    if (!gone && !c.out.empty()) {
      ssize_t n = SendPending(&c);
      if (n > 0) c.out.erase(c.out.begin(), c.out.begin() + n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || c.out.size() > kMaxPendingOutput) gone = true;
    }
    if (gone) Drop(id);
  }

  void Drop(ClientId id) {
    Connection& c = connections_.at(id);
    const ClientRecord* r = core_.Client(id);
    if (r != nullptr) {
      const std::string tenant = r->tenant;
      const uint64_t freed = core_.Close(id);
      Log(LogLevel::kInfo, "pid %d (tenant \"%s\") left; %llu bytes returned", c.peer.pid, tenant.c_str(),
          static_cast<unsigned long long>(freed));
    } else {
      core_.Close(id);
    }
    close(c.fd);
    gate_.Closed(c.peer.uid);
    connections_.erase(id);
  }

  void Reload() {
    const ReloadNotice notice;
    if (options_.config_path.empty()) {
      Log(LogLevel::kInfo, "SIGHUP: no config file to reload");
      return;
    }
    // Nothing a reload reads may take the broker down: whatever goes wrong while the
    // new config is read and checked, the running one stays.
    std::string error;
    std::optional<BrokerConfig> config;
    try {
      config = LoadBrokerConfig(options_.config_path, &error);
    } catch (const std::exception& e) {
      error = options_.config_path + ": " + e.what();
    }
    if (!config) {
      Log(LogLevel::kError, "reload refused, the running config stays: %s", error.c_str());
      ++daemon_counters_.reload_failures;
      return;
    }
    if (std::string unfit = ProfilesUnfit(*config, core_.ledger().capacities()); !unfit.empty()) {
      Log(LogLevel::kError, "reload refused, the running config stays: %s", unfit.c_str());
      ++daemon_counters_.reload_failures;
      return;
    }
    if (config->metrics.listen != metrics_.listen)
      Log(LogLevel::kWarn, "reload: [metrics] listen takes effect at a restart");
    metrics_.refresh_ns = config->metrics.refresh_ns;
    if (cluster_) {
      cluster_->SetQuotas(config->cluster.tenants);
      if (config->cluster.zookeeper != cluster_zookeeper_)
        Log(LogLevel::kWarn, "reload: [cluster] zookeeper, name and node take effect at a restart");
    } else if (config->cluster.enabled()) {
      Log(LogLevel::kWarn, "reload: [cluster] takes effect at a restart");
    }
    ++daemon_counters_.reloads;
    // The running meter stays: its database only changes at a restart.
    const std::string database = config->metering.database.empty() ? DefaultMeterDatabase() : config->metering.database;
    if (store_ && (!config->metering.enabled || database != store_->path()))
      Log(LogLevel::kWarn, "reload: [metering] enabled/database take effect at a restart; still writing %s",
          store_->path().c_str());
    if (!store_ && config->metering.enabled) Log(LogLevel::kWarn, "reload: metering starts at a restart");
    metering_.interval_ns = config->metering.interval_ns;
    metering_.retention_days = config->metering.retention_days;
    gate_.SetLimits(config->limits);
    listeners_->Configure(*config);
    handshake_timeout_ns_ = uint64_t{config->limits.handshake_timeout_ms} * 1'000'000;
    core_.Reload(std::move(*config));
    Log(LogLevel::kInfo, "reloaded %s", options_.config_path.c_str());
  }

  DaemonOptions options_;
  SocketListeners* listeners_;
  MpsControl* mps_;  // null unless spatial = "mps" and its daemon came up
  ConnectionGate gate_;
  uint64_t handshake_timeout_ns_;
  uint64_t accept_after_ns_ = 0;  // EMFILE back-off
  ThrottledLog refused_log_, silent_log_, out_of_fds_log_, refused_hello_log_;
  MeteringConfig metering_;
  std::unique_ptr<MeterStore> store_;  // null: metering off
  uint64_t last_flush_ns_ = 0;
  uint64_t last_prune_ns_ = 0;
  bool flush_ok_ = true;
  MetricsConfig metrics_;
  std::unique_ptr<MetricsExporter> exporter_;  // null: no /metrics
  DaemonCounters daemon_counters_;
  uint64_t last_metrics_ns_ = 0;
  uint64_t cluster_publish_ns_;
  uint64_t last_cluster_ns_ = 0;
  std::unique_ptr<ClusterAgent> cluster_;  // null: no [cluster]
  std::string cluster_zookeeper_;
  UtilizationSampler sampler_;
  ProcessMemoryReader process_memory_;
  uint64_t last_utilization_ns_ = 0;
  ShmChannels channels_;
  BrokerCore core_;
  std::map<ClientId, Connection> connections_;
  ClientId next_id_ = 1;
};

}  // namespace

int RunDaemon(const DaemonOptions& options) {
  RaiseFdLimit();
  // Blocked first, for every thread made after (the meter store's): signalfd reads them.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&signals, s);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  BrokerConfig config;
  if (!options.config_path.empty()) {
    std::string error;
    auto loaded = LoadBrokerConfig(options.config_path, &error);
    if (!loaded) {
      Log(LogLevel::kError, "%s", error.c_str());
      return 2;
    }
    config = std::move(*loaded);
  }
  std::string error;
  // The meter's database: one that cannot be opened is an error at start, named.
  std::unique_ptr<MeterStore> store;
  std::vector<MeterSnapshot> open_sessions;
  if (config.metering.enabled) {
    const std::string path = config.metering.database.empty() ? DefaultMeterDatabase() : config.metering.database;
    store = MeterStore::Open(path, &error);
    std::optional<std::vector<MeterSnapshot>> open;
    if (store) open = store->OpenSessions(&error);
    if (!store || !open) {
      Log(LogLevel::kError, "metering: %s", error.c_str());
      return 2;
    }
    open_sessions = std::move(*open);
    Prune(*store, config.metering.retention_days);
    Log(LogLevel::kInfo, "metering: writing %s every %.1f s", path.c_str(),
        static_cast<double>(config.metering.interval_ns) / 1e9);
  }
  std::vector<GpuInfo> gpus = DiscoverGpus(&error);
  if (gpus.empty()) {
    Log(LogLevel::kError, "no GPU to share: %s", error.empty() ? "NVML reports none" : error.c_str());
    return 1;
  }
  std::vector<uint64_t> memory;
  for (const GpuInfo& g : gpus) memory.push_back(g.memory_bytes);
  if (std::string unfit = ProfilesUnfit(config, memory); !unfit.empty()) {
    Log(LogLevel::kError, "%s", unfit.c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  SocketListeners listeners(options.socket_path);
  if (signal_fd < 0 || !listeners.OpenMain(config.sockets, &error)) {
    Log(LogLevel::kError, "%s", signal_fd < 0 ? "signalfd failed" : error.c_str());
    return 1;
  }
  listeners.Configure(config);
  ShmChannels::RemoveStale();
  for (const GpuInfo& g : gpus)
    Log(LogLevel::kInfo, "GPU %d: %s, %llu bytes", g.index, g.name.c_str(),
        static_cast<unsigned long long>(g.memory_bytes));
  // Placement weighs links between GPUs; without a topology every pair is taken as no P2P.
  std::optional<Topology> topology = DiscoverTopology(gpus, &error);
  if (!topology) {
    Log(LogLevel::kWarn, "topology unknown (%s): placement treats every pair of GPUs as without P2P", error.c_str());
  } else {
    for (const std::string& note : topology->notes) Log(LogLevel::kWarn, "topology: %s", note.c_str());
    std::string matrix = topology->Describe();
    for (size_t start = 0, end; start < matrix.size(); start = end + 1) {
      end = matrix.find('\n', start);
      if (end == std::string::npos) end = matrix.size();
      Log(LogLevel::kInfo, "topology: %s", matrix.substr(start, end - start).c_str());
    }
  }
  // /metrics: a port that cannot be had is an error at start, named.
  std::unique_ptr<MetricsExporter> exporter;
  if (!config.metrics.listen.empty()) {
    exporter = MetricsExporter::Start(config.metrics.listen, config.metrics.refresh_ns, &error);
    if (!exporter) {
      Log(LogLevel::kError, "%s", error.c_str());
      return 1;
    }
    Log(LogLevel::kInfo, "metrics: serving http://%s/metrics", config.metrics.listen.c_str());
  }
  // Outlives the daemon loop: stopped (for one this broker started) after it.
  std::unique_ptr<MpsControl> mps;
  if (config.spatial == SpatialMode::kMps) {
    mps = MpsControl::Start(config.mps, options.socket_path, &error);
    if (mps)
      Log(LogLevel::kInfo, "mps: control daemon serves %s", mps->pipe_directory().c_str());
    else
      Log(LogLevel::kError, "mps: %s; co-locating tenants are time-sliced", error.c_str());
  }
  // The cluster: its agent connects on its own thread; an unreachable ZooKeeper is
  // not an error at start (the broker serves, failing static).
  std::unique_ptr<ClusterAgent> cluster;
  if (config.cluster.enabled())
    cluster = std::make_unique<ClusterAgent>(
        config.cluster, config.cluster.node.empty() ? DefaultNodeName() : config.cluster.node);
  Log(LogLevel::kInfo, "listening on %s", options.socket_path.c_str());
  int status;
  {
    Daemon daemon(options, std::move(config), std::move(gpus), std::move(topology), std::move(store),
                  std::move(open_sessions), std::move(exporter), &listeners, mps.get(),
                  std::move(cluster));
    NotifyReady("listening on " + options.socket_path);  // the sockets already queue connections
    status = daemon.Run(signal_fd);
  }
  return status;
}

}  // namespace gpushare::broker
