// The broker's own metrics (see metrics_report.h).
#include "metrics_report.h"

#include <limits>
#include <utility>

#include "broker/core/job_collectives.h"

namespace gpushare::broker {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

FamilyBuilder::FamilyBuilder(std::string name, std::string help, MetricType type) {
  family_.name = std::move(name);
  family_.help = std::move(help);
  family_.type = type;
}

ClientMetric& FamilyBuilder::Add(Labels labels, double value) {
  ClientMetric& m = family_.metric.emplace_back();
  m.label = std::move(labels);
  switch (family_.type) {
    case MetricType::Counter: m.counter.value = value; break;
    case MetricType::Gauge: m.gauge.value = value; break;
    case MetricType::Untyped: m.untyped.value = value; break;
    default: break;  // histograms and summaries are filled by the caller
  }
  return m;
}

void FamilyBuilder::MoveTo(std::vector<MetricFamily>* out) {
  if (!family_.metric.empty()) out->push_back(std::move(family_));
}

void AddWaits(WaitHistogram* into, const WaitHistogram& from) {
  for (size_t b = 0; b < kWaitBuckets; ++b) into->counts[b] += from.counts[b];
  into->sum_ns += from.sum_ns;
  into->count += from.count;
}

namespace {

constexpr double kNs = 1e-9;

Labels With(Labels base, std::initializer_list<ClientMetric::Label> more) {
  base.insert(base.end(), more);
  return base;
}

void FillHistogram(ClientMetric& m, const WaitHistogram& h) {
  uint64_t cumulative = 0;
  for (size_t b = 0; b + 1 < kWaitBuckets; ++b) {
    cumulative += h.counts[b];
    m.histogram.bucket.push_back({cumulative, static_cast<double>(kWaitBoundsNs[b]) * kNs});
  }
  m.histogram.bucket.push_back({h.count, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = h.count;
  m.histogram.sample_sum = static_cast<double>(h.sum_ns) * kNs;
}

// Per tenant and GPU: what its scheduled flows have and are entitled to.
struct TenantGpu {
  double share = 0;   // measured, of the GPU's charged time (recent)
  double weight = 0;  // its flows' weights on the GPU
  int waiting = 0;    // its flows waiting at their gates
  bool scheduled = false;
  WaitHistogram waits;  // its clients', live and gone
};

}  // namespace

void AppendCoreMetrics(const StatusSources& s, const CoreCounters& counters, std::vector<MetricFamily>* out) {
  const MetricType kCounter = MetricType::Counter, kGauge = MetricType::Gauge;
  FamilyBuilder clients("gpushare_clients", "Registered clients.", kGauge);
  FamilyBuilder registrations("gpushare_registrations_total", "Clients admitted (re-registrations included).",
                              kCounter);
  FamilyBuilder refusals("gpushare_registration_refusals_total", "Registrations refused.", kCounter);
  FamilyBuilder reclaims("gpushare_reclaims_total", "Clients gone whose memory returned to the ledger.", kCounter);
  FamilyBuilder reclaimed("gpushare_reclaimed_bytes_total", "Bytes returned to the ledger by clients gone.", kCounter);
  FamilyBuilder records("gpushare_records_total", "Launch and copy records read from clients' rings.", kCounter);
  FamilyBuilder held("gpushare_gpu_memory_held_bytes", "Device memory the ledger has booked to clients.", kGauge);
  FamilyBuilder capacity("gpushare_gpu_memory_capacity_bytes", "Device memory the ledger shares out.", kGauge);
  FamilyBuilder handoffs("gpushare_gpu_handoffs_total", "Scheduler grants of the GPU (hand-offs).", kCounter);

  FamilyBuilder info("gpushare_client_info", "A registered client (always 1): its tenant, job, class and profile.",
                     kGauge);
  FamilyBuilder weight("gpushare_client_weight", "The client's weight (tenant or run-time), before class weights.",
                       kGauge);
  FamilyBuilder effective("gpushare_client_effective_weight",
                          "The client's weight in the schedule (its weight times its class weight).", kGauge);
  FamilyBuilder gpu_seconds("gpushare_client_gpu_seconds_total", "GPU time measured and charged to the client.",
                            kCounter);
  FamilyBuilder share("gpushare_client_gpu_share_ratio", "The client's measured share of the GPU's time (recent).",
                      kGauge);
  FamilyBuilder busy("gpushare_client_gpu_busy_ratio", "The client's GPU time per wall time (recent): its demand.",
                     kGauge);
  FamilyBuilder waiting("gpushare_client_waiting", "1 while the client waits at its gate for the GPU.", kGauge);
  FamilyBuilder throttled("gpushare_client_throttled", "1 while the client waits for budget under its ceiling.",
                          kGauge);
  // Per client a sum and a count (a histogram per client would be most of a scrape);
  // the histogram is per tenant and GPU.
  FamilyBuilder wait_seconds("gpushare_client_gate_wait_seconds_total",
                             "Time spent waiting at the gate: from wanting the GPU to being granted it.", kCounter);
  FamilyBuilder waits("gpushare_client_gate_waits_total", "Grants after a wait at the gate.", kCounter);
  FamilyBuilder gate_wait("gpushare_tenant_gate_wait_seconds",
                          "The tenant's clients' waits at the gate, from wanting the GPU to being granted it.",
                          MetricType::Histogram);
  FamilyBuilder mem_held("gpushare_client_memory_held_bytes", "Device memory the client holds.", kGauge);
  FamilyBuilder mem_cap("gpushare_client_memory_cap_bytes", "The client's memory cap on the GPU (capped clients).",
                        kGauge);
  FamilyBuilder ooms("gpushare_client_oom_refusals_total", "Allocations refused: over a cap or the device's memory.",
                     kCounter);
  FamilyBuilder launches("gpushare_client_launches_total", "Kernel launches recorded.", kCounter);
  FamilyBuilder copies("gpushare_client_copies_total", "Asynchronous copies recorded.", kCounter);
  FamilyBuilder copy_bytes("gpushare_client_copy_bytes_total", "Bytes of the copies recorded.", kCounter);
  FamilyBuilder dropped("gpushare_client_dropped_records_total", "Records lost: the client's ring was full.", kCounter);
  FamilyBuilder collective_seconds("gpushare_client_collective_seconds_total",
                                   "Time the GPU spent in the client's collectives (NCCL), measured on its streams.",
                                   kCounter);
  FamilyBuilder job_collective("gpushare_job_collective_seconds_total",
                               "Time the GPU spent in the job's collectives (NCCL), all its ranks.", kCounter);
  FamilyBuilder job_gpu("gpushare_job_gpu_seconds_total", "GPU time charged to the job's clients (scheduled).",
                        kCounter);
  FamilyBuilder job_share("gpushare_job_collective_share_ratio",
                          "The job's collective time over its GPU time, since its clients registered.", kGauge);

  FamilyBuilder tenant_held("gpushare_tenant_memory_held_bytes", "Device memory the tenant's clients hold.", kGauge);
  FamilyBuilder tenant_cap("gpushare_tenant_memory_cap_bytes", "The tenant's memory cap per GPU.", kGauge);
  FamilyBuilder tenant_share("gpushare_tenant_gpu_share_ratio",
                             "The tenant's measured share of the GPU's time (recent; scheduled clients).", kGauge);
  FamilyBuilder tenant_entitled("gpushare_tenant_entitled_share_ratio",
                                "The tenant's weight over the weights of every scheduled client on the GPU.", kGauge);
  FamilyBuilder tenant_waiting("gpushare_tenant_waiting_clients", "The tenant's clients waiting at their gates.",
                               kGauge);
  FamilyBuilder tenant_ooms("gpushare_tenant_oom_refusals_total",
                            "Allocations refused to the tenant's clients (while it has clients).", kCounter);

  clients.Add({}, static_cast<double>(s.clients.size()));
  registrations.Add({}, static_cast<double>(counters.registrations));
  refusals.Add({}, static_cast<double>(counters.registration_refusals));
  reclaims.Add({}, static_cast<double>(counters.reclaims));
  reclaimed.Add({}, static_cast<double>(counters.reclaimed_bytes));
  for (int g = 0; g < s.ledger.gpu_count(); ++g) {
    const Labels gpu{{"gpu", std::to_string(g)}};
    held.Add(gpu, static_cast<double>(s.ledger.GpuHeld(g)));
    capacity.Add(gpu, static_cast<double>(s.ledger.capacity(g)));
    handoffs.Add(gpu, static_cast<double>(s.scheduler.Grants(g)));
  }

  uint64_t records_total = counters.departed_records;
  std::map<std::pair<std::string, int>, TenantGpu> tenants;
  std::vector<double> scheduled_weight(s.ledger.gpu_count(), 0);
  for (const auto& [id, c] : s.clients) {
    const ClientWork* work = s.work.Find(id);
    const std::string cls = work ? WorkClassName(work->overall.current()) : "unknown";
    const Labels who{{"pid", std::to_string(c.peer.pid)}, {"tenant", c.tenant}, {"job", c.job}};
    info.Add(With(who, {{"class", cls}, {"profile", c.instance ? c.instance->profile : ""}}), 1);
    weight.Add(who, s.weights.Base(c));
    effective.Add(With(who, {{"class", cls}}), s.weights.Effective(id));
    const auto oom = counters.oom_refusals.find(id);
    ooms.Add(who, oom == counters.oom_refusals.end() ? 0 : static_cast<double>(oom->second));
    if (work != nullptr) {
      records_total += work->records;
      launches.Add(who, static_cast<double>(work->kernels));
      copies.Add(who, static_cast<double>(work->copies));
    }
    if (s.channels != nullptr) {
      const RingCounts rc = s.channels->Counts(id);
      dropped.Add(who, static_cast<double>(rc.dropped_records + rc.lost));
    }
    const ClientCollectives collectives = CollectivesOf(id, c, s.channels);
    for (size_t v = 0; v < c.physical.size(); ++v) {
      const int g = c.physical[v];
      const Labels where = With(who, {{"gpu", std::to_string(g)}});
      mem_held.Add(where, static_cast<double>(s.ledger.Held(id, g)));
      if (collectives.count > 0) collective_seconds.Add(where, static_cast<double>(collectives.ns[v]) * kNs);
      if (work != nullptr && v < static_cast<size_t>(protocol::kMaxDevices))
        copy_bytes.Add(where, static_cast<double>(work->device_copy_bytes[v]));
      if (auto cap = ClientCap(c)) mem_cap.Add(where, static_cast<double>(*cap));
      TenantGpu& t = tenants[{c.tenant, g}];
      auto f = s.scheduler.Status(id, static_cast<int>(v), s.now);
      if (!f) continue;
      gpu_seconds.Add(where, static_cast<double>(f->used_ns) * kNs);
      share.Add(where, f->share);
      busy.Add(where, f->busy);
      waiting.Add(where, f->waiting ? 1 : 0);
      throttled.Add(where, f->throttled ? 1 : 0);
      wait_seconds.Add(where, static_cast<double>(f->waits.sum_ns) * kNs);
      waits.Add(where, static_cast<double>(f->waits.count));
      AddWaits(&t.waits, f->waits);
      t.scheduled = true;
      t.share += f->share;
      t.weight += f->weight;
      t.waiting += f->waiting ? 1 : 0;
      scheduled_weight[g] += f->weight;
    }
  }
  records.Add({}, static_cast<double>(records_total));
  for (const auto& [key, t] : tenants) {
    const auto& [tenant, g] = key;
    const Labels where{{"tenant", tenant}, {"gpu", std::to_string(g)}};
    tenant_held.Add(where, static_cast<double>(s.ledger.TenantHeld(tenant, g)));
    if (auto cap = s.ledger.TenantCap(tenant)) tenant_cap.Add(where, static_cast<double>(*cap));
    if (!t.scheduled) continue;
    WaitHistogram all = t.waits;
    if (auto d = counters.departed_waits.find(key); d != counters.departed_waits.end()) AddWaits(&all, d->second);
    FillHistogram(gate_wait.Add(where, 0), all);
    tenant_share.Add(where, t.share);
    tenant_entitled.Add(where, scheduled_weight[g] > 0 ? t.weight / scheduled_weight[g] : 0.0);
    tenant_waiting.Add(where, t.waiting);
  }
  // Every live tenant, 0 before its first refusal (so that increase() sees the first one).
  std::map<std::string, uint64_t> live_tenants;
  for (const auto& [id, c] : s.clients) live_tenants[c.tenant] = 0;
  for (auto& [tenant, n] : live_tenants)
    if (auto it = counters.tenant_oom_refusals.find(tenant); it != counters.tenant_oom_refusals.end()) n = it->second;
  for (const auto& [tenant, n] : live_tenants) tenant_ooms.Add({{"tenant", tenant}}, static_cast<double>(n));

  for (const JobCollectives& j : CollectiveJobs(s.clients, s.scheduler, s.channels, s.now)) {
    const Labels job{{"tenant", j.tenant}, {"job", j.job}};
    job_collective.Add(job, static_cast<double>(j.collective_ns) * kNs);
    if (!j.scheduled) continue;
    job_gpu.Add(job, static_cast<double>(j.gpu_ns) * kNs);
    if (auto r = j.share()) job_share.Add(job, *r);
  }

  for (FamilyBuilder* f : {&collective_seconds,
                           &job_collective,
                           &job_gpu,
                           &job_share,
                           &clients,
                           &registrations,
                           &refusals,
                           &reclaims,
                           &reclaimed,
                           &records,
                           &held,
                           &capacity,
                           &handoffs,
                           &info,
                           &weight,
                           &effective,
                           &gpu_seconds,
                           &share,
                           &busy,
                           &waiting,
                           &throttled,
                           &wait_seconds,
                           &waits,
                           &gate_wait,
                           &mem_held,
                           &mem_cap,
                           &ooms,
                           &launches,
                           &copies,
                           &copy_bytes,
                           &dropped,
                           &tenant_held,
                           &tenant_cap,
                           &tenant_share,
                           &tenant_entitled,
                           &tenant_waiting,
                           &tenant_ooms})
    f->MoveTo(out);
}

}  // namespace gpushare::broker
