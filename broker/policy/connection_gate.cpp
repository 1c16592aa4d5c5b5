// Connection limits per uid and in all (see connection_gate.h).
#include "connection_gate.h"

#include <algorithm>

namespace gpushare::broker {

ConnectionGate::ConnectionGate(const LimitsConfig& limits, uint32_t broker_uid, uint64_t fd_room)
    : limits_(limits), broker_uid_(broker_uid), fd_room_(fd_room) {}

uint64_t ConnectionGate::Total() const { return std::min<uint64_t>(limits_.max_connections, fd_room_); }

uint32_t ConnectionGate::OpenBy(uint32_t uid) const {
  auto it = by_uid_.find(uid);
  return it == by_uid_.end() ? 0 : it->second;
}

ConnectionGate::Verdict ConnectionGate::Admit(uint32_t uid) {
  const uint64_t total = Total();
  // The reserve is the last places of the total; with a tiny total, at least one
  // place stays open to everyone.
  const uint64_t reserve = std::min<uint64_t>(kPrivilegedReserve, total > 0 ? total - 1 : 0);
  if (open_ >= (Privileged(uid) ? total : total - reserve)) return Verdict::kNodeFull;
  if (OpenBy(uid) >= limits_.max_connections_per_uid) return Verdict::kUidFull;
  ++open_;
  ++by_uid_[uid];
  return Verdict::kAccepted;
}

void ConnectionGate::Closed(uint32_t uid) {
  auto it = by_uid_.find(uid);
  if (it == by_uid_.end()) return;
  if (--it->second == 0) by_uid_.erase(it);
  --open_;
}

}  // namespace gpushare::broker
