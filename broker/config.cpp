// Parsing and resolution of the broker's TOML configuration (see config.h).
#include "config.h"

#include <toml++/toml.h>
#include <algorithm>
#include <fstream>
#include <sstream>

#include "units.h"

namespace gpushare::broker {
namespace {

struct ConfigError {
  std::string message;
  int line;
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

BrokerConfig Parse(const toml::table& root) {
  BrokerConfig c;
  CheckKeys(root, "", {"node", "class_weights", "tenants"});
  if (const toml::node* node = root.get("node")) {
    const toml::table* t = node->as_table();
    if (t == nullptr) Fail(*node, "node: expected a table");
    CheckKeys(*t, "node", {"admission", "placement"});
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
      if (s != "least-loaded") Fail(*p, "node.placement: expected \"least-loaded\"");
      c.placement = *s;
    }
  }
  if (const toml::node* node = root.get("class_weights")) {
    const toml::table* t = node->as_table();
    if (t == nullptr) Fail(*node, "class_weights: expected a table");
    CheckKeys(*t, "class_weights", {"compute", "memory"});
    if (const toml::node* n = t->get("compute")) c.compute_weight = PositiveNumber(*n, "class_weights.compute");
    if (const toml::node* n = t->get("memory")) c.memory_weight = PositiveNumber(*n, "class_weights.memory");
  }
  if (const toml::node* node = root.get("tenants")) {
    const toml::table* tenants = node->as_table();
    if (tenants == nullptr) Fail(*node, "tenants: expected a table of tenants");
    for (const auto& [name, tnode] : *tenants) {
      const std::string field = "tenants." + std::string(name.str());
      const toml::table* t = tnode.as_table();
      if (t == nullptr) Fail(tnode, field + ": expected a table");
      CheckKeys(*t, field, {"weight", "max_weight", "memory", "max_memory", "gpus", "uids"});
      TenantPolicy p;
      if (const toml::node* n = t->get("weight")) p.weight = PositiveNumber(*n, field + ".weight");
      if (const toml::node* n = t->get("max_weight")) p.max_weight = PositiveNumber(*n, field + ".max_weight");
      if (const toml::node* n = t->get("memory")) p.memory = Bytes(*n, field + ".memory");
      if (const toml::node* n = t->get("max_memory")) p.max_memory = Bytes(*n, field + ".max_memory");
      if (const toml::node* n = t->get("gpus")) p.gpus = IntList<int>(*n, field + ".gpus", 0, 1023);
      if (const toml::node* n = t->get("uids")) p.uids = IntList<uint32_t>(*n, field + ".uids", 0, 4294967294);
      c.tenants[std::string(name.str())] = p;
    }
  }
  return c;
}

}  // namespace

std::optional<BrokerConfig> ParseBrokerConfig(const std::string& text, const std::string& source, std::string* error) {
  try {
    toml::table root = toml::parse(text, source);
    return Parse(root);
  } catch (const toml::parse_error& e) {
    *error = source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
  } catch (const ConfigError& e) {
    *error = source + ":" + std::to_string(e.line) + ": " + e.message;
  }
  return std::nullopt;
}

std::optional<BrokerConfig> LoadBrokerConfig(const std::string& path, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot read the config file";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseBrokerConfig(ss.str(), path, error);
}

TenantTerms ResolveTenant(const BrokerConfig& config, const std::string& tenant, uint32_t uid, double asked_weight,
                          std::optional<uint64_t> asked_cap) {
  TenantTerms terms;
  terms.weight = asked_weight;
  terms.memory_cap = asked_cap;
  auto it = config.tenants.find(tenant);
  if (it == config.tenants.end()) return terms;  // created on first use, on the client's terms
  const TenantPolicy& p = it->second;
  if (p.uids && std::find(p.uids->begin(), p.uids->end(), uid) == p.uids->end()) {
    terms.refusal = "uid " + std::to_string(uid) + " may not use tenant \"" + tenant + "\"";
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
