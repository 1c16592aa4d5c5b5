// The broker's side of systemd's service protocol (Type=notify in
// deploy/systemd/gpushare-broker.service.in): READY=1 once clients can connect,
// RELOADING=1 … READY=1 around a SIGHUP reload, STOPPING=1 when asked to stop, so that
// `systemctl start/reload` return when the broker is really there. Outside systemd
// ($NOTIFY_SOCKET unset) every call does nothing.
#pragma once

#include <string>

namespace gpushare::broker {

void NotifyReady(const std::string& status);
void NotifyStopping();

// Held over a reload: RELOADING=1 when made, READY=1 when gone, whatever the outcome
// (a refused reload leaves the running config, and the broker ready).
class ReloadNotice {
 public:
  ReloadNotice();
  ~ReloadNotice();
  ReloadNotice(const ReloadNotice&) = delete;
  ReloadNotice& operator=(const ReloadNotice&) = delete;
};

}  // namespace gpushare::broker
