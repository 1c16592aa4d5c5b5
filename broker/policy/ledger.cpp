// The node-wide memory ledger (see ledger.h).
#include "ledger.h"

#include <algorithm>

namespace gpushare::broker {

NodeLedger::NodeLedger(std::vector<uint64_t> gpu_capacity_bytes)
    : capacity_(std::move(gpu_capacity_bytes)), gpu_held_(capacity_.size(), 0) {}

NodeLedger::Tenant& NodeLedger::TenantOf(const std::string& name) {
  Tenant& t = tenants_[name];
  if (t.held.empty()) t.held.assign(capacity_.size(), 0);
  return t;
}

void NodeLedger::SetTenantCap(const std::string& tenant, std::optional<uint64_t> cap_per_gpu) {
  TenantOf(tenant).cap = cap_per_gpu;
}

std::optional<uint64_t> NodeLedger::TenantCap(const std::string& tenant) const {
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? std::nullopt : it->second.cap;
}

bool NodeLedger::AddClient(ClientId id, const std::string& tenant) {
  if (clients_.count(id)) return false;
  TenantOf(tenant);
  clients_[id] = Client{tenant, std::vector<uint64_t>(capacity_.size(), 0), std::nullopt};
  return true;
}

void NodeLedger::SetClientCap(ClientId id, std::optional<uint64_t> cap_per_gpu) {
  if (auto it = clients_.find(id); it != clients_.end()) it->second.cap = cap_per_gpu;
}

NodeLedger::Grant NodeLedger::Take(ClientId id, int gpu, uint64_t bytes) {
  auto it = clients_.find(id);
  if (it == clients_.end() || gpu < 0 || gpu >= gpu_count()) return Grant::kBadRequest;
  Tenant& t = TenantOf(it->second.tenant);
  if (t.cap && (bytes > *t.cap || t.held[gpu] > *t.cap - bytes)) return Grant::kTenantCap;
  const std::optional<uint64_t>& own = it->second.cap;
  if (own && (bytes > *own || it->second.held[gpu] > *own - bytes)) return Grant::kClientCap;
  if (bytes > capacity_[gpu] || gpu_held_[gpu] > capacity_[gpu] - bytes) return Grant::kDeviceFull;
  it->second.held[gpu] += bytes;
  t.held[gpu] += bytes;
  gpu_held_[gpu] += bytes;
  return Grant::kGranted;
}

uint64_t NodeLedger::Give(ClientId id, int gpu, uint64_t bytes) {
  auto it = clients_.find(id);
  if (it == clients_.end() || gpu < 0 || gpu >= gpu_count()) return 0;
  const uint64_t given = std::min(bytes, it->second.held[gpu]);
  it->second.held[gpu] -= given;
  TenantOf(it->second.tenant).held[gpu] -= given;
  gpu_held_[gpu] -= given;
  return given;
}

uint64_t NodeLedger::Room(ClientId id, int gpu) const {
  auto it = clients_.find(id);
  if (it == clients_.end() || gpu < 0 || gpu >= gpu_count()) return 0;
  uint64_t room = capacity_[gpu] - std::min(capacity_[gpu], gpu_held_[gpu]);
  auto t = tenants_.find(it->second.tenant);
  if (t != tenants_.end() && t->second.cap) {
    const uint64_t held = t->second.held[gpu];
    room = std::min(room, *t->second.cap - std::min(*t->second.cap, held));
  }
  if (const std::optional<uint64_t>& own = it->second.cap)
    room = std::min(room, *own - std::min(*own, it->second.held[gpu]));
  return room;
}

uint64_t NodeLedger::Record(ClientId id, int gpu, uint64_t bytes) {
  const uint64_t recorded = std::min(bytes, Room(id, gpu));
  if (recorded == 0) return 0;
  Client& c = clients_.at(id);
  c.held[gpu] += recorded;
  TenantOf(c.tenant).held[gpu] += recorded;
  gpu_held_[gpu] += recorded;
  return recorded;
}

uint64_t NodeLedger::RemoveClient(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return 0;
  uint64_t freed = 0;
  for (int g = 0; g < gpu_count(); ++g) freed += Give(id, g, it->second.held[g]);
  clients_.erase(it);
  return freed;
}

uint64_t NodeLedger::Held(ClientId id, int gpu) const {
  auto it = clients_.find(id);
  return it == clients_.end() || gpu < 0 || gpu >= gpu_count() ? 0 : it->second.held[gpu];
}

uint64_t NodeLedger::TenantHeld(const std::string& tenant, int gpu) const {
  auto it = tenants_.find(tenant);
  return it == tenants_.end() || gpu < 0 || gpu >= gpu_count() ? 0 : it->second.held[gpu];
}

}  // namespace gpushare::broker
