// A connection's messages, routed as messages.def says (see session.h).
#include "session.h"

namespace gpushare::broker {

namespace proto = gpushare::protocol;

bool Sessions::Input(ClientId conn, std::vector<uint8_t>* buffer, std::vector<uint8_t>* out, std::string* error) {
  auto peer = connections_.find(conn);
  if (peer == connections_.end()) {
    *error = "unknown connection";
    return false;
  }
  for (;;) {
    auto m = proto::Split(buffer, error);
    if (!m) return error->empty();
    if (!Dispatch(conn, peer->second, *m, out, error)) return false;
  }
}

// One check of the route, then the handler the table names (On<Message>).
bool Sessions::Dispatch(ClientId conn, const PeerCredentials& peer, const proto::Message& m, std::vector<uint8_t>* out,
                        std::string* error) {
  const proto::MessageInfo& info = *proto::Describe(static_cast<uint16_t>(m.type));  // Split let no other through
  const bool registered = handlers_->Registered(conn);
  switch (info.route) {
    case proto::Route::kReply:
      *error = "a client sent a broker's message (type " + std::to_string(static_cast<int>(m.type)) + ")";
      return false;
    case proto::Route::kRegister:
      if (registered) {
        *error = std::string("a second ") + info.name + " on one connection";
        return false;
      }
      break;
    case proto::Route::kRegistered:
      if (!registered) {
        *error = std::string(info.name) + " before Hello";
        return false;
      }
      break;
    case proto::Route::kAnyone: break;
  }
  auto append = [out](const std::vector<uint8_t>& bytes) { out->insert(out->end(), bytes.begin(), bytes.end()); };
  switch (m.type) {
#define GS_REQUEST(name, number, payload, route, reply)                                                              \
  case proto::Type::k##name:                                                                                         \
    append(proto::Encode(proto::Type::k##reply, handlers_->On##name(conn, peer, proto::Decode<proto::payload>(m)))); \
    break;
#define GS_NOTICE(name, number, payload, route)                        \
  case proto::Type::k##name:                                           \
    handlers_->On##name(conn, peer, proto::Decode<proto::payload>(m)); \
    break;
#define GS_REPLY(name, number, payload) \
  case proto::Type::k##name:            \
    break;
#include "common/protocol/messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
  }
  return true;
}

}  // namespace gpushare::broker
