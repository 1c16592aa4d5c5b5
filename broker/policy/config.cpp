// Parsing and resolution of the broker's TOML configuration (see config.h).
#include "config.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/base/units.h"

namespace gpushare::broker {
namespace {

struct ConfigError {
  std::string message;
  int line;
};

// An error in a file the config names (the classifier profile): "PATH:LINE: what".
struct IncludedFileError {
  std::string message;
};

[[noreturn]] void Fail(const toml::node& at, const std::string& what) {
  throw ConfigError{what, static_cast<int>(at.source().begin.line)};
}

void CheckKeys(const toml::table& t, const std::string& where, std::initializer_list<const char*> known) {
  for (const auto& [key, node] : t) {
    bool ok = false;
    for (const char* k : known) ok = ok || key.str() == k;
    if (!ok) Fail(node, where + (where.empty() ? "" : ".") + std::string(key.str()) + ": unknown key");
  }
}

double PositiveNumber(const toml::node& n, const std::string& field) {
  std::optional<double> v = n.value<double>();
  if (!v || !(*v > 0) || *v > 1e6) Fail(n, field + ": expected a positive number");
  return *v;
}

uint64_t Bytes(const toml::node& n, const std::string& field) {
  if (auto i = n.value<int64_t>(); i && n.is_integer()) {
    if (*i < 0) Fail(n, field + ": expected a size such as \"8GiB\" or a byte count");
    return static_cast<uint64_t>(*i);
  }
  if (auto s = n.value<std::string>()) {
    if (auto b = ParseBytes(*s)) return *b;
  }
  Fail(n, field + ": expected a size such as \"8GiB\" or a byte count");
}

template <typename T>
std::vector<T> IntList(const toml::node& n, const std::string& field, int64_t min, int64_t max) {
  const toml::array* a = n.as_array();
  if (a == nullptr) Fail(n, field + ": expected a list of integers");
  std::vector<T> out;
  for (const toml::node& item : *a) {
    auto v = item.value<int64_t>();
    if (!item.is_integer() || !v || *v < min || *v > max)
      Fail(item, field + ": expected integers from " + std::to_string(min) + " to " + std::to_string(max));
    out.push_back(static_cast<T>(*v));
  }
  return out;
}

// A user or group: its number, or its name looked up on this machine.
uint32_t Id(const toml::node& n, const std::string& field, bool is_group) {
  if (auto i = n.value<int64_t>(); i && n.is_integer() && *i >= 0 && *i <= 4294967294) return static_cast<uint32_t>(*i);
  if (auto name = n.value<std::string>(); name && n.is_string() && !name->empty()) {
    if (is_group) {
      if (const struct group* g = getgrnam(name->c_str())) return g->gr_gid;
    } else if (const passwd* u = getpwnam(name->c_str())) {
      return u->pw_uid;
    }
    Fail(n, field + ": no " + (is_group ? "group" : "user") + " \"" + *name + "\" on this machine");
  }
  Fail(n, field + std::string(": expected a ") + (is_group ? "group" : "user") + "'s name or number");
}

// Permission bits as an octal string ("0660"), at most 0777.
uint32_t Mode(const toml::node& n, const std::string& field) {
  std::optional<std::string> text = n.value<std::string>();
  uint32_t mode = 0;
  bool ok = text && n.is_string() && !text->empty() && text->size() <= 4;
  for (char ch : text.value_or("")) {
    ok = ok && ch >= '0' && ch <= '7';
    mode = mode * 8 + static_cast<uint32_t>(ch - '0');
  }
  if (!ok || mode > 0777) Fail(n, field + ": expected octal permission bits as a string, such as \"0660\"");
  return mode;
}

// A tenant's own socket: its name becomes a file name, so it is held to a safe set.
void ParseTenantSocket(const toml::table& t, const std::string& name, const std::string& field, TenantPolicy* p) {
  if (const toml::node* n = t.get("socket")) {
    auto b = n->value<bool>();
    if (!b || !n->is_boolean()) Fail(*n, field + ".socket: expected true or false");
    p->socket = *b;
    bool safe = !name.empty() && name.size() <= 64;
    for (char ch : name)
      safe = safe && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-');
    if (p->socket && !safe)
      Fail(*n,
           field + ".socket: a tenant with a socket needs a name of 1 to 64 of A-Z a-z 0-9 . _ - (it names the file)");
  }
  if (const toml::node* n = t.get("socket_owner")) p->socket_owner = Id(*n, field + ".socket_owner", false);
  if (const toml::node* n = t.get("socket_group")) p->socket_group = Id(*n, field + ".socket_group", true);
  if (const toml::node* n = t.get("socket_mode")) p->socket_mode = Mode(*n, field + ".socket_mode");
}

// [sockets]: the main socket's permissions.
void ParseSockets(const toml::table& root, SocketsConfig* out) {
  const toml::node* node = root.get("sockets");
  if (node == nullptr) return;
  const toml::table* t = node->as_table();
  if (t == nullptr) Fail(*node, "sockets: expected a table");
  CheckKeys(*t, "sockets", {"main_mode", "main_group"});
  if (const toml::node* n = t->get("main_mode")) out->main_mode = Mode(*n, "sockets.main_mode");
  if (const toml::node* n = t->get("main_group")) out->main_group = Id(*n, "sockets.main_group", true);
}

BrokerConfig Parse(const toml::table& root) {
  BrokerConfig c;
  CheckKeys(root, "",
            {"node", "class_weights", "scheduler", "tenants", "classifier", "profiles", "metering", "billing", "limits",
             "metrics", "sockets", "mps", "cluster"});
  if (const toml::node* node = root.get("node")) {
    const toml::table* t = node->as_table();
    if (t == nullptr) Fail(*node, "node: expected a table");
    CheckKeys(*t, "node", {"admission", "placement", "reserved_instances", "reserved_fraction"});
    if (const toml::node* a = t->get("admission")) {
      auto s = a->value<std::string>();
      if (s == "refuse")
        c.admission = Admission::kRefuse;
      else if (s == "oversubscribe")
        c.admission = Admission::kOversubscribe;
      else
        Fail(*a, "node.admission: expected \"refuse\" or \"oversubscribe\"");
    }
    if (const toml::node* p = t->get("placement")) {
      auto s = p->value<std::string>();
      if (s != "topology-aware" && s != "least-loaded" && s != "round-robin")
        Fail(*p, "node.placement: expected \"topology-aware\", \"least-loaded\" or \"round-robin\"");
      c.placement = *s;
    }
  }
  if (const toml::node* node = root.get("class_weights")) {
    const toml::table* t = node->as_table();
    if (t == nullptr) Fail(*node, "class_weights: expected a table");
    CheckKeys(*t, "class_weights", {"compute", "memory", "copy", "unknown"});
    if (const toml::node* n = t->get("compute")) c.compute_weight = PositiveNumber(*n, "class_weights.compute");
    if (const toml::node* n = t->get("memory")) c.memory_weight = PositiveNumber(*n, "class_weights.memory");
    if (const toml::node* n = t->get("copy")) c.copy_weight = PositiveNumber(*n, "class_weights.copy");
    if (const toml::node* n = t->get("unknown")) c.unknown_weight = PositiveNumber(*n, "class_weights.unknown");
  }
  if (const toml::node* node = root.get("scheduler")) {
    const toml::table* t = node->as_table();
    if (t == nullptr) Fail(*node, "scheduler: expected a table");
    CheckKeys(*t, "scheduler", {"enabled", "quantum_ms", "spatial", "memory_cu_percent"});
    if (const toml::node* n = t->get("enabled")) {
      auto b = n->value<bool>();
      if (!b || !n->is_boolean()) Fail(*n, "scheduler.enabled: expected true or false");
      c.scheduling = *b;
    }
    if (const toml::node* n = t->get("quantum_ms")) {
      const double ms = PositiveNumber(*n, "scheduler.quantum_ms");
      if (ms < 1 || ms > 1000) Fail(*n, "scheduler.quantum_ms: expected 1 to 1000");
      c.quantum_us = static_cast<uint32_t>(ms * 1000);
    }
    if (const toml::node* n = t->get("spatial")) {
      auto s = n->value<std::string>();
      if (s == "off")
        c.spatial = SpatialMode::kOff;
      else if (s == "cu_mask")
        c.spatial = SpatialMode::kCuMask;
      else if (s == "mps")
        c.spatial = SpatialMode::kMps;
      else
        Fail(*n, "scheduler.spatial: expected \"off\", \"cu_mask\" or \"mps\"");
    }
    if (const toml::node* n = t->get("memory_cu_percent")) {
      auto v = n->value<int64_t>();
      // Neither 0 nor 100: both classes must be left some CUs to run on.
      if (!n->is_integer() || !v || *v < 1 || *v > 99) Fail(*n, "scheduler.memory_cu_percent: expected 1 to 99");
      c.memory_cu_percent = static_cast<uint32_t>(*v);
    }
  }
  if (const toml::node* node = root.get("tenants")) {
    const toml::table* tenants = node->as_table();
    if (tenants == nullptr) Fail(*node, "tenants: expected a table of tenants");
    for (const auto& [name, tnode] : *tenants) {
      const std::string field = "tenants." + std::string(name.str());
      const toml::table* t = tnode.as_table();
      if (t == nullptr) Fail(tnode, field + ": expected a table");
      CheckKeys(*t, field,
                {"weight", "max_weight", "memory", "max_memory", "gpus", "uids", "gids", "profile", "max_compute",
                 "socket", "socket_owner", "socket_group", "socket_mode", "colocate"});
      TenantPolicy p;
      if (const toml::node* n = t->get("weight")) p.weight = PositiveNumber(*n, field + ".weight");
      if (const toml::node* n = t->get("max_weight")) p.max_weight = PositiveNumber(*n, field + ".max_weight");
      if (const toml::node* n = t->get("memory")) p.memory = Bytes(*n, field + ".memory");
      if (const toml::node* n = t->get("max_memory")) p.max_memory = Bytes(*n, field + ".max_memory");
      if (const toml::node* n = t->get("gpus")) p.gpus = IntList<int>(*n, field + ".gpus", 0, 1023);
      if (const toml::node* n = t->get("uids")) p.uids = IntList<uint32_t>(*n, field + ".uids", 0, 4294967294);
      if (const toml::node* n = t->get("gids")) p.gids = IntList<uint32_t>(*n, field + ".gids", 0, 4294967294);
      ParseTenantSocket(*t, std::string(name.str()), field, &p);
      if (const toml::node* n = t->get("colocate")) {
        if (!n->is_boolean()) Fail(*n, field + ".colocate: expected true or false");
        p.colocate = *n->value<bool>();
      }
      c.tenants[std::string(name.str())] = p;
    }
  }
  return c;
}

// A fraction of one GPU: (0, 1].
double GpuFraction(const toml::node& n, const std::string& field) {
  std::optional<double> v = n.value<double>();
  if (!v || !(*v > 0) || *v > 1) Fail(n, field + ": expected a fraction of a GPU in (0, 1]");
  return *v;
}

// [profiles.NAME], [node] reserved_instances / reserved_fraction, and the profile and
// max_compute of [tenants.NAME] (the tenants' other keys are Parse's).
void ParseProfiles(const toml::table& root, const std::string& source, BrokerConfig* c) {
  if (const toml::node* node = root.get("profiles")) {
    const toml::table* profiles = node->as_table();
    if (profiles == nullptr) Fail(*node, "profiles: expected a table of profiles");
    for (const auto& [name, pnode] : *profiles) {
      const std::string field = "profiles." + std::string(name.str());
      const toml::table* t = pnode.as_table();
      if (t == nullptr) Fail(pnode, field + ": expected a table");
      CheckKeys(*t, field, {"memory", "compute", "max_compute"});
      Profile p;
      p.where = source + ":" + std::to_string(pnode.source().begin.line);
      const toml::node* memory = t->get("memory");
      const toml::node* compute = t->get("compute");
      if (memory == nullptr || compute == nullptr) Fail(pnode, field + ": expected a memory and a compute fraction");
      p.memory_bytes = Bytes(*memory, field + ".memory");
      if (p.memory_bytes == 0) Fail(*memory, field + ".memory: expected more than 0 bytes");
      p.compute = GpuFraction(*compute, field + ".compute");
      if (const toml::node* n = t->get("max_compute")) {
        p.max_compute = GpuFraction(*n, field + ".max_compute");
        if (*p.max_compute < p.compute)
          Fail(*n, field + ".max_compute: below its compute (" + std::to_string(p.compute) +
                       "): a ceiling under the guaranteed share");
      }
      c->profiles[std::string(name.str())] = p;
    }
  }
  if (const toml::node* node = root.get("node"); node != nullptr && node->as_table() != nullptr) {
    const toml::table& t = *node->as_table();
    const toml::node* instances = t.get("reserved_instances");
    const toml::node* fraction = t.get("reserved_fraction");
    if (instances != nullptr && fraction != nullptr)
      Fail(*fraction, "node.reserved_fraction: give reserved_instances or reserved_fraction, not both");
    if (instances != nullptr) {
      auto v = instances->value<int64_t>();
      if (!instances->is_integer() || !v || *v < 0 || *v > 1024)
        Fail(*instances, "node.reserved_instances: expected an integer from 0 to 1024");
      c->reserved.instances = static_cast<int>(*v);
    }
    if (fraction != nullptr) {
      auto v = fraction->value<double>();
      if (!v || !(*v >= 0) || !(*v < 1)) Fail(*fraction, "node.reserved_fraction: expected a fraction in [0, 1)");
      c->reserved.fraction = *v;
    }
  }
  if (const toml::node* node = root.get("tenants"); node != nullptr && node->as_table() != nullptr) {
    for (const auto& [name, tnode] : *node->as_table()) {
      const std::string field = "tenants." + std::string(name.str());
      const toml::table* t = tnode.as_table();
      if (t == nullptr) continue;  // Parse has refused it
      TenantPolicy& p = c->tenants[std::string(name.str())];
      if (const toml::node* n = t->get("profile")) {
        std::optional<std::string> s = n->value<std::string>();
        if (!s || s->empty()) Fail(*n, field + ".profile: expected the name of a [profiles.NAME] table");
        if (c->profiles.count(*s) == 0) Fail(*n, field + ".profile: no profile \"" + *s + "\" in [profiles]");
        p.profile = *s;
      }
      if (const toml::node* n = t->get("max_compute")) p.max_compute = GpuFraction(*n, field + ".max_compute");
    }
  }
}

// [limits] (LimitsConfig): integers within sane bounds.
void ParseLimits(const toml::table& root, LimitsConfig* out) {
  const toml::node* node = root.get("limits");
  if (node == nullptr) return;
  const toml::table* t = node->as_table();
  if (t == nullptr) Fail(*node, "limits: expected a table");
  CheckKeys(*t, "limits", {"max_connections", "max_connections_per_uid", "handshake_timeout_ms"});
  const auto integer = [&](const char* key, int64_t min, int64_t max, uint32_t* field) {
    const toml::node* n = t->get(key);
    if (n == nullptr) return;
    auto v = n->value<int64_t>();
    if (!n->is_integer() || !v || *v < min || *v > max)
      Fail(*n, std::string("limits.") + key + ": expected an integer from " + std::to_string(min) + " to " +
                   std::to_string(max));
    *field = static_cast<uint32_t>(*v);
  };
  integer("max_connections", 32, 1000000, &out->max_connections);
  integer("max_connections_per_uid", 1, 1000000, &out->max_connections_per_uid);
  integer("handshake_timeout_ms", 100, 600000, &out->handshake_timeout_ms);
}

// What a kernel name may be declared as (idle is not a property of a kernel).
std::optional<WorkClass> DeclarableClass(const std::string& name) {
  std::optional<WorkClass> c = ParseWorkClass(name);
  if (c == WorkClass::kIdle) return std::nullopt;
  return c;
}
constexpr const char* kDeclarableClasses = "\"compute\", \"memory\", \"copy\" or \"unknown\"";

// [classifier]: the config's rules, then (unless default_rules = false) the defaults; a
// profile path relative to the directory of `source`.
void ParseClassifier(const toml::table& root, const std::string& source, ClassifierConfig* out) {
  const toml::node* node = root.get("classifier");
  if (node == nullptr) return;
  const toml::table* t = node->as_table();
  if (t == nullptr) Fail(*node, "classifier: expected a table");
  CheckKeys(*t, "classifier", {"rules", "default_rules", "profile"});
  std::vector<NameRule> rules;
  if (const toml::node* n = t->get("rules")) {
    const toml::array* a = n->as_array();
    if (a == nullptr) Fail(*n, "classifier.rules: expected a list of { pattern = \"...\", class = \"...\" }");
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& item = *a->get(i);
      const std::string field = "classifier.rules[" + std::to_string(i) + "]";
      const toml::table* r = item.as_table();
      if (r == nullptr) Fail(item, field + ": expected { pattern = \"...\", class = \"...\" }");
      CheckKeys(*r, field, {"pattern", "class"});
      const toml::node* pattern = r->get("pattern");
      const toml::node* cls = r->get("class");
      if (pattern == nullptr || cls == nullptr) Fail(item, field + ": expected a pattern and a class");
      std::optional<std::string> p = pattern->value<std::string>();
      if (!p || p->empty()) Fail(*pattern, field + ".pattern: expected a non-empty string");
      std::optional<WorkClass> c = DeclarableClass(cls->value<std::string>().value_or(""));
      if (!c) Fail(*cls, field + ".class: expected " + kDeclarableClasses);
      rules.push_back(NameRule{*p, *c});
    }
  }
  bool default_rules = true;
  if (const toml::node* n = t->get("default_rules")) {
    auto b = n->value<bool>();
    if (!b || !n->is_boolean()) Fail(*n, "classifier.default_rules: expected true or false");
    default_rules = *b;
  }
  if (default_rules) {
    for (NameRule& r : ClassifierConfig::DefaultNameRules()) rules.push_back(std::move(r));
  }
  out->rules = std::move(rules);
  if (const toml::node* n = t->get("profile")) {
    std::optional<std::string> p = n->value<std::string>();
    if (!p || p->empty()) Fail(*n, "classifier.profile: expected a file path");
    std::filesystem::path path(*p);
    if (path.is_relative()) path = std::filesystem::path(source).parent_path() / path;
    std::string error;
    std::optional<std::string> text = ReadRegularFile(path.string(), kMaxProfileBytes, &error);
    if (!text) Fail(*n, "classifier.profile: cannot read " + path.string() + ": " + error);
    auto profile = ParseClassifierProfile(*text, path.string(), &error);
    if (!profile) throw IncludedFileError{error};
    out->profile = std::move(*profile);
    out->profile_path = path.string();
  }
}

const toml::table& Table(const toml::node& n, const std::string& field) {
  const toml::table* t = n.as_table();
  if (t == nullptr) Fail(n, field + ": expected a table");
  return *t;
}

int64_t Rate(const toml::node& n, const std::string& field) {
  std::optional<double> v = n.value<double>();
  std::optional<int64_t> micro = v ? RateMicro(*v) : std::nullopt;
  if (!micro || !(n.is_number())) Fail(n, field + ": expected a rate, a number from 0 (e.g. 2.5)");
  return *micro;
}

// [mps] (docs/scheduling.md).
void ParseMps(const toml::table& root, MpsConfig* mps) {
  const toml::node* node = root.get("mps");
  if (node == nullptr) return;
  const toml::table& t = Table(*node, "mps");
  CheckKeys(t, "mps", {"control", "pipe_directory", "memory_percent"});
  if (const toml::node* n = t.get("control")) {
    std::optional<std::string> text = n->value<std::string>();
    if (!text || !n->is_string() || text->empty()) Fail(*n, "mps.control: expected the control program's path");
    mps->control = *text;
  }
  if (const toml::node* n = t.get("pipe_directory")) {
    std::optional<std::string> text = n->value<std::string>();
    if (!text || !n->is_string() || (!text->empty() && (*text)[0] != '/') || text->size() >= 100)
      Fail(*n, "mps.pipe_directory: expected an absolute path shorter than 100 bytes, or \"\"");
    mps->pipe_directory = *text;
  }
  if (const toml::node* n = t.get("memory_percent")) {
    auto v = n->value<int64_t>();
    // Neither 0 nor 100: both classes must be left some SMs to run on.
    if (!n->is_integer() || !v || *v < 1 || *v > 99) Fail(*n, "mps.memory_percent: expected 1 to 99");
    mps->memory_percent = static_cast<uint32_t>(*v);
  }
}

// [metrics] (docs/monitoring.md).
void ParseMetrics(const toml::table& root, MetricsConfig* metrics) {
  const toml::node* node = root.get("metrics");
  if (node == nullptr) return;
  const toml::table& t = Table(*node, "metrics");
  CheckKeys(t, "metrics", {"listen", "refresh"});
  if (const toml::node* n = t.get("listen")) {
    std::optional<std::string> text = n->value<std::string>();
    std::string host;
    uint16_t port = 0;
    if (!text || !n->is_string() || (!text->empty() && !ParseListenAddress(*text, &host, &port)))
      Fail(*n, "metrics.listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:9400\"), or \"\" for no endpoint");
    metrics->listen = *text;
  }
  if (const toml::node* n = t.get("refresh")) {
    std::optional<double> s = n->value<double>();
    if (!s || !n->is_number() || !(*s >= 0.05) || *s > 60)
      Fail(*n, "metrics.refresh: expected seconds, from 0.05 to 60");
    metrics->refresh_ns = static_cast<uint64_t>(std::llround(*s * 1e9));
  }
}

// [cluster] and [cluster.tenants.NAME] (docs/cluster.md).
void ParseCluster(const toml::table& root, ClusterConfig* cluster) {
  const toml::node* node = root.get("cluster");
  if (node == nullptr) return;
  const toml::table& t = Table(*node, "cluster");
  CheckKeys(t, "cluster",
            {"zookeeper", "name", "node", "session_timeout_ms", "unreachable", "grant_timeout_ms", "publish_interval",
             "tenants"});
  const auto name = [&](const char* key, std::string* out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    std::optional<std::string> s = n->value<std::string>();
    if (!s || !n->is_string() || !ValidZnodeName(*s))
      Fail(*n, std::string("cluster.") + key + ": expected a name of 1 to 128 letters, digits, '.', '_' or '-'");
    *out = *s;
  };
  if (const toml::node* n = t.get("zookeeper")) {
    std::optional<std::string> s = n->value<std::string>();
    bool ok = s && n->is_string() && !s->empty();
    for (size_t start = 0; ok && start <= s->size();) {  // "host:port,host:port"
      size_t end = s->find(',', start);
      if (end == std::string::npos) end = s->size();
      const std::string item = s->substr(start, end - start);
      const size_t colon = item.rfind(':');
      ok = colon != std::string::npos && colon > 0 && colon + 1 < item.size() &&
           item.find_first_not_of("0123456789", colon + 1) == std::string::npos && item.size() - colon <= 6 &&
           std::stoul(item.substr(colon + 1)) >= 1 && std::stoul(item.substr(colon + 1)) <= 65535;
      start = end + 1;
    }
    if (!ok) Fail(*n, "cluster.zookeeper: expected \"host:port,host:port,...\"");
    cluster->zookeeper = *s;
  }
  name("name", &cluster->name);
  name("node", &cluster->node);
  const auto integer = [&](const char* key, int64_t min, int64_t max, uint32_t* field) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    auto v = n->value<int64_t>();
    if (!n->is_integer() || !v || *v < min || *v > max)
      Fail(*n, std::string("cluster.") + key + ": expected an integer from " + std::to_string(min) + " to " +
                   std::to_string(max));
    *field = static_cast<uint32_t>(*v);
  };
  integer("session_timeout_ms", 1000, 600000, &cluster->session_timeout_ms);
  integer("grant_timeout_ms", 50, 60000, &cluster->grant_timeout_ms);
  if (const toml::node* n = t.get("unreachable")) {
    std::optional<std::string> s = n->value<std::string>();
    if (s != "refuse" && s != "allow") Fail(*n, "cluster.unreachable: expected \"refuse\" or \"allow\"");
    cluster->unreachable_allow = *s == "allow";
  }
  if (const toml::node* n = t.get("publish_interval")) {
    std::optional<double> s = n->value<double>();
    if (!s || !n->is_number() || !(*s >= 0.1) || *s > 3600)
      Fail(*n, "cluster.publish_interval: expected seconds, from 0.1 to 3600");
    cluster->publish_interval_ns = static_cast<uint64_t>(std::llround(*s * 1e9));
  }
  if (const toml::node* n = t.get("tenants")) {
    for (const auto& [tenant, tnode] : Table(*n, "cluster.tenants")) {
      const std::string field = "cluster.tenants." + std::string(tenant.str());
      if (!ValidZnodeName(tenant.str()))
        Fail(tnode, field + ": a tenant with a cluster quota is named with letters, digits, '.', '_' or '-'");
      const toml::table& q = Table(tnode, field);
      CheckKeys(q, field, {"max_instances", "max_memory"});
      ClusterTenantQuota quota;
      if (const toml::node* m = q.get("max_instances")) {
        auto v = m->value<int64_t>();
        if (!m->is_integer() || !v || *v < 0 || *v > 1000000)
          Fail(*m, field + ".max_instances: expected an integer from 0 to 1000000");
        quota.max_instances = static_cast<uint64_t>(*v);
      }
      if (const toml::node* m = q.get("max_memory")) quota.max_memory = Bytes(*m, field + ".max_memory");
      if (!quota.max_instances && !quota.max_memory) Fail(tnode, field + ": expected max_instances or max_memory");
      cluster->tenants[std::string(tenant.str())] = quota;
    }
  }
  if (!cluster->tenants.empty() && cluster->zookeeper.empty())
    Fail(*node, "cluster.tenants: cluster quotas need cluster.zookeeper");
}

// [metering] and [billing] (docs/metering.md).
void ParseMeteringAndBilling(const toml::table& root, MeteringConfig* metering, BillingConfig* billing) {
  if (const toml::node* node = root.get("metering")) {
    const toml::table& t = Table(*node, "metering");
    CheckKeys(t, "metering", {"enabled", "database", "interval", "retention_days"});
    if (const toml::node* n = t.get("enabled")) {
      auto b = n->value<bool>();
      if (!b || !n->is_boolean()) Fail(*n, "metering.enabled: expected true or false");
      metering->enabled = *b;
    }
    if (const toml::node* n = t.get("database")) {
      std::optional<std::string> p = n->value<std::string>();
      if (!p || p->empty() || !n->is_string()) Fail(*n, "metering.database: expected a file path");
      metering->database = *p;
    }
    if (const toml::node* n = t.get("interval")) {
      std::optional<double> s = n->value<double>();
      if (!s || !n->is_number() || !(*s >= 0.1) || *s > 3600)
        Fail(*n, "metering.interval: expected seconds, from 0.1 to 3600");
      metering->interval_ns = static_cast<uint64_t>(std::llround(*s * 1e9));
    }
    if (const toml::node* n = t.get("retention_days")) {
      auto v = n->value<int64_t>();
      if (!n->is_integer() || !v || *v < 0 || *v > 100000)
        Fail(*n, "metering.retention_days: expected days, from 0 (keep forever) to 100000");
      metering->retention_days = static_cast<uint32_t>(*v);
    }
  }
  if (const toml::node* node = root.get("billing")) {
    const toml::table& t = Table(*node, "billing");
    CheckKeys(t, "billing", {"base_rate", "currency", "per", "minor_digits", "tenant_rates", "profile_rates"});
    if (const toml::node* n = t.get("base_rate")) billing->base_rate_micro = Rate(*n, "billing.base_rate");
    if (const toml::node* n = t.get("currency")) {
      std::optional<std::string> c = n->value<std::string>();
      if (!c || c->empty() || c->size() > 16 || !n->is_string())
        Fail(*n, "billing.currency: expected a name such as \"USD\"");
      billing->currency = *c;
    }
    if (const toml::node* n = t.get("per")) {
      std::optional<std::string> per = n->value<std::string>();
      const std::map<std::string, uint64_t> units{{"second", 1'000'000'000ull},
                                                  {"minute", 60'000'000'000ull},
                                                  {"hour", 3'600'000'000'000ull},
                                                  {"day", 86'400'000'000'000ull}};
      auto u = per ? units.find(*per) : units.end();
      if (u == units.end()) Fail(*n, "billing.per: expected \"second\", \"minute\", \"hour\" or \"day\"");
      billing->per = u->first;
      billing->per_ns = u->second;
    }
    if (const toml::node* n = t.get("minor_digits")) {
      auto v = n->value<int64_t>();
      if (!n->is_integer() || !v || *v < 0 || *v > 4) Fail(*n, "billing.minor_digits: expected 0 to 4");
      billing->minor_digits = static_cast<int>(*v);
    }
    for (const char* which : {"tenant_rates", "profile_rates"}) {
      const toml::node* n = t.get(which);
      if (n == nullptr) continue;
      const std::string field = std::string("billing.") + which;
      auto& into = std::string(which) == "tenant_rates" ? billing->tenant_rate_micro : billing->profile_rate_micro;
      for (const auto& [name, rate] : Table(*n, field))
        into[std::string(name.str())] = Rate(rate, field + "." + std::string(name.str()));
    }
  }
}

}  // namespace

std::optional<std::map<std::string, WorkClass>> ParseClassifierProfile(const std::string& text,
                                                                       const std::string& source, std::string* error) {
  constexpr const char* kBlanks = " \t\r\f\v";
  std::map<std::string, WorkClass> profile;
  std::map<std::string, int> first_line;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const size_t begin = line.find_first_not_of(kBlanks);
    if (begin == std::string::npos || line[begin] == '#') continue;
    const size_t end = line.find_last_not_of(kBlanks) + 1;
    const size_t class_at = line.find_last_of(kBlanks, end - 1);
    const auto fail = [&](const std::string& what) {
      *error = source + ":" + std::to_string(number) + ": " + what;
      return std::nullopt;
    };
    if (class_at == std::string::npos || class_at < begin) return fail("expected \"KERNEL_NAME CLASS\"");
    const std::string name = line.substr(begin, line.find_last_not_of(kBlanks, class_at) + 1 - begin);
    const std::string cls_name = line.substr(class_at + 1, end - class_at - 1);
    std::optional<WorkClass> cls = DeclarableClass(cls_name);
    if (!cls) return fail("class \"" + cls_name + "\": expected " + kDeclarableClasses);
    if (auto [it, fresh] = first_line.emplace(name, number); !fresh)
      return fail("\"" + name + "\" is already classified on line " + std::to_string(it->second));
    profile[name] = *cls;
  }
  return profile;
}

bool ParseListenAddress(const std::string& text, std::string* host, uint16_t* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = text.substr(0, colon);
  const std::string p = text.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  const long number = std::stol(p);
  if (number < 1 || number > 65535) return false;
  if (h.front() == '[') {  // [IPv6]
    if (h.size() < 4 || h.back() != ']' || h.find_first_not_of("0123456789abcdefABCDEF:", 1) != h.size() - 1)
      return false;
  } else if (h != "localhost") {  // dotted IPv4: four numbers 0..255
    int parts = 0;
    for (size_t start = 0;; ++parts) {
      const size_t dot = h.find('.', start);
      const std::string part = h.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (part.empty() || part.size() > 3 || part.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(part) > 255)
        return false;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (parts != 3) return false;
  }
  *host = h;
  *port = static_cast<uint16_t>(number);
  return true;
}

std::optional<BrokerConfig> ParseBrokerConfig(const std::string& text, const std::string& source, std::string* error) {
  try {
    toml::table root = toml::parse(text, source);
    BrokerConfig config = Parse(root);
    ParseProfiles(root, source, &config);
    ParseClassifier(root, source, &config.classifier);
    ParseMeteringAndBilling(root, &config.metering, &config.billing);
    ParseLimits(root, &config.limits);
    ParseMetrics(root, &config.metrics);
    ParseSockets(root, &config.sockets);
    ParseMps(root, &config.mps);
    ParseCluster(root, &config.cluster);
    return config;
  } catch (const toml::parse_error& e) {
    *error = source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
  } catch (const ConfigError& e) {
    *error = source + ":" + std::to_string(e.line) + ": " + e.message;
  } catch (const IncludedFileError& e) {
    *error = e.message;
  } catch (const std::exception& e) {
    // Out of memory, a library's own exception: the config is refused, never the broker.
    *error = source + ": cannot be parsed: " + e.what();
  }
  return std::nullopt;
}

std::optional<std::string> ReadRegularFile(const std::string& path, size_t max_bytes, std::string* error) {
  // O_NONBLOCK: opening a FIFO nobody writes to must not hang the broker; fstat then
  // refuses it, a device (/dev/zero) or a directory before anything is read.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    *error = std::string("cannot open: ") + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  std::string why;
  struct stat st{};
  if (fstat(fd, &st) != 0) {
    why = std::string("cannot stat: ") + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    why = "larger than the limit of " + std::to_string(max_bytes) + " bytes";
  } else {
    // Read at most one byte past the limit: a file that grew meanwhile is refused too.
    char chunk[65536];
    for (;;) {
      const ssize_t n = read(fd, chunk, std::min(sizeof chunk, max_bytes + 1 - text.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) why = std::string("cannot read: ") + std::strerror(errno);
      if (n <= 0) break;
      text.append(chunk, static_cast<size_t>(n));
      if (text.size() > max_bytes) {
        why = "larger than the limit of " + std::to_string(max_bytes) + " bytes";
        break;
      }
    }
  }
  close(fd);
  if (!why.empty()) {
    *error = why;
    return std::nullopt;
  }
  return text;
}

std::optional<BrokerConfig> LoadBrokerConfig(const std::string& path, std::string* error) {
  std::string why;
  std::optional<std::string> text = ReadRegularFile(path, kMaxConfigBytes, &why);
  if (!text) {
    *error = path + ": cannot read the config file: " + why;
    return std::nullopt;
  }
  return ParseBrokerConfig(*text, path, error);
}

std::string ProfilesUnfit(const BrokerConfig& config, const std::vector<uint64_t>& gpu_memory_bytes) {
  if (gpu_memory_bytes.empty()) return "";
  std::vector<InstanceGpu> gpus;
  std::vector<int> all;
  for (uint64_t m : gpu_memory_bytes) {
    all.push_back(static_cast<int>(gpus.size()));
    gpus.push_back(InstanceGpu{m, 0});
  }
  for (const auto& [name, p] : config.profiles) {
    const InstanceFit fit = FitInstance(name, p, gpus, {}, config.reserved, all);
    if (fit.gpus.empty())
      return p.where + ": profiles." + name + ": not one instance fits an empty GPU of this node beside what [node] " +
             "reserves (" + fit.refusal + ")";
  }
  return "";
}

TenantTerms ResolveTenant(const BrokerConfig& config, const std::string& tenant, uint32_t uid, double asked_weight,
                          std::optional<uint64_t> asked_cap, std::optional<uint32_t> gid, bool by_socket) {
  TenantTerms terms;
  terms.weight = asked_weight;
  terms.memory_cap = asked_cap;
  auto it = config.tenants.find(tenant);
  if (it == config.tenants.end()) return terms;  // created on first use, on the client's terms
  const TenantPolicy& p = it->second;
  const bool uid_listed = p.uids && std::find(p.uids->begin(), p.uids->end(), uid) != p.uids->end();
  const bool gid_listed = p.gids && gid && std::find(p.gids->begin(), p.gids->end(), *gid) != p.gids->end();
  if (!by_socket && (p.uids || p.gids) && !uid_listed && !gid_listed) {
    terms.refusal = "uid " + std::to_string(uid) + (gid ? " (gid " + std::to_string(*gid) + ")" : std::string()) +
                    " may not use tenant \"" + tenant + "\"";
    return terms;
  }
  if (p.weight)
    terms.weight = *p.weight;
  else if (p.max_weight)
    terms.weight = std::min(asked_weight, *p.max_weight);
  if (p.memory)
    terms.memory_cap = p.memory;
  else if (p.max_memory)
    terms.memory_cap = asked_cap ? std::min(*asked_cap, *p.max_memory) : *p.max_memory;
  terms.gpus = p.gpus;
  return terms;
}

}  // namespace gpushare::broker
