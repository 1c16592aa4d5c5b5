// The broker's logic without I/O (see broker_core.h).
#include "broker_core.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

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

constexpr size_t kMaxStreams = 64;                  // classified one by one; more share the client's
constexpr uint64_t kEvaluateEveryNs = 100'000'000;  // classification and weights

Scheduler::Params SchedulerParams(const BrokerConfig& c) {
  Scheduler::Params p;
  p.quantum_ns = static_cast<uint64_t>(c.quantum_us) * 1000;
  return p;
}

// A rank of a job whose size on this node is known: placed by its job's plan, whose
// GPUs it sees as its virtual GPUs in rank order (BrokerCore::PlaceRank).
bool RankOfSizedJob(const std::string& job, int rank, int job_size) {
  return !job.empty() && rank >= 0 && rank < job_size;
}

// "rank 0 -> GPU 2, rank 1 -> GPU 3": a job's plan, for the explanation.
std::string PlanLine(const std::vector<int>& plan) {
  std::string line;
  for (size_t i = 0; i < plan.size(); ++i)
    line += (i ? ", " : "") + std::string("rank ") + std::to_string(i) + " -> GPU " + std::to_string(plan[i]);
  return line;
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
      ledger_(Capacities(gpus_)),
      scheduler_(SchedulerParams(config_)),
      clock_(MonotonicNs),
      admin_uid_(geteuid()),
      topology_(Unlinked(gpus_)) {}

bool BrokerCore::SetTopology(Topology topology) {
  if (topology.gpu_count != ledger_.gpu_count()) return false;
  topology_ = std::move(topology);
  return true;
}

void BrokerCore::Open(ClientId conn, const PeerCredentials& peer) { connections_[conn] = peer; }

bool BrokerCore::Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error) {
  auto peer = connections_.find(conn);
  if (peer == connections_.end()) {
    *error = "unknown connection";
    return false;
  }
  for (;;) {
    auto m = proto::Split(buffer, error);
    if (!m) return error->empty();
    if (!Dispatch(conn, peer->second, *m, out, error)) return false;
  }
}

// Which messages are taken in which state, and what each answers, is messages.def's:
// one check of the route here, then the handler the table names (On<Message>).
bool BrokerCore::Dispatch(ClientId conn, const PeerCredentials& peer, const proto::Message& m,
                          std::vector<uint8_t>* out, std::string* error) {
  const proto::MessageInfo& info = *proto::Describe(static_cast<uint16_t>(m.type));  // Split let no other through
  const bool registered = clients_.count(conn) > 0;
  switch (info.route) {
    case proto::Route::kReply:
      *error = "a client sent a broker's message (type " + std::to_string(static_cast<int>(m.type)) + ")";
      return false;
    case proto::Route::kRegister:
      if (registered) {
        *error = std::string("a second ") + info.name + " on one connection";
        return false;
      }
      break;
    case proto::Route::kRegistered:
      if (!registered) {
        *error = std::string(info.name) + " before Hello";
        return false;
      }
      break;
    case proto::Route::kAnyone: break;
  }
  auto append = [out](const std::vector<uint8_t>& bytes) { out->insert(out->end(), bytes.begin(), bytes.end()); };
  switch (m.type) {
#define GS_REQUEST(name, number, payload, route, reply)                                                   \
  case proto::Type::k##name:                                                                              \
    append(proto::Encode(proto::Type::k##reply, On##name(conn, peer, proto::Decode<proto::payload>(m)))); \
    break;
#define GS_NOTICE(name, number, payload, route)             \
  case proto::Type::k##name:                                \
    On##name(conn, peer, proto::Decode<proto::payload>(m)); \
    break;
#define GS_REPLY(name, number, payload) \
  case proto::Type::k##name:            \
    break;
#include "common/protocol/messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
  }
  return true;
}

proto::Welcome BrokerCore::OnHello(ClientId conn, const PeerCredentials& peer, const proto::Hello& hello) {
  const std::string tenant = hello.tenant[0] != '\0' ? hello.tenant : "default";
  std::optional<uint64_t> asked_cap;
  for (uint32_t v = 0; v < proto::kMaxDevices; ++v)
    if (hello.cap_bytes[v] != 0) asked_cap = std::max(asked_cap.value_or(0), hello.cap_bytes[v]);
  TenantTerms terms = ResolveTenant(config_, tenant, peer.uid, hello.weight, asked_cap);
  if (!terms.refusal.empty()) return Refusal(terms.refusal);

  // A tenant's cap is its configured one, else what its first live client asked.
  const bool tenant_live =
      std::any_of(clients_.begin(), clients_.end(), [&](const auto& c) { return c.second.tenant == tenant; });
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
      job_plans_.emplace(std::make_pair(tenant, std::string(hello.job)), physical);
  } else {
    PolicyDecision placed = Place(tenant, cap, terms, hello);
    if (!placed.refusal.empty()) return Refusal(placed.refusal);
    warning = placed.warning;
    explanation = std::move(placed.explanation);
    assumed = placed.assumed_class;
    // A map that must stay as it is (GPUs asked for, a rank's view of its job) is all
    // admitted or refused; otherwise a GPU where the cap cannot be met is left out.
    const bool exact = std::any_of(hello.visible, hello.visible + hello.device_count, [](int v) { return v >= 0; }) ||
                       (hello.rank >= 0 && hello.job_size > 0 && hello.job[0] != '\0');
    // Admission: can the tenant's cap be met on each GPU beside what others were promised?
    for (int g : placed.physical) {
      // As room left, not a sum: a client's huge cap would wrap Promised + cap past the check.
      const bool met = !cap || TenantOn(tenant, g) ||
                       *cap <= ledger_.capacity(g) - std::min(ledger_.capacity(g), Promised(g, tenant));
      if (met) {
        physical.push_back(g);
      } else if (config_.admission == Admission::kOversubscribe) {
        physical.push_back(g);
        warning = "GPU " + std::to_string(g) + " is oversubscribed: its " + FormatBytes(ledger_.capacity(g)) +
                  " cannot hold every tenant's cap at once";
        explanation.push_back("admission: " + warning);
      } else if (exact) {
        return Refusal("the " + FormatBytes(*cap) + " cap of tenant \"" + tenant + "\" cannot be met on GPU " +
                       std::to_string(g) + ": " + FormatBytes(Promised(g, tenant)) + " of its " +
                       FormatBytes(ledger_.capacity(g)) + " is promised to other tenants");
      } else {
        explanation.push_back("admission: GPU " + std::to_string(g) +
                              " left out: the tenant's cap cannot be met there");
      }
    }
    if (physical.empty())
      return Refusal("the " + FormatBytes(cap.value_or(0)) + " cap of tenant \"" + tenant +
                     "\" cannot be met on any GPU it may use (admission = \"refuse\")");
  }

  ledger_.AddClient(conn, tenant);
  ledger_.SetTenantCap(tenant, cap);
  ClientRecord& c = clients_[conn];
  c.peer = peer;
  c.tenant = tenant;
  c.job = hello.job;
  c.rank = hello.rank;
  c.job_size = static_cast<int>(hello.job_size);
  c.weight = terms.weight;
  c.physical = physical;
  c.assumed_class = assumed;
  c.placement = std::move(explanation);
  c.cap_bytes = cap;
  if (hello.reattach) {
    // Rebuild the ledger from what the client says it holds, bounded by what it could hold.
    for (size_t v = 0; v < physical.size(); ++v) {
      const int g = physical[v];
      uint64_t bound = ledger_.capacity(g) - std::min(ledger_.capacity(g), ledger_.GpuHeld(g));
      ledger_.Restore(conn, g, std::min(hello.held_bytes[v], bound));
    }
  }
  if (channels_ != nullptr) c.channel = channels_->Create(conn, peer);
  work_[conn] = std::make_unique<ClientWork>(&config_.classifier);
  c.scheduled = config_.scheduling && !c.channel.empty();
  if (c.scheduled) {
    for (size_t v = 0; v < physical.size(); ++v) {
      scheduler_.AddFlow(conn, static_cast<int>(v), physical[v], EffectiveWeight(conn));
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
    w.cap_bytes[v] = cap.value_or(0);
  }
  proto::SetString(w.channel, c.channel);
  w.scheduled = c.scheduled ? 1 : 0;
  PublishTenant(tenant);
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
    const uint64_t room = ledger_.capacity(g) - std::min(ledger_.capacity(g), ledger_.GpuHeld(g));
    ledger_.Restore(conn, g, std::min(take.bytes, room));
    r.granted = 1;
  } else {
    switch (ledger_.Take(conn, g, take.bytes)) {
      case NodeLedger::Grant::kGranted: r.granted = 1; break;
      case NodeLedger::Grant::kTenantCap:
        proto::SetString(r.reason, "tenant \"" + c.tenant + "\" holds " + FormatBytes(ledger_.TenantHeld(c.tenant, g)) +
                                       " of its " + FormatBytes(c.cap_bytes.value_or(0)) + " cap on GPU " +
                                       std::to_string(g) + " across its processes");
        break;
      case NodeLedger::Grant::kDeviceFull:
        proto::SetString(r.reason, "GPU " + std::to_string(g) + " has " + FormatBytes(ledger_.GpuHeld(g)) + " of " +
                                       FormatBytes(ledger_.capacity(g)) + " held by its clients");
        break;
      case NodeLedger::Grant::kBadRequest: proto::SetString(r.reason, "bad request"); break;
    }
  }
  if (r.granted) PublishTenant(c.tenant);
  return r;
}

void BrokerCore::OnGive(ClientId conn, const PeerCredentials&, const proto::Give& give) {
  const ClientRecord& c = clients_.at(conn);
  if (give.device >= c.physical.size()) return;
  if (ledger_.Give(conn, c.physical[give.device], give.bytes) > 0) PublishTenant(c.tenant);
}

uint64_t BrokerCore::Close(ClientId conn) {
  connections_.erase(conn);
  auto it = clients_.find(conn);
  if (it == clients_.end()) return 0;
  const std::string tenant = it->second.tenant;
  const std::string job = it->second.job;
  clients_.erase(it);
  // Its places in communicators; a job's plan once its last rank is gone.
  for (auto c = comms_.begin(); c != comms_.end();) {
    auto& m = c->second.members;
    m.erase(std::remove_if(m.begin(), m.end(), [&](const Communicator::Member& x) { return x.client == conn; }),
            m.end());
    c = m.empty() ? comms_.erase(c) : std::next(c);
  }
  if (!job.empty() && std::none_of(clients_.begin(), clients_.end(),
                                   [&](const auto& c) { return c.second.tenant == tenant && c.second.job == job; }))
    job_plans_.erase({tenant, job});
  work_.erase(conn);
  scheduler_.RemoveClient(conn);  // a GPU it held goes to the next waiter
  const uint64_t freed = ledger_.RemoveClient(conn);
  if (channels_ != nullptr) channels_->Destroy(conn);
  PublishTenant(tenant);
  Schedule(clock_());
  return freed;
}

void BrokerCore::Reload(BrokerConfig config) {
  config_ = std::move(config);
  scheduler_.SetParams(SchedulerParams(config_));
  tenant_weight_.clear();                             // run-time weights last until a reload
  for (auto& [id, w] : work_) w->name_class.clear();  // the rules may have changed
  // Tenants the new config fixes or bounds take its terms at once; memory already
  // held past a lowered cap stays held, further allocations are refused.
  std::map<std::string, bool> touched;
  for (auto& [id, c] : clients_) {
    TenantTerms terms = ResolveTenant(config_, c.tenant, c.peer.uid, c.weight, c.cap_bytes);
    if (!terms.refusal.empty()) continue;  // keeps running on its terms; new clients are refused
    c.weight = terms.weight;
    auto policy = config_.tenants.find(c.tenant);
    if (policy != config_.tenants.end() && (policy->second.memory || policy->second.max_memory)) {
      c.cap_bytes = terms.memory_cap;
      ledger_.SetTenantCap(c.tenant, terms.memory_cap);
    }
    c.weight_override.reset();
    touched[c.tenant] = true;
  }
  for (const auto& [tenant, _] : touched) PublishTenant(tenant);
  for (const auto& [id, c] : clients_) UpdateWeights(id);
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
  if (config_.spatial != SpatialMode::kOff || !spatial_.empty()) UpdateSpatial(now);
  for (const SchedAction& a : scheduler_.Tick(now))
    channels_->SetGate(a.client, a.device, a.kind == SchedAction::Kind::kGrant ? proto::kGateHeld : proto::kGateWait,
                       a.slice);
}

void BrokerCore::UpdateSpatial(uint64_t now) {
  const SpatialPolicy policy(config_.spatial, config_.memory_cu_percent);
  std::map<int, std::vector<SpatialFlow>> on_gpu;
  for (const auto& [id, c] : clients_) {
    if (!c.scheduled) continue;
    auto w = work_.find(id);
    WorkClass cls = w == work_.end() ? WorkClass::kUnknown : w->second->overall.current();
    // A pause keeps the mask: it is applied where streams are created, and a client
    // that pauses comes back to the same streams.
    if (cls == WorkClass::kIdle) {
      auto last = spatial_class_.find(id);
      cls = last == spatial_class_.end() ? WorkClass::kUnknown : last->second;
    } else {
      spatial_class_[id] = cls;
    }
    for (size_t v = 0; v < c.physical.size(); ++v) on_gpu[c.physical[v]].push_back({id, static_cast<int>(v), cls});
  }
  std::erase_if(spatial_class_, [&](const auto& kv) { return clients_.count(kv.first) == 0; });
  std::map<std::pair<ClientId, int>, SpatialAssignment> next;
  for (const auto& [g, flows] : on_gpu) {
    const unsigned cus = g >= 0 && g < static_cast<int>(gpus_.size()) ? gpus_[g].cu_count : 0;
    for (const SpatialAssignment& a : policy.Assign(cus, flows))
      if (a.mask) next[{a.client, a.device}] = a;
  }
  for (const auto& [key, a] : next) {
    auto before = spatial_.find(key);
    if (before != spatial_.end() && before->second == a) continue;
    scheduler_.SetMask(key.first, key.second, a.mask, a.fraction, now);
    channels_->SetCuMask(key.first, key.second, a.mask);
  }
  for (const auto& [key, a] : spatial_) {
    if (next.count(key) > 0 || clients_.count(key.first) == 0) continue;
    scheduler_.SetMask(key.first, key.second, std::nullopt, 1.0, now);
    channels_->SetCuMask(key.first, key.second, std::nullopt);
  }
  spatial_ = std::move(next);
}

std::optional<uint64_t> BrokerCore::NextDeadline() const { return scheduler_.NextDeadline(); }

double BrokerCore::ClassWeight(WorkClass c) const {
  switch (c) {
    case WorkClass::kCompute: return config_.compute_weight;
    case WorkClass::kMemory: return config_.memory_weight;
    case WorkClass::kCopy: return config_.copy_weight;
    default: return config_.unknown_weight;
  }
}

double BrokerCore::BaseWeight(const ClientRecord& c) const {
  if (c.weight_override) return *c.weight_override;
  if (auto t = tenant_weight_.find(c.tenant); t != tenant_weight_.end()) return t->second;
  return c.weight;
}

double BrokerCore::EffectiveWeight(ClientId id) const {
  auto w = work_.find(id);
  return BaseWeight(clients_.at(id)) *
         ClassWeight(w == work_.end() ? WorkClass::kUnknown : w->second->overall.current());
}

void BrokerCore::UpdateWeights(ClientId id) {
  const ClientRecord& c = clients_.at(id);
  if (!c.scheduled) return;
  const double weight = EffectiveWeight(id);
  for (size_t v = 0; v < c.physical.size(); ++v) scheduler_.SetWeight(id, static_cast<int>(v), weight);
}

std::string BrokerCore::OnSetWeight(ClientId, const PeerCredentials& peer, const proto::SetWeight& s) {
  if (peer.uid != 0 && peer.uid != admin_uid_)
    return "refused: only root or the broker's user (uid " + std::to_string(admin_uid_) + ") may change weights";
  if (s.weight <= 0) return "refused: a weight is a number in (0, 1000]";
  std::vector<ClientId> changed;
  if (s.pid > 0) {
    for (auto& [id, c] : clients_)
      if (c.peer.pid == s.pid) {
        c.weight_override = s.weight;
        changed.push_back(id);
      }
    if (changed.empty()) return "refused: no client with pid " + std::to_string(s.pid);
  } else {
    if (s.tenant[0] == '\0') return "refused: name a pid or a tenant";
    tenant_weight_[s.tenant] = s.weight;  // its clients to come as well, until a reload
    for (auto& [id, c] : clients_)
      if (c.tenant == s.tenant) {
        c.weight_override.reset();
        changed.push_back(id);
      }
  }
  for (ClientId id : changed) UpdateWeights(id);
  char weight[32];
  std::snprintf(weight, sizeof weight, "%g", s.weight);
  return std::string("ok: weight ") + weight + " for " + std::to_string(changed.size()) + " client(s)";
}

void BrokerCore::Observe(ClientId id, ClientWork& w, const proto::RecordData& r, uint64_t now) {
  ++w.records;
  w.launched_mask |= 1u << r.device;
  const bool copy = proto::IsCopy(r.kind);
  std::optional<WorkClass> cls;
  const char* example = nullptr;
  if (copy) {
    ++w.copies;
    w.copy_bytes += r.bytes;
  } else {
    ++w.kernels;
    if (r.name != 0) {
      if (w.name_class.empty()) {
        w.name_class.assign(proto::kNameSlots, -1);
        w.names.assign(proto::kNameSlots, std::string());
      }
      int8_t& known = w.name_class[r.name - 1];
      if (known == -1) {
        std::string name = channels_->KernelName(id, r.name);
        if (!name.empty()) {
          auto c = ClassOfName(config_.classifier, name);
          known = c ? static_cast<int8_t>(*c) : static_cast<int8_t>(-2);
          w.names[r.name - 1] = std::move(name);
        }
      }
      if (known >= 0) cls = static_cast<WorkClass>(known);
      if (known != -1) example = w.names[r.name - 1].c_str();
    }
  }
  w.overall.ObserveClassified(now, cls, copy, r.bytes, example);
  auto stream = w.streams.find(r.stream);
  if (stream == w.streams.end() && w.streams.size() < kMaxStreams)
    stream = w.streams.emplace(r.stream, Classifier(&config_.classifier)).first;
  if (stream != w.streams.end()) stream->second.ObserveClassified(now, cls, copy, r.bytes, example);
}

void BrokerCore::Poll() {
  const uint64_t now = clock_();
  bool busy = false;
  if (channels_ != nullptr) {
    for (auto& [id, w] : work_) {
      ClientWork& work = *w;
      const ClientId client = id;
      work.launched_mask = 0;
      // A ring read full may have more behind it: read on (bounded) and poll sooner.
      size_t read = 0;
      for (int round = 0; round < 4; ++round) {
        const size_t n = channels_->Drain(id, [&](const proto::RecordData& r) { Observe(client, work, r, now); });
        read += n;
        if (n < proto::kRingRecords) break;
      }
      busy = busy || read >= proto::kRingRecords / 4;
      for (int d = 0; work.launched_mask != 0; ++d, work.launched_mask >>= 1)
        if (work.launched_mask & 1u) scheduler_.Launched(client, d, now);
    }
  }
  rings_busy_ = busy;
  if (now - last_evaluation_ns_ >= kEvaluateEveryNs) {
    last_evaluation_ns_ = now;
    for (auto& [id, w] : work_) {
      const WorkClass before = w->overall.current();
      const ClientRecord& c = clients_.at(id);
      for (size_t v = 0; v < c.physical.size(); ++v)
        if (auto f = scheduler_.Status(id, static_cast<int>(v), now); f && f->waiting) w->overall.Pending(now);
      w->overall.Evaluate(now);
      for (auto& [stream, c] : w->streams) c.Evaluate(now);
      if (w->overall.current() != before) UpdateWeights(id);
    }
  }
  Schedule(now);
}

void BrokerCore::Utilization(int32_t pid, unsigned sm_percent, unsigned mem_percent) {
  const uint64_t now = clock_();
  for (const auto& [id, c] : clients_)
    if (c.peer.pid == pid)
      if (auto w = work_.find(id); w != work_.end()) w->second->overall.Utilization(now, sm_percent, mem_percent);
}

WorkClass BrokerCore::ClassOf(ClientId id) const {
  auto w = work_.find(id);
  const WorkClass measured = w == work_.end() ? WorkClass::kUnknown : w->second->overall.current();
  if (measured != WorkClass::kUnknown) return measured;
  auto c = clients_.find(id);
  return c == clients_.end() ? WorkClass::kUnknown : c->second.assumed_class;
}

std::vector<int> BrokerCore::WorkDevices(ClientId id, const ClientRecord& c) const {
  if (RankOfSizedJob(c.job, c.rank, c.job_size) && static_cast<int>(c.physical.size()) == c.job_size) return {c.rank};
  // A client given every GPU mostly works on its first: it counts where it holds memory
  // or has run, else on its virtual 0 (the GPU placement chose first for it).
  std::vector<int> used;
  const uint64_t now = clock_();
  for (size_t v = 0; v < c.physical.size(); ++v) {
    auto f = scheduler_.Status(id, static_cast<int>(v), now);
    if (ledger_.Held(id, c.physical[v]) > 0 || (f && f->used_ns > 0)) used.push_back(static_cast<int>(v));
  }
  if (used.empty() && !c.physical.empty()) used.push_back(0);
  return used;
}

std::vector<GpuLoad> BrokerCore::Loads(const std::string& tenant) const {
  const uint64_t now = clock_();
  std::vector<GpuLoad> loads(topology_.gpu_count);
  for (int g = 0; g < topology_.gpu_count; ++g) {
    loads[g].held_bytes = ledger_.GpuHeld(g);
    loads[g].promised_bytes = Promised(g, tenant);
    loads[g].tenant_present = TenantOn(tenant, g);
  }
  for (const auto& [id, c] : clients_) {
    const WorkClass cls = ClassOf(id);
    for (int v : WorkDevices(id, c)) {
      const int g = c.physical[v];
      if (g < 0 || g >= topology_.gpu_count) continue;
      GpuLoad& l = loads[g];
      ++l.clients;
      if (cls == WorkClass::kCompute) ++l.compute_clients;
      if (cls == WorkClass::kMemory || cls == WorkClass::kCopy) ++l.memory_clients;
      if (auto f = scheduler_.Status(id, v, now)) l.demand += f->busy;
    }
  }
  return loads;
}

PolicyDecision BrokerCore::Place(const std::string& tenant, const std::optional<uint64_t>& cap,
                                 const TenantTerms& terms, const proto::Hello& hello) {
  PolicyRequest r;
  r.device_count = static_cast<int>(hello.device_count);
  for (uint32_t v = 0; v < hello.device_count; ++v)
    if (hello.visible[v] >= 0) r.asked.push_back(hello.visible[v]);
  r.allowed = terms.gpus;
  r.cap_bytes = cap;
  r.tenant = tenant;
  r.job = hello.job;
  r.rank = hello.rank;
  for (const auto& [id, c] : clients_) {
    if (c.tenant != tenant) continue;
    if (const WorkClass cls = ClassOf(id); cls != WorkClass::kUnknown) r.tenant_classes.push_back(cls);
    if (!r.job.empty() && c.job == r.job && c.rank >= 0 && !c.physical.empty())
      r.job_peers.push_back({c.rank, c.physical[WorkDevices(id, c).front()]});
  }
  if (config_.placement == "round-robin") return PlaceRoundRobin(topology_, r, &round_robin_cursor_);
  const std::vector<GpuLoad> loads = Loads(tenant);
  if (config_.placement == "least-loaded") return PlaceLeastMemoryHeld(topology_, loads, r);
  if (RankOfSizedJob(r.job, r.rank, static_cast<int>(hello.job_size)) && r.asked.empty())
    return PlaceRank(r, static_cast<int>(hello.job_size), loads);
  return policy_.Place(topology_, loads, r);
}

// A rank of a job whose size is known sees the job's GPUs as its virtual GPUs, in
// local-rank order: `set_device(LOCAL_RANK)` (what torchrun programs do) finds its own
// GPU, and P2P queries between virtual GPUs answer for the GPUs the ranks really use.
// The job's GPUs are chosen once, as one P2P-connected set, when its first rank comes.
PolicyDecision BrokerCore::PlaceRank(const PolicyRequest& r, int job_size, const std::vector<GpuLoad>& loads) {
  const std::string job = "job \"" + r.job + "\"";
  const std::pair<std::string, std::string> key{r.tenant, r.job};
  PolicyDecision d;
  auto plan = job_plans_.find(key);
  if (plan != job_plans_.end() && static_cast<int>(plan->second.size()) != job_size) {
    d.refusal = job + " was planned for " + std::to_string(plan->second.size()) + " ranks on this node, but rank " +
                std::to_string(r.rank) + " says " + std::to_string(job_size) + " (LOCAL_WORLD_SIZE)";
    return d;
  }
  if (plan == job_plans_.end()) {
    PolicyRequest set = r;
    set.job.clear();
    set.rank = -1;
    set.job_peers.clear();
    set.device_count = job_size;
    d = policy_.Place(topology_, loads, set);
    if (!d.refusal.empty()) {
      d.refusal = job + ": " + d.refusal;
      return d;
    }
    if (static_cast<int>(d.physical.size()) < job_size) {
      d.refusal = job + " has " + std::to_string(job_size) + " ranks on this node but the tenant may use only " +
                  std::to_string(d.physical.size()) + (d.physical.size() == 1 ? " GPU" : " GPUs") +
                  ": NCCL refuses two ranks on one GPU";
      d.physical.clear();
      return d;
    }
    // Rank order along the links: each next rank on the GPU closest to the previous one,
    // so neighbouring ranks (rings, pairs) get the fastest links.
    std::vector<int> left(d.physical.begin() + 1, d.physical.end());
    std::vector<int> order{d.physical.front()};
    while (!left.empty()) {
      auto next = left.begin();
      for (auto it = left.begin(); it != left.end(); ++it)
        if (policy_.LinkValue(topology_, order.back(), *it) > policy_.LinkValue(topology_, order.back(), *next))
          next = it;
      order.push_back(*next);
      left.erase(next);
    }
    d.physical = order;
    d.explanation.push_back(job + ": planned for its " + std::to_string(job_size) +
                            " ranks when its first rank came, as one set: " + PlanLine(order));
    job_plans_.emplace(key, std::move(order));
  } else {
    d.explanation.push_back(job + ": its plan, made when its first rank came: " + PlanLine(plan->second));
    d.physical = plan->second;
  }
  for (const auto& [id, c] : clients_)
    if (c.tenant == r.tenant && c.job == r.job && c.rank == r.rank) {
      d.warning = job + " rank " + std::to_string(r.rank) + " is already running (pid " + std::to_string(c.peer.pid) +
                  "): both would use GPU " + std::to_string(d.physical[r.rank]);
      d.explanation.push_back("warning: " + d.warning);
      break;
    }
  d.explanation.push_back("rank " + std::to_string(r.rank) + " uses virtual " + std::to_string(r.rank) + " -> GPU " +
                          std::to_string(d.physical[r.rank]) + "; its virtual GPUs are the job's, in rank order");
  return d;
}

std::string BrokerCore::CommWarning(const Communicator& comm) const {
  const auto& m = comm.members;
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = i + 1; j < m.size(); ++j) {
      if (m[i].gpu < 0 || m[j].gpu < 0) continue;
      const std::string a = "rank " + std::to_string(m[i].rank) + " (pid " + std::to_string(m[i].pid) + ", GPU " +
                            std::to_string(m[i].gpu) + ")";
      const std::string b = "rank " + std::to_string(m[j].rank) + " (pid " + std::to_string(m[j].pid) + ", GPU " +
                            std::to_string(m[j].gpu) + ")";
      if (m[i].gpu == m[j].gpu) return "communicator spans " + a + " and " + b + ": two ranks on one GPU";
      if (!topology_.p2p(m[i].gpu, m[j].gpu))
        return "communicator spans GPUs without P2P: " + a + " and " + b + " exchange data through host memory";
    }
  return "";
}

std::string BrokerCore::OnComm(ClientId conn, const PeerCredentials&, const proto::Comm& m) {
  constexpr size_t kMaxCommunicators = 4096;  // node-wide: a client cannot grow the broker without bound
  constexpr size_t kMaxMemberships = 256;     // per client
  const ClientRecord& c = clients_.at(conn);
  const std::pair<std::string, uint64_t> key{c.tenant, m.comm_id};
  if (m.event == static_cast<uint32_t>(proto::CommEvent::kLeft)) {
    if (auto it = comms_.find(key); it != comms_.end()) {
      auto& members = it->second.members;
      members.erase(std::remove_if(members.begin(), members.end(),
                                   [&](const auto& x) { return x.client == conn && x.handle == m.handle; }),
                    members.end());
      if (members.empty()) comms_.erase(it);
    }
    return "";
  }
  if (m.event != static_cast<uint32_t>(proto::CommEvent::kJoined)) return "";
  size_t mine = 0;
  for (const auto& [k, comm] : comms_)
    for (const auto& x : comm.members) mine += x.client == conn;
  if (mine >= kMaxMemberships || (!comms_.count(key) && comms_.size() >= kMaxCommunicators))
    return "the broker records no more communicators for this client";
  Communicator& comm = comms_[key];
  comm.nranks = m.nranks;
  const int gpu = m.device < c.physical.size() ? c.physical[m.device] : -1;
  comm.members.push_back({conn, c.peer.pid, m.rank, static_cast<int>(m.device), gpu, m.handle});
  return CommWarning(comm);
}

uint64_t BrokerCore::Promised(int g, const std::string& except_tenant) const {
  std::map<std::string, bool> seen;
  uint64_t promised = 0;
  for (const auto& [id, c] : clients_) {
    if (c.tenant == except_tenant || seen[c.tenant]) continue;
    if (std::find(c.physical.begin(), c.physical.end(), g) == c.physical.end()) continue;
    seen[c.tenant] = true;
    auto cap = ledger_.TenantCap(c.tenant);
    promised += cap ? std::max(*cap, ledger_.TenantHeld(c.tenant, g)) : ledger_.TenantHeld(c.tenant, g);
  }
  return promised;
}

bool BrokerCore::TenantOn(const std::string& tenant, int g) const {
  return std::any_of(clients_.begin(), clients_.end(), [&](const auto& c) {
    return c.second.tenant == tenant &&
           std::find(c.second.physical.begin(), c.second.physical.end(), g) != c.second.physical.end();
  });
}

Grants BrokerCore::GrantsOf(const ClientRecord& c) const {
  Grants g;
  g.weight = c.weight;
  for (int p : c.physical) {
    g.cap_bytes.push_back(c.cap_bytes.value_or(0));
    g.tenant_held_bytes.push_back(ledger_.TenantHeld(c.tenant, p));
  }
  return g;
}

void BrokerCore::PublishTenant(const std::string& tenant) {
  if (channels_ == nullptr) return;
  for (const auto& [id, c] : clients_)
    if (c.tenant == tenant) channels_->Publish(id, GrantsOf(c));
}

const ClientRecord* BrokerCore::Client(ClientId conn) const {
  auto it = clients_.find(conn);
  return it == clients_.end() ? nullptr : &it->second;
}

std::string BrokerCore::StatusJson() const {
  using nlohmann::json;
  json gpus = json::array();
  for (int g = 0; g < ledger_.gpu_count(); ++g)
    gpus.push_back({{"index", g},
                    {"name", g < static_cast<int>(gpus_.size()) ? gpus_[g].name : ""},
                    {"memory_total", ledger_.capacity(g)},
                    {"cu_count", g < static_cast<int>(gpus_.size()) ? gpus_[g].cu_count : 0u},
                    {"memory_used", ledger_.GpuHeld(g)}});
  // A client's share of a GPU: its weight over the weights of every client on it
  // (what weighted fair queuing gives each when all are busy).
  std::vector<double> weight_on(ledger_.gpu_count(), 0);
  for (const auto& [id, c] : clients_)
    for (int g : c.physical) weight_on[g] += c.weight;
  const uint64_t now = clock_();
  json clients = json::array();
  for (const auto& [id, c] : clients_) {
    json devices = json::array();
    for (size_t v = 0; v < c.physical.size(); ++v) {
      const int g = c.physical[v];
      json d = {{"virtual", v},
                {"physical", g},
                {"memory_used", ledger_.Held(id, g)},
                {"memory_cap", c.cap_bytes.value_or(ledger_.capacity(g))},
                {"capped", c.cap_bytes.has_value()},
                {"tenant_memory_used", ledger_.TenantHeld(c.tenant, g)}};
      // Spatial sharing: the CUs its new streams run on ("" and the GPU's count: all of them).
      if (auto m = spatial_.find({id, static_cast<int>(v)}); m != spatial_.end() && m->second.mask) {
        d["cu_mask"] = m->second.mask->Hex();
        d["cu_count"] = m->second.mask->Count();
      } else {
        d["cu_mask"] = "";
        d["cu_count"] = g < static_cast<int>(gpus_.size()) ? gpus_[g].cu_count : 0u;
      }
      // Scheduled: the measured share of the GPU's time (recent, smoothed); else what
      // its weight would give it beside the others on the GPU.
      if (auto f = scheduler_.Status(id, static_cast<int>(v), now)) {
        d["share"] = f->share;
        d["gpu_time_ms"] = static_cast<double>(f->used_ns) / 1e6;
        d["holding"] = f->holding;
        d["waiting"] = f->waiting;
        d["unresponsive"] = f->unresponsive;
      } else {
        d["share"] = weight_on[g] > 0 ? c.weight / weight_on[g] : 0.0;
      }
      devices.push_back(d);
    }
    const double share = c.physical.empty() ? 0.0 : devices[0]["share"].get<double>();
    auto w = work_.find(id);
    const ClientWork* work = w == work_.end() ? nullptr : w->second.get();
    json streams = json::array();
    if (work != nullptr)
      for (const auto& [stream, cl] : work->streams)
        streams.push_back({{"stream", stream}, {"class", WorkClassName(cl.current())}, {"why", cl.reason()}});
    const RingCounts counts = channels_ != nullptr ? channels_->Counts(id) : RingCounts{};
    clients.push_back({{"id", id},
                       {"pid", c.peer.pid},
                       {"uid", c.peer.uid},
                       {"tenant", c.tenant},
                       {"job", c.job},
                       {"rank", c.rank},
                       {"weight", BaseWeight(c)},
                       {"effective_weight", EffectiveWeight(id)},
                       {"scheduled", c.scheduled},
                       {"class", work ? WorkClassName(work->overall.current()) : "unknown"},
                       {"class_why", work ? work->overall.reason() : ""},
                       {"gpu_share", share},
                       {"cu_mask", c.physical.empty() ? json("") : devices[0]["cu_mask"]},
                       {"cu_count", c.physical.empty() ? json(0) : devices[0]["cu_count"]},
                       {"records", work ? work->records : 0},
                       {"kernels", work ? work->kernels : 0},
                       {"copies", work ? work->copies : 0},
                       {"records_dropped", counts.dropped_records + counts.lost},
                       {"streams", streams},
                       {"placement", c.placement},
                       {"devices", devices}});
  }
  json comms = json::array();
  for (const auto& [key, comm] : comms_) {
    char id[24];
    std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(key.second));
    json members = json::array();
    for (const auto& m : comm.members)
      members.push_back({{"pid", m.pid}, {"rank", m.rank}, {"virtual", m.device}, {"physical", m.gpu}});
    comms.push_back({{"id", id},
                     {"tenant", key.first},
                     {"nranks", comm.nranks},
                     {"members", members},
                     {"warning", CommWarning(comm)}});
  }
  // Tenant and job names are a client's bytes, not always UTF-8: replace, never throw.
  return json{{"gpus", gpus}, {"clients", clients}, {"communicators", comms}, {"topology", topology_.Describe()}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

}  // namespace gpushare::broker
