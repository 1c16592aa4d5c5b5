// Placement of registering clients and jobs (see placement_service.h).
#include "placement_service.h"

#include <algorithm>

namespace gpushare::broker {
namespace {

// A rank of a job whose size on this node is known: placed by its job's plan, whose
// GPUs it sees as its virtual GPUs in rank order (PlacementService::PlaceRank).
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

}  // namespace

PlacementService::PlacementService(const std::vector<GpuInfo>& gpus, const BrokerConfig* config,
                                   const ClientRegistry* clients, const NodeLedger* ledger, const Scheduler* scheduler,
                                   const WorkTracker* work, const std::function<uint64_t()>* clock)
    : config_(config),
      clients_(clients),
      ledger_(ledger),
      scheduler_(scheduler),
      work_(work),
      clock_(clock),
      topology_(Unlinked(gpus)) {}

bool PlacementService::SetTopology(Topology topology) {
  if (topology.gpu_count != ledger_->gpu_count()) return false;
  topology_ = std::move(topology);
  return true;
}

void PlacementService::KeepPlan(const std::string& tenant, const std::string& job, const std::vector<int>& physical) {
  job_plans_.emplace(std::make_pair(tenant, job), physical);
}

void PlacementService::ClientLeft(const std::string& tenant, const std::string& job) {
  if (!job.empty() && !clients_->JobLive(tenant, job)) job_plans_.erase({tenant, job});
}

WorkClass PlacementService::ClassOf(ClientId id) const {
  const WorkClass measured = work_->Current(id);
  if (measured != WorkClass::kUnknown) return measured;
  const ClientRecord* c = clients_->Find(id);
  return c == nullptr ? WorkClass::kUnknown : c->assumed_class;
}

std::vector<int> PlacementService::WorkDevices(ClientId id, const ClientRecord& c) const {
  if (RankOfSizedJob(c.job, c.rank, c.job_size) && static_cast<int>(c.physical.size()) == c.job_size) return {c.rank};
  // A client given every GPU mostly works on its first: it counts where it holds memory
  // or has run, else on its virtual 0 (the GPU placement chose first for it).
  std::vector<int> used;
  const uint64_t now = (*clock_)();
  for (size_t v = 0; v < c.physical.size(); ++v) {
    auto f = scheduler_->Status(id, static_cast<int>(v), now);
    if (ledger_->Held(id, c.physical[v]) > 0 || (f && f->used_ns > 0)) used.push_back(static_cast<int>(v));
  }
  if (used.empty() && !c.physical.empty()) used.push_back(0);
  return used;
}

std::vector<GpuLoad> PlacementService::Loads(const std::string& tenant) const {
  const uint64_t now = (*clock_)();
  std::vector<GpuLoad> loads(topology_.gpu_count);
  for (int g = 0; g < topology_.gpu_count; ++g) {
    loads[g].held_bytes = ledger_->GpuHeld(g);
    loads[g].promised_bytes = clients_->Promised(g, tenant, *ledger_);
    loads[g].tenant_present = clients_->TenantOn(tenant, g);
  }
  for (const auto& [id, c] : *clients_) {
    const WorkClass cls = ClassOf(id);
    for (int v : WorkDevices(id, c)) {
      const int g = c.physical[v];
      if (g < 0 || g >= topology_.gpu_count) continue;
      GpuLoad& l = loads[g];
      ++l.clients;
      if (cls == WorkClass::kCompute) ++l.compute_clients;
      if (cls == WorkClass::kMemory || cls == WorkClass::kCopy) ++l.memory_clients;
      if (auto f = scheduler_->Status(id, v, now)) l.demand += f->busy;
    }
  }
  return loads;
}

PolicyDecision PlacementService::Place(const std::string& tenant, const std::optional<uint64_t>& cap,
                                       const TenantTerms& terms, const protocol::Hello& hello) {
  PolicyRequest r;
  r.device_count = static_cast<int>(hello.device_count);
  for (uint32_t v = 0; v < hello.device_count; ++v)
    if (hello.visible[v] >= 0) r.asked.push_back(hello.visible[v]);
  r.allowed = terms.gpus;
  r.cap_bytes = cap;
  r.tenant = tenant;
  r.job = hello.job;
  r.rank = hello.rank;
  for (const auto& [id, c] : *clients_) {
    if (c.tenant != tenant) continue;
    if (const WorkClass cls = ClassOf(id); cls != WorkClass::kUnknown) r.tenant_classes.push_back(cls);
    if (!r.job.empty() && c.job == r.job && c.rank >= 0 && !c.physical.empty())
      r.job_peers.push_back({c.rank, c.physical[WorkDevices(id, c).front()]});
  }
  if (config_->placement == "round-robin") return PlaceRoundRobin(topology_, r, &round_robin_cursor_);
  const std::vector<GpuLoad> loads = Loads(tenant);
  if (config_->placement == "least-loaded") return PlaceLeastMemoryHeld(topology_, loads, r);
  if (RankOfSizedJob(r.job, r.rank, static_cast<int>(hello.job_size)) && r.asked.empty())
    return PlaceRank(r, static_cast<int>(hello.job_size), loads);
  return policy_.Place(topology_, loads, r);
}

// A rank of a job whose size is known sees the job's GPUs as its virtual GPUs, in
// local-rank order: `set_device(LOCAL_RANK)` (what torchrun programs do) finds its own
// GPU, and P2P queries between virtual GPUs answer for the GPUs the ranks really use.
// The job's GPUs are chosen once, as one P2P-connected set, when its first rank comes.
PolicyDecision PlacementService::PlaceRank(const PolicyRequest& r, int job_size, const std::vector<GpuLoad>& loads) {
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
  for (const auto& [id, c] : *clients_)
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

}  // namespace gpushare::broker
