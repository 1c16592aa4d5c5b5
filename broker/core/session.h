// A connection's messages: split off its bytes, checked against the route messages.def
// gives each type (a second registration, a message before registration, a broker's
// message from a peer: the peer is dropped), and handed to the handler for its type.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/policy/ledger.h"
#include "common/protocol/protocol.h"

namespace gpushare::broker {

// One handler per message a peer may send, generated from messages.def: a request's
// handler returns the payload of its reply, a notice's nothing. A message added there
// without a handler here does not compile.
class MessageHandlers {
 public:
  virtual ~MessageHandlers() = default;
  // Whether the connection has registered (its Hello was accepted).
  virtual bool Registered(ClientId conn) const = 0;

#define GS_REQUEST(name, number, payload, route, reply)                                                      \
  virtual protocol::PayloadOf<protocol::Type::k##reply> On##name(ClientId conn, const PeerCredentials& peer, \
                                                                 const protocol::payload& message) = 0;
#define GS_NOTICE(name, number, payload, route) \
  virtual void On##name(ClientId conn, const PeerCredentials& peer, const protocol::payload& message) = 0;
#define GS_REPLY(name, number, payload)
#include "common/protocol/messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
};

// The open connections and what each peer is (SO_PEERCRED, from the daemon).
class Sessions {
 public:
  explicit Sessions(MessageHandlers* handlers) : handlers_(handlers) {}

  void Open(ClientId conn, const PeerCredentials& peer) { connections_[conn] = peer; }
  void Close(ClientId conn) { connections_.erase(conn); }
  // Handles every whole message in `buffer` (consuming it), appending the replies to
  // `out`; false when the peer is to be dropped, with the reason in `error`.
  bool Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error);

 private:
  bool Dispatch(ClientId conn, const PeerCredentials& peer, const protocol::Message& m, std::vector<uint8_t>* out,
                std::string* error);

  MessageHandlers* handlers_;
  std::map<ClientId, PeerCredentials> connections_;  // open, registered or not
};

}  // namespace gpushare::broker
