// The default socket path, decided once (see socket_path.h).
#include "socket_path.h"

#include <unistd.h>

#include <cstdlib>

namespace gpushare {

std::string ResolveSocketPath(const std::optional<std::string>& gpushare_socket,
                              const std::optional<std::string>& xdg_runtime_dir) {
  if (gpushare_socket && !gpushare_socket->empty()) return *gpushare_socket;
  if (xdg_runtime_dir && !xdg_runtime_dir->empty()) return *xdg_runtime_dir + "/gpushare/broker.sock";
  return kSystemSocketPath;
}

std::string ResolveClientSocketPath(const std::optional<std::string>& gpushare_socket,
                                    const std::optional<std::string>& xdg_runtime_dir,
                                    const std::function<bool(const std::string&)>& exists) {
  std::string path = ResolveSocketPath(gpushare_socket, xdg_runtime_dir);
  const bool from_xdg = !(gpushare_socket && !gpushare_socket->empty()) && path != kSystemSocketPath;
  if (from_xdg && !exists(path) && exists(kSystemSocketPath)) return kSystemSocketPath;
  return path;
}

namespace {
std::optional<std::string> Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::nullopt : std::optional<std::string>(v);
}
}  // namespace

std::string DefaultSocketPath() { return ResolveSocketPath(Env("GPUSHARE_SOCKET"), Env("XDG_RUNTIME_DIR")); }

std::string DefaultClientSocketPath() {
  return ResolveClientSocketPath(Env("GPUSHARE_SOCKET"), Env("XDG_RUNTIME_DIR"),
                                 [](const std::string& p) { return access(p.c_str(), F_OK) == 0; });
}

std::string DefaultManagerSocketPath() {
  if (auto s = Env("GPUSHARE_MANAGER_SOCKET"); s && !s->empty()) return *s;
  if (auto x = Env("XDG_RUNTIME_DIR"); x && !x->empty()) return *x + "/gpushare/manager.sock";
  return "/run/gpushare/manager.sock";
}

}  // namespace gpushare
