// The meter in the broker (see metering.h).
#include "metering.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "visibility.h"

namespace gpushare::broker {
namespace {

using nlohmann::json;

std::string GpuList(const std::vector<int>& physical) {
  std::string s;
  for (int g : physical) {
    if (!s.empty()) s.push_back(',');
    s.append(std::to_string(g));
  }
  return s;
}

// "2026-12-01T10:00:00Z"
std::string Iso(uint64_t unix_ns) {
  const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000u);
  tm u{};
  gmtime_r(&t, &u);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &u);
  return buf;
}

double Seconds(double ns) { return ns / 1e9; }
double Hours(double ns) { return ns / 3.6e12; }

json Error(const std::string& why) { return json{{"error", why}}; }

}  // namespace

SessionTerms SessionTermsOf(const ClientRecord& c, double weight, const std::map<int, double>& weight_on_gpu) {
  SessionTerms t;
  if (c.instance) {  // a vGPU instance is billed by its profile's compute fraction of its one GPU
    t.profile = c.instance->profile;
    t.fraction = c.instance->compute;
    return t;
  }
  for (int g : c.physical) {
    auto sum = weight_on_gpu.find(g);
    if (sum != weight_on_gpu.end() && sum->second > 0) t.fraction += std::min(1.0, weight / sum->second);
  }
  return t;
}

bool MaySeeUsage(const BrokerConfig& config, const PeerCredentials& viewer, uint32_t admin_uid,
                 const std::string& tenant) {
  TenantMembers members;
  members.name = tenant;
  if (auto policy = config.tenants.find(tenant); policy != config.tenants.end()) {
    if (policy->second.uids) members.uids = &*policy->second.uids;
    if (policy->second.gids) members.gids = &*policy->second.gids;
  }
  // No running_uids: usage is history, and running in a tenant now (an open tenant
  // admits anyone) is no claim on what its members used before.
  return MaySee(Viewer{viewer.uid, viewer.gid, viewer.via != SocketKind::kMain, viewer.socket_tenant}, admin_uid,
                members);
}

Metering::Metering(const BrokerConfig* config, const ClientRegistry* clients, const NodeLedger* ledger,
                   const Scheduler* scheduler, const WorkTracker* work, const std::function<uint64_t()>* clock)
    : config_(config), clients_(clients), ledger_(ledger), scheduler_(scheduler), work_(work), clock_(clock) {}

void Metering::Attach(MeterSink* sink, uint64_t first_id, std::vector<MeterSnapshot> open,
                      std::function<uint64_t()> wall_clock) {
  sink_ = sink;
  wall_clock_ = std::move(wall_clock);
  meter_ = Meter(first_id);
  meter_.Adopt(std::move(open));
  attached_at_ns_ = wall_clock_();
}

std::map<int, double> Metering::WeightOnGpus(const std::function<double(const ClientRecord&)>& weight) const {
  std::map<int, double> on_gpu;
  for (const auto& [id, c] : *clients_)
    for (int g : c.physical) on_gpu[g] += weight(c);
  return on_gpu;
}

void Metering::Joined(ClientId id, bool reattach, const std::function<double(const ClientRecord&)>& weight) {
  if (!active()) return;
  const ClientRecord& c = clients_->at(id);
  const uint64_t now = wall_clock_();
  if (!reattach || !meter_.Continue(id, c.peer.pid, c.tenant, now)) {
    const SessionTerms terms = SessionTermsOf(c, weight(c), WeightOnGpus(weight));
    MeterSession s;
    s.pid = c.peer.pid;
    s.uid = c.peer.uid;
    s.tenant = c.tenant;
    s.job = c.job;
    s.profile = terms.profile;
    s.gpus = GpuList(c.physical);
    s.fraction = terms.fraction;
    meter_.Begin(id, std::move(s), now);
  }
  Held(id);
}

void Metering::Held(ClientId id) {
  if (!active()) return;
  const ClientRecord* c = clients_->Find(id);
  if (c == nullptr) return;
  uint64_t held = 0;
  for (int g : c->physical) held += ledger_->Held(id, g);
  meter_.SetHeld(id, held, wall_clock_());
}

void Metering::Reterm(const std::function<double(const ClientRecord&)>& weight) {
  if (!active()) return;
  const std::map<int, double> on_gpu = WeightOnGpus(weight);
  const uint64_t now = wall_clock_();
  for (const auto& [id, c] : *clients_) {
    const SessionTerms terms = SessionTermsOf(c, weight(c), on_gpu);
    meter_.SetProfile(id, terms.profile);
    meter_.SetFraction(id, terms.fraction, now);
  }
}

void Metering::Counters(uint64_t wall_now, std::optional<ClientId> only) {
  const uint64_t mono_now = (*clock_)();
  for (const auto& [id, c] : *clients_) {
    if (!meter_.Has(id) || (only && id != *only)) continue;
    MeterCounters t;
    for (size_t v = 0; v < c.physical.size(); ++v)
      if (auto f = scheduler_->Status(id, static_cast<int>(v), mono_now)) t.gpu_ns += f->used_ns;
    if (const ClientWork* w = work_->Find(id)) {
      t.launches = w->kernels;
      t.copies = w->copies;
      t.copy_bytes = w->copy_bytes;
    }
    meter_.SetCounters(id, t, wall_now);
  }
}

void Metering::Left(ClientId id) {
  if (!active() || !meter_.Has(id)) return;
  const uint64_t now = wall_clock_();
  Counters(now, id);
  meter_.End(id, now);
  ended_unwritten_ = true;
}

bool Metering::FlushEnded(std::string* error) {
  if (!active() || !ended_unwritten_) return true;
  ended_unwritten_ = false;
  return Write(meter_.TakeEnded(), error);
}

bool Metering::Write(MeterFlush flush, std::string* error) {
  if (unwritten_) {
    // Rows are whole values by key: the older ones first, the newer replace them.
    MeterFlush merged = std::move(*unwritten_);
    merged.sessions.insert(merged.sessions.end(), flush.sessions.begin(), flush.sessions.end());
    merged.days.insert(merged.days.end(), flush.days.begin(), flush.days.end());
    flush = std::move(merged);
    unwritten_.reset();
  }
  if (sink_->Write(flush, error)) return true;
  unwritten_ = std::move(flush);
  return false;
}

bool Metering::Flush(std::string* error) {
  if (!active()) return true;
  const uint64_t now = wall_clock_();
  Counters(now, std::nullopt);
  return Write(meter_.Take(now), error);
}

void Metering::CloseOrphans(uint64_t grace_ns) {
  if (!active() || meter_.orphan_count() == 0) return;
  // The grace runs from this broker's start: a client re-registers at its next
  // allocation or launch once a broker answers, however long none did.
  if (wall_clock_() >= attached_at_ns_ + grace_ns) meter_.CloseOrphans(UINT64_MAX);
}

std::string Metering::Request(const PeerCredentials& peer, uint32_t admin_uid, const std::string& request) {
  if (!active()) return Error("metering is off on this broker ([metering] enabled = false)").dump();
  return AnswerUsage(*config_, peer, admin_uid, request, DayOf(wall_clock_()),
                     [&](int64_t since, int64_t until, const std::string& tenant, std::string* error) {
                       Flush(error);  // the report includes what live sessions have used up to now
                       return sink_->Read(since, until, tenant, error);
                     });
}

std::string AnswerUsage(const BrokerConfig& config, const PeerCredentials& peer, uint32_t admin_uid,
                        const std::string& request, int64_t today, const UsageReader& read) {
  const json q = json::parse(request, nullptr, false);
  if (q.is_discarded() || !q.is_object()) return Error("malformed request: expected a JSON object").dump();
  const auto text = [&](const char* key) -> std::string {
    auto it = q.find(key);
    return it != q.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string what = text("what");
  const std::string tenant = text("tenant");
  if (!tenant.empty() && !MaySeeUsage(config, peer, admin_uid, tenant))
    return Error("uid " + std::to_string(peer.uid) + " may not read tenant \"" + tenant + "\"'s usage").dump();
  // One who may read no tenant costs the broker no read of the database.
  const bool reads_some = IsAdmin(peer, admin_uid) || (peer.via != SocketKind::kMain && !peer.socket_tenant.empty()) ||
                          std::any_of(config.tenants.begin(), config.tenants.end(),
                                      [&](const auto& t) { return MaySeeUsage(config, peer, admin_uid, t.first); });
  if (!reads_some) return Error("uid " + std::to_string(peer.uid) + " may read no tenant's usage").dump();

  int64_t since = 0, until = today + 1;  // [since, until)
  std::string period;
  if (what == "bill") {
    period = text("period");
    auto month = ParseMonth(period);
    if (!month) return Error("period \"" + period + "\": expected a month such as 2026-12").dump();
    std::tie(since, until) = *month;
  } else if (what == "usage") {
    if (const std::string s = text("since"); !s.empty()) {
      auto d = ParseDate(s);
      if (!d) return Error("since \"" + s + "\": expected a date such as 2026-12-01").dump();
      since = *d;
    }
    if (const std::string u = text("until"); !u.empty()) {
      auto d = ParseDate(u);
      if (!d) return Error("until \"" + u + "\": expected a date such as 2026-12-31").dump();
      until = *d + 1;  // the day named is included
    }
  } else {
    return Error("what \"" + what + "\": expected \"usage\" or \"bill\"").dump();
  }

  std::string error;
  auto rows = read(since, until, tenant, &error);
  if (!rows) return Error(error).dump();
  rows->erase(
      std::remove_if(rows->begin(), rows->end(),
                     [&](const UsageRow& r) { return !MaySeeUsage(config, peer, admin_uid, r.session.tenant); }),
      rows->end());

  json out;
  if (what == "usage") {
    const std::string by_text = text("by").empty() ? "session" : text("by");
    auto by = ParseUsageBy(by_text);
    if (!by) return Error("by \"" + by_text + "\": expected session, tenant or day").dump();
    out["by"] = by_text;
    out["since"] = CivilFromDays(since);
    out["until"] = CivilFromDays(until - 1);
    json lines = json::array();
    for (const UsageLine& l : Summarize(*rows, *by)) {
      json j{{"key", l.key},
             {"tenant", l.tenant},
             {"sessions", l.sessions},
             {"wall_ns", l.wall_ns},
             {"wall_s", Seconds(static_cast<double>(l.wall_ns))},
             {"allotted_ns", static_cast<uint64_t>(std::llround(l.allotted_ns))},
             {"fraction", l.wall_ns == 0 ? 0.0 : l.allotted_ns / static_cast<double>(l.wall_ns)},
             {"gpu_ns", l.gpu_ns},
             {"gpu_s", Seconds(static_cast<double>(l.gpu_ns))},
             {"memory_gib_h", static_cast<double>(l.memory_byte_s) / (1024.0 * 1024 * 1024 * 3600)},
             {"launches", l.launches},
             {"copies", l.copies},
             {"copy_bytes", l.copy_bytes}};
      if (l.session != nullptr) {
        const MeterSession& s = *l.session;
        j["session"] = s.id;
        j["pid"] = s.pid;
        j["uid"] = s.uid;
        j["job"] = s.job;
        j["profile"] = s.profile;
        j["gpus"] = s.gpus;
        j["start"] = Iso(s.start_ns);
        j["end"] = s.end_ns == 0 ? json(nullptr) : json(Iso(s.end_ns));
      }
      lines.push_back(std::move(j));
    }
    out["lines"] = std::move(lines);
    return out.dump();
  }

  const BillingConfig& b = config.billing;
  const Bill bill = MakeBill(*rows, b);
  out["period"] = period;
  out["currency"] = b.currency;
  out["per"] = b.per;
  out["minor_digits"] = b.minor_digits;
  json lines = json::array();
  for (const BillLine& l : bill.lines)
    lines.push_back({{"tenant", l.tenant},
                     {"profile", l.profile},
                     {"rate", FormatRateMicro(l.rate_micro)},
                     {"rate_micro", l.rate_micro},
                     {"sessions", l.sessions},
                     {"wall_ns", l.wall_ns},
                     {"duration_h", Hours(static_cast<double>(l.wall_ns))},
                     {"fraction", l.fraction()},
                     {"allotted_ns", l.allotted_ns},
                     {"allotted_gpu_h", Hours(static_cast<double>(l.allotted_ns))},
                     {"formula", FormatMinor(l.formula_minor, b.minor_digits)},
                     {"formula_minor", l.formula_minor},
                     {"gpu_ns", l.gpu_ns},
                     {"gpu_h", Hours(static_cast<double>(l.gpu_ns))},
                     {"measured", FormatMinor(l.measured_minor, b.minor_digits)},
                     {"measured_minor", l.measured_minor}});
  out["lines"] = std::move(lines);
  json tenants = json::array();
  for (const auto& [name, t] : bill.tenant_totals)
    tenants.push_back({{"tenant", name},
                       {"formula", FormatMinor(t.first, b.minor_digits)},
                       {"formula_minor", t.first},
                       {"measured", FormatMinor(t.second, b.minor_digits)},
                       {"measured_minor", t.second}});
  out["tenants"] = std::move(tenants);
  out["total"] = {{"formula", FormatMinor(bill.total_formula_minor, b.minor_digits)},
                  {"formula_minor", bill.total_formula_minor},
                  {"measured", FormatMinor(bill.total_measured_minor, b.minor_digits)},
                  {"measured_minor", bill.total_measured_minor}};
  return out.dump();
}

}  // namespace gpushare::broker
