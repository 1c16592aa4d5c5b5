// Clients' scheduling weights and the set-weight command (see weights.h).
#include "weights.h"

#include <unistd.h>

#include <cstdio>
#include <vector>

namespace gpushare::broker {

Weights::Weights(const BrokerConfig* config, ClientRegistry* clients, const WorkTracker* work, Scheduler* scheduler)
    : config_(config), clients_(clients), work_(work), scheduler_(scheduler), admin_uid_(geteuid()) {}

double Weights::ClassWeight(WorkClass c) const {
  switch (c) {
    case WorkClass::kCompute: return config_->compute_weight;
    case WorkClass::kMemory: return config_->memory_weight;
    case WorkClass::kCopy: return config_->copy_weight;
    default: return config_->unknown_weight;
  }
}

double Weights::Base(const ClientRecord& c) const {
  if (c.weight_override) return *c.weight_override;
  if (auto t = tenant_weight_.find(c.tenant); t != tenant_weight_.end()) return t->second;
  return c.weight;
}

double Weights::Effective(ClientId id) const {
  const ClientRecord& c = clients_->at(id);
  // An instance's weight is its guaranteed compute fraction, whatever its class: the
  // fractions on a GPU sum to at most 1, so each gets at least its own under contention.
  if (c.instance) return Base(c);
  return Base(c) * ClassWeight(work_->Current(id));
}

void Weights::Update(ClientId id) {
  const ClientRecord& c = clients_->at(id);
  if (!c.scheduled) return;
  const double weight = Effective(id);
  for (size_t v = 0; v < c.physical.size(); ++v) scheduler_->SetWeight(id, static_cast<int>(v), weight);
}

std::string Weights::Set(const PeerCredentials& peer, const protocol::SetWeight& s) {
  if (!IsAdmin(peer, admin_uid_))
    return "refused: only root or the broker's user (uid " + std::to_string(admin_uid_) +
           ") on the main socket may change weights";
  if (s.weight <= 0) return "refused: a weight is a number in (0, 1000]";
  std::vector<ClientId> changed;
  if (s.pid > 0) {
    for (auto& [id, c] : *clients_)
      if (c.peer.pid == s.pid) {
        c.weight_override = s.weight;
        changed.push_back(id);
      }
    if (changed.empty()) return "refused: no client with pid " + std::to_string(s.pid);
  } else {
    if (s.tenant[0] == '\0') return "refused: name a pid or a tenant";
    tenant_weight_[s.tenant] = s.weight;  // its clients to come as well, until a reload
    for (auto& [id, c] : *clients_)
      if (c.tenant == s.tenant) {
        c.weight_override.reset();
        changed.push_back(id);
      }
  }
  for (ClientId id : changed) Update(id);
  char weight[32];
  std::snprintf(weight, sizeof weight, "%g", s.weight);
  return std::string("ok: weight ") + weight + " for " + std::to_string(changed.size()) + " client(s)";
}

}  // namespace gpushare::broker
