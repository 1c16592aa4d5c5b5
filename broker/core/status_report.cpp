// The node as JSON for gpushare-smi (see status_report.h).
#include "status_report.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace gpushare::broker {

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
    for (size_t v = 0; v < c.physical.size(); ++v) {
      const int g = c.physical[v];
      json d = {{"virtual", v},
                {"physical", g},
                {"memory_used", s.ledger.Held(id, g)},
                {"memory_cap", c.cap_bytes.value_or(s.ledger.capacity(g))},
                {"capped", c.cap_bytes.has_value()},
                {"tenant_memory_used", s.ledger.TenantHeld(c.tenant, g)}};
      // Spatial sharing: the CUs its new streams run on ("" and the GPU's count: all of them).
      if (const SpatialAssignment* m = s.spatial.Find(id, static_cast<int>(v)); m != nullptr && m->mask) {
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
                       {"streams", streams},
                       {"placement", c.placement},
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
  // Tenant and job names are a client's bytes, not always UTF-8: replace, never throw.
  return json{{"gpus", gpus},
              {"clients", clients},
              {"hidden_clients", hidden},
              {"communicators", comms},
              {"topology", s.topology.Describe()}}
      .dump(
      -1, ' ', false, json::error_handler_t::replace);
}

}  // namespace gpushare::broker
