// The meter's SQLite store against a real database file in a temporary directory:
// round trips, rows written twice counted once, open sessions for a restart, migration
// from an empty file, refusal of a newer schema and of a corrupt file, retention.
#include "broker/io/meter_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

namespace gpushare::broker {
namespace {

constexpr uint64_t kS = 1'000'000'000;
constexpr uint64_t kDec1 = 1'796'083'200ull * kS;  // 2026-12-01T00:00:00Z

class MeterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("gs-meter-store-" + std::to_string(getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    path_ = (dir_ / "sub" / "metering.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<MeterStore> Open() {
    std::string error;
    auto s = MeterStore::Open(path_, &error);
    EXPECT_TRUE(s) << error;
    return s;
  }
  // A statement on the file through SQLite itself: its first column of its first row.
  std::string Query(const std::string& sql) {
    sqlite3* db = nullptr;
    sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
    sqlite3_stmt* s = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_text(s, 0) != nullptr)
      out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  std::filesystem::path dir_;
  std::string path_;
};

MeterSession Identity(int32_t pid, const std::string& tenant) {
  MeterSession s;
  s.pid = pid;
  s.uid = 1000;
  s.tenant = tenant;
  s.job = "train";
  s.gpus = "0,1";
  s.fraction = 0.5;
  return s;
}

TEST_F(MeterStoreTest, CreatesAVersionedWalDatabaseOnlyTheBrokerReads) {
  auto store = Open();
  ASSERT_TRUE(store);
  EXPECT_EQ(Query("PRAGMA user_version"), "1");
  EXPECT_EQ(Query("PRAGMA journal_mode"), "wal");
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(MeterStoreTest, RowsRoundTripAndRewritingCountsOnce) {
  auto store = Open();
  ASSERT_TRUE(store);
  Meter m(1ull << 40);
  const uint64_t a = m.Begin(1, Identity(10, "alice"), kDec1 + 10 * kS);
  const uint64_t b = m.Begin(2, Identity(20, "bob"), kDec1 + 10 * kS);
  m.SetHeld(1, 1ull << 30, kDec1 + 10 * kS);
  m.SetCounters(1, {2 * kS, 7, 1, 4096}, kDec1 + 20 * kS);
  std::string error;
  ASSERT_TRUE(store->Write(m.Take(kDec1 + 20 * kS), &error)) << error;
  m.End(2, kDec1 + 25 * kS);
  const MeterFlush second = m.Take(kDec1 + 30 * kS);
  ASSERT_TRUE(store->Write(second, &error)) << error;
  ASSERT_TRUE(store->Write(second, &error)) << error;  // a retry writes the same rows
  auto rows = store->Read(DayOf(kDec1), DayOf(kDec1) + 1, "", &error);
  ASSERT_TRUE(rows) << error;
  ASSERT_EQ(rows->size(), 2u);
  const UsageRow& ra = (*rows)[0].session.id == a ? (*rows)[0] : (*rows)[1];
  const UsageRow& rb = (*rows)[0].session.id == b ? (*rows)[0] : (*rows)[1];
  EXPECT_EQ(ra.session.tenant, "alice");
  EXPECT_EQ(ra.session.job, "train");
  EXPECT_EQ(ra.session.gpus, "0,1");
  EXPECT_EQ(ra.session.end_ns, 0u);
  EXPECT_EQ(ra.day.wall_ns, 20 * kS);
  EXPECT_DOUBLE_EQ(ra.day.allotted_ns, 10.0 * kS);
  EXPECT_EQ(ra.day.gpu_ns, 2 * kS);
  EXPECT_EQ(ra.day.memory_byte_s(), 20ull << 30);
  EXPECT_EQ(ra.day.launches, 7u);
  EXPECT_EQ(ra.day.copy_bytes, 4096u);
  EXPECT_EQ(rb.session.end_ns, kDec1 + 25 * kS);
  EXPECT_EQ(rb.day.wall_ns, 15 * kS);
  EXPECT_EQ(Query("SELECT count(*) FROM usage"), "2");
  auto only_bob = store->Read(DayOf(kDec1), DayOf(kDec1) + 1, "bob", &error);
  ASSERT_TRUE(only_bob);
  ASSERT_EQ(only_bob->size(), 1u);
  EXPECT_EQ((*only_bob)[0].session.id, b);
  EXPECT_TRUE(store->Read(DayOf(kDec1) + 1, DayOf(kDec1) + 2, "", &error)->empty());
}

TEST_F(MeterStoreTest, OpenSessionsComeBackWithTheirLastDay) {
  uint64_t id;
  {
    auto store = Open();
    Meter m(5);
    id = m.Begin(1, Identity(10, "alice"), kDec1 + kS);
    m.Begin(2, Identity(11, "alice"), kDec1 + kS);
    m.End(2, kDec1 + 2 * kS);
    std::string error;
    ASSERT_TRUE(store->Write(m.Take(kDec1 + 5 * kS), &error)) << error;
  }
  auto store = Open();
  std::string error;
  auto open = store->OpenSessions(&error);
  ASSERT_TRUE(open) << error;
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].session.id, id);
  EXPECT_EQ((*open)[0].session.last_ns, kDec1 + 5 * kS);
  ASSERT_TRUE((*open)[0].last_day);
  EXPECT_EQ((*open)[0].last_day->wall_ns, 4 * kS);
}

TEST_F(MeterStoreTest, AFlushOfAThousandSessionsIsOneTransaction) {
  auto store = Open();
  Meter m(1);
  for (ClientId c = 0; c < 1000; ++c) m.Begin(c, Identity(static_cast<int32_t>(c), "t"), kDec1);
  std::string error;
  ASSERT_TRUE(store->Write(m.Take(kDec1 + kS), &error)) << error;
  EXPECT_EQ(Query("SELECT count(*) FROM sessions"), "1000");
  EXPECT_EQ(Query("SELECT sum(wall_ns) FROM usage"), std::to_string(1000 * kS));
}

TEST_F(MeterStoreTest, TheStoresThreadCheckpointsTheWalIntoTheDatabase) {
  // The writer never checkpoints (no fsync in the daemon's loop): the store's own thread
  // does, every second, so the rows reach the database file itself.
  auto store = Open();
  const uintmax_t empty = std::filesystem::file_size(path_);
  Meter m(1);
  for (ClientId c = 0; c < 1000; ++c) m.Begin(c, Identity(static_cast<int32_t>(c), "t"), kDec1);
  std::string error;
  ASSERT_TRUE(store->Write(m.Take(kDec1 + kS), &error)) << error;
  uintmax_t size = empty;
  for (int i = 0; i < 100 && size < empty + 100'000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    size = std::filesystem::file_size(path_);
  }
  EXPECT_GE(size, empty + 100'000) << "the database file stayed at " << size << " bytes";
}

TEST_F(MeterStoreTest, RetentionDeletesOldDaysAndTheirEndedSessions) {
  auto store = Open();
  Meter m(1);
  m.Begin(1, Identity(1, "t"), kDec1);
  m.End(1, kDec1 + kS);
  m.Begin(2, Identity(2, "t"), kDec1);  // open: kept, with its later days
  std::string error;
  ASSERT_TRUE(store->Write(m.Take(kDec1 + 2 * kNsPerDay + kS), &error));
  ASSERT_TRUE(store->Prune(DayOf(kDec1) + 1, &error)) << error;
  EXPECT_EQ(Query("SELECT count(*) FROM sessions"), "1");
  EXPECT_EQ(Query("SELECT count(*) FROM usage"), "2");
  EXPECT_EQ(Query("SELECT min(day) FROM usage"), std::to_string(DayOf(kDec1) + 1));
}

TEST_F(MeterStoreTest, ACorruptFileIsRefusedNamingIt) {
  std::filesystem::create_directories(dir_ / "sub");
  std::ofstream(path_) << std::string(8192, 'x');
  std::string error;
  EXPECT_FALSE(MeterStore::Open(path_, &error));
  EXPECT_EQ(error.rfind(path_ + ": ", 0), 0u) << error;
  EXPECT_NE(error.find("not a database"), std::string::npos) << error;
}

TEST_F(MeterStoreTest, ANewerSchemaIsRefused) {
  { Open(); }
  Query("PRAGMA user_version = 7");
  std::string error;
  EXPECT_FALSE(MeterStore::Open(path_, &error));
  EXPECT_EQ(error, path_ + ": schema version 7 is newer than this broker's (1)");
}

TEST_F(MeterStoreTest, AnUnwritablePlaceIsRefusedNamingIt) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  path_ = (dir_ / "file" / "metering.db").string();  // under a plain file
  std::string error;
  EXPECT_FALSE(MeterStore::Open(path_, &error));
  EXPECT_EQ(error.rfind(path_ + ": ", 0), 0u) << error;
}

}  // namespace
}  // namespace gpushare::broker
