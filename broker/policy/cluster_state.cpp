// The cluster's znode values (see cluster_state.h). Decoding checks every field's type
// and range: the text comes from whoever can write to ZooKeeper.
#include "cluster_state.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>

namespace gpushare::broker {
namespace {

using json = nlohmann::json;

// A field that is not what it should be: the decoders stop at the first.
struct BadField {
  std::string what;
};

const json& Field(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) throw BadField{std::string(key) + ": missing"};
  return *it;
}

uint64_t Unsigned(const json& v, const char* what) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    throw BadField{std::string(what) + ": expected an integer from 0"};
  return v.get<uint64_t>();
}
int64_t Integer(const json& v, const char* what) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
    throw BadField{std::string(what) + ": expected an integer"};
  return v.get<int64_t>();
}
double Number(const json& v, const char* what) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) throw BadField{std::string(what) + ": expected a number"};
  return v.get<double>();
}
std::string Text(const json& v, const char* what, size_t max = 4096) {
  if (!v.is_string() || v.get_ref<const std::string&>().size() > max)
    throw BadField{std::string(what) + ": expected a string of at most " + std::to_string(max) + " bytes"};
  return v.get<std::string>();
}
const json& Object(const json& v, const char* what) {
  if (!v.is_object()) throw BadField{std::string(what) + ": expected an object"};
  return v;
}
const json& Array(const json& v, const char* what) {
  if (!v.is_array()) throw BadField{std::string(what) + ": expected an array"};
  return v;
}
std::string Name(const std::string& key, const char* what) {
  if (!ValidZnodeName(key)) throw BadField{std::string(what) + ": \"" + key.substr(0, 64) + "\" is not a name"};
  return key;
}

json AmountJson(const QuotaAmount& a) { return {{"instances", a.instances}, {"memory", a.memory_bytes}}; }
QuotaAmount AmountOf(const json& v) {
  Object(v, "amount");
  return QuotaAmount{Unsigned(Field(v, "instances"), "instances"), Unsigned(Field(v, "memory"), "memory")};
}
std::map<std::string, QuotaAmount> AmountsOf(const json& v, const char* what) {
  std::map<std::string, QuotaAmount> out;
  for (const auto& [key, amount] : Object(v, what).items()) out[Name(key, what)] = AmountOf(amount);
  return out;
}

uint64_t Add(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

// Parses `text` and runs `decode` on it; a malformed text or field is an error.
template <typename T, typename F>
std::optional<T> Decode(std::string_view text, std::string* error, F decode) {
  const json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) {
    *error = "not JSON";
    return std::nullopt;
  }
  try {
    return decode(j);
  } catch (const BadField& e) {
    *error = e.what;
  } catch (const json::exception& e) {  // a type mismatch the checks above did not foresee
    *error = e.what();
  }
  return std::nullopt;
}

}  // namespace

bool ValidZnodeName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

QuotaAmount QuotaRecord::Total() const { return Others(""); }

QuotaAmount QuotaRecord::Others(const std::string& node) const {
  QuotaAmount sum;
  for (const auto& [n, a] : held)
    if (n != node) sum = QuotaAmount{Add(sum.instances, a.instances), Add(sum.memory_bytes, a.memory_bytes)};
  return sum;
}

std::string EncodeQuota(const QuotaRecord& record) {
  json held = json::object();
  for (const auto& [node, a] : record.held)
    if (!a.zero()) held[node] = AmountJson(a);
  return json{{"held", held}}.dump();
}

std::optional<QuotaRecord> DecodeQuota(std::string_view text, std::string* error) {
  return Decode<QuotaRecord>(text, error, [](const json& j) {
    Object(j, "quota");
    return QuotaRecord{AmountsOf(Field(j, "held"), "held")};
  });
}

std::string QuotaRefusal(const QuotaRecord& record, const std::string& node, const QuotaAmount& want,
                         const ClusterTenantQuota& limit, const std::string& tenant) {
  const QuotaAmount others = record.Others(node);
  if (limit.max_instances && Add(others.instances, want.instances) > *limit.max_instances)
    return "tenant \"" + tenant + "\" holds " + std::to_string(others.instances) + " instance(s) on other nodes; " +
           std::to_string(want.instances) + " here would pass its cluster quota of " +
           std::to_string(*limit.max_instances);
  if (limit.max_memory && Add(others.memory_bytes, want.memory_bytes) > *limit.max_memory)
    return "tenant \"" + tenant + "\" would hold " + std::to_string(Add(others.memory_bytes, want.memory_bytes)) +
           " bytes across the cluster: its cluster quota is " + std::to_string(*limit.max_memory);
  return "";
}

std::string EncodeNode(const NodeRecord& n) {
  json gpus = json::array();
  for (const NodeGpu& g : n.gpus)
    gpus.push_back({{"index", g.index},
                    {"name", g.name},
                    {"memory_total", g.memory_total},
                    {"memory_used", g.memory_used},
                    {"memory_promised", g.memory_promised}});
  json quota = json::object();
  for (const auto& [t, a] : n.quota_held) quota[t] = AmountJson(a);
  return json{{"name", n.name},
              {"version", n.version},
              {"health", n.health},
              {"updated_unix_ms", n.updated_unix_ms},
              {"gpus", gpus},
              {"free_instances", n.free_instances},
              {"clients", n.clients},
              {"quota_held", quota}}
      .dump();
}

std::optional<NodeRecord> DecodeNode(std::string_view text, std::string* error) {
  return Decode<NodeRecord>(text, error, [](const json& j) {
    Object(j, "node");
    NodeRecord n;
    n.name = Name(Text(Field(j, "name"), "name", 128), "name");
    n.version = Text(Field(j, "version"), "version", 64);
    n.health = Text(Field(j, "health"), "health", 1024);
    n.updated_unix_ms = Unsigned(Field(j, "updated_unix_ms"), "updated_unix_ms");
    for (const json& g : Array(Field(j, "gpus"), "gpus")) {
      Object(g, "gpus[]");
      const int64_t index = Integer(Field(g, "index"), "gpus[].index");
      if (index < 0 || index > 1023) throw BadField{"gpus[].index: expected 0 to 1023"};
      n.gpus.push_back(NodeGpu{static_cast<int>(index), Text(Field(g, "name"), "gpus[].name", 256),
                               Unsigned(Field(g, "memory_total"), "gpus[].memory_total"),
                               Unsigned(Field(g, "memory_used"), "gpus[].memory_used"),
                               Unsigned(Field(g, "memory_promised"), "gpus[].memory_promised")});
    }
    for (const auto& [profile, count] : Object(Field(j, "free_instances"), "free_instances").items())
    {
      if (profile.size() > 256) throw BadField{"free_instances: a profile name over 256 bytes"};
      n.free_instances[profile] = Unsigned(count, "free_instances[]");
    }
    n.clients = Unsigned(Field(j, "clients"), "clients");
    n.quota_held = AmountsOf(Field(j, "quota_held"), "quota_held");
    return n;
  });
}

std::string EncodeMeter(const NodeMeter& m) {
  std::map<uint64_t, const MeterSession*> sessions;
  json days = json::array();
  for (const UsageRow& r : m.rows) {
    sessions[r.session.id] = &r.session;
    const MeterDay& d = r.day;
    days.push_back({d.session_id, d.day, d.wall_ns, d.allotted_ns, d.gpu_ns, d.memory_byte_s(), d.launches, d.copies,
                    d.copy_bytes});
  }
  json s = json::array();
  for (const auto& [id, p] : sessions)
    s.push_back({{"id", id},
                 {"pid", p->pid},
                 {"uid", p->uid},
                 {"tenant", p->tenant},
                 {"job", p->job},
                 {"profile", p->profile},
                 {"gpus", p->gpus},
                 {"start_ns", p->start_ns},
                 {"end_ns", p->end_ns},
                 {"last_ns", p->last_ns},
                 {"held_bytes", p->held_bytes},
                 {"fraction", p->fraction}});
  return json{{"node", m.node}, {"since_day", m.since_day}, {"sessions", s}, {"days", days}}.dump();
}

std::optional<NodeMeter> DecodeMeter(std::string_view text, std::string* error) {
  return Decode<NodeMeter>(text, error, [](const json& j) {
    Object(j, "meter");
    NodeMeter m;
    m.node = Name(Text(Field(j, "node"), "node", 128), "node");
    m.since_day = Integer(Field(j, "since_day"), "since_day");
    std::map<uint64_t, MeterSession> sessions;
    for (const json& s : Array(Field(j, "sessions"), "sessions")) {
      Object(s, "sessions[]");
      MeterSession p;
      p.id = Unsigned(Field(s, "id"), "sessions[].id");
      const int64_t pid = Integer(Field(s, "pid"), "sessions[].pid");
      const uint64_t uid = Unsigned(Field(s, "uid"), "sessions[].uid");
      if (pid < INT32_MIN || pid > INT32_MAX || uid > UINT32_MAX) throw BadField{"sessions[]: pid or uid out of range"};
      p.pid = static_cast<int32_t>(pid);
      p.uid = static_cast<uint32_t>(uid);
      p.tenant = Text(Field(s, "tenant"), "sessions[].tenant", 256);
      p.job = Text(Field(s, "job"), "sessions[].job", 256);
      p.profile = Text(Field(s, "profile"), "sessions[].profile", 256);
      p.gpus = Text(Field(s, "gpus"), "sessions[].gpus", 1024);
      p.start_ns = Unsigned(Field(s, "start_ns"), "sessions[].start_ns");
      p.end_ns = Unsigned(Field(s, "end_ns"), "sessions[].end_ns");
      p.last_ns = Unsigned(Field(s, "last_ns"), "sessions[].last_ns");
      p.held_bytes = Unsigned(Field(s, "held_bytes"), "sessions[].held_bytes");
      p.fraction = Number(Field(s, "fraction"), "sessions[].fraction");
      if (!sessions.emplace(p.id, p).second) throw BadField{"sessions[]: id " + std::to_string(p.id) + " twice"};
    }
    std::set<std::pair<uint64_t, int64_t>> seen;
    for (const json& d : Array(Field(j, "days"), "days")) {
      if (!d.is_array() || d.size() != 9) throw BadField{"days[]: expected 9 numbers"};
      MeterDay day;
      day.session_id = Unsigned(d[0], "days[].session");
      day.day = Integer(d[1], "days[].day");
      day.wall_ns = Unsigned(d[2], "days[].wall_ns");
      day.allotted_ns = Number(d[3], "days[].allotted_ns");
      if (day.allotted_ns < 0) throw BadField{"days[].allotted_ns: negative"};
      day.gpu_ns = Unsigned(d[4], "days[].gpu_ns");
      day.memory_byte_ns = static_cast<unsigned __int128>(Unsigned(d[5], "days[].memory_byte_s")) * 1'000'000'000u;
      day.launches = Unsigned(d[6], "days[].launches");
      day.copies = Unsigned(d[7], "days[].copies");
      day.copy_bytes = Unsigned(d[8], "days[].copy_bytes");
      auto s = sessions.find(day.session_id);
      if (s == sessions.end()) throw BadField{"days[]: session " + std::to_string(day.session_id) + " not listed"};
      if (!seen.insert({day.session_id, day.day}).second) throw BadField{"days[]: a session's day twice"};
      m.rows.push_back(UsageRow{s->second, day});
    }
    return m;
  });
}

std::string EncodeMeterWithin(NodeMeter meter, size_t max_bytes) {
  std::string text = EncodeMeter(meter);
  while (text.size() > max_bytes && !meter.rows.empty()) {
    // Drop the oldest day still present: the newest days are what a current bill needs.
    int64_t oldest = meter.rows.front().day.day;
    for (const UsageRow& r : meter.rows) oldest = std::min(oldest, r.day.day);
    std::erase_if(meter.rows, [&](const UsageRow& r) { return r.day.day == oldest; });
    meter.since_day = oldest + 1;
    text = EncodeMeter(meter);
  }
  return text;
}

}  // namespace gpushare::broker
