// The client's environment options: sizes, per-device caps, visible devices,
// torchrun-derived job identity, the safe readings of malformed values, and how the
// runtimes' own visible-devices masks renumber GPUs.
#include <gtest/gtest.h>

#include "device_map.h"
#include "common/protocol/protocol.h"
#include "options.h"

namespace gpushare {
namespace {

ClientOptions Parse(std::map<std::string, std::string> env) {
  return ParseClientOptions([env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(ParseBytes, AcceptsTheDocumentedForms) {
  EXPECT_EQ(ParseBytes("4GiB"), 4ull << 30);
  EXPECT_EQ(ParseBytes("512MiB"), 512ull << 20);
  EXPECT_EQ(ParseBytes("1.5GB"), 1500000000ull);
  EXPECT_EQ(ParseBytes("1073741824"), 1073741824ull);
  EXPECT_EQ(ParseBytes("4g"), 4ull << 30);
  EXPECT_EQ(ParseBytes(" 2 KiB "), 2048ull);
  EXPECT_EQ(ParseBytes("0"), 0ull);
}

TEST(ParseBytes, RefusesWhatIsNotASize) {
  for (const char* bad : {"", "GiB", "4 gigs", "-1GiB", "1.2.3GB", "0x100", "99999999999TiB", "."})
    EXPECT_FALSE(ParseBytes(bad).has_value()) << bad;
}

TEST(ClientOptions, DefaultsWhenNothingIsSet) {
  ClientOptions o = Parse({});
  EXPECT_FALSE(o.memory.CapFor(0).has_value());
  EXPECT_FALSE(o.visible_devices.has_value());
  EXPECT_EQ(o.socket_path, "/run/gpushare/broker.sock");
  EXPECT_EQ(o.weight, 1.0);
  EXPECT_EQ(o.rank, -1);
  EXPECT_EQ(o.log_level, LogLevel::kWarn);
  EXPECT_FALSE(o.oom_backtrace);
  EXPECT_TRUE(o.errors.empty());
}

TEST(ClientOptions, MemoryLimitForAllOrPerDevice) {
  EXPECT_EQ(Parse({{"GPUSHARE_MEMORY_LIMIT", "4GiB"}}).memory.CapFor(3), 4ull << 30);
  ClientOptions o = Parse({{"GPUSHARE_MEMORY_LIMIT", "0=4GiB, 1=2GiB"}});
  EXPECT_EQ(o.memory.CapFor(0), 4ull << 30);
  EXPECT_EQ(o.memory.CapFor(1), 2ull << 30);
  EXPECT_FALSE(o.memory.CapFor(2).has_value());
  EXPECT_TRUE(o.errors.empty());
}

TEST(ClientOptions, MalformedMemoryLimitCapsAtZeroAndSaysSo) {
  for (const char* bad : {"4 gigs", "0=4GiB,x=1GiB", "0=lots"}) {
    ClientOptions o = Parse({{"GPUSHARE_MEMORY_LIMIT", bad}});
    EXPECT_EQ(o.memory.CapFor(0), 0u) << bad;
    EXPECT_EQ(o.memory.CapFor(7), 0u) << bad;
    ASSERT_EQ(o.errors.size(), 1u) << bad;
    EXPECT_EQ(o.errors[0].rfind("GPUSHARE_MEMORY_LIMIT=\"" + std::string(bad) + "\": ", 0), 0u) << o.errors[0];
  }
}

TEST(ClientOptions, AGpuGivenTwoCapsCapsEveryGpuAtZero) {
  ClientOptions o = Parse({{"GPUSHARE_MEMORY_LIMIT", "0=4GiB,0=1GiB"}});
  EXPECT_EQ(o.memory.CapFor(0), 0u);
  EXPECT_EQ(o.memory.CapFor(1), 0u);
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0], "GPUSHARE_MEMORY_LIMIT=\"0=4GiB,0=1GiB\": GPU 0 is given two caps; capping every GPU at 0 bytes");
}

TEST(ClientOptions, ACapForAGpuPastTheMapCapsEveryGpuAtZero) {
  ClientOptions o = Parse({{"GPUSHARE_MEMORY_LIMIT", "0=1GiB,5=2GiB"}});
  ASSERT_TRUE(o.errors.empty());  // the number of GPUs is not known while parsing
  EXPECT_FALSE(o.memory.FailClosedOnIndicesPast(6));
  EXPECT_EQ(o.memory.CapFor(0), 1ull << 30);
  auto error = o.memory.FailClosedOnIndicesPast(2);
  ASSERT_TRUE(error);
  EXPECT_EQ(*error,
            "GPUSHARE_MEMORY_LIMIT names virtual GPU 5 but this process has 2 (indices 0 to 1); capping every GPU at 0 "
            "bytes");
  EXPECT_EQ(o.memory.CapFor(0), 0u);
  EXPECT_EQ(o.memory.CapFor(1), 0u);
  // One cap for all names no index.
  ClientOptions all = Parse({{"GPUSHARE_MEMORY_LIMIT", "4GiB"}});
  EXPECT_FALSE(all.memory.FailClosedOnIndicesPast(1));
  EXPECT_EQ(all.memory.CapFor(0), 4ull << 30);
}

TEST(ClientOptions, AWeightBelowTheFloorIsRaisedToIt) {
  ClientOptions o = Parse({{"GPUSHARE_WEIGHT", "5e-324"}});
  EXPECT_EQ(o.weight, protocol::kMinWeight);
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0], "GPUSHARE_WEIGHT=\"5e-324\": below the floor of 0.001; using 0.001");
  EXPECT_EQ(Parse({{"GPUSHARE_WEIGHT", "0.001"}}).weight, 0.001);
  EXPECT_TRUE(Parse({{"GPUSHARE_WEIGHT", "0.001"}}).errors.empty());
  EXPECT_EQ(Parse({{"GPUSHARE_WEIGHT", "1000.5"}}).weight, 1.0);
  EXPECT_EQ(Parse({{"GPUSHARE_WEIGHT", "nan"}}).weight, 1.0);
}

TEST(ClientOptions, VisibleDevicesOrderAndErrors) {
  EXPECT_EQ(Parse({{"GPUSHARE_VISIBLE_DEVICES", "2,0"}}).visible_devices, (std::vector<int>{2, 0}));
  EXPECT_EQ(Parse({{"GPUSHARE_VISIBLE_DEVICES", ""}}).visible_devices, std::vector<int>{});
  ClientOptions o = Parse({{"GPUSHARE_VISIBLE_DEVICES", "0,gpu1"}});
  EXPECT_EQ(o.visible_devices, std::vector<int>{});  // safest: nothing visible
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_NE(o.errors[0].find("GPUSHARE_VISIBLE_DEVICES"), std::string::npos);
  EXPECT_EQ(Parse({{"GPUSHARE_VISIBLE_DEVICES", "1,1"}}).visible_devices, std::vector<int>{});
}

TEST(ClientOptions, SocketPathFollowsXdgRuntimeDir) {
  EXPECT_EQ(Parse({{"XDG_RUNTIME_DIR", "/run/user/1000"}}).socket_path, "/run/user/1000/gpushare/broker.sock");
  EXPECT_EQ(Parse({{"XDG_RUNTIME_DIR", "/run/user/1000"}, {"GPUSHARE_SOCKET", "/tmp/b.sock"}}).socket_path,
            "/tmp/b.sock");
}

TEST(ClientOptions, JobAndRankFromGpushareOrTorchrun) {
  ClientOptions o = Parse({{"GPUSHARE_JOB", "train"}, {"GPUSHARE_RANK", "3"}, {"LOCAL_RANK", "1"}});
  EXPECT_EQ(o.job, "train");
  EXPECT_EQ(o.rank, 3);
  o = Parse({{"TORCHELASTIC_RUN_ID", "abc"}, {"LOCAL_RANK", "1"}, {"RANK", "9"}});
  EXPECT_EQ(o.job, "torchrun:abc");
  EXPECT_EQ(o.rank, 1);
  o = Parse({{"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}, {"RANK", "2"}});
  EXPECT_EQ(o.job, "torchrun:10.0.0.1:29500");
  EXPECT_EQ(o.rank, 2);
  EXPECT_EQ(o.job_size, 0);
}

TEST(ClientOptions, TheJobsSizeOnThisNodeIsTorchrunsLocalWorldSize) {
  EXPECT_EQ(Parse({{"LOCAL_WORLD_SIZE", "4"}}).job_size, 4);
  for (const char* bad : {"0", "-2", "four"}) {
    ClientOptions o = Parse({{"LOCAL_WORLD_SIZE", bad}});
    EXPECT_EQ(o.job_size, 0) << bad;
    ASSERT_EQ(o.errors.size(), 1u) << bad;
    EXPECT_NE(o.errors[0].find("LOCAL_WORLD_SIZE"), std::string::npos) << o.errors[0];
  }
}

TEST(ClientOptions, WeightLogAndBacktrace) {
  ClientOptions o = Parse({{"GPUSHARE_WEIGHT", "2.5"}, {"GPUSHARE_LOG", "DEBUG"}, {"GPUSHARE_OOM_BACKTRACE", "1"}});
  EXPECT_EQ(o.weight, 2.5);
  EXPECT_EQ(o.log_level, LogLevel::kDebug);
  EXPECT_TRUE(o.oom_backtrace);
  o = Parse({{"GPUSHARE_WEIGHT", "-1"}, {"GPUSHARE_LOG", "loud"}, {"GPUSHARE_OOM_BACKTRACE", "yes"}});
  EXPECT_EQ(o.weight, 1.0);
  EXPECT_EQ(o.log_level, LogLevel::kWarn);
  EXPECT_FALSE(o.oom_backtrace);
  EXPECT_EQ(o.errors.size(), 3u);
}

TEST(ClientOptions, AProfileIsAskedByNameAndATooLongOneAsksForNoneTheBrokerHas) {
  EXPECT_EQ(Parse({}).profile, "");
  EXPECT_EQ(Parse({{"GPUSHARE_PROFILE", " q8g "}}).profile, "q8g");
  ClientOptions o = Parse({{"GPUSHARE_PROFILE", std::string(32, 'p')}});
  EXPECT_EQ(o.profile, "(invalid)");  // never no profile: that would lift the instance's cap
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0].rfind("GPUSHARE_PROFILE=", 0), 0u) << o.errors[0];
}

TEST(ClientOptions, RecordsTheRuntimesOwnVisibleDevicesVariables) {
  auto o = Parse({{"HIP_VISIBLE_DEVICES", "2,3"}, {"ROCR_VISIBLE_DEVICES", "1,2,3"}});
  EXPECT_EQ(o.runtime_visible_devices,
            (std::map<std::string, std::string>{{"HIP_VISIBLE_DEVICES", "2,3"}, {"ROCR_VISIBLE_DEVICES", "1,2,3"}}));
  EXPECT_TRUE(Parse({}).runtime_visible_devices.empty());
}

TEST(DeviceMap, NodeOrderComposesTheRuntimesMasksOutermostFirst) {
  EXPECT_EQ(DeviceMap::NodeOrder({"2,0"}), (std::vector<int>{2, 0}));
  // ROCR_VISIBLE_DEVICES=1,2,3 leaves node GPUs 1, 2, 3; HIP_VISIBLE_DEVICES=2,0 picks 3 and 1.
  EXPECT_EQ(DeviceMap::NodeOrder({"1,2,3", "2,0"}), (std::vector<int>{3, 1}));
  // The list ends at the first GPU the outer mask does not leave.
  EXPECT_EQ(DeviceMap::NodeOrder({"1,2", "1,5,0"}), (std::vector<int>{2}));
  EXPECT_EQ(DeviceMap::NodeOrder({""}), (std::vector<int>{}));
  // UUIDs and garbage: the order is unknown.
  for (const char* mask : {"GPU-8f3c", "0,,1", "-1", "0, 1", "1x"})
    EXPECT_FALSE(DeviceMap::NodeOrder({mask}).has_value()) << mask;
}

TEST(ClientOptions, ClassSaidForAnMpsShareIsComputeOrMemory) {
  EXPECT_EQ(Parse({}).work_class, gpushare::protocol::MpsClass::kNone);
  EXPECT_EQ(Parse({{"GPUSHARE_CLASS", "compute"}}).work_class, gpushare::protocol::MpsClass::kCompute);
  EXPECT_EQ(Parse({{"GPUSHARE_CLASS", " memory "}}).work_class, gpushare::protocol::MpsClass::kMemory);
  ClientOptions o = Parse({{"GPUSHARE_CLASS", "gemm"}});
  EXPECT_EQ(o.work_class, gpushare::protocol::MpsClass::kNone);
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0], "GPUSHARE_CLASS=\"gemm\": expected compute or memory; the broker will judge by what it measures");
}

}  // namespace
}  // namespace gpushare
