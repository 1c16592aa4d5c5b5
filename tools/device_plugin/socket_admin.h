// The broker's per-container sockets, as the device plugin asks for them: made
// unbound in Allocate (the kubelet does not say which pod it allocates for), bound to
// the pod's namespace once the kubelet's pod resources show it, removed when the
// devices go to another container. An interface so that the plugin's logic is tested
// with a fake; BrokerSocketAdmin speaks the broker's SocketAdmin request.
#pragma once

#include <optional>
#include <string>

namespace gpushare::k8s {

class SocketAdmin {
 public:
  virtual ~SocketAdmin() = default;
  // A new socket `name` with no tenant yet; its host path, or nullopt with `error`.
  virtual std::optional<std::string> Create(const std::string& name, std::string* error) = 0;
  // Binds socket `name` to `tenant`: every client that comes through it is that tenant.
  virtual bool Bind(const std::string& name, const std::string& tenant, std::string* error) = 0;
  virtual bool Remove(const std::string& name, std::string* error) = 0;
};

// Over the broker's main socket: SocketAdmin requests (messages.def; a JSON text that
// broker/core/socket_admin.h parses; only root or the broker's own user may make them),
// each on a fresh connection. The broker answers "ok <path>" or "refused: why".
class BrokerSocketAdmin : public SocketAdmin {
 public:
  struct Owner {
    unsigned uid = 0, gid = 0;
    std::string mode = "0666";  // reachable only where it is mounted: in that container
  };
  BrokerSocketAdmin(std::string broker_socket, Owner owner)
      : broker_socket_(std::move(broker_socket)), owner_(std::move(owner)) {}
  std::optional<std::string> Create(const std::string& name, std::string* error) override;
  bool Bind(const std::string& name, const std::string& tenant, std::string* error) override;
  bool Remove(const std::string& name, std::string* error) override;

 private:
  // The reply's text after "ok ", or nullopt with `error` (the broker's words when it refused).
  std::optional<std::string> Ask(const std::string& request_json, std::string* error) const;
  std::string broker_socket_;
  Owner owner_;
};

// One request over a fresh connection to the broker; the reply's type and text, or
// nullopt with `error` when the broker is not there or did not answer in time.
struct BrokerReply {
  unsigned type = 0;
  std::string text;
};
std::optional<BrokerReply> AskBroker(const std::string& socket_path, unsigned type, const std::string& text,
                                     int timeout_ms, std::string* error);

}  // namespace gpushare::k8s
