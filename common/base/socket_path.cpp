// The default socket path, decided once (see socket_path.h).
#include "socket_path.h"

#include <cstdlib>

namespace gpushare {

std::string ResolveSocketPath(const std::optional<std::string>& gpushare_socket,
                              const std::optional<std::string>& xdg_runtime_dir) {
  if (gpushare_socket && !gpushare_socket->empty()) return *gpushare_socket;
  if (xdg_runtime_dir && !xdg_runtime_dir->empty()) return *xdg_runtime_dir + "/gpushare/broker.sock";
  return "/run/gpushare/broker.sock";
}

std::string DefaultSocketPath() {
  auto get = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v == nullptr ? std::nullopt : std::optional<std::string>(v);
  };
  return ResolveSocketPath(get("GPUSHARE_SOCKET"), get("XDG_RUNTIME_DIR"));
}

}  // namespace gpushare
