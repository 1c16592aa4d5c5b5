// The meter's SQLite database (see meter_store.h).
#include "meter_store.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

namespace gpushare::broker {
namespace {

// Each schema version's step from the one before; a database at version N runs steps N+1...
constexpr const char* kMigrations[] = {
    // 1: sessions and their usage per UTC day (docs/metering.md).
    "CREATE TABLE sessions ("
    "  id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, uid INTEGER NOT NULL, tenant TEXT NOT NULL,"
    "  job TEXT NOT NULL, profile TEXT NOT NULL, gpus TEXT NOT NULL, start_ns INTEGER NOT NULL,"
    "  end_ns INTEGER, last_ns INTEGER NOT NULL, held_bytes INTEGER NOT NULL, fraction REAL NOT NULL);"
    "CREATE INDEX sessions_open ON sessions(end_ns) WHERE end_ns IS NULL;"
    "CREATE TABLE usage ("
    "  session_id INTEGER NOT NULL REFERENCES sessions(id), day INTEGER NOT NULL,"
    "  wall_ns INTEGER NOT NULL, allotted_ns INTEGER NOT NULL, gpu_ns INTEGER NOT NULL,"
    "  memory_byte_s INTEGER NOT NULL, launches INTEGER NOT NULL, copies INTEGER NOT NULL,"
    "  copy_bytes INTEGER NOT NULL, PRIMARY KEY (session_id, day)) WITHOUT ROWID;"
    "CREATE INDEX usage_day ON usage(day);",
};
constexpr int kMigrationCount = sizeof kMigrations / sizeof kMigrations[0];
static_assert(kMigrationCount == MeterStore::kSchemaVersion);

constexpr const char* kSessionColumns =
    "s.id, s.pid, s.uid, s.tenant, s.job, s.profile, s.gpus, s.start_ns, s.end_ns, s.last_ns, s.held_bytes, "
    "s.fraction";
constexpr const char* kDayColumns =
    "u.session_id, u.day, u.wall_ns, u.allotted_ns, u.gpu_ns, u.memory_byte_s, u.launches, u.copies, u.copy_bytes";

// Closes a statement at the end of a scope.
struct Statement {
  sqlite3_stmt* s = nullptr;
  ~Statement() { sqlite3_finalize(s); }
};

int64_t I(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t U(sqlite3_stmt* s, int col) { return static_cast<uint64_t>(sqlite3_column_int64(s, col)); }
std::string T(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t == nullptr ? std::string() : reinterpret_cast<const char*>(t);
}

MeterSession SessionAt(sqlite3_stmt* s, int col) {
  MeterSession m;
  m.id = U(s, col);
  m.pid = sqlite3_column_int(s, col + 1);
  m.uid = static_cast<uint32_t>(sqlite3_column_int64(s, col + 2));
  m.tenant = T(s, col + 3);
  m.job = T(s, col + 4);
  m.profile = T(s, col + 5);
  m.gpus = T(s, col + 6);
  m.start_ns = U(s, col + 7);
  m.end_ns = sqlite3_column_type(s, col + 8) == SQLITE_NULL ? 0 : U(s, col + 8);
  m.last_ns = U(s, col + 9);
  m.held_bytes = U(s, col + 10);
  m.fraction = sqlite3_column_double(s, col + 11);
  return m;
}

MeterDay DayAt(sqlite3_stmt* s, int col) {
  MeterDay d;
  d.session_id = U(s, col);
  d.day = sqlite3_column_int64(s, col + 1);
  d.wall_ns = U(s, col + 2);
  d.allotted_ns = static_cast<double>(sqlite3_column_int64(s, col + 3));
  d.gpu_ns = U(s, col + 4);
  d.memory_byte_ns = static_cast<unsigned __int128>(U(s, col + 5)) * 1'000'000'000u;
  d.launches = U(s, col + 6);
  d.copies = U(s, col + 7);
  d.copy_bytes = U(s, col + 8);
  return d;
}

}  // namespace

std::string DefaultMeterDatabase() {
  const auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  std::string dir = env("STATE_DIRECTORY");
  if (!dir.empty()) {
    dir = dir.substr(0, dir.find(':'));  // systemd lists one per StateDirectory= entry
  } else if (geteuid() == 0) {
    dir = "/var/lib/gpushare";
  } else if (!env("XDG_STATE_HOME").empty()) {
    dir = env("XDG_STATE_HOME") + "/gpushare";
  } else {
    dir = env("HOME").empty() ? std::string("/tmp/gpushare-") + std::to_string(geteuid())
                              : env("HOME") + "/.local/state/gpushare";
  }
  return dir + "/metering.db";
}

std::unique_ptr<MeterStore> MeterStore::Open(const std::string& path, std::string* error) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      *error = path + ": cannot create its directory: " + ec.message();
      return nullptr;
    }
    chmod(parent.c_str(), 0700);
  }
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    *error = path + ": cannot open: " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return nullptr;
  }
  std::unique_ptr<MeterStore> store(new MeterStore(db, path));
  // Usage is the tenants' business: the file is the broker's alone (its WAL and shm
  // files take the same mode).
  chmod(path.c_str(), 0600);
  sqlite3_busy_timeout(db, 2000);
  int version = 0;
  {
    Statement s;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s.s, nullptr) != SQLITE_OK ||
        sqlite3_step(s.s) != SQLITE_ROW) {
      *error = store->Why("is not a usable SQLite database");
      return nullptr;
    }
    version = sqlite3_column_int(s.s, 0);
  }
  if (version > kSchemaVersion) {
    *error = path + ": schema version " + std::to_string(version) + " is newer than this broker's (" +
             std::to_string(kSchemaVersion) + ")";
    return nullptr;
  }
  {
    Statement s;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s.s, nullptr) != SQLITE_OK ||
        sqlite3_step(s.s) != SQLITE_ROW || T(s.s, 0) != "wal") {
      *error = store->Why("cannot use write-ahead logging");
      return nullptr;
    }
  }
  // Durable at each checkpoint; a power cut may lose the last transactions, never corrupt.
  if (!store->Exec("PRAGMA synchronous=NORMAL", error)) return nullptr;
  {
    Statement s;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s.s, nullptr) != SQLITE_OK ||
        sqlite3_step(s.s) != SQLITE_ROW || T(s.s, 0) != "ok") {
      *error = path + ": is corrupt (" + (s.s != nullptr ? T(s.s, 0) : std::string(sqlite3_errmsg(db))) + ")";
      return nullptr;
    }
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    const std::string step =
        std::string("BEGIN IMMEDIATE;") + kMigrations[v] + "PRAGMA user_version=" + std::to_string(v + 1) + ";COMMIT;";
    if (!store->Exec(step.c_str(), error)) {
      store->Exec("ROLLBACK", nullptr);
      return nullptr;
    }
  }
  if (!store->Prepare()) {
    *error = store->Why("cannot prepare its statements");
    return nullptr;
  }
  // Checkpoints (and their fsyncs) are the checkpoint thread's, not the writer's.
  if (!store->Exec("PRAGMA wal_autocheckpoint=0", error)) return nullptr;
  sqlite3* checkpoint_db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &checkpoint_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    *error = path + ": cannot open a second connection: " + sqlite3_errmsg(checkpoint_db);
    sqlite3_close(checkpoint_db);
    return nullptr;
  }
  sqlite3_busy_timeout(checkpoint_db, 2000);
  // A connection learns the file is in WAL mode when it first reads it; until then a
  // checkpoint on it does nothing.
  sqlite3_exec(checkpoint_db, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  store->checkpointer_ = std::thread([s = store.get(), checkpoint_db] { s->CheckpointLoop(checkpoint_db); });
  return store;
}

void MeterStore::CheckpointLoop(sqlite3* db) {
  // Signals are the daemon's loop's (signalfd), never this thread's.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    const bool last = stop_;
    lock.unlock();
    // PASSIVE: copies what no reader needs, never waits for the writer.
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    lock.lock();
    if (last) break;
  }
  sqlite3_close(db);
}

MeterStore::~MeterStore() {
  if (checkpointer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    checkpointer_.join();
  }
  sqlite3_finalize(upsert_session_);
  sqlite3_finalize(upsert_day_);
  sqlite3_close(db_);
}

std::string MeterStore::Why(const char* what) const { return path_ + ": " + what + " (" + sqlite3_errmsg(db_) + ")"; }

bool MeterStore::Exec(const char* sql, std::string* error) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) == SQLITE_OK) return true;
  if (error != nullptr) *error = path_ + ": " + (message != nullptr ? message : "failed");
  sqlite3_free(message);
  return false;
}

bool MeterStore::Prepare() {
  return sqlite3_prepare_v3(db_,
                            "INSERT INTO sessions (id, pid, uid, tenant, job, profile, gpus, start_ns, end_ns, last_ns,"
                            " held_bytes, fraction) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                            " ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, end_ns = excluded.end_ns,"
                            " last_ns = excluded.last_ns, held_bytes = excluded.held_bytes,"
                            " fraction = excluded.fraction",
                            -1, SQLITE_PREPARE_PERSISTENT, &upsert_session_, nullptr) == SQLITE_OK &&
         sqlite3_prepare_v3(db_,
                            "INSERT OR REPLACE INTO usage (session_id, day, wall_ns, allotted_ns, gpu_ns,"
                            " memory_byte_s, launches, copies, copy_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            -1, SQLITE_PREPARE_PERSISTENT, &upsert_day_, nullptr) == SQLITE_OK;
}

bool MeterStore::Write(const MeterFlush& flush, std::string* error) {
  if (flush.sessions.empty() && flush.days.empty()) return true;
  if (!Exec("BEGIN IMMEDIATE", error)) return false;
  const auto failed = [&](sqlite3_stmt* s) {
    *error = Why("cannot write usage");
    sqlite3_reset(s);
    Exec("ROLLBACK", nullptr);
    return false;
  };
  for (const MeterSession& m : flush.sessions) {
    sqlite3_stmt* s = upsert_session_;
    sqlite3_bind_int64(s, 1, I(m.id));
    sqlite3_bind_int64(s, 2, m.pid);
    sqlite3_bind_int64(s, 3, m.uid);
    sqlite3_bind_text(s, 4, m.tenant.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, m.job.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, m.profile.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, m.gpus.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, I(m.start_ns));
    if (m.end_ns == 0)
      sqlite3_bind_null(s, 9);
    else
      sqlite3_bind_int64(s, 9, I(m.end_ns));
    sqlite3_bind_int64(s, 10, I(m.last_ns));
    sqlite3_bind_int64(s, 11, I(m.held_bytes));
    sqlite3_bind_double(s, 12, m.fraction);
    if (sqlite3_step(s) != SQLITE_DONE) return failed(s);
    sqlite3_reset(s);
  }
  for (const MeterDay& d : flush.days) {
    sqlite3_stmt* s = upsert_day_;
    sqlite3_bind_int64(s, 1, I(d.session_id));
    sqlite3_bind_int64(s, 2, d.day);
    sqlite3_bind_int64(s, 3, I(d.wall_ns));
    sqlite3_bind_int64(s, 4, std::llround(d.allotted_ns));
    sqlite3_bind_int64(s, 5, I(d.gpu_ns));
    sqlite3_bind_int64(s, 6, I(d.memory_byte_s()));
    sqlite3_bind_int64(s, 7, I(d.launches));
    sqlite3_bind_int64(s, 8, I(d.copies));
    sqlite3_bind_int64(s, 9, I(d.copy_bytes));
    if (sqlite3_step(s) != SQLITE_DONE) return failed(s);
    sqlite3_reset(s);
  }
  return Exec("COMMIT", error) || (Exec("ROLLBACK", nullptr), false);
}

std::optional<std::vector<MeterSnapshot>> MeterStore::OpenSessions(std::string* error) {
  const std::string sql = std::string("SELECT ") + kSessionColumns + ", " + kDayColumns +
                          " FROM sessions s LEFT JOIN usage u ON u.session_id = s.id AND u.day = s.last_ns / " +
                          std::to_string(kNsPerDay) + " WHERE s.end_ns IS NULL ORDER BY s.id";
  Statement s;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) {
    *error = Why("cannot read open sessions");
    return std::nullopt;
  }
  std::vector<MeterSnapshot> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    MeterSnapshot snap{SessionAt(s.s, 0), std::nullopt};
    if (sqlite3_column_type(s.s, 12) != SQLITE_NULL) snap.last_day = DayAt(s.s, 12);
    out.push_back(std::move(snap));
  }
  if (rc != SQLITE_DONE) {
    *error = Why("cannot read open sessions");
    return std::nullopt;
  }
  return out;
}

std::optional<std::vector<UsageRow>> MeterStore::Read(int64_t since_day, int64_t until_day, const std::string& tenant,
                                                      std::string* error) {
  const std::string sql = std::string("SELECT ") + kSessionColumns + ", " + kDayColumns +
                          " FROM usage u JOIN sessions s ON s.id = u.session_id WHERE u.day >= ?1 AND u.day < ?2" +
                          (tenant.empty() ? "" : " AND s.tenant = ?3") + " ORDER BY u.session_id, u.day";
  Statement s;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) {
    *error = Why("cannot read usage");
    return std::nullopt;
  }
  sqlite3_bind_int64(s.s, 1, since_day);
  sqlite3_bind_int64(s.s, 2, until_day);
  if (!tenant.empty()) sqlite3_bind_text(s.s, 3, tenant.c_str(), -1, SQLITE_STATIC);
  std::vector<UsageRow> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) out.push_back(UsageRow{SessionAt(s.s, 0), DayAt(s.s, 12)});
  if (rc != SQLITE_DONE) {
    *error = Why("cannot read usage");
    return std::nullopt;
  }
  return out;
}

bool MeterStore::Prune(int64_t before_day, std::string* error) {
  const std::string sql = "BEGIN IMMEDIATE; DELETE FROM usage WHERE day < " + std::to_string(before_day) +
                          "; DELETE FROM sessions WHERE end_ns IS NOT NULL AND id NOT IN"
                          " (SELECT session_id FROM usage); COMMIT;";
  if (Exec(sql.c_str(), error)) return true;
  Exec("ROLLBACK", nullptr);
  return false;
}

}  // namespace gpushare::broker
