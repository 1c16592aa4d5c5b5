// The broker's logic, without I/O: connections come and go, bytes arrive, replies
// and grants go out. Registration (who, which tenant, which GPUs, what caps), the
// node ledger's Take/Give, hang-up reclaim, config reload and the status report all
// live here, so that the daemon (daemon.cpp) is only sockets and the fuzz target can
// drive exactly what a hostile client reaches.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "gpu_inventory.h"
#include "ledger.h"
#include "protocol.h"

namespace gpushare::broker {

// Who is at the other end of a connection, as the kernel says (SO_PEERCRED).
struct PeerCredentials {
  int32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// What a client is granted, as published into its shared-memory channel.
struct Grants {
  double weight = 1;
  std::vector<uint64_t> cap_bytes;          // per virtual GPU; 0: uncapped
  std::vector<uint64_t> tenant_held_bytes;  // per virtual GPU
};

// Where the core puts per-client channels (the daemon: shared memory; tests: a fake).
class ChannelHost {
 public:
  virtual ~ChannelHost() = default;
  // Creates the client's channel; returns its name, or "" if none could be made.
  virtual std::string Create(ClientId id, const PeerCredentials& peer) = 0;
  virtual void Publish(ClientId id, const Grants& grants) = 0;
  virtual void Destroy(ClientId id) = 0;
};

struct ClientRecord {
  PeerCredentials peer;
  std::string tenant;
  std::string job;
  int rank = -1;
  double weight = 1;
  std::vector<int> physical;          // virtual i -> physical GPU
  std::optional<uint64_t> cap_bytes;  // per GPU, the tenant's
  std::string channel;
};

class BrokerCore {
 public:
  BrokerCore(BrokerConfig config, std::vector<GpuInfo> gpus, ChannelHost* channels);

  // A connection's life. `Input` handles every whole message in `buffer` (consuming
  // it) and appends the replies to `out`; it returns false when the peer is to be
  // dropped (malformed bytes, a protocol breach), with the reason in `error`.
  void Open(ClientId conn, const PeerCredentials& peer);
  bool Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error);
  // The peer hung up: every byte it held returns to the ledger. Returns the bytes freed.
  uint64_t Close(ClientId conn);

  // A new configuration: tenants' weights and caps as it says from now on.
  void Reload(BrokerConfig config);

  std::string StatusJson() const;
  const ClientRecord* Client(ClientId conn) const;
  size_t client_count() const { return clients_.size(); }
  const NodeLedger& ledger() const { return ledger_; }

 private:
  protocol::Welcome Register(ClientId conn, const PeerCredentials& peer, const protocol::Hello& hello);
  protocol::TakeReply Take(ClientId conn, const protocol::Take& take);
  void Give(ClientId conn, const protocol::Give& give);
  // What GPU `g` has been promised to capped tenants with clients on it.
  uint64_t Promised(int g, const std::string& except_tenant) const;
  bool TenantOn(const std::string& tenant, int g) const;
  void PublishTenant(const std::string& tenant);
  Grants GrantsOf(const ClientRecord& c) const;

  BrokerConfig config_;
  std::vector<GpuInfo> gpus_;
  ChannelHost* channels_;
  NodeLedger ledger_;
  std::map<ClientId, PeerCredentials> connections_;  // open, not (yet) registered
  std::map<ClientId, ClientRecord> clients_;
};

}  // namespace gpushare::broker
