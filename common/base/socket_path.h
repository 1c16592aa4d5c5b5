// Where the broker's socket is when no command line names it: the rule of the
// user-facing contract (DESIGN.md), decided here once for the shim, the broker and
// the tools, so no second copy of it can drift.
#pragma once

#include <optional>
#include <string>

namespace gpushare {

// $GPUSHARE_SOCKET, else $XDG_RUNTIME_DIR/gpushare/broker.sock, else
// /run/gpushare/broker.sock; an empty value counts as unset. Pure: the shim passes the
// values its options parser read (shim/options.cpp), the others DefaultSocketPath.
std::string ResolveSocketPath(const std::optional<std::string>& gpushare_socket,
                              const std::optional<std::string>& xdg_runtime_dir);

// The same rule over this process's environment (the broker and the tools).
std::string DefaultSocketPath();

// The cluster manager's socket (docs/cluster.md): $GPUSHARE_MANAGER_SOCKET, else
// $XDG_RUNTIME_DIR/gpushare/manager.sock, else /run/gpushare/manager.sock.
std::string DefaultManagerSocketPath();

}  // namespace gpushare
