// gpushare-broker --config FILE [--socket PATH]: the node daemon.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/base/socket_path.h"
#include "common/base/version.h"
#include "common/protocol/socket_io.h"
#include "daemon.h"

int main(int argc, char** argv) {
  gpushare::broker::DaemonOptions options;
  options.socket_path = gpushare::DefaultSocketPath();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--config" || arg == "--socket") && i + 1 < argc) {
      (arg == "--config" ? options.config_path : options.socket_path) = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      options.config_path = arg.substr(9);
    } else if (arg.rfind("--socket=", 0) == 0) {
      options.socket_path = arg.substr(9);
    } else if (arg == "-h" || arg == "--help") {
      std::printf(
          "usage: gpushare-broker --config FILE [--socket PATH]\n"
          "Shares the node's GPUs between the processes that run under libgpushare.so:\n"
          "places their virtual GPUs, enforces memory caps and schedules GPU time.\n"
          "  --config FILE  tenants, policy (TOML; see docs/configuration.md); SIGHUP reloads it\n"
          "  --socket PATH  where clients connect (default: $GPUSHARE_SOCKET, else\n"
          "                 $XDG_RUNTIME_DIR/gpushare/broker.sock, else /run/gpushare/broker.sock)\n"
          "  -h, --help     this text\n"
          "  --version      the version\n"
          "Under systemd (gpushare-broker.service) it reports readiness with sd_notify.\n");
      return 0;
    } else if (arg == "--version") {
      gpushare::PrintVersion("gpushare-broker");
      return 0;
    } else {
      std::fprintf(stderr, "gpushare-broker: unknown or incomplete argument \"%s\" (see --help)\n", arg.c_str());
      return 2;
    }
  }
  return gpushare::broker::RunDaemon(options);
}
