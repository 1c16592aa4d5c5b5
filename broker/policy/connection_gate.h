// Who may open one more connection to the broker: at most max_connections in all,
// max_connections_per_uid for one uid, and the last kPrivilegedReserve places kept
// for root and the broker's own uid, so that an unprivileged user holding idle
// connections cannot lock out `gpushare-smi` run by an administrator. Pure: the
// daemon asks at accept and tells it of every close.
#pragma once

#include <cstdint>
#include <map>

#include "config.h"

namespace gpushare::broker {

class ConnectionGate {
 public:
  static constexpr uint32_t kPrivilegedReserve = 16;

  // `fd_room`: connections the process's descriptor limit leaves room for; the
  // smaller of it and limits.max_connections is the total.
  ConnectionGate(const LimitsConfig& limits, uint32_t broker_uid, uint64_t fd_room);
  void SetLimits(const LimitsConfig& limits) { limits_ = limits; }  // a reload; open ones stay

  enum class Verdict { kAccepted, kUidFull, kNodeFull };
  // Counts the connection when accepted.
  Verdict Admit(uint32_t uid);
  void Closed(uint32_t uid);

  // False at the total limit: the daemon then stops polling the listening socket.
  bool Listening() const { return open_ < Total(); }
  uint64_t Total() const;
  uint64_t open() const { return open_; }
  uint32_t OpenBy(uint32_t uid) const;
  bool Privileged(uint32_t uid) const { return uid == 0 || uid == broker_uid_; }

 private:
  LimitsConfig limits_;
  uint32_t broker_uid_;
  uint64_t fd_room_;
  uint64_t open_ = 0;
  std::map<uint32_t, uint32_t> by_uid_;
};

}  // namespace gpushare::broker
