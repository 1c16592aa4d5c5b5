// The ZooKeeper session (see zk_session.h).
#include "zk_session.h"

// The synchronous API is declared for the multi-threaded library only.
#define THREADED
#include <zookeeper/zookeeper.h>

#include <mutex>

namespace gpushare::broker {
namespace {

// The client's own log would repeat every failed connection attempt on stderr; the
// agent and the manager log the state changes that matter instead.
void QuietClientLog() {
  static std::once_flag once;
  std::call_once(once, [] { zoo_set_debug_level(static_cast<ZooLogLevel>(0)); });
}

// State changes are read with zoo_state when needed; the client wants a watcher anyway.
void IgnoreEvents(zhandle_t*, int, int, const char*, void*) {}

}  // namespace

ZkSession::ZkSession(std::string hosts, uint32_t session_timeout_ms)
    : hosts_(std::move(hosts)), session_timeout_ms_(session_timeout_ms) {
  QuietClientLog();
}

ZkSession::~ZkSession() { Close(); }

void ZkSession::Close() {
  if (zh_ != nullptr) zookeeper_close(zh_);
  zh_ = nullptr;
}

bool ZkSession::connected() const { return zh_ != nullptr && zoo_state(zh_) == ZOO_CONNECTED_STATE; }

bool ZkSession::Ensure() {
  if (zh_ != nullptr) {
    const int state = zoo_state(zh_);
    if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) Close();
  }
  if (zh_ == nullptr) {
    zh_ = zookeeper_init(hosts_.c_str(), IgnoreEvents, static_cast<int>(session_timeout_ms_), nullptr, nullptr, 0);
    if (zh_ == nullptr) return false;
  }
  if (!connected()) return false;
  const clientid_t* id = zoo_client_id(zh_);
  if (id != nullptr && id->client_id != session_id_) {
    session_id_ = id->client_id;
    ++generation_;
  }
  return true;
}

int ZkSession::Get(const std::string& path, std::string* value, int32_t* version) {
  if (zh_ == nullptr) return ZCONNECTIONLOSS;
  value->resize(kMaxZnodeBytes);
  int length = static_cast<int>(value->size());
  Stat stat{};
  const int rc = zoo_get(zh_, path.c_str(), 0, value->data(), &length, &stat);
  value->resize(rc == ZOK && length > 0 ? static_cast<size_t>(length) : 0);
  if (rc == ZOK && version != nullptr) *version = stat.version;
  return rc;
}

int ZkSession::Set(const std::string& path, const std::string& value, int32_t version) {
  if (zh_ == nullptr) return ZCONNECTIONLOSS;
  return zoo_set(zh_, path.c_str(), value.data(), static_cast<int>(value.size()), version);
}

int ZkSession::Create(const std::string& path, const std::string& value, int flags, std::string* created) {
  if (zh_ == nullptr) return ZCONNECTIONLOSS;
  char name[1024];
  const int rc = zoo_create(zh_, path.c_str(), value.data(), static_cast<int>(value.size()), &ZOO_OPEN_ACL_UNSAFE,
                            flags, name, sizeof name);
  if (rc == ZOK && created != nullptr) *created = name;
  return rc;
}

int ZkSession::Delete(const std::string& path, int32_t version) {
  if (zh_ == nullptr) return ZCONNECTIONLOSS;
  return zoo_delete(zh_, path.c_str(), version);
}

int ZkSession::Children(const std::string& path, std::vector<std::string>* names) {
  names->clear();
  if (zh_ == nullptr) return ZCONNECTIONLOSS;
  String_vector children{};
  const int rc = zoo_get_children(zh_, path.c_str(), 0, &children);
  if (rc != ZOK) return rc;
  for (int i = 0; i < children.count; ++i) names->emplace_back(children.data[i]);
  deallocate_String_vector(&children);
  return rc;
}

int ZkSession::EnsurePath(const std::string& path) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = slash == std::string::npos ? path : path.substr(0, slash);
    const int rc = Create(prefix, "", 0);
    if (rc != ZOK && rc != ZNODEEXISTS) return rc;
    if (slash == std::string::npos) return ZOK;
  }
}

std::string ZkSession::ErrorText(int rc) { return zerror(rc); }
int ZkSession::kEphemeral() { return ZOO_EPHEMERAL; }
int ZkSession::kEphemeralSequential() { return ZOO_EPHEMERAL | ZOO_SEQUENCE; }

}  // namespace gpushare::broker
