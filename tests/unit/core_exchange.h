// What a client's connection says to a BrokerCore and hears back, without a socket:
// the core's unit tests (core, placement, instances) feed it bytes and read the replies.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "broker/core/broker_core.h"

namespace gpushare::broker::core_exchange {

// Feeds `bytes` to connection `id` after what `inbox` still holds of earlier input (a
// message split across calls); the replies, or nullopt where the core dropped the client.
inline std::optional<std::vector<protocol::Message>> Exchange(BrokerCore& core, ClientId id,
                                                              std::vector<uint8_t>* inbox,
                                                              const std::vector<uint8_t>& bytes) {
  inbox->insert(inbox->end(), bytes.begin(), bytes.end());
  std::vector<uint8_t> out;
  std::string error;
  if (!core.Input(id, inbox, &out, &error)) return std::nullopt;
  std::vector<protocol::Message> replies;
  while (auto m = protocol::Split(&out, &error)) replies.push_back(*m);
  return replies;
}

}  // namespace gpushare::broker::core_exchange
