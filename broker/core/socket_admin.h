// The SocketAdmin request (messages.def, docs/containers.md): an administrator (root or
// the broker's uid, on the main socket) asks the broker for a container's own socket,
// binds it to a tenant, or removes it. Parsing and checking are pure; the sockets
// themselves are the daemon's (SocketHost).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace gpushare::broker {

struct SocketAdminRequest {
  enum class Op { kCreate, kBind, kRemove } op = Op::kCreate;
  std::string name;                   // [A-Za-z0-9._-]{1,64}: <dir>/containers/<name>.sock
  std::optional<std::string> tenant;  // create: null means bound later; bind: required
  uint32_t uid = 0;                   // create: the socket file's owner
  uint32_t gid = 0;
  uint32_t mode = 0660;  // create: its permission bits (at most 0777)
};

// A name that may become a file name under the socket directory.
bool ValidSocketName(const std::string& name);

// The request's JSON text: {"op":"create","name":…,"tenant":…|null,"uid":N,"gid":N,
// "mode":"0660"}, {"op":"bind","name":…,"tenant":…}, {"op":"remove","name":…}.
// nullopt with the reason in `error` for anything else.
std::optional<SocketAdminRequest> ParseSocketAdmin(const std::string& text, std::string* error);

// What carries a request out (the daemon); each returns "ok <absolute path>" or
// "refused: why".
class SocketHost {
 public:
  virtual ~SocketHost() = default;
  virtual std::string Carry(const SocketAdminRequest& request) = 0;
};

}  // namespace gpushare::broker
