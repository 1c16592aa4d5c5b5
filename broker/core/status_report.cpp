// The node as JSON for gpushare-smi (see status_report.h).
#include "status_report.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "broker/core/job_collectives.h"

namespace gpushare::broker {

namespace {

// A CLOCK_MONOTONIC time as Unix milliseconds (for tools and the meter: wall time).
int64_t UnixMs(uint64_t monotonic_ns, uint64_t now_ns) {
  const int64_t unix_now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  return unix_now_ms - static_cast<int64_t>((now_ns - std::min(now_ns, monotonic_ns)) / 1000000);
}

nlohmann::json OrNull(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

// The node's vGPU inventory: per GPU, each profile's instances (total, reserved,
// allocated, available now) and their holders; and per profile, the node's pool.
nlohmann::json Inventory(const StatusSources& s) {
  using nlohmann::json;
  const BrokerConfig empty;
  const BrokerConfig& config = s.config != nullptr ? *s.config : empty;
  const std::vector<Instance> granted = s.clients.Instances();
  json profiles = json::array();
  json pool = json::array();
  json gpus = json::array();
  for (const auto& [name, p] : config.profiles) {
    profiles.push_back({{"name", name},
                        {"memory_bytes", p.memory_bytes},
                        {"compute", p.compute},
                        {"max_compute", OrNull(p.max_compute)}});
    pool.push_back({{"profile", name}, {"gpus", 0}, {"total", 0}, {"reserved", 0}, {"allocated", 0}, {"available", 0}});
  }
  for (int g = 0; g < s.ledger.gpu_count(); ++g) {
    const InstanceGpu gpu{s.ledger.capacity(g), s.clients.PromisedOutsideInstances(g, s.ledger)};
    json per_profile = json::array();
    size_t i = 0;
    for (const auto& [name, p] : config.profiles) {
      const ProfileCount c = CountInstances(name, p, gpu, g, granted, config.reserved);
      json holders = json::array();
      for (const auto& [id, client] : s.clients)
        // Another tenant's holder is not named to this viewer (visibility.h); the counts stay whole.
        if (client.instance && client.instance->gpu == g && client.instance->profile == name &&
            (!s.may_see || s.may_see(client.tenant)))
          holders.push_back({{"client", id}, {"pid", client.peer.pid}, {"tenant", client.tenant}});
      per_profile.push_back({{"name", name},
                             {"total", c.total},
                             {"reserved", c.reserved},
                             {"allocated", c.allocated},
                             {"available", c.available},
                             {"holders", holders}});
      json& line = pool[i++];
      if (c.total > 0) line["gpus"] = line["gpus"].get<int>() + 1;
      for (const char* key : {"total", "reserved", "allocated", "available"})
        line[key] = line[key].get<int>() + per_profile.back()[key].get<int>();
    }
    gpus.push_back({{"index", g}, {"profiles", per_profile}});
  }
  return {{"reserved_instances", config.reserved.instances},
          {"reserved_fraction", config.reserved.fraction},
          {"profiles", profiles},
          {"gpus", gpus},
          {"pool", pool}};
}

}  // namespace

std::string StatusJson(const StatusSources& s) {
  using nlohmann::json;
  json gpus = json::array();
  for (int g = 0; g < s.ledger.gpu_count(); ++g)
    gpus.push_back({{"index", g},
                    {"name", g < static_cast<int>(s.gpus.size()) ? s.gpus[g].name : ""},
                    {"memory_total", s.ledger.capacity(g)},
                    {"cu_count", g < static_cast<int>(s.gpus.size()) ? s.gpus[g].cu_count : 0u},
                    {"memory_used", s.ledger.GpuHeld(g)}});
  // A client's share of a GPU: its weight over the weights of every client on it
  // (what weighted fair queuing gives each when all are busy).
  std::vector<double> weight_on(s.ledger.gpu_count(), 0);
  for (const auto& [id, c] : s.clients)
    for (int g : c.physical) weight_on[g] += c.weight;
  const uint64_t now = s.now;
  json clients = json::array();
  uint64_t hidden = 0;
  for (const auto& [id, c] : s.clients) {
    if (s.may_see && !s.may_see(c.tenant)) {
      ++hidden;
      continue;
    }
    json devices = json::array();
    const ClientCollectives collectives = CollectivesOf(id, c, s.channels);
    uint64_t collective_ns = 0;
    for (size_t v = 0; v < c.physical.size(); ++v) {
      const int g = c.physical[v];
      collective_ns += collectives.ns[v];
      json d = {{"virtual", v},
                {"physical", g},
                {"memory_used", s.ledger.Held(id, g)},
                {"memory_cap", ClientCap(c).value_or(s.ledger.capacity(g))},
                {"capped", ClientCap(c).has_value()},
                {"tenant_memory_used", s.ledger.TenantHeld(c.tenant, g)},
                {"collective_ms", static_cast<double>(collectives.ns[v]) / 1e6}};
      // Spatial sharing: the CUs its new streams run on ("" and the GPU's count: all of them).
      const SpatialAssignment* m = s.spatial.Find(id, static_cast<int>(v));
      // MPS: the SM share it co-holds the GPU on, percent (0: not in force, the whole GPU in turns).
      if (s.config != nullptr && s.config->spatial == SpatialMode::kMps) {
        d["mps_percent"] = m != nullptr && m->mask ? m->mask->Count() : 0u;
        m = nullptr;
      }
      if (m != nullptr && m->mask) {
        d["cu_mask"] = m->mask->Hex();
        d["cu_count"] = m->mask->Count();
      } else {
        d["cu_mask"] = "";
        d["cu_count"] = g < static_cast<int>(s.gpus.size()) ? s.gpus[g].cu_count : 0u;
      }
      // Scheduled: the measured share of the GPU's time (recent, smoothed); else what
      // its weight would give it beside the others on the GPU.
      if (auto f = s.scheduler.Status(id, static_cast<int>(v), now)) {
        d["share"] = f->share;
        d["gpu_time_ms"] = static_cast<double>(f->used_ns) / 1e6;
        d["holding"] = f->holding;
        d["waiting"] = f->waiting;
        d["unresponsive"] = f->unresponsive;
        d["throttled"] = f->throttled;  // waiting for budget under its ceiling
      } else {
        d["share"] = weight_on[g] > 0 ? c.weight / weight_on[g] : 0.0;
      }
      devices.push_back(d);
    }
    const double share = c.physical.empty() ? 0.0 : devices[0]["share"].get<double>();
    const ClientWork* work = s.work.Find(id);
    json streams = json::array();
    if (work != nullptr)
      for (const auto& [stream, cl] : work->streams)
        streams.push_back({{"stream", stream}, {"class", WorkClassName(cl.current())}, {"why", cl.reason()}});
    const RingCounts counts = s.channels != nullptr ? s.channels->Counts(id) : RingCounts{};
    json instance = nullptr;
    if (c.instance)
      instance = {{"profile", c.instance->profile},           {"gpu", c.instance->gpu},
                  {"compute", c.instance->compute},           {"max_compute", OrNull(c.instance->max_compute)},
                  {"memory_bytes", c.instance->memory_bytes}, {"granted_unix_ms", UnixMs(c.instance->granted_ns, now)}};
    clients.push_back({{"id", id},
                       {"pid", c.peer.pid},
                       {"uid", c.peer.uid},
                       {"tenant", c.tenant},
                       {"job", c.job},
                       {"rank", c.rank},
                       {"weight", s.weights.Base(c)},
                       {"effective_weight", s.weights.Effective(id)},
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
                       {"collectives", collectives.count},
                       {"collective_ms", static_cast<double>(collective_ns) / 1e6},
                       {"streams", streams},
                       {"placement", c.placement},
                       {"instance", instance},
                       {"max_compute", OrNull(c.max_compute)},
                       {"devices", devices}});
  }
  json comms = json::array();
  for (const auto& [key, comm] : s.comms.all()) {
    if (s.may_see && !s.may_see(key.first)) continue;
    char id[24];
    std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(key.second));
    json members = json::array();
    for (const auto& m : comm.members)
      members.push_back({{"pid", m.pid}, {"rank", m.rank}, {"virtual", m.device}, {"physical", m.gpu}});
    comms.push_back({{"id", id},
                     {"tenant", key.first},
                     {"nranks", comm.nranks},
                     {"members", members},
                     {"warning", s.comms.Warning(comm)}});
  }
  json jobs = json::array();
  for (const JobCollectives& j : CollectiveJobs(s.clients, s.scheduler, s.channels, now)) {
    if (s.may_see && !s.may_see(j.tenant)) continue;
    // How its GPUs reach each other: what NCCL's transport can be.
    json links = json::array();
    for (size_t a = 0; a < j.gpus.size(); ++a)
      for (size_t b = a + 1; b < j.gpus.size(); ++b)
        links.push_back({{"gpus", {j.gpus[a], j.gpus[b]}}, {"link", LinkName(s.topology.link(j.gpus[a], j.gpus[b]))}});
    jobs.push_back({{"tenant", j.tenant},
                    {"job", j.job},
                    {"pids", j.pids},
                    {"gpus", j.gpus},
                    {"collectives", j.collectives},
                    {"collective_ms", static_cast<double>(j.collective_ns) / 1e6},
                    {"gpu_time_ms", j.scheduled ? json(static_cast<double>(j.gpu_ns) / 1e6) : json(nullptr)},
                    {"collective_share", OrNull(j.share())},
                    {"links", links}});
  }
  // Tenant and job names are a client's bytes, not always UTF-8: replace, never throw.
  return json{{"gpus", gpus},           {"clients", clients}, {"hidden_clients", hidden},
              {"communicators", comms}, {"jobs", jobs},       {"topology", s.topology.Describe()},
              {"vgpu", Inventory(s)}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace gpushare::broker
