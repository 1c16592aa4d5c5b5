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

#include "broker/policy/config.h"

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

}  // namespace
}  // namespace gpushare::broker
