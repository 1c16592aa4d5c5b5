// simgpu as a node shared by several real processes: capacity, reclaim after a kill,
// time-slicing between saturating processes, topology and data round trips.
#include <gtest/gtest.h>

#include <cstdio>
#include <thread>

#include "subprocess.h"

using testing_support::Child;
using testing_support::Field;
using testing_support::RunToEnd;
using testing_support::SimNode;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

const char* kOneGpu = R"({"gpus": [{"name": "simgpu test", "memory": 1073741824}]})";

std::string Worker() { return WORKER_PATH; }

TEST(SimgpuMultiProcess, ProcessesShareDeviceCapacity) {
  SimNode node(kOneGpu);
  Child holder({Worker(), "hold", "0", std::to_string(768 * kMiB)}, node.Env());
  ASSERT_EQ(holder.ReadLine(), "allocated");

  auto other = RunToEnd({Worker(), "alloc", "0", std::to_string(512 * kMiB)}, node.Env());
  ASSERT_EQ(other.exit_code, 0) << other.out;
  EXPECT_EQ(Field(other.out, "total"), 1024 * kMiB);
  EXPECT_EQ(Field(other.out, "free"), 256 * kMiB) << other.out;
  EXPECT_NE(other.out.find("result=oom"), std::string::npos) << other.out;

  holder.CloseStdin();  // the holder exits and gives its memory back
  holder.Wait();
  auto after = RunToEnd({Worker(), "alloc", "0", std::to_string(512 * kMiB)}, node.Env());
  EXPECT_EQ(Field(after.out, "free"), 1024 * kMiB) << after.out;
  EXPECT_NE(after.out.find("result=ok"), std::string::npos) << after.out;
}

TEST(SimgpuMultiProcess, KilledProcessMemoryIsReclaimed) {
  SimNode node(kOneGpu);
  Child victim({Worker(), "hold", "0", std::to_string(1024 * kMiB)}, node.Env());
  ASSERT_EQ(victim.ReadLine(), "allocated");
  victim.Kill(SIGKILL);
  victim.Wait();
  auto after = RunToEnd({Worker(), "alloc", "0", std::to_string(1024 * kMiB)}, node.Env());
  EXPECT_NE(after.out.find("result=ok"), std::string::npos) << after.out;
}

TEST(SimgpuMultiProcess, OversizedAllocationIsOutOfMemory) {
  SimNode node(kOneGpu);
  auto r = RunToEnd({Worker(), "alloc", "0", std::to_string(1025 * kMiB)}, node.Env());
  EXPECT_NE(r.out.find("result=oom"), std::string::npos) << r.out;
}

TEST(SimgpuMultiProcess, ForkedChildNeitherUsesNorReleasesTheParentsShare) {
  SimNode node(kOneGpu);
  auto r = RunToEnd({Worker(), "forkcheck"}, node.Env());
  EXPECT_EQ(Field(r.out, "child_ok"), 1u) << r.out;
  EXPECT_EQ(Field(r.out, "before"), Field(r.out, "after")) << r.out;
  EXPECT_EQ(Field(r.out, "after"), 960 * kMiB) << r.out;
}

TEST(SimgpuMultiProcess, PeerMatrixFollowsTheConfig) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824},
                            {"name": "c", "memory": 1073741824}, {"name": "d", "memory": 1073741824}],
                  "links": [[0, 1, "nvlink"], [2, 3, "nvlink"], [1, 2, "pcie"]]})");
  auto r = RunToEnd({Worker(), "topo"}, node.Env());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto linked = [](int a, int b) {
    auto pair = std::minmax(a, b);
    return pair == std::minmax(0, 1) || pair == std::minmax(2, 3) || pair == std::minmax(1, 2);
  };
  auto nvlinked = [](int a, int b) {
    return std::minmax(a, b) == std::minmax(0, 1) || std::minmax(a, b) == std::minmax(2, 3);
  };
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) {
      const bool p2p = a != b && linked(a, b);
      char cuda_line[64], nvml_line[64];
      std::snprintf(cuda_line, sizeof cuda_line, "cuda %d %d %d\n", a, b, p2p);
      std::snprintf(nvml_line, sizeof nvml_line, "nvml %d %d %d %d\n", a, b, p2p, a != b && nvlinked(a, b));
      EXPECT_NE(r.out.find(cuda_line), std::string::npos) << cuda_line << r.out;
      EXPECT_NE(r.out.find(nvml_line), std::string::npos) << nvml_line << r.out;
    }
}

TEST(SimgpuMultiProcess, DataRoundTripsThroughDeviceAndPeerCopies) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824}],
                  "links": [[0, 1, "pcie"]]})");
  auto r = RunToEnd({Worker(), "roundtrip", std::to_string(3 * kMiB + 17)}, node.Env());
  EXPECT_NE(r.out.find("roundtrip ok"), std::string::npos) << r.out;
}

TEST(SimgpuMultiProcess, MalformedConfigIsReportedByField) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": -5}]})");
  testing_support::Child c({Worker(), "init"}, node.Env());
  c.CloseStdin();
  std::string out = c.ReadAll();
  c.Wait();
  EXPECT_NE(out.find("cuInit=CUDA_ERROR_NO_DEVICE"), std::string::npos) << out;
  EXPECT_NE(out.find(node.config_path() + ": gpus[1].memory: expected a positive integer"), std::string::npos) << out;
}

TEST(SimgpuMultiProcess, AllocProbeSampleReportsConfiguredCapacity) {
  SimNode node(R"({"gpus": [{"name": "simgpu probe", "memory": 2147483648}]})");
  auto r = RunToEnd({std::string(SAMPLES_DIR) + "/alloc_probe"}, node.Env());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "total_bytes"), 2048 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "allocated_bytes"), 2048 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "free_final"), 2048 * kMiB) << r.out;
}

}  // namespace
