// The broker's listening sockets: the main one, one per tenant whose config asks for it
// (tenants/<tenant>.sock beside the main socket) and one per container made by a
// SocketAdmin request (containers/<name>.sock). Which one a peer reached is the trusted
// half of its identity (docs/threat-model.md): Identify turns it into PeerCredentials.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/socket_admin.h"
#include "broker/policy/config.h"

namespace gpushare::broker {

struct Listener {
  int fd = -1;
  std::string path;
  SocketKind kind = SocketKind::kMain;
  std::string name;    // the tenant's or the container's ("" for the main socket)
  std::string tenant;  // who reaches it ("" : the main socket, or a container's not bound yet)
};

class SocketListeners : public SocketHost {
 public:
  // `main_path`: the main socket; the others go in tenants/ and containers/ beside it.
  explicit SocketListeners(std::string main_path);
  ~SocketListeners() override;  // every socket closed and its file removed
  SocketListeners(const SocketListeners&) = delete;
  SocketListeners& operator=(const SocketListeners&) = delete;

  // Binds the main socket (refusing to steal one a live broker answers on); false with the reason.
  bool OpenMain(const SocketsConfig& sockets, std::string* error);
  // The tenants' sockets as `config` says: new ones made, ones it no longer names
  // closed (their clients keep running), permissions applied again; the main socket's
  // too. Problems are logged; containers' sockets are untouched.
  void Configure(const BrokerConfig& config);
  // SocketAdmin (socket_admin.h).
  std::string Carry(const SocketAdminRequest& request) override;

  const std::map<int, Listener>& by_fd() const { return by_fd_; }
  // Who a peer that connected through `path` is, beside what the kernel says of it.
  // A listener removed since keeps the identity it gave at accept (`known`).
  PeerCredentials Identify(const std::string& path, const PeerCredentials& known) const;
  std::string PathOf(int fd) const { return by_fd_.at(fd).path; }

 private:
  int Bind(const std::string& path, uid_t owner, gid_t group, uint32_t mode, std::string* error) const;
  void Close(int fd);
  Listener* Find(SocketKind kind, const std::string& name);

  std::string main_path_;
  std::string directory_;
  std::map<int, Listener> by_fd_;
};

// A Unix stream socket bound at `path`, given `owner`:`group` and `mode`, and only
// then listening: no peer connects before the permissions say who may. A path some
// server still answers on is refused (`who` names it in the error: "a broker"); a
// stale file there is replaced. `socket_flags`: SOCK_NONBLOCK or 0. -1 with `error`.
int ListenUnix(const std::string& path, uid_t owner, gid_t group, uint32_t mode, int socket_flags,
               const std::string& who, std::string* error);

}  // namespace gpushare::broker
