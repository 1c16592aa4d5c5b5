// Where the broker's socket is when no command line names it: the rule of the
// user-facing contract (DESIGN.md), decided here once for the shim, the broker and
// the tools, so no second copy of it can drift.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace gpushare {

// $GPUSHARE_SOCKET, else $XDG_RUNTIME_DIR/gpushare/broker.sock, else
// /run/gpushare/broker.sock; an empty value counts as unset. Pure: the shim passes the
// values its options parser read (shim/options.cpp), the others DefaultSocketPath.
std::string ResolveSocketPath(const std::optional<std::string>& gpushare_socket,
                              const std::optional<std::string>& xdg_runtime_dir);

// The same rule over this process's environment: where the broker listens.
std::string DefaultSocketPath();

inline constexpr char kSystemSocketPath[] = "/run/gpushare/broker.sock";

// Where a client (the shim, a tool) connects: ResolveSocketPath's path, except that one
// taken from $XDG_RUNTIME_DIR with no socket there gives way to the system broker's
// (the service listens at /run/gpushare, and every login session has $XDG_RUNTIME_DIR
// set, so a user's program would otherwise never find it). `exists` asks the file
// system (pure for tests).
std::string ResolveClientSocketPath(const std::optional<std::string>& gpushare_socket,
                                    const std::optional<std::string>& xdg_runtime_dir,
                                    const std::function<bool(const std::string&)>& exists);

// The client rule over this process's environment and file system (the tools).
std::string DefaultClientSocketPath();

// The cluster manager's socket (docs/cluster.md): $GPUSHARE_MANAGER_SOCKET, else
// $XDG_RUNTIME_DIR/gpushare/manager.sock, else /run/gpushare/manager.sock.
std::string DefaultManagerSocketPath();

}  // namespace gpushare
