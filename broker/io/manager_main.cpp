// gpushare-manager --config FILE [--socket PATH] [--name NAME]: the cluster's
// active/standby manager (docs/cluster.md).
#include <cstdio>
#include <string>

#include "common/base/socket_path.h"
#include "common/base/version.h"
#include "manager.h"

int main(int argc, char** argv) {
  gpushare::broker::ManagerOptions options;
  options.socket_path = gpushare::DefaultManagerSocketPath();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--config" || arg == "--socket" || arg == "--name") && i + 1 < argc) {
      (arg == "--config" ? options.config_path : arg == "--socket" ? options.socket_path : options.name) = argv[++i];
    } else if (arg == "--version") {
      gpushare::PrintVersion("gpushare-manager");
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      std::printf(
          "usage: gpushare-manager --config FILE [--socket PATH] [--name NAME]\n"
          "  --config FILE  [cluster] (zookeeper, name, session_timeout_ms, tenants), [billing],\n"
          "                 [tenants] (who may read usage): the brokers' format (docs/cluster.md)\n"
          "  --socket PATH  where gpushare-smi --cluster asks (default: $GPUSHARE_MANAGER_SOCKET,\n"
          "                 else $XDG_RUNTIME_DIR/gpushare/manager.sock, else /run/gpushare/manager.sock)\n"
          "  --name NAME    this manager in the election (default: host name and pid)\n"
          "  --version      print the version and exit\n"
          "  -h, --help     this help\n");
      return 0;
    } else {
      std::fprintf(stderr, "gpushare-manager: unknown or incomplete argument \"%s\" (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (options.config_path.empty()) {
    std::fprintf(stderr, "gpushare-manager: --config FILE is required (see --help)\n");
    return 2;
  }
  return gpushare::broker::RunManager(options);
}
