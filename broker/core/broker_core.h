// The broker's logic, without I/O: connections come and go, bytes arrive, replies
// and grants go out. Registration (who, which tenant, which GPUs, what caps), the
// node ledger's Take/Give, hang-up reclaim, config reload and the status report all
// live here, so that the daemon (daemon.cpp) is only sockets and the fuzz target can
// drive exactly what a hostile client reaches.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/policy/classifier.h"
#include "broker/policy/config.h"
#include "broker/policy/gpu_info.h"
#include "broker/policy/ledger.h"
#include "broker/policy/placement_policy.h"
#include "broker/policy/scheduler.h"
#include "broker/policy/topology.h"
#include "common/protocol/channel.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

// Who is at the other end of a connection, as the kernel says (SO_PEERCRED).
struct PeerCredentials {
  int32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// What a client is granted, as published into its shared-memory channel.
struct Grants {
  double weight = 1;
  std::vector<uint64_t> cap_bytes;          // per virtual GPU; 0: uncapped
  std::vector<uint64_t> tenant_held_bytes;  // per virtual GPU
};

// What a client's ring lost: records the broker found unreadable or overrun (`lost`),
// and what the client itself could not fit (its summary counters).
struct RingCounts {
  uint64_t lost = 0;
  uint64_t dropped_records = 0;
  uint64_t dropped_copies = 0;
  uint64_t dropped_bytes = 0;
};

// Where the core puts per-client channels (the daemon: shared memory; tests: a fake).
class ChannelHost {
 public:
  virtual ~ChannelHost() = default;
  // Creates the client's channel; returns its name, or "" if none could be made.
  virtual std::string Create(ClientId id, const PeerCredentials& peer) = 0;
  virtual void Publish(ClientId id, const Grants& grants) = 0;
  virtual void Destroy(ClientId id) = 0;
  // The GPU-time gate of a client's virtual GPU (protocol::GateState).
  virtual void SetGate(ClientId, int /*device*/, uint32_t /*state*/, uint64_t /*slice*/) {}
  // The CU mask a client's virtual GPU's new streams are held to (nullopt: none).
  virtual void SetCuMask(ClientId, int /*device*/, const std::optional<CuMask>& /*mask*/) {}
  // The client's new launch records; the text of one of its kernel names.
  virtual size_t Drain(ClientId, const std::function<void(const protocol::RecordData&)>&) { return 0; }
  virtual std::string KernelName(ClientId, uint16_t) { return ""; }
  virtual RingCounts Counts(ClientId) { return {}; }
};

struct ClientRecord {
  PeerCredentials peer;
  std::string tenant;
  std::string job;
  int rank = -1;
  int job_size = 0;  // ranks of its job on this node (0: unknown); with a rank, its GPUs are the job's
  double weight = 1;
  std::vector<int> physical;          // virtual i -> physical GPU
  std::optional<uint64_t> cap_bytes;  // per GPU, the tenant's
  std::string channel;
  bool scheduled = false;                         // its launches pass gates the scheduler opens
  std::optional<double> weight_override;          // set by `gpushare-smi set-weight` until reload
  WorkClass assumed_class = WorkClass::kUnknown;  // what placement judged it by, until it is classified
  std::vector<std::string> placement;             // why it landed where it did (`gpushare-smi --explain`)
};

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

// What the broker learns of a client's work from its launch records and NVML.
struct ClientWork {
  explicit ClientWork(const ClassifierConfig* config) : overall(config) {}
  Classifier overall;
  std::map<uint64_t, Classifier> streams;  // by stream id, bounded (kMaxStreams)
  std::vector<int8_t> name_class;          // per name slot: -1 not looked up, -2 no class, else WorkClass
  std::vector<std::string> names;          // per name slot, once read (stable: interned for reasons)
  uint64_t records = 0;
  uint64_t kernels = 0;
  uint64_t copies = 0;
  uint64_t copy_bytes = 0;
  uint32_t launched_mask = 0;  // virtual GPUs with records in the current drain
};

class BrokerCore {
 public:
  BrokerCore(BrokerConfig config, std::vector<GpuInfo> gpus, ChannelHost* channels);

  // The clock (CLOCK_MONOTONIC ns by default; tests pass a fake one).
  void SetClock(std::function<uint64_t()> clock) { clock_ = std::move(clock); }
  // How the GPUs are connected (DiscoverTopology); by default none has P2P. Ignored
  // (false) unless it describes as many GPUs as the broker has.
  bool SetTopology(Topology topology);
  const Topology& topology() const { return topology_; }
  // Who may change weights at run time besides root (the broker's own uid by default).
  void SetAdminUid(uint32_t uid) { admin_uid_ = uid; }

  // A connection's life. `Input` handles every whole message in `buffer` (consuming
  // it) and appends the replies to `out`; it returns false when the peer is to be
  // dropped (malformed bytes, a protocol breach), with the reason in `error`.
  void Open(ClientId conn, const PeerCredentials& peer);
  bool Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error);
  // The peer hung up: every byte it held returns to the ledger. Returns the bytes freed.
  uint64_t Close(ClientId conn);

  // A new configuration: tenants' weights and caps as it says from now on.
  void Reload(BrokerConfig config);

  // Periodic work: reads clients' launch records, re-evaluates their classes (and so
  // their weights), and carries out the scheduler's grants and revokes. The daemon
  // calls it every loop, at least by NextDeadline.
  void Poll();
  std::optional<uint64_t> NextDeadline() const;
  // Whether the last Poll found a ring a quarter full or more (then poll sooner).
  bool rings_busy() const { return rings_busy_; }
  // Measured utilization of a process on a physical GPU (NVML), for the classifier.
  void Utilization(int32_t pid, unsigned sm_percent, unsigned mem_percent);

  std::string StatusJson() const;
  const ClientRecord* Client(ClientId conn) const;
  size_t client_count() const { return clients_.size(); }
  const NodeLedger& ledger() const { return ledger_; }

 private:
  // One message, routed as messages.def says to its handler below (On<Message>).
  bool Dispatch(ClientId conn, const PeerCredentials& peer, const protocol::Message& m, std::vector<uint8_t>* out,
                std::string* error);
  protocol::Welcome OnHello(ClientId conn, const PeerCredentials& peer, const protocol::Hello& hello);
  protocol::TakeReply OnTake(ClientId conn, const PeerCredentials& peer, const protocol::Take& take);
  void OnGive(ClientId conn, const PeerCredentials& peer, const protocol::Give& give);
  std::string OnStatus(ClientId, const PeerCredentials&, const protocol::Text&) { return StatusJson(); }
  // What GPU `g` has been promised to capped tenants with clients on it.
  uint64_t Promised(int g, const std::string& except_tenant) const;
  bool TenantOn(const std::string& tenant, int g) const;
  // Placement (placement_policy.h): the load of every GPU as `tenant` sees it, the
  // decision for a registering client, and for a rank of a job with a known size.
  std::vector<GpuLoad> Loads(const std::string& tenant) const;
  PolicyDecision Place(const std::string& tenant, const std::optional<uint64_t>& cap, const TenantTerms& terms,
                       const protocol::Hello& hello);
  PolicyDecision PlaceRank(const PolicyRequest& request, int job_size, const std::vector<GpuLoad>& loads);
  WorkClass ClassOf(ClientId id) const;  // its measured class, else the one placement assumed
  // The virtual GPUs a client works on: a rank of a planned job, its own; others,
  // those where it holds memory or has run (else its virtual 0).
  std::vector<int> WorkDevices(ClientId id, const ClientRecord& c) const;
  std::string OnComm(ClientId conn, const PeerCredentials& peer, const protocol::Comm& m);  // a warning, or ""
  std::string CommWarning(const Communicator& comm) const;
  void PublishTenant(const std::string& tenant);
  Grants GrantsOf(const ClientRecord& c) const;
  void OnSched(ClientId conn, const PeerCredentials& peer, const protocol::Sched& s);
  std::string OnSetWeight(ClientId conn, const PeerCredentials& peer, const protocol::SetWeight& s);
  double ClassWeight(WorkClass c) const;
  double BaseWeight(const ClientRecord& c) const;  // run-time override, else the tenant's terms
  double EffectiveWeight(ClientId id) const;       // tenant (or overridden) weight x class weight
  void UpdateWeights(ClientId id);
  void Schedule(uint64_t now);  // Tick and carry out
  void Observe(ClientId id, ClientWork& w, const protocol::RecordData& r, uint64_t now);
  // Spatial sharing (spatial.h): plans every GPU's CU masks from its flows' classes and
  // publishes those that changed, to the scheduler and to the clients' channels.
  void UpdateSpatial(uint64_t now);

  BrokerConfig config_;
  std::vector<GpuInfo> gpus_;
  ChannelHost* channels_;
  NodeLedger ledger_;
  std::map<ClientId, PeerCredentials> connections_;  // open, not (yet) registered
  std::map<ClientId, ClientRecord> clients_;
  std::map<ClientId, std::unique_ptr<ClientWork>> work_;
  std::map<std::string, double> tenant_weight_;  // set at run time, until a reload
  Scheduler scheduler_;
  std::function<uint64_t()> clock_;
  uint32_t admin_uid_;
  uint64_t last_evaluation_ns_ = 0;
  bool rings_busy_ = false;
  std::map<std::pair<ClientId, int>, SpatialAssignment> spatial_;  // flows with a CU mask in force
  std::map<ClientId, WorkClass> spatial_class_;                    // a client's last class but idle
  Topology topology_;
  PlacementPolicy policy_;
  int round_robin_cursor_ = 0;
  // A job's GPUs in local-rank order, planned when its first rank registers and kept
  // while any of its ranks lives. Keyed by tenant and job: tenants never share jobs.
  std::map<std::pair<std::string, std::string>, std::vector<int>> job_plans_;
  std::map<std::pair<std::string, uint64_t>, Communicator> comms_;  // by tenant and comm id
};

}  // namespace gpushare::broker
