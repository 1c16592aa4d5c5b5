// The broker's logic without I/O: the facade and what ties its parts together (see
// broker_core.h).
#include "broker_core.h"

#include <algorithm>
#include <map>

#include "broker/core/admission.h"
#include "broker/core/status_report.h"
#include "broker/core/visibility.h"
#include "common/base/futex.h"
#include "common/base/units.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;

std::vector<uint64_t> Capacities(const std::vector<GpuInfo>& gpus) {
  std::vector<uint64_t> c;
  for (const GpuInfo& g : gpus) c.push_back(g.memory_bytes);
  return c;
}

Scheduler::Params SchedulerParams(const BrokerConfig& c) {
  Scheduler::Params p;
  p.quantum_ns = static_cast<uint64_t>(c.quantum_us) * 1000;
  return p;
}

proto::Welcome Refusal(const std::string& reason) {
  proto::Welcome w{};
  w.accepted = 0;
  proto::SetString(w.reason, reason);
  return w;
}

}  // namespace

BrokerCore::BrokerCore(BrokerConfig config, std::vector<GpuInfo> gpus, ChannelHost* channels)
    : config_(std::move(config)),
      gpus_(std::move(gpus)),
      channels_(channels),
      clock_(MonotonicNs),
      ledger_(Capacities(gpus_)),
      scheduler_(SchedulerParams(config_)),
      work_(&config_, channels_),
      weights_(&config_, &clients_, &work_, &scheduler_),
      placement_(gpus_, &config_, &clients_, &ledger_, &scheduler_, &work_, &clock_),
      comms_(&placement_.topology()),
      spatial_(&config_, &gpus_, &clients_, &work_, &scheduler_, channels_, &mps_pipe_),
      metering_(&config_, &clients_, &ledger_, &scheduler_, &work_, &clock_),
      sessions_(this) {}

// Who a registering client is (docs/threat-model.md): through a tenant's or a container's
// socket, the socket's tenant, and GPUSHARE_TENANT may only repeat it; through the main
// socket, the tenant it asks for ("default" if none), where a tenant served on its own
// socket takes only root, the broker's uid and the uids/gids it lists.
std::string BrokerCore::TenantOf(const PeerCredentials& peer, const proto::Hello& hello, std::string* refusal) const {
  const std::string asked = hello.tenant;
  if (peer.via != SocketKind::kMain) {
    if (peer.socket_tenant.empty())
      *refusal = "the socket " + peer.socket_name + " is not bound to a tenant yet (its container's tenant is " +
                 "not known to the broker); try again once it is";
    else if (!asked.empty() && asked != peer.socket_tenant)
      *refusal = "GPUSHARE_TENANT=\"" + asked + "\" but this process reached tenant \"" + peer.socket_tenant +
                 "\"'s socket (" + peer.socket_name + "): the socket decides the tenant";
    return peer.socket_tenant;
  }
  const std::string tenant = asked.empty() ? "default" : asked;
  auto policy = config_.tenants.find(tenant);
  if (policy != config_.tenants.end() && policy->second.socket && !policy->second.uids && !policy->second.gids &&
      !IsAdmin(peer, weights_.admin_uid()))
    *refusal = "tenant \"" + tenant + "\" is served on its own socket (tenants/" + tenant +
               ".sock beside the main one); join it there, or list your uid in its uids";
  return tenant;
}

// The profile a registering client gets: the one it asks for, else its tenant's.
std::string BrokerCore::ProfileOf(const std::string& tenant, const proto::Hello& hello) const {
  if (hello.profile[0] != '\0') return hello.profile;
  auto policy = config_.tenants.find(tenant);
  return policy != config_.tenants.end() && policy->second.profile ? *policy->second.profile : "";
}

std::optional<double> BrokerCore::CeilingOf(const ClientRecord& c) const {
  std::optional<double> ceiling = c.instance ? c.instance->max_compute : std::nullopt;
  if (auto policy = config_.tenants.find(c.tenant); policy != config_.tenants.end() && policy->second.max_compute)
    ceiling = std::min(ceiling.value_or(1.0), *policy->second.max_compute);
  return ceiling;
}

InstanceFit BrokerCore::FitProfile(const std::string& name, const Profile& profile,
                                   const std::vector<int>& candidates) const {
  std::vector<InstanceGpu> gpus;
  for (int g = 0; g < ledger_.gpu_count(); ++g)
    gpus.push_back(InstanceGpu{ledger_.capacity(g), clients_.PromisedOutsideInstances(g, ledger_)});
  return FitInstance(name, profile, gpus, clients_.Instances(), config_.reserved, candidates);
}

std::string BrokerCore::OnSocketAdmin(ClientId, const PeerCredentials& peer, const proto::Text& text) {
  if (!IsAdmin(peer, weights_.admin_uid()))
    return "refused: only root or the broker's user (uid " + std::to_string(weights_.admin_uid()) +
           ") on the main socket may manage sockets";
  if (socket_host_ == nullptr) return "refused: this broker manages no sockets";
  std::string error;
  std::optional<SocketAdminRequest> request = ParseSocketAdmin(text, &error);
  if (!request) return "refused: " + error;
  return socket_host_->Carry(*request);
}

proto::Welcome BrokerCore::OnHello(ClientId conn, const PeerCredentials& peer, const proto::Hello& hello) {
  proto::Welcome w = Register(conn, peer, hello);
  ++(w.accepted ? counters_.registrations : counters_.registration_refusals);
  if (!w.accepted && refusal_log_) refusal_log_(peer, w.reason);
  return w;
}

proto::Welcome BrokerCore::Register(ClientId conn, const PeerCredentials& peer, const proto::Hello& asked) {
  std::string refusal;
  const std::string tenant = TenantOf(peer, asked, &refusal);
  if (!refusal.empty()) return Refusal(refusal);
  proto::Hello hello = asked;  // a profile client's request is narrowed to its instance
  const std::string profile_name = ProfileOf(tenant, hello);
  const Profile* profile = nullptr;
  // A tenant's configured profile is its clients' (what it is billed for), as a fixed weight is.
  if (auto policy = config_.tenants.find(tenant);
      policy != config_.tenants.end() && policy->second.profile && *policy->second.profile != profile_name)
    return Refusal("tenant \"" + tenant + "\" has profile \"" + *policy->second.profile +
                   "\"; this process asked for \"" + profile_name + "\"");
  if (!profile_name.empty()) {
    auto it = config_.profiles.find(profile_name);
    if (it == config_.profiles.end()) {
      std::string known;
      for (const auto& [name, _] : config_.profiles) known += (known.empty() ? "" : ", ") + name;
      return Refusal("no profile \"" + profile_name + "\" in the broker's config (" +
                     (known.empty() ? std::string("it has none") : "it has " + known) + ")");
    }
    profile = &it->second;
  }
  std::optional<uint64_t> asked_cap;
  for (uint32_t v = 0; v < proto::kMaxDevices; ++v)
    if (hello.cap_bytes[v] != 0) asked_cap = std::max(asked_cap.value_or(0), hello.cap_bytes[v]);
  if (profile != nullptr) asked_cap.reset();  // the instance's memory is its cap
  TenantTerms terms =
      ResolveTenant(config_, tenant, peer.uid, hello.weight, asked_cap, peer.gid, peer.via != SocketKind::kMain);
  if (!terms.refusal.empty()) return Refusal(terms.refusal);
  // A rank of a job whose size is known sees the job's GPUs; its instance is on its own.
  const bool sized_rank = hello.rank >= 0 && hello.job[0] != '\0' && hello.rank < static_cast<int>(hello.job_size);
  if (profile != nullptr && !hello.reattach) {
    // An instance is on one GPU: placement chooses among those where one is free.
    std::vector<int> candidates;
    if (hello.device_count > 0 && hello.visible[0] >= 0) {
      candidates.push_back(hello.visible[0]);
    } else if (terms.gpus) {
      candidates = *terms.gpus;
    } else {
      for (int g = 0; g < ledger_.gpu_count(); ++g) candidates.push_back(g);
    }
    if (terms.gpus && std::find(terms.gpus->begin(), terms.gpus->end(), candidates.front()) == terms.gpus->end())
      candidates.clear();
    InstanceFit fit = FitProfile(profile_name, *profile, candidates);
    if (fit.gpus.empty()) return Refusal(fit.refusal);
    std::sort(fit.gpus.begin(), fit.gpus.end());
    terms.gpus = fit.gpus;
    if (!sized_rank) {
      hello.device_count = 1;
      for (int v = 1; v < proto::kMaxDevices; ++v) hello.visible[v] = -1;
    }
  }

  // A tenant's cap is its configured one, else what its first live client asked.
  const bool tenant_live = clients_.TenantLive(tenant);
  const bool configured_cap =
      config_.tenants.count(tenant) && (config_.tenants.at(tenant).memory || config_.tenants.at(tenant).max_memory);
  std::optional<uint64_t> cap = tenant_live && !configured_cap ? ledger_.TenantCap(tenant) : terms.memory_cap;

  std::vector<int> physical;
  std::string warning;
  std::vector<std::string> explanation;
  WorkClass assumed = WorkClass::kUnknown;
  if (hello.reattach) {
    // The client's memory is already on these GPUs: keep its map, whatever the policy.
    for (uint32_t v = 0; v < hello.device_count; ++v)
      if (hello.visible[v] >= 0 && hello.visible[v] < ledger_.gpu_count()) {
        if (std::find(physical.begin(), physical.end(), hello.visible[v]) != physical.end())
          return Refusal("re-registering with GPU " + std::to_string(hello.visible[v]) +
                         " twice: two virtual GPUs cannot share one physical GPU");
        physical.push_back(hello.visible[v]);
      }
    explanation.push_back("re-registered after a broker restart: kept the GPUs its memory is on");
    // A rank's map is its job's plan: later ranks of the job must get the same one.
    if (hello.rank >= 0 && hello.job_size > 0 && hello.job[0] != '\0' && physical.size() == hello.job_size)
      placement_.KeepPlan(tenant, hello.job, physical);
  } else {
    PolicyDecision placed = placement_.Place(tenant, cap, terms, hello);
    if (!placed.refusal.empty()) return Refusal(placed.refusal);
    warning = placed.warning;
    explanation = std::move(placed.explanation);
    assumed = placed.assumed_class;
    // A map that must stay as it is (GPUs asked for, a rank's view of its job) is all
    // admitted or refused; otherwise a GPU where the cap cannot be met is left out.
    const bool exact = std::any_of(hello.visible, hello.visible + hello.device_count, [](int v) { return v >= 0; }) ||
                       (hello.rank >= 0 && hello.job_size > 0 && hello.job[0] != '\0');
    // Admission: can the tenant's cap be met on each GPU beside what others were promised?
    AdmissionResult admitted =
        Admit(placed.physical, tenant, cap, exact, config_.admission, ledger_, clients_, &warning, &explanation);
    if (!admitted.refusal.empty()) return Refusal(admitted.refusal);
    physical = std::move(admitted.physical);
  }

  std::optional<Instance> instance;
  if (profile != nullptr && !physical.empty()) {
    const size_t own = sized_rank && static_cast<size_t>(hello.rank) < physical.size() ? hello.rank : 0;
    // Placement kept to the GPUs with room, but a job's plan is older than this rank.
    if (!hello.reattach) {
      InstanceFit fit = FitProfile(profile_name, *profile, {physical[own]});
      if (fit.gpus.empty()) return Refusal(fit.refusal);
    }
    instance =
        Instance{profile_name, physical[own], profile->compute, profile->max_compute, profile->memory_bytes, clock_()};
    explanation.push_back("instance: profile \"" + profile_name + "\" on GPU " + std::to_string(physical[own]) + ": " +
                          FormatBytes(profile->memory_bytes) + ", compute " + std::to_string(profile->compute));
  }

  // Last, once the node would admit it: the tenant's cluster quota (cluster_quota.h).
  std::optional<ClusterGrant> grant;
  if (auto quota = config_.cluster.tenants.find(tenant); cluster_quota_ != nullptr && quota != config_.cluster.tenants.end()) {
    const std::optional<uint64_t> per_gpu = instance ? std::optional<uint64_t>(instance->memory_bytes) : cap;
    if (quota->second.max_memory && !per_gpu)
      return Refusal("tenant \"" + tenant + "\" has a cluster memory quota: its clients need a memory cap");
    const QuotaAmount amount{1, instance ? instance->memory_bytes : per_gpu.value_or(0) * physical.size()};
    if (std::string why = cluster_quota_->Take(tenant, amount, hello.reattach != 0); !why.empty())
      return Refusal("cluster quota: " + why);
    grant = ClusterGrant{tenant, amount};
  }
  if (grant) cluster_grants_[conn] = *grant;

  ledger_.AddClient(conn, tenant);
  ledger_.SetTenantCap(tenant, cap);
  if (instance) ledger_.SetClientCap(conn, instance->memory_bytes);
  ClientRecord& c = clients_.Add(conn);
  c.instance = instance;
  c.peer = peer;
  c.tenant = tenant;
  c.job = hello.job;
  c.rank = hello.rank;
  c.job_size = static_cast<int>(hello.job_size);
  c.weight = instance ? instance->compute : terms.weight;  // an instance's share follows its compute
  c.physical = physical;
  c.assumed_class = assumed;
  c.placement = std::move(explanation);
  c.cap_bytes = cap;
  c.max_compute = CeilingOf(c);
  if (auto asked = mps_.Claim(peer.pid, clock_())) {
    c.mps_class = asked->share.cls;
    c.mps_program = asked->program;
  }
  if (hello.reattach) RestoreHoldings(conn, peer.pid, physical, hello.held_bytes, &warning);
  if (channels_ != nullptr) c.channel = channels_->Create(conn, peer);
  work_.Add(conn);
  c.scheduled = config_.scheduling && !c.channel.empty();
  if (c.scheduled) {
    for (size_t v = 0; v < physical.size(); ++v) {
      scheduler_.AddFlow(conn, static_cast<int>(v), physical[v], weights_.Effective(conn));
      scheduler_.SetCeiling(conn, static_cast<int>(v), c.max_compute, clock_());
      channels_->SetGate(conn, static_cast<int>(v), proto::kGateWait, 0);  // the first launch asks
    }
  }

  proto::Welcome w{};
  w.accepted = 1;
  proto::SetString(w.reason, warning);
  w.client_id = conn;
  w.weight = c.weight;
  w.device_count = static_cast<uint32_t>(physical.size());
  for (size_t v = 0; v < physical.size(); ++v) {
    w.physical[v] = physical[v];
    w.cap_bytes[v] = ClientCap(c).value_or(0);
  }
  proto::SetString(w.channel, c.channel);
  w.scheduled = c.scheduled ? 1 : 0;
  PublishTenant(tenant);
  metering_.Joined(conn, hello.reattach != 0, [&](const ClientRecord& r) { return weights_.Base(r); });
  Reterm();
  return w;
}

proto::TakeReply BrokerCore::OnTake(ClientId conn, const PeerCredentials&, const proto::Take& take) {
  proto::TakeReply r{};
  const ClientRecord& c = clients_.at(conn);
  if (take.device >= c.physical.size()) {
    proto::SetString(r.reason, "no virtual GPU " + std::to_string(take.device));
    return r;
  }
  const int g = c.physical[take.device];
  if (take.force) {
    // Memory the driver already holds for the client (its context): recorded up to the
    // tenant's cap, its instance's memory and the device, never past them, whatever the client says.
    const uint64_t recorded = ledger_.Record(conn, g, take.bytes);
    r.granted = recorded == take.bytes ? 1 : 0;
    if (!r.granted)
      proto::SetString(r.reason, "recorded " + FormatBytes(recorded) + " of " + FormatBytes(take.bytes) +
                                     " already held: the rest is past the tenant's cap, the instance's memory or GPU " +
                                     std::to_string(g));
    if (recorded > 0) PublishTenant(c.tenant);
    return r;
  }
  const NodeLedger::Grant result = ledger_.Take(conn, g, take.bytes);
  r.granted = result == NodeLedger::Grant::kGranted ? 1 : 0;
  if (!r.granted) proto::SetString(r.reason, Refused(conn, c, g, result));
  if (r.granted) {
    PublishTenant(c.tenant);
    metering_.Held(conn);
  }
  return r;
}

std::string BrokerCore::Refused(ClientId conn, const ClientRecord& c, int g, NodeLedger::Grant result) {
  if (result != NodeLedger::Grant::kBadRequest) {  // out of memory
    ++counters_.oom_refusals[conn];
    ++counters_.tenant_oom_refusals[c.tenant];
  }
  switch (result) {
    case NodeLedger::Grant::kTenantCap:
      return "tenant \"" + c.tenant + "\" holds " + FormatBytes(ledger_.TenantHeld(c.tenant, g)) + " of its " +
             FormatBytes(c.cap_bytes.value_or(0)) + " cap on GPU " + std::to_string(g) + " across its processes";
    case NodeLedger::Grant::kClientCap:
      return "its \"" + (c.instance ? c.instance->profile : std::string()) + "\" instance holds " +
             FormatBytes(ledger_.Held(conn, g)) + " of its " + FormatBytes(c.instance ? c.instance->memory_bytes : 0) +
             " on GPU " + std::to_string(g);
    case NodeLedger::Grant::kDeviceFull:
      return "GPU " + std::to_string(g) + " has " + FormatBytes(ledger_.GpuHeld(g)) + " of " +
             FormatBytes(ledger_.capacity(g)) + " held by its clients";
    case NodeLedger::Grant::kBadRequest: return "bad request";
    case NodeLedger::Grant::kGranted: break;
  }
  return "";
}

proto::LeaseReply BrokerCore::OnLease(ClientId conn, const PeerCredentials&, const proto::Lease& lease) {
  proto::LeaseReply r{};
  const ClientRecord& c = clients_.at(conn);
  if (lease.device >= c.physical.size() || lease.need_bytes == 0) {
    proto::SetString(r.reason, "no virtual GPU " + std::to_string(lease.device) + ", or nothing asked");
    return r;
  }
  const int g = c.physical[lease.device];
  const NodeLedger::Grant result = ledger_.Take(conn, g, lease.need_bytes);
  if (result == NodeLedger::Grant::kGranted) {
    // Beyond what it needs, as much of the chunk it wants as there is room for.
    const uint64_t extra = std::min(lease.want_bytes - lease.need_bytes, ledger_.Room(conn, g));
    if (extra > 0) ledger_.Take(conn, g, extra);
    r.status = static_cast<int32_t>(proto::LeaseStatus::kGranted);
    r.granted_bytes = lease.need_bytes + extra;
    PublishTenant(c.tenant);
    metering_.Held(conn);
    return r;
  }
  // The cap holds exactly across processes: before refusing, leases other processes
  // hold idle that would make room are asked back, and the client asks again.
  if (result != NodeLedger::Grant::kClientCap && result != NodeLedger::Grant::kBadRequest &&
      RecallIdleLeases(conn, c, g, lease.need_bytes)) {
    r.status = static_cast<int32_t>(proto::LeaseStatus::kRecalling);
    return r;
  }
  proto::SetString(r.reason, Refused(conn, c, g, result));
  return r;
}

bool BrokerCore::RecallIdleLeases(ClientId conn, const ClientRecord& c, int g, uint64_t need) {
  if (channels_ == nullptr) return false;
  // What `need` lacks under the tenant's cap and on the GPU.
  const uint64_t capacity = ledger_.capacity(g);
  const uint64_t gpu_room = capacity - std::min(capacity, ledger_.GpuHeld(g));
  const uint64_t device_short = need > gpu_room ? need - gpu_room : 0;
  uint64_t tenant_short = 0;
  if (c.cap_bytes) {
    const uint64_t room = *c.cap_bytes - std::min(*c.cap_bytes, ledger_.TenantHeld(c.tenant, g));
    tenant_short = need > room ? need - room : 0;
  }
  uint64_t tenant_idle = 0, idle = 0;
  std::vector<ClientId> holders;
  for (const auto& [id, other] : clients_) {
    if (id == conn) continue;
    for (size_t v = 0; v < other.physical.size(); ++v) {
      if (other.physical[v] != g) continue;
      const uint64_t held = ledger_.Held(id, g);
      // What it says it allocated; its lease is the rest (a client that lies only
      // makes others ask in vain, then be refused).
      const uint64_t used = std::min(held, channels_->ReportedUsed(id, static_cast<int>(v)).value_or(held));
      if (held == used) continue;
      idle += held - used;
      if (other.tenant == c.tenant) tenant_idle += held - used;
      holders.push_back(id);
    }
  }
  if (holders.empty() || tenant_idle < tenant_short || idle < device_short) return false;
  for (ClientId id : holders) channels_->Recall(id);
  return true;
}

void BrokerCore::RestoreHoldings(ClientId conn, int32_t pid, const std::vector<int>& physical,
                                 const uint64_t (&claimed)[proto::kMaxDevices], std::string* warning) {
  // A restarted broker rebuilds its ledger from what clients say they hold. A claim is
  // believed only up to what the driver shows the process holding (where it can say)
  // and, through the ledger, up to the tenant's cap and the GPU's free capacity: a
  // lying client can book nothing its tenant could not have taken anyway.
  for (size_t v = 0; v < physical.size() && v < static_cast<size_t>(proto::kMaxDevices); ++v) {
    const int g = physical[v];
    uint64_t believed = claimed[v];
    std::optional<uint64_t> driver;
    if (process_memory_) driver = process_memory_(pid, g);
    if (driver) believed = std::min(believed, *driver);
    const uint64_t recorded = ledger_.Record(conn, g, believed);
    if (recorded < claimed[v]) {
      std::string note = "re-registration claimed " + FormatBytes(claimed[v]) + " on GPU " + std::to_string(g) +
                         "; recorded " + FormatBytes(recorded) +
                         (driver ? " (the driver shows the process holding " + FormatBytes(*driver) + ")"
                                 : " (the tenant's cap or the GPU's free memory)");
      *warning += (warning->empty() ? "" : "; ") + note;
    }
  }
}

void BrokerCore::OnGive(ClientId conn, const PeerCredentials&, const proto::Give& give) {
  const ClientRecord& c = clients_.at(conn);
  if (give.device >= c.physical.size()) return;
  if (ledger_.Give(conn, c.physical[give.device], give.bytes) > 0) {
    PublishTenant(c.tenant);
    metering_.Held(conn);
  }
}

uint64_t BrokerCore::Close(ClientId conn) {
  sessions_.Close(conn);
  const ClientRecord* c = clients_.Find(conn);
  if (c == nullptr) return 0;
  const std::string tenant = c->tenant;
  const std::string job = c->job;
  const size_t devices = c->physical.size();
  metering_.Left(conn);  // while its GPU time and launches can still be read
  if (auto grant = cluster_grants_.find(conn); grant != cluster_grants_.end()) {
    if (cluster_quota_ != nullptr) cluster_quota_->Give(grant->second.tenant, grant->second.amount);
    cluster_grants_.erase(grant);
  }
  if (const ClientWork* w = work_.Find(conn)) counters_.departed_records += w->records;
  counters_.oom_refusals.erase(conn);
  clients_.Remove(conn);
  // Its places in communicators; a job's plan once its last rank is gone.
  comms_.RemoveClient(conn);
  placement_.ClientLeft(tenant, job);
  work_.Remove(conn);
  for (size_t v = 0; v < devices; ++v)  // its gate waits stay in its tenant's histogram
    if (const auto f = scheduler_.Status(conn, static_cast<int>(v), clock_()))
      AddWaits(&counters_.departed_waits[{tenant, f->gpu}], f->waits);
  scheduler_.RemoveClient(conn);  // a GPU it held goes to the next waiter
  const uint64_t freed = ledger_.RemoveClient(conn);
  if (channels_ != nullptr) channels_->Destroy(conn);
  PublishTenant(tenant);
  Schedule(clock_());
  Reterm();
  ++counters_.reclaims;
  counters_.reclaimed_bytes += freed;
  if (!clients_.TenantLive(tenant)) {  // bounded: live tenants only
    counters_.tenant_oom_refusals.erase(tenant);
    std::erase_if(counters_.departed_waits, [&](const auto& kv) { return kv.first.first == tenant; });
  }
  return freed;
}

void BrokerCore::Reload(BrokerConfig config) {
  config_ = std::move(config);
  scheduler_.SetParams(SchedulerParams(config_));
  weights_.ClearRunTime();    // run-time weights last until a reload
  work_.ForgetNameClasses();  // the rules may have changed
  // Tenants the new config fixes or bounds take its terms at once; memory already
  // held past a lowered cap stays held, further allocations are refused.
  std::map<std::string, bool> touched;
  for (auto& [id, c] : clients_) {
    TenantTerms terms = ResolveTenant(config_, c.tenant, c.peer.uid, c.weight, c.cap_bytes, c.peer.gid,
                                      c.peer.via != SocketKind::kMain);
    if (!terms.refusal.empty()) continue;      // keeps running on its terms; new clients are refused
    if (!c.instance) c.weight = terms.weight;  // an instance's weight is its compute fraction
    c.max_compute = CeilingOf(c);
    for (size_t v = 0; c.scheduled && v < c.physical.size(); ++v)
      scheduler_.SetCeiling(id, static_cast<int>(v), c.max_compute, clock_());
    auto policy = config_.tenants.find(c.tenant);
    if (policy != config_.tenants.end() && (policy->second.memory || policy->second.max_memory)) {
      c.cap_bytes = terms.memory_cap;
      ledger_.SetTenantCap(c.tenant, terms.memory_cap);
    }
    c.weight_override.reset();
    touched[c.tenant] = true;
  }
  for (const auto& [tenant, _] : touched) PublishTenant(tenant);
  for (const auto& [id, c] : clients_) weights_.Update(id);
  Reterm();
}

void BrokerCore::Reterm() {
  metering_.Reterm([&](const ClientRecord& c) { return weights_.Base(c); });
}

proto::MpsTerms BrokerCore::OnMpsAsk(ClientId, const PeerCredentials& peer, const proto::MpsAsk& ask) {
  proto::MpsTerms t{};
  if (config_.spatial != SpatialMode::kMps) {
    proto::SetString(t.reason, "the broker does not co-locate through MPS ([scheduler] spatial)");
    return t;
  }
  const std::string tenant = ask.tenant[0] != '\0' ? ask.tenant : "default";
  TenantTerms terms = ResolveTenant(config_, tenant, peer.uid, 1, std::nullopt, peer.gid);
  if (!terms.refusal.empty()) {
    proto::SetString(t.reason, terms.refusal);
    return t;
  }
  auto policy = config_.tenants.find(tenant);
  const bool colocate = policy != config_.tenants.end() && policy->second.colocate;
  const WorkClass hint = ask.hint == static_cast<uint32_t>(proto::MpsClass::kCompute)  ? WorkClass::kCompute
                         : ask.hint == static_cast<uint32_t>(proto::MpsClass::kMemory) ? WorkClass::kMemory
                                                                                       : WorkClass::kUnknown;
  // Classes are remembered per tenant: one tenant's program name says nothing of another's.
  const std::string program = tenant + "/" + ask.program;
  MpsShare share = mps_.Decide(colocate, !mps_pipe_.empty(), hint, program, config_.mps.memory_percent);
  if (colocate && !mps_.Asked(peer.pid, {share, program}, clock_())) {
    share = {};
    share.reason = "too many processes asked at once: time-sliced";
  }
  t.percent = share.percent;
  if (share.percent > 0) proto::SetString(t.pipe_directory, mps_pipe_);
  proto::SetString(t.reason, share.reason);
  return t;
}

void BrokerCore::SetMpsPipe(std::string pipe_directory) {
  mps_pipe_ = std::move(pipe_directory);
  Schedule(clock_());  // shares lifted (or not yet any): the plan changes at once
}

void BrokerCore::LearnMpsClasses() {
  for (const auto& [id, c] : clients_)
    if (!c.mps_program.empty()) mps_.Learn(c.mps_program, work_.Current(id));
}

void BrokerCore::OnSched(ClientId conn, const PeerCredentials&, const proto::Sched& s) {
  const ClientRecord& c = clients_.at(conn);
  if (!c.scheduled || s.device >= c.physical.size()) return;
  const uint64_t now = clock_();
  const int device = static_cast<int>(s.device);
  if (s.event == static_cast<uint32_t>(proto::SchedEvent::kWant))
    scheduler_.Want(conn, device, now);
  else if (s.event == static_cast<uint32_t>(proto::SchedEvent::kReleased))
    scheduler_.Released(conn, device, s.slice, s.drained_ns, now);
  Schedule(now);
}

void BrokerCore::Schedule(uint64_t now) {
  if (channels_ == nullptr) return;
  if (config_.spatial != SpatialMode::kOff || spatial_.active()) spatial_.Update(now);
  for (const SchedAction& a : scheduler_.Tick(now))
    channels_->SetGate(a.client, a.device, a.kind == SchedAction::Kind::kGrant ? proto::kGateHeld : proto::kGateWait,
                       a.slice);
}

void BrokerCore::Poll() {
  const uint64_t now = clock_();
  rings_busy_ = work_.Drain(now, [&](ClientId client, int device) { scheduler_.Launched(client, device, now); });
  work_.Evaluate(
      now,
      [&](ClientId id) {
        const ClientRecord& c = clients_.at(id);
        for (size_t v = 0; v < c.physical.size(); ++v)
          if (auto f = scheduler_.Status(id, static_cast<int>(v), now); f && f->waiting) return true;
        return false;
      },
      [&](ClientId id) { weights_.Update(id); });
  LearnMpsClasses();
  Schedule(now);
}

void BrokerCore::Utilization(int32_t pid, unsigned sm_percent, unsigned mem_percent) {
  const uint64_t now = clock_();
  for (const auto& [id, c] : clients_)
    if (c.peer.pid == pid) work_.Utilization(id, now, sm_percent, mem_percent);
}

Grants BrokerCore::GrantsOf(const ClientRecord& c) const {
  Grants g;
  g.weight = c.weight;
  for (int p : c.physical) {
    g.cap_bytes.push_back(ClientCap(c).value_or(0));
    g.tenant_held_bytes.push_back(ledger_.TenantHeld(c.tenant, p));
  }
  return g;
}

void BrokerCore::PublishTenant(const std::string& tenant) {
  if (channels_ == nullptr) return;
  for (const auto& [id, c] : clients_)
    if (c.tenant == tenant) channels_->Publish(id, GrantsOf(c));
}

void BrokerCore::AppendMetrics(std::vector<prometheus::MetricFamily>* out) const {
  // Every tenant: /metrics is the operator's (bound where [metrics] listen says, by default nowhere).
  AppendCoreMetrics({gpus_, ledger_, clients_, work_, weights_, scheduler_, spatial_, comms_, placement_.topology(),
                     channels_, clock_(), &config_, nullptr},
                    counters_, out);
}

std::string BrokerCore::StatusJson() const {
  return broker::StatusJson({gpus_, ledger_, clients_, work_, weights_, scheduler_, spatial_, comms_,
                             placement_.topology(), channels_, clock_(), &config_, nullptr});
}

std::string BrokerCore::StatusJson(const PeerCredentials& peer) const {
  const Viewer viewer{peer.uid, peer.gid, peer.via != SocketKind::kMain, peer.socket_tenant};
  if (SeesEverything(viewer, weights_.admin_uid())) return StatusJson();
  std::map<std::string, TenantMembers> tenants;
  for (const auto& [id, c] : clients_) {
    TenantMembers& m = tenants[c.tenant];
    m.name = c.tenant;
    if (auto p = config_.tenants.find(c.tenant); p != config_.tenants.end()) {
      m.uids = p->second.uids ? &*p->second.uids : nullptr;
      m.gids = p->second.gids ? &*p->second.gids : nullptr;
    }
    m.running_uids.push_back(c.peer.uid);
  }
  std::map<std::string, bool> visible;
  for (const auto& [name, members] : tenants) visible[name] = MaySee(viewer, weights_.admin_uid(), members);
  const auto may_see = [&](const std::string& tenant) {
    auto it = visible.find(tenant);
    return it != visible.end() && it->second;
  };
  return broker::StatusJson({gpus_, ledger_, clients_, work_, weights_, scheduler_, spatial_, comms_,
                             placement_.topology(), channels_, clock_(), &config_, may_see});
}

}  // namespace gpushare::broker

namespace gpushare::broker {

NodeRecord BrokerCore::ClusterNode() const {
  NodeRecord n;
  const std::vector<Instance> granted = clients_.Instances();
  for (int g = 0; g < ledger_.gpu_count(); ++g) {
    n.gpus.push_back(NodeGpu{g, g < static_cast<int>(gpus_.size()) ? gpus_[g].name : "", ledger_.capacity(g),
                             ledger_.GpuHeld(g), clients_.Promised(g, "", ledger_)});
    const InstanceGpu gpu{ledger_.capacity(g), clients_.PromisedOutsideInstances(g, ledger_)};
    for (const auto& [name, p] : config_.profiles)
      n.free_instances[name] +=
          static_cast<uint64_t>(std::max(0, CountInstances(name, p, gpu, g, granted, config_.reserved).available));
  }
  n.clients = clients_.size();
  for (const auto& [conn, grant] : cluster_grants_) {
    QuotaAmount& held = n.quota_held[grant.tenant];
    held.instances += grant.amount.instances;
    held.memory_bytes += grant.amount.memory_bytes;
  }
  return n;
}

}  // namespace gpushare::broker
