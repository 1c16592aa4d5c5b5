// BrokerSocketAdmin and AskBroker (see socket_admin.h).
#include "socket_admin.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"

namespace gpushare::k8s {

namespace proto = gpushare::protocol;

namespace {

constexpr int kAdminTimeoutMs = 5000;

}  // namespace

std::optional<BrokerReply> AskBroker(const std::string& socket_path, unsigned type, const std::string& text,
                                     int timeout_ms, std::string* error) {
  const int fd = proto::ConnectUnix(socket_path, error);
  if (fd < 0) return std::nullopt;
  std::vector<uint8_t> buffer;
  std::optional<proto::Message> reply;
  if (proto::SendAll(fd, proto::EncodeText(static_cast<proto::Type>(type), text)))
    reply = proto::Receive(fd, &buffer, timeout_ms, error);
  else
    *error = "cannot send the request";
  close(fd);
  if (!reply) return std::nullopt;
  return BrokerReply{static_cast<unsigned>(reply->type), std::string(reply->payload.begin(), reply->payload.end())};
}

std::optional<std::string> BrokerSocketAdmin::Ask(const std::string& request_json, std::string* error) const {
  auto reply = AskBroker(broker_socket_, static_cast<unsigned>(proto::Type::kSocketAdmin), request_json, kAdminTimeoutMs, error);
  if (!reply) {
    *error = "the broker at " + broker_socket_ + " did not answer: " + *error;
    return std::nullopt;
  }
  if (reply->type != static_cast<unsigned>(proto::Type::kToolReply)) {
    *error = "the broker at " + broker_socket_ + " sent an unexpected reply";
    return std::nullopt;
  }
  if (reply->text.rfind("ok", 0) != 0) {
    // The broker answers "refused: why"; its reason is said once.
    constexpr std::string_view kRefused = "refused: ";
    const bool worded = reply->text.rfind(kRefused, 0) == 0;
    *error = "the broker refused: " + (worded ? reply->text.substr(kRefused.size()) : reply->text);
    return std::nullopt;
  }
  return reply->text.size() > 3 ? reply->text.substr(3) : "";
}

std::optional<std::string> BrokerSocketAdmin::Create(const std::string& name, std::string* error) {
  const nlohmann::json request = {{"op", "create"},    {"name", name},      {"tenant", nullptr},
                                  {"uid", owner_.uid}, {"gid", owner_.gid}, {"mode", owner_.mode}};
  auto path = Ask(request.dump(), error);
  if (path && path->empty()) {
    *error = "the broker made socket " + name + " but did not say where";
    return std::nullopt;
  }
  return path;
}

bool BrokerSocketAdmin::Bind(const std::string& name, const std::string& tenant, std::string* error) {
  return Ask(nlohmann::json{{"op", "bind"}, {"name", name}, {"tenant", tenant}}.dump(), error).has_value();
}

bool BrokerSocketAdmin::Remove(const std::string& name, std::string* error) {
  return Ask(nlohmann::json{{"op", "remove"}, {"name", name}}.dump(), error).has_value();
}

}  // namespace gpushare::k8s
