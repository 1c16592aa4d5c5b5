// sd_notify from Debian's libsystemd (see service_notify.h). Only the broker links it:
// the shim and the tools never speak to systemd.
#include "service_notify.h"

#include <systemd/sd-daemon.h>

#include <ctime>

namespace gpushare::broker {

void NotifyReady(const std::string& status) { sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str()); }

void NotifyStopping() { sd_notify(0, "STOPPING=1"); }

// systemd (253+, Type=notify-reload) wants the reload's start on CLOCK_MONOTONIC with
// RELOADING=1, to tell this reload from an earlier one; older systemd ignores it.
ReloadNotice::ReloadNotice() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long usec = static_cast<unsigned long long>(ts.tv_sec) * 1'000'000ull +
                                  static_cast<unsigned long long>(ts.tv_nsec) / 1000;
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

ReloadNotice::~ReloadNotice() { sd_notify(0, "READY=1"); }

}  // namespace gpushare::broker
