// The meter's database: SQLite in WAL mode, schema versioned by PRAGMA user_version and
// migrated on open. The broker writes what Meter::Take returns in one transaction with
// prepared statements (rows replaced by key, so a row written twice counts once) and
// reads rows back for usage reports and bills (docs/metering.md has the schema).
// Commits do not wait for the disk (WAL, synchronous = NORMAL): a thread of the store's
// own checkpoints the WAL into the database every second on its own connection, so the
// fsyncs a checkpoint makes never stall the daemon's loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/core/metering.h"
#include "broker/policy/billing.h"
#include "broker/policy/meter.h"

struct sqlite3;
struct sqlite3_stmt;

namespace gpushare::broker {

// Where the database is by default: metering.db in the broker's state directory,
// $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/gpushare as root, else
// $XDG_STATE_HOME/gpushare or ~/.local/state/gpushare.
std::string DefaultMeterDatabase();

class MeterStore : public MeterSink {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating it and its directory if need be, mode 0600) and migrates the
  // database; checks it is sound. nullptr with "PATH: why" in `error` otherwise.
  static std::unique_ptr<MeterStore> Open(const std::string& path, std::string* error);
  ~MeterStore() override;
  MeterStore(const MeterStore&) = delete;
  MeterStore& operator=(const MeterStore&) = delete;

  const std::string& path() const { return path_; }
  // One transaction: every row, or none.
  bool Write(const MeterFlush& flush, std::string* error) override;
  // Sessions left open (their broker stopped while they lived), with their last day's row.
  std::optional<std::vector<MeterSnapshot>> OpenSessions(std::string* error);
  // Day rows of days [since_day, until_day), of one tenant or all, with their sessions;
  // by session, then day.
  std::optional<std::vector<UsageRow>> Read(int64_t since_day, int64_t until_day, const std::string& tenant,
                                            std::string* error) override;
  // Deletes day rows before `before_day`, and ended sessions left without any.
  bool Prune(int64_t before_day, std::string* error);

 private:
  MeterStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  void CheckpointLoop(sqlite3* db);
  bool Exec(const char* sql, std::string* error);
  bool Prepare();
  std::string Why(const char* what) const;

  sqlite3* db_;
  std::string path_;
  sqlite3_stmt* upsert_session_ = nullptr;
  sqlite3_stmt* upsert_day_ = nullptr;
  std::mutex mu_;  // stop_, for the checkpoint thread
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread checkpointer_;
};

}  // namespace gpushare::broker
