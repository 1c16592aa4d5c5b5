// A client's weight in the WFQ schedule: its tenant's terms (or a weight set at run
// time with `gpushare-smi set-weight`, until a reload) times its class's weight; and
// the set-weight command itself, with who may give it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/policy/config.h"
#include "broker/policy/scheduler.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

class Weights {
 public:
  Weights(const BrokerConfig* config, ClientRegistry* clients, const WorkTracker* work, Scheduler* scheduler);

  // Who may change weights at run time besides root (the broker's own uid by default).
  void SetAdminUid(uint32_t uid) { admin_uid_ = uid; }
  uint32_t admin_uid() const { return admin_uid_; }

  double Base(const ClientRecord& c) const;  // run-time override, else the tenant's terms
  double Effective(ClientId id) const;       // tenant (or overridden) weight x class weight; an instance's compute
  // Gives the scheduler a scheduled client's effective weight on each of its GPUs.
  void Update(ClientId id);
  // The set-weight command: "ok: ..." or "refused: why".
  std::string Set(const PeerCredentials& peer, const protocol::SetWeight& s);
  // A reload: run-time weights of tenants end.
  void ClearRunTime() { tenant_weight_.clear(); }

 private:
  double ClassWeight(WorkClass c) const;

  const BrokerConfig* config_;
  ClientRegistry* clients_;
  const WorkTracker* work_;
  Scheduler* scheduler_;
  uint32_t admin_uid_;
  std::map<std::string, double> tenant_weight_;  // set at run time, until a reload
};

}  // namespace gpushare::broker
