// What the broker's core needs of the per-client channels, as an interface: the daemon
// puts them in shared memory (broker/io/shm_channels.h), tests use a fake. Also who a
// peer is and what the core publishes to a client, the vocabulary both sides share.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "broker/policy/ledger.h"
#include "broker/policy/spatial.h"
#include "common/protocol/channel.h"

namespace gpushare::broker {

// Which kind of the broker's sockets a peer reached (docs/threat-model.md).
enum class SocketKind {
  kMain,       // the main socket: the tenant is asked (GPUSHARE_TENANT), checked against uids/gids
  kTenant,     // a tenant's socket ([tenants.X] socket): the tenant is the socket's
  kContainer,  // a socket made by SocketAdmin: the tenant it is bound to, none before
};

// Who is at the other end of a connection: what the kernel says (SO_PEERCRED) and
// which socket it reached, both from the trusted side.
struct PeerCredentials {
  int32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  SocketKind via = SocketKind::kMain;
  std::string socket_tenant{};  // via a tenant or container socket: its tenant ("" : not bound yet)
  std::string socket_name{};    // via a tenant or container socket: which, for messages ("tenants/x.sock")
};

// Root or the broker's own uid on the main socket: may administer the broker. A peer
// that came through a tenant or container socket never may, whatever its uid (root in
// a container is often uid 0 of the host).
inline bool IsAdmin(const PeerCredentials& peer, uint32_t broker_uid) {
  return peer.via == SocketKind::kMain && (peer.uid == 0 || peer.uid == broker_uid);
}

// What a client is granted, as published into its shared-memory channel.
struct Grants {
  double weight = 1;
  std::vector<uint64_t> cap_bytes;          // per virtual GPU; 0: uncapped
  std::vector<uint64_t> tenant_held_bytes;  // per virtual GPU
};

// What a client's ring lost: records the broker found unreadable or overrun (`lost`),
// and what the client itself could not fit (its summary counters).
struct RingCounts {
  uint64_t lost = 0;
  uint64_t dropped_records = 0;
  uint64_t dropped_copies = 0;
  uint64_t dropped_bytes = 0;
};

// What a client says its collectives (NCCL) took on the GPU: client-written, so
// trusted only as far as the client's own figures go.
struct CollectiveCounts {
  std::vector<uint64_t> ns;  // per virtual GPU
  uint64_t count = 0;
};

// Where the core puts per-client channels (the daemon: shared memory; tests: a fake).
class ChannelHost {
 public:
  virtual ~ChannelHost() = default;
  // Creates the client's channel; returns its name, or "" if none could be made.
  virtual std::string Create(ClientId id, const PeerCredentials& peer) = 0;
  virtual void Publish(ClientId id, const Grants& grants) = 0;
  virtual void Destroy(ClientId id) = 0;
  // The GPU-time gate of a client's virtual GPU (protocol::GateState).
  virtual void SetGate(ClientId, int /*device*/, uint32_t /*state*/, uint64_t /*slice*/) {}
  // The CU mask a client's virtual GPU's new streams are held to (nullopt: none).
  virtual void SetCuMask(ClientId, int /*device*/, const std::optional<CuMask>& /*mask*/) {}
  // The client's new launch records; the text of one of its kernel names.
  virtual size_t Drain(ClientId, const std::function<void(const protocol::RecordData&)>&) { return 0; }
  virtual std::string KernelName(ClientId, uint16_t) { return ""; }
  virtual RingCounts Counts(ClientId) { return {}; }
  virtual CollectiveCounts Collectives(ClientId) { return {}; }
  // The growth of the client's launch tallies since the last call: per (GPU, kind,
  // name, stream), how many launches (`count`) and their bytes (in the record's `bytes`).
  virtual void Tallies(ClientId, const std::function<void(const protocol::RecordData&, uint64_t count)>&) {}
  // What the client says it has allocated on its virtual GPU (the rest of what it
  // holds is its idle lease); nullopt: unknown.
  virtual std::optional<uint64_t> ReportedUsed(ClientId, int /*device*/) { return std::nullopt; }
  // Asks the client to give back the leases it does not use.
  virtual void Recall(ClientId) {}
};

}  // namespace gpushare::broker
