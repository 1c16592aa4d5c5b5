// The pure parts of the broker's hardening (issue 22): what a config or profile path
// may name, the [limits] section, and who may see which tenant in the status. The
// ledger's bounds on forced and restored holdings are in broker_ledger_test.cpp and
// broker_core_test.cpp; the attacks with real processes in
// tests/integration/hardening_test.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "broker/core/visibility.h"
#include "broker/policy/config.h"
#include "broker/policy/connection_gate.h"

namespace gpushare::broker {
namespace {

struct TempDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("gpushare_hardening_test_" + std::to_string(getpid()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

TEST(ReadRegularFile, RefusesADeviceAFifoADirectoryAndAFileOverTheLimit) {
  TempDir dir;
  std::string error;
  EXPECT_FALSE(ReadRegularFile("/dev/zero", 1 << 20, &error));
  EXPECT_EQ(error, "not a regular file");
  const std::string fifo = (dir.path / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(ReadRegularFile(fifo, 1 << 20, &error));  // returns at once: nobody writes to it
  EXPECT_EQ(error, "not a regular file");
  EXPECT_FALSE(ReadRegularFile(dir.path.string(), 1 << 20, &error));
  EXPECT_EQ(error, "not a regular file");
  const std::string big = dir.Write("big", std::string(101, 'x'));
  EXPECT_FALSE(ReadRegularFile(big, 100, &error));
  EXPECT_EQ(error, "larger than the limit of 100 bytes");
  auto exact = ReadRegularFile(dir.Write("exact", std::string(100, 'y')), 100, &error);
  ASSERT_TRUE(exact) << error;
  EXPECT_EQ(*exact, std::string(100, 'y'));
  EXPECT_FALSE(ReadRegularFile((dir.path / "missing").string(), 100, &error));
  EXPECT_EQ(error, "cannot open: No such file or directory");
}

TEST(ReadRegularFile, ReadsAFileLargerThanOneChunk) {
  TempDir dir;
  std::string text(200000, 'a');
  text[123456] = 'b';
  std::string error;
  auto read = ReadRegularFile(dir.Write("f", text), kMaxConfigBytes, &error);
  ASSERT_TRUE(read) << error;
  EXPECT_EQ(*read, text);
}

TEST(BrokerConfigHardening, AProfileThatIsADeviceOrTooLargeIsRefusedWithFileAndLine) {
  TempDir dir;
  const std::string config = dir.Write("broker.toml", "[classifier]\nprofile = \"/dev/zero\"\n");
  std::string error;
  EXPECT_FALSE(LoadBrokerConfig(config, &error));
  EXPECT_EQ(error, config + ":2: classifier.profile: cannot read /dev/zero: not a regular file");

  const std::string fifo = (dir.path / "kernels.fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  dir.Write("broker.toml", "[classifier]\nprofile = \"kernels.fifo\"\n");
  EXPECT_FALSE(LoadBrokerConfig(config, &error));
  EXPECT_EQ(error, config + ":2: classifier.profile: cannot read " + fifo + ": not a regular file");

  // One byte past the profile's limit, as a sparse file (nothing is written to disk).
  const std::string huge = (dir.path / "huge.txt").string();
  {
    std::ofstream(huge) << "";
  }
  std::filesystem::resize_file(huge, kMaxProfileBytes + 1);
  dir.Write("broker.toml", "[classifier]\nprofile = \"huge.txt\"\n");
  EXPECT_FALSE(LoadBrokerConfig(config, &error));
  EXPECT_EQ(error, config + ":2: classifier.profile: cannot read " + huge + ": larger than the limit of " +
                       std::to_string(kMaxProfileBytes) + " bytes");
}

TEST(BrokerConfigHardening, AConfigThatIsNotARegularFileIsRefused) {
  TempDir dir;
  std::string error;
  EXPECT_FALSE(LoadBrokerConfig("/dev/zero", &error));
  EXPECT_EQ(error, "/dev/zero: cannot read the config file: not a regular file");
  const std::string big = (dir.path / "big.toml").string();
  {
    std::ofstream(big) << "";
  }
  std::filesystem::resize_file(big, kMaxConfigBytes + 1);
  EXPECT_FALSE(LoadBrokerConfig(big, &error));
  EXPECT_EQ(error, big + ": cannot read the config file: larger than the limit of " +
                       std::to_string(kMaxConfigBytes) + " bytes");
}

TEST(BrokerConfigLimits, DefaultsAndValues) {
  std::string error;
  auto d = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->limits.max_connections, 4096u);
  EXPECT_EQ(d->limits.max_connections_per_uid, 256u);
  EXPECT_EQ(d->limits.handshake_timeout_ms, 3000u);
  auto c = ParseBrokerConfig(
      "[limits]\nmax_connections = 100\nmax_connections_per_uid = 8\nhandshake_timeout_ms = 500\n", "broker.toml",
      &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->limits.max_connections, 100u);
  EXPECT_EQ(c->limits.max_connections_per_uid, 8u);
  EXPECT_EQ(c->limits.handshake_timeout_ms, 500u);
}

TEST(BrokerConfigLimits, ErrorsNameFileAndLine) {
  std::string error;
  EXPECT_FALSE(ParseBrokerConfig("[limits]\nmax_connections_per_uid = 0\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:2: limits.max_connections_per_uid: expected an integer from 1 to 1000000");
  EXPECT_FALSE(ParseBrokerConfig("[limits]\n\nhandshake_timeout_ms = \"3s\"\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:3: limits.handshake_timeout_ms: expected an integer from 100 to 600000");
  EXPECT_FALSE(ParseBrokerConfig("[limits]\nmax_connections = 8\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:2: limits.max_connections: expected an integer from 32 to 1000000");
  EXPECT_FALSE(ParseBrokerConfig("[limits]\nmax_conns = 8\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:2: limits.max_conns: unknown key");
  EXPECT_FALSE(ParseBrokerConfig("limits = 3\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:1: limits: expected a table");
}

TEST(ConnectionGate, OneUidIsBoundedAndOthersStillGetIn) {
  LimitsConfig limits;
  limits.max_connections = 100;
  limits.max_connections_per_uid = 3;
  ConnectionGate gate(limits, 500, 1000);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(gate.Admit(1000), ConnectionGate::Verdict::kAccepted);
  EXPECT_EQ(gate.Admit(1000), ConnectionGate::Verdict::kUidFull);
  EXPECT_EQ(gate.OpenBy(1000), 3u);
  EXPECT_EQ(gate.Admit(1001), ConnectionGate::Verdict::kAccepted);
  gate.Closed(1000);
  EXPECT_EQ(gate.Admit(1000), ConnectionGate::Verdict::kAccepted);  // a place came back
  EXPECT_EQ(gate.open(), 4u);
  gate.Closed(4242);  // never admitted: nothing changes
  EXPECT_EQ(gate.open(), 4u);
}

TEST(ConnectionGate, TheLastPlacesAreKeptForRootAndTheBrokersUid) {
  LimitsConfig limits;
  limits.max_connections = 40;
  limits.max_connections_per_uid = 1000;
  ConnectionGate gate(limits, 500, 1'000'000);
  for (int i = 0; i < 40 - 16; ++i) ASSERT_EQ(gate.Admit(1000 + i % 5), ConnectionGate::Verdict::kAccepted);
  EXPECT_EQ(gate.Admit(1000), ConnectionGate::Verdict::kNodeFull);
  EXPECT_TRUE(gate.Listening());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(gate.Admit(0), ConnectionGate::Verdict::kAccepted);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(gate.Admit(500), ConnectionGate::Verdict::kAccepted);
  EXPECT_EQ(gate.Admit(0), ConnectionGate::Verdict::kNodeFull);
  EXPECT_FALSE(gate.Listening());  // the daemon stops polling the listening socket
  gate.Closed(1003);
  EXPECT_TRUE(gate.Listening());
  EXPECT_EQ(gate.Admit(1003), ConnectionGate::Verdict::kNodeFull);  // still in the reserve
  EXPECT_EQ(gate.Admit(0), ConnectionGate::Verdict::kAccepted);
}

TEST(ConnectionGate, TheDescriptorLimitBoundsTheTotal) {
  LimitsConfig limits;  // 4096 by default
  ConnectionGate gate(limits, 500, 20);
  EXPECT_EQ(gate.Total(), 20u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(gate.Admit(1000 + i), ConnectionGate::Verdict::kAccepted);
  EXPECT_EQ(gate.Admit(1000), ConnectionGate::Verdict::kNodeFull);  // 16 kept back
  ConnectionGate none(limits, 500, 0);
  EXPECT_EQ(none.Admit(0), ConnectionGate::Verdict::kNodeFull);
  EXPECT_FALSE(none.Listening());
  ConnectionGate one(limits, 500, 1);
  EXPECT_EQ(one.Admit(1000), ConnectionGate::Verdict::kAccepted);  // a tiny total keeps one place for anyone
}

TEST(Visibility, RootAndTheBrokersUidSeeEveryTenant) {
  const std::vector<uint32_t> uids{1000};
  TenantMembers t{&uids, nullptr, {1000}};
  EXPECT_TRUE(MaySee({0, 0}, 500, t));
  EXPECT_TRUE(MaySee({500, 500}, 500, t));
  EXPECT_TRUE(SeesEverything({500, 7}, 500));
  EXPECT_FALSE(SeesEverything({1000, 0}, 500));  // gid 0 alone is not root
}

TEST(Visibility, AMemberByConfigOrByARunningProcessSeesItsTenant) {
  const std::vector<uint32_t> uids{1000, 1001};
  const std::vector<uint32_t> gids{2000};
  TenantMembers t{&uids, &gids, {1000}};
  EXPECT_TRUE(MaySee({1001, 1001}, 500, t));   // listed uid, no process running
  EXPECT_TRUE(MaySee({1500, 2000}, 500, t));   // listed primary gid
  EXPECT_FALSE(MaySee({1002, 1002}, 500, t));  // neither
  TenantMembers open{nullptr, nullptr, {1003}};
  EXPECT_TRUE(MaySee({1003, 1003}, 500, open));  // runs a process in it
  EXPECT_FALSE(MaySee({1004, 1004}, 500, open));
  TenantMembers empty{};
  EXPECT_FALSE(MaySee({1004, 1004}, 500, empty));
}

TEST(BrokerConfigTenants, GidsAdmitByPrimaryGroup) {
  std::string error;
  auto c = ParseBrokerConfig("[tenants.lab]\nuids = [1000]\ngids = [2000]\n", "b.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(ResolveTenant(*c, "lab", 1000, 1, std::nullopt, 1000).refusal, "");
  EXPECT_EQ(ResolveTenant(*c, "lab", 1500, 1, std::nullopt, 2000).refusal, "");
  EXPECT_EQ(ResolveTenant(*c, "lab", 1500, 1, std::nullopt, 1500).refusal,
            "uid 1500 (gid 1500) may not use tenant \"lab\"");
  auto g = ParseBrokerConfig("[tenants.lab]\ngids = [2000]\n", "b.toml", &error);
  ASSERT_TRUE(g) << error;
  EXPECT_NE(ResolveTenant(*g, "lab", 1000, 1, std::nullopt, 1000).refusal, "");
  EXPECT_EQ(ResolveTenant(*g, "lab", 1000, 1, std::nullopt, 2000).refusal, "");
  EXPECT_FALSE(ParseBrokerConfig("[tenants.lab]\ngids = [-1]\n", "b.toml", &error));
  EXPECT_EQ(error, "b.toml:2: tenants.lab.gids: expected integers from 0 to 4294967294");
}

}  // namespace
}  // namespace gpushare::broker
