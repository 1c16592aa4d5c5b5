// Parsing of the SocketAdmin request (see socket_admin.h).
#include "socket_admin.h"

#include <nlohmann/json.hpp>

namespace gpushare::broker {
namespace {

using nlohmann::json;

constexpr size_t kMaxName = 64;

std::optional<uint32_t> Id(const json& q, const char* key, std::string* error) {
  auto it = q.find(key);
  if (it == q.end() || !it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > UINT32_MAX) {
    *error = std::string("\"") + key + "\": expected an integer from 0 to 4294967295";
    return std::nullopt;
  }
  return static_cast<uint32_t>(it->get<int64_t>());
}

// "0660": octal digits only, at most 0777 (no setuid, setgid or sticky bit on a socket).
std::optional<uint32_t> Mode(const json& q, std::string* error) {
  auto it = q.find("mode");
  if (it == q.end()) return 0660;
  const std::string text = it->is_string() ? it->get<std::string>() : "";
  uint32_t mode = 0;
  bool ok = !text.empty() && text.size() <= 4;
  for (char ch : text) {
    ok = ok && ch >= '0' && ch <= '7';
    mode = mode * 8 + static_cast<uint32_t>(ch - '0');
  }
  if (!ok || mode > 0777) {
    *error = "\"mode\": expected octal permission bits as a string, such as \"0660\" (at most 0777)";
    return std::nullopt;
  }
  return mode;
}

}  // namespace

bool ValidSocketName(const std::string& name) {
  if (name.empty() || name.size() > kMaxName) return false;
  for (char ch : name) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<SocketAdminRequest> ParseSocketAdmin(const std::string& text, std::string* error) {
  const json q = json::parse(text, nullptr, false);
  if (q.is_discarded() || !q.is_object()) {
    *error = "malformed request: expected a JSON object";
    return std::nullopt;
  }
  SocketAdminRequest r;
  const auto op = q.find("op");
  const std::string op_text = op != q.end() && op->is_string() ? op->get<std::string>() : "";
  if (op_text == "create") {
    r.op = SocketAdminRequest::Op::kCreate;
  } else if (op_text == "bind") {
    r.op = SocketAdminRequest::Op::kBind;
  } else if (op_text == "remove") {
    r.op = SocketAdminRequest::Op::kRemove;
  } else {
    *error = "\"op\": expected \"create\", \"bind\" or \"remove\"";
    return std::nullopt;
  }
  const auto name = q.find("name");
  r.name = name != q.end() && name->is_string() ? name->get<std::string>() : "";
  if (!ValidSocketName(r.name)) {
    *error = "\"name\": expected 1 to 64 of A-Z a-z 0-9 . _ -";
    return std::nullopt;
  }
  const auto tenant = q.find("tenant");
  if (tenant != q.end() && tenant->is_string()) {
    r.tenant = tenant->get<std::string>();
    if (!ValidSocketName(*r.tenant)) {
      *error = "\"tenant\": expected 1 to 64 of A-Z a-z 0-9 . _ -";
      return std::nullopt;
    }
  } else if (tenant != q.end() && !tenant->is_null()) {
    *error = "\"tenant\": expected a tenant's name or null";
    return std::nullopt;
  }
  switch (r.op) {
    case SocketAdminRequest::Op::kCreate: {
      auto uid = Id(q, "uid", error);
      auto gid = uid ? Id(q, "gid", error) : std::nullopt;
      auto mode = gid ? Mode(q, error) : std::nullopt;
      if (!mode) return std::nullopt;
      r.uid = *uid;
      r.gid = *gid;
      r.mode = *mode;
      break;
    }
    case SocketAdminRequest::Op::kBind:
      if (!r.tenant) {
        *error = "\"tenant\": bind needs a tenant's name";
        return std::nullopt;
      }
      break;
    case SocketAdminRequest::Op::kRemove: break;
  }
  return r;
}

}  // namespace gpushare::broker
