// The broker daemon: the Unix socket, the poll loop, signals (SIGHUP reloads the
// config, SIGTERM/SIGINT stop) and the shared-memory channels around BrokerCore.
#pragma once

#include <string>

namespace gpushare::broker {

struct DaemonOptions {
  std::string config_path;  // "" : the empty config
  std::string socket_path;
};

// Runs until SIGTERM or SIGINT; returns the process exit status.
int RunDaemon(const DaemonOptions& options);

}  // namespace gpushare::broker
