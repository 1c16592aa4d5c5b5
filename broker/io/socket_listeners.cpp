// The broker's listening sockets (see socket_listeners.h).
#include "socket_listeners.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "broker_log.h"
#include "common/protocol/socket_io.h"

namespace gpushare::broker {
namespace {

constexpr int kBacklog = 256;

const char* DirectoryOf(SocketKind kind) { return kind == SocketKind::kTenant ? "tenants" : "containers"; }

std::string Octal(uint32_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", mode);
  return text;
}

// The folder of a socket: made if missing, traversable by all (what reaches a socket is its own mode).
bool MakeFolder(const std::filesystem::path& folder, std::string* error) {
  std::error_code ec;
  if (folder.empty() || std::filesystem::exists(folder, ec)) return true;
  std::filesystem::create_directories(folder, ec);
  if (ec) {
    *error = "cannot create " + folder.string() + ": " + ec.message();
    return false;
  }
  chmod(folder.c_str(), 0755);
  return true;
}

}  // namespace

SocketListeners::SocketListeners(std::string main_path)
    : main_path_(std::move(main_path)), directory_(std::filesystem::path(main_path_).parent_path().string()) {}

SocketListeners::~SocketListeners() {
  while (!by_fd_.empty()) Close(by_fd_.begin()->first);
}

int SocketListeners::Bind(const std::string& path, uid_t owner, gid_t group, uint32_t mode, std::string* error) const {
  if (!MakeFolder(std::filesystem::path(path).parent_path(), error)) return -1;
  return ListenUnix(path, owner, group, mode, SOCK_NONBLOCK, "a broker", error);
}

bool SocketListeners::OpenMain(const SocketsConfig& sockets, std::string* error) {
  const int fd = Bind(main_path_, geteuid(), sockets.main_group.value_or(getegid()), sockets.main_mode, error);
  if (fd < 0) return false;
  by_fd_[fd] = Listener{fd, main_path_, SocketKind::kMain, "", ""};
  return true;
}

void SocketListeners::Close(int fd) {
  auto it = by_fd_.find(fd);
  close(fd);
  unlink(it->second.path.c_str());
  by_fd_.erase(it);
}

Listener* SocketListeners::Find(SocketKind kind, const std::string& name) {
  for (auto& [fd, l] : by_fd_)
    if (l.kind == kind && l.name == name) return &l;
  return nullptr;
}

void SocketListeners::Configure(const BrokerConfig& config) {
  const gid_t main_group = config.sockets.main_group.value_or(getegid());
  if (chown(main_path_.c_str(), geteuid(), main_group) != 0 || chmod(main_path_.c_str(), config.sockets.main_mode) != 0)
    Log(LogLevel::kError, "%s: cannot give it group %u mode %s: %s", main_path_.c_str(), main_group,
        Octal(config.sockets.main_mode).c_str(), std::strerror(errno));
  std::vector<int> gone;
  for (const auto& [fd, l] : by_fd_) {
    if (l.kind != SocketKind::kTenant) continue;
    auto policy = config.tenants.find(l.name);
    if (policy == config.tenants.end() || !policy->second.socket) gone.push_back(fd);
  }
  for (int fd : gone) {
    Log(LogLevel::kInfo, "closed %s (its tenant has no socket in the config now; its clients stay)",
        by_fd_.at(fd).path.c_str());
    Close(fd);
  }
  for (const auto& [tenant, policy] : config.tenants) {
    if (!policy.socket) continue;
    const uid_t owner = policy.socket_owner.value_or(geteuid());
    const gid_t group = policy.socket_group.value_or(getegid());
    if (const Listener* l = Find(SocketKind::kTenant, tenant)) {
      if (chown(l->path.c_str(), owner, group) != 0 || chmod(l->path.c_str(), policy.socket_mode) != 0)
        Log(LogLevel::kError, "%s: cannot give it owner %u:%u mode %s: %s", l->path.c_str(), owner, group,
            Octal(policy.socket_mode).c_str(), std::strerror(errno));
      continue;
    }
    const std::string path = directory_ + "/tenants/" + tenant + ".sock";
    std::string error;
    const int fd = Bind(path, owner, group, policy.socket_mode, &error);
    if (fd < 0) {
      Log(LogLevel::kError, "tenant \"%s\": %s", tenant.c_str(), error.c_str());
      continue;
    }
    by_fd_[fd] = Listener{fd, path, SocketKind::kTenant, tenant, tenant};
    Log(LogLevel::kInfo, "tenant \"%s\": listening on %s (owner %u:%u, mode %s)", tenant.c_str(), path.c_str(), owner,
        group, Octal(policy.socket_mode).c_str());
  }
}

std::string SocketListeners::Carry(const SocketAdminRequest& r) {
  Listener* l = Find(SocketKind::kContainer, r.name);
  switch (r.op) {
    case SocketAdminRequest::Op::kCreate: {
      if (l != nullptr) {  // idempotent: the same request again is answered alike
        if (r.tenant && !l->tenant.empty() && *r.tenant != l->tenant)
          return "refused: " + l->path + " is bound to tenant \"" + l->tenant + "\"";
        if (chown(l->path.c_str(), r.uid, r.gid) != 0 || chmod(l->path.c_str(), r.mode) != 0)
          return "refused: " + l->path + ": cannot give it owner " + std::to_string(r.uid) + ":" +
                 std::to_string(r.gid) + " mode " + Octal(r.mode) + ": " + std::strerror(errno);
        if (r.tenant) l->tenant = *r.tenant;
        return "ok " + l->path;
      }
      const std::string path = directory_ + "/containers/" + r.name + ".sock";
      std::string error;
      const int fd = Bind(path, r.uid, r.gid, r.mode, &error);
      if (fd < 0) return "refused: " + error;
      by_fd_[fd] = Listener{fd, path, SocketKind::kContainer, r.name, r.tenant.value_or("")};
      Log(LogLevel::kInfo, "container socket %s made (owner %u:%u, mode %s, tenant %s)", path.c_str(), r.uid, r.gid,
          Octal(r.mode).c_str(), r.tenant ? ("\"" + *r.tenant + "\"").c_str() : "bound later");
      return "ok " + path;
    }
    case SocketAdminRequest::Op::kBind:
      if (l == nullptr) return "refused: no container socket \"" + r.name + "\"";
      if (!l->tenant.empty() && l->tenant != *r.tenant)
        return "refused: " + l->path + " is bound to tenant \"" + l->tenant + "\" already";
      if (l->tenant.empty()) Log(LogLevel::kInfo, "%s bound to tenant \"%s\"", l->path.c_str(), r.tenant->c_str());
      l->tenant = *r.tenant;
      return "ok " + l->path;
    case SocketAdminRequest::Op::kRemove: {
      if (l == nullptr) return "refused: no container socket \"" + r.name + "\"";
      const std::string path = l->path;
      Close(l->fd);
      Log(LogLevel::kInfo, "container socket %s removed (its clients stay)", path.c_str());
      return "ok " + path;
    }
  }
  return "refused: unknown operation";
}

PeerCredentials SocketListeners::Identify(const std::string& path, const PeerCredentials& known) const {
  PeerCredentials peer = known;
  for (const auto& [fd, l] : by_fd_) {
    if (l.path != path) continue;
    peer.via = l.kind;
    peer.socket_tenant = l.tenant;
    peer.socket_name = l.kind == SocketKind::kMain ? "" : std::string(DirectoryOf(l.kind)) + "/" + l.name + ".sock";
    break;
  }
  return peer;
}

int ListenUnix(const std::string& path, uid_t owner, gid_t group, uint32_t mode, int socket_flags,
               const std::string& who, std::string* error) {
  std::string probe_error;
  if (int probe = protocol::ConnectUnix(path, &probe_error); probe >= 0) {
    close(probe);
    *error = who + " is already listening on " + path;
    return -1;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    *error = "socket path too long: " + path;
    return -1;
  }
  unlink(path.c_str());
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | socket_flags | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "cannot bind " + path + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  const bool owned = (owner == geteuid() && group == getegid()) || chown(path.c_str(), owner, group) == 0;
  if (!owned || chmod(path.c_str(), mode) != 0 || listen(fd, kBacklog) != 0) {
    *error = "cannot give " + path + " owner " + std::to_string(owner) + ":" + std::to_string(group) + " mode " +
             Octal(mode) + " and listen: " + std::strerror(errno);
    close(fd);
    unlink(path.c_str());
    return -1;
  }
  return fd;
}

}  // namespace gpushare::broker
