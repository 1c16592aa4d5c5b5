// The broker's logic, without I/O: connections come and go, bytes arrive, replies and
// grants go out. BrokerCore is a facade over parts with one job each: Sessions (every
// message routed as messages.def says), ClientRegistry, WorkTracker (launch records and
// classes), Weights, PlacementService (and job plans), admission, Communicators,
// SpatialPlanner and the status report. It keeps what ties them together: registration,
// the node ledger's Take/Give, hang-up reclaim, reload and the scheduling pass. So the
// daemon (broker/io/daemon.cpp) is only sockets, and the fuzz target drives exactly
// what a hostile client reaches.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/core/cluster_quota.h"
#include "broker/core/communicators.h"
#include "broker/core/metering.h"
#include "broker/core/metrics_report.h"
#include "broker/core/placement_service.h"
#include "broker/core/session.h"
#include "broker/core/socket_admin.h"
#include "broker/core/spatial_planner.h"
#include "broker/core/weights.h"
#include "broker/policy/config.h"
#include "broker/policy/gpu_info.h"
#include "broker/policy/ledger.h"
#include "broker/policy/mps_shares.h"
#include "broker/policy/profiles.h"
#include "broker/policy/scheduler.h"
#include "broker/policy/topology.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

class BrokerCore : private MessageHandlers {
 public:
  BrokerCore(BrokerConfig config, std::vector<GpuInfo> gpus, ChannelHost* channels);
  // Its parts point into it.
  BrokerCore(const BrokerCore&) = delete;
  BrokerCore& operator=(const BrokerCore&) = delete;

  // The clock (CLOCK_MONOTONIC ns by default; tests pass a fake one).
  void SetClock(std::function<uint64_t()> clock) { clock_ = std::move(clock); }
  // How the GPUs are connected (DiscoverTopology); by default none has P2P. Ignored
  // (false) unless it describes as many GPUs as the broker has.
  bool SetTopology(Topology topology) { return placement_.SetTopology(std::move(topology)); }
  const Topology& topology() const { return placement_.topology(); }
  // What the driver says a process holds on a physical GPU (NVML's per-process
  // memory, ProcessMemoryReader); nullopt where it cannot say. Bounds the holdings a
  // re-registering client claims. Unset: claims are bounded by the ledger only.
  using ProcessMemory = std::function<std::optional<uint64_t>(int32_t pid, int gpu)>;
  void SetProcessMemory(ProcessMemory reader) { process_memory_ = std::move(reader); }
  // The cluster's tenant quotas ([cluster.tenants.NAME]); null (the default): none are
  // taken. Not owned; it must outlive the core.
  void SetClusterQuota(ClusterQuota* quota) { cluster_quota_ = quota; }
  // This node as the cluster sees it (its name, version and health are the daemon's).
  NodeRecord ClusterNode() const;
  // Who may change weights at run time besides root (the broker's own uid by default).
  void SetAdminUid(uint32_t uid) { weights_.SetAdminUid(uid); }
  // Who carries out SocketAdmin requests (the daemon); unset, they are refused.
  void SetSocketHost(SocketHost* host) { socket_host_ = host; }
  // Told of every refused registration, with the reason sent to the client (the daemon logs it).
  using RefusalLog = std::function<void(const PeerCredentials& peer, const std::string& reason)>;
  void SetRefusalLog(RefusalLog log) { refusal_log_ = std::move(log); }

  // A connection's life. `Input` handles every whole message in `buffer` (consuming
  // it) and appends the replies to `out`; it returns false when the peer is to be
  // dropped (malformed bytes, a protocol breach), with the reason in `error`.
  void Open(ClientId conn, const PeerCredentials& peer) { sessions_.Open(conn, peer); }
  // What the daemon now knows of an unregistered connection's socket (a container's
  // socket bound since the peer connected); a registered client keeps its tenant.
  void Reidentify(ClientId conn, const PeerCredentials& peer) {
    if (!clients_.Has(conn)) sessions_.Open(conn, peer);
  }
  bool Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error) {
    return sessions_.Input(conn, buffer, out, error);
  }
  // The peer hung up: every byte it held returns to the ledger. Returns the bytes freed.
  uint64_t Close(ClientId conn);

  // The MPS daemon (spatial = "mps") serves at `pipe_directory` from now on; "" : none
  // runs (never started, or it died): no new client joins MPS and every flow takes its
  // turn on the whole GPU, since the shares of clients already in MPS no longer hold.
  void SetMpsPipe(std::string pipe_directory);
  const std::string& mps_pipe() const { return mps_pipe_; }

  // A new configuration: tenants' weights and caps as it says from now on.
  void Reload(BrokerConfig config);

  // Periodic work: reads clients' launch records, re-evaluates their classes (and so
  // their weights), and carries out the scheduler's grants and revokes. The daemon
  // calls it every loop, at least by NextDeadline.
  void Poll();
  std::optional<uint64_t> NextDeadline() const { return scheduler_.NextDeadline(); }
  // Whether the last Poll found a ring a quarter full or more (then poll sooner).
  bool rings_busy() const { return rings_busy_; }
  // Measured utilization of a process on a physical GPU (NVML), for the classifier.
  void Utilization(int32_t pid, unsigned sm_percent, unsigned mem_percent);

  // Metering (metering.h): rows go to `sink` from now on; `open` are the sessions the
  // store has open, `wall_clock` gives unix ns. Flush writes every live session's usage
  // (the daemon calls it each [metering] interval); false with the reason if refused.
  void AttachMeter(MeterSink* sink, uint64_t first_session_id, std::vector<MeterSnapshot> open,
                   std::function<uint64_t()> wall_clock) {
    metering_.Attach(sink, first_session_id, std::move(open), std::move(wall_clock));
  }
  bool FlushMeter(std::string* error) { return metering_.Flush(error); }
  // Writes the sessions that ended since the last write (the daemon: after each loop pass).
  bool FlushEndedMeter(std::string* error) { return metering_.FlushEnded(error); }
  // Sessions left open by a stopped broker whose clients have not re-registered within
  // `grace_ns` of AttachMeter end at their last record.
  void CloseMeterOrphans(uint64_t grace_ns) { metering_.CloseOrphans(grace_ns); }

  // The whole node (tests, the broker's own use).
  std::string StatusJson() const;
  // What `viewer` may see (visibility.h): root and the broker's uid everything; others
  // their own tenants' clients and the node's totals, the rest counted in hidden_clients.
  std::string StatusJson(const PeerCredentials& viewer) const;
  // The broker's metric families (metrics_report.h), appended to `out`.
  void AppendMetrics(std::vector<prometheus::MetricFamily>* out) const;
  const ClientRecord* Client(ClientId conn) const { return clients_.Find(conn); }
  size_t client_count() const { return clients_.size(); }
  const NodeLedger& ledger() const { return ledger_; }

 private:
  // The handlers of messages.def's messages (Sessions calls them).
  bool Registered(ClientId conn) const override { return clients_.Has(conn); }
  protocol::Welcome OnHello(ClientId conn, const PeerCredentials& peer, const protocol::Hello& hello) override;
  // OnHello without counting it.
  protocol::Welcome Register(ClientId conn, const PeerCredentials& peer, const protocol::Hello& hello);
  protocol::TakeReply OnTake(ClientId conn, const PeerCredentials& peer, const protocol::Take& take) override;
  void OnGive(ClientId conn, const PeerCredentials& peer, const protocol::Give& give) override;
  protocol::LeaseReply OnLease(ClientId conn, const PeerCredentials& peer, const protocol::Lease& lease) override;
  // Why a Take or Lease on GPU `g` was refused (counted as an out-of-memory refusal).
  std::string Refused(ClientId conn, const ClientRecord& c, int g, NodeLedger::Grant result);
  // Asks the other clients on GPU `g` whose idle leases would make room for `need` (the
  // tenant's under its cap, anyone's on a full GPU) to give them back; false (nothing
  // asked) if even all of them would not make room.
  bool RecallIdleLeases(ClientId conn, const ClientRecord& c, int g, uint64_t need);
  std::string OnStatus(ClientId, const PeerCredentials& peer, const protocol::Text&) override {
    return StatusJson(peer);
  }
  void OnSched(ClientId conn, const PeerCredentials& peer, const protocol::Sched& s) override;
  std::string OnSetWeight(ClientId, const PeerCredentials& peer, const protocol::SetWeight& s) override {
    std::string reply = weights_.Set(peer, s);
    Reterm();
    return reply;
  }
  std::string OnUsage(ClientId, const PeerCredentials& peer, const protocol::Text& request) override {
    return metering_.Request(peer, weights_.admin_uid(), request);
  }
  std::string OnSocketAdmin(ClientId, const PeerCredentials& peer, const protocol::Text& request) override;
  std::string OnComm(ClientId conn, const PeerCredentials&, const protocol::Comm& m) override {
    return comms_.Report(conn, clients_.at(conn), m);  // a warning for the client, or ""
  }
  protocol::MpsTerms OnMpsAsk(ClientId conn, const PeerCredentials& peer, const protocol::MpsAsk& ask) override;
  void LearnMpsClasses();  // co-locating programs' measured classes, for their next runs

  void RestoreHoldings(ClientId conn, int32_t pid, const std::vector<int>& physical,
                       const uint64_t (&claimed)[protocol::kMaxDevices], std::string* warning);

  // The tenant a registering client is; `refusal` set if it may not be that.
  std::string TenantOf(const PeerCredentials& peer, const protocol::Hello& hello, std::string* refusal) const;
  // vGPU instances (profiles.h): the profile a client asks for or its tenant gives it,
  // where one fits, and the ceiling its flows run under.
  std::string ProfileOf(const std::string& tenant, const protocol::Hello& hello) const;
  InstanceFit FitProfile(const std::string& name, const Profile& profile, const std::vector<int>& candidates) const;
  std::optional<double> CeilingOf(const ClientRecord& c) const;

  void PublishTenant(const std::string& tenant);
  Grants GrantsOf(const ClientRecord& c) const;
  void Schedule(uint64_t now);  // Tick and carry out
  void Reterm();                // every session's metered fraction, after clients or weights changed

  // Declared in the order they are built: the parts hold pointers to what precedes them.
  BrokerConfig config_;
  std::vector<GpuInfo> gpus_;
  ChannelHost* channels_;
  std::function<uint64_t()> clock_;
  ProcessMemory process_memory_;
  NodeLedger ledger_;
  Scheduler scheduler_;
  ClientRegistry clients_;
  WorkTracker work_;
  Weights weights_;
  PlacementService placement_;
  Communicators comms_;
  MpsShares mps_;
  std::string mps_pipe_;  // where the running MPS daemon serves; "" : none
  SpatialPlanner spatial_;
  Metering metering_;
  Sessions sessions_;
  SocketHost* socket_host_ = nullptr;
  RefusalLog refusal_log_;
  bool rings_busy_ = false;
  ClusterQuota* cluster_quota_ = nullptr;
  struct ClusterGrant {
    std::string tenant;
    QuotaAmount amount;
  };
  std::map<ClientId, ClusterGrant> cluster_grants_;  // what each client took of its tenant's cluster quota
  CoreCounters counters_;  // for monitoring only
};

}  // namespace gpushare::broker
