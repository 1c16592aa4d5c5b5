// A ZooKeeper session over the C client (libzookeeper_mt): the few synchronous calls
// the cluster uses, a session that is re-created when it expires, and values as
// strings. Its calls block the calling thread (at most about the session timeout when
// the ensemble is unreachable): only the cluster agent's and the manager's own threads
// make them, never the broker's loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

typedef struct _zhandle zhandle_t;

namespace gpushare::broker {

// The largest znode value read (ZooKeeper's default limit, jute.maxbuffer, is 1 MiB).
inline constexpr size_t kMaxZnodeBytes = 1 << 20;

class ZkSession {
 public:
  ZkSession(std::string hosts, uint32_t session_timeout_ms);
  ~ZkSession();
  ZkSession(const ZkSession&) = delete;
  ZkSession& operator=(const ZkSession&) = delete;

  // Starts a new session when there is none or the last one expired; true while
  // connected. Ephemeral znodes of an expired session are gone: `generation` changes
  // with each new session so that the caller re-creates them.
  bool Ensure();
  bool connected() const;
  uint64_t generation() const { return generation_; }
  // Closes the session now: its ephemeral znodes go at once (not after the timeout).
  void Close();

  // ZOK or the C client's error (ZNONODE, ZNODEEXISTS, ZBADVERSION, ZCONNECTIONLOSS, ...).
  int Get(const std::string& path, std::string* value, int32_t* version);
  int Set(const std::string& path, const std::string& value, int32_t version);  // -1: any version
  // `flags`: 0, or ZOO_EPHEMERAL and/or ZOO_SEQUENCE; `created` receives the name made.
  int Create(const std::string& path, const std::string& value, int flags, std::string* created = nullptr);
  int Delete(const std::string& path, int32_t version);
  int Children(const std::string& path, std::vector<std::string>* names);
  // Creates `path` and its parents as empty persistent znodes where missing.
  int EnsurePath(const std::string& path);
  // "connection loss" etc.
  static std::string ErrorText(int rc);
  static int kEphemeral();
  static int kEphemeralSequential();

 private:
  std::string hosts_;
  uint32_t session_timeout_ms_;
  zhandle_t* zh_ = nullptr;
  int64_t session_id_ = 0;  // of the session the generation counts
  uint64_t generation_ = 0;
};

}  // namespace gpushare::broker
