// The registry of registered clients (see client_registry.h).
#include "client_registry.h"

#include <algorithm>

namespace gpushare::broker {

const ClientRecord* ClientRegistry::Find(ClientId id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : &it->second;
}

bool ClientRegistry::TenantLive(const std::string& tenant) const {
  return std::any_of(clients_.begin(), clients_.end(), [&](const auto& c) { return c.second.tenant == tenant; });
}

bool ClientRegistry::TenantOn(const std::string& tenant, int g) const {
  return std::any_of(clients_.begin(), clients_.end(), [&](const auto& c) {
    return c.second.tenant == tenant &&
           std::find(c.second.physical.begin(), c.second.physical.end(), g) != c.second.physical.end();
  });
}

bool ClientRegistry::JobLive(const std::string& tenant, const std::string& job) const {
  return std::any_of(clients_.begin(), clients_.end(),
                     [&](const auto& c) { return c.second.tenant == tenant && c.second.job == job; });
}

uint64_t ClientRegistry::Promised(int g, const std::string& except_tenant, const NodeLedger& ledger) const {
  std::map<std::string, bool> seen;
  uint64_t promised = 0;
  for (const auto& [id, c] : clients_) {
    if (c.instance) {
      if (c.instance->gpu == g) promised += c.instance->memory_bytes;
      continue;
    }
    if (c.tenant == except_tenant || seen[c.tenant]) continue;
    if (std::find(c.physical.begin(), c.physical.end(), g) == c.physical.end()) continue;
    seen[c.tenant] = true;
    auto cap = ledger.TenantCap(c.tenant);
    promised += cap ? std::max(*cap, ledger.TenantHeld(c.tenant, g)) : ledger.TenantHeld(c.tenant, g);
  }
  return promised;
}

}  // namespace gpushare::broker

namespace gpushare::broker {

uint64_t ClientRegistry::PromisedOutsideInstances(int g, const NodeLedger& ledger) const {
  uint64_t instances = 0;
  for (const auto& [id, c] : clients_)
    if (c.instance && c.instance->gpu == g) instances += c.instance->memory_bytes;
  return Promised(g, "", ledger) - std::min(Promised(g, "", ledger), instances);
}

std::vector<Instance> ClientRegistry::Instances() const {
  std::vector<Instance> out;
  for (const auto& [id, c] : clients_)
    if (c.instance) out.push_back(*c.instance);
  return out;
}

}  // namespace gpushare::broker
