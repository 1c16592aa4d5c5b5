// simgpu's time model across processes: a saturating process gets the whole GPU,
// two on one GPU are time-sliced about evenly, and GPUs do not slow each other.
// Timing-based, so kept apart from the sanitizer flavor of the suite.
#include <gtest/gtest.h>
#include <time.h>

#include "subprocess.h"

using testing_support::Child;
using testing_support::Field;
using testing_support::SimNode;

namespace {

const char* kOneGpu = R"({"gpus": [{"name": "simgpu test", "memory": 1073741824}]})";

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Runs `n` saturating workers over the same window; returns each one's GPU share.
std::vector<double> Saturate(const SimNode& node, int n, double seconds, std::vector<int> devices = {}) {
  const uint64_t start = RealtimeNs() + 400000000ull;  // let every process start first
  std::vector<std::unique_ptr<Child>> kids;
  for (int i = 0; i < n; ++i) {
    std::string dev = devices.empty() ? "0" : std::to_string(devices[i]);
    kids.push_back(
        std::make_unique<Child>(std::vector<std::string>{std::string(WORKER_PATH), "saturate", dev,
                                                         std::to_string(start), std::to_string(seconds), "1000"},
                                node.Env()));
  }
  std::vector<double> shares;
  for (auto& k : kids) {
    k->CloseStdin();
    std::string out = k->ReadAll();
    k->Wait();
    shares.push_back(double(Field(out, "gpu_us")) / double(Field(out, "window_us")));
  }
  return shares;
}

TEST(SimgpuTimeSlicing, OneSaturatingProcessGetsTheWholeGpu) {
  SimNode node(kOneGpu);
  auto shares = Saturate(node, 1, 1.5);
  EXPECT_GT(shares[0], 0.9);
  EXPECT_LT(shares[0], 1.02);
}

TEST(SimgpuTimeSlicing, TwoSaturatingProcessesAreTimeSlicedAboutEvenly) {
  SimNode node(kOneGpu);
  auto shares = Saturate(node, 2, 2.0);
  for (double s : shares) {
    EXPECT_GT(s, 0.40) << "share " << s;
    EXPECT_LT(s, 0.60) << "share " << s;
  }
  EXPECT_GT(shares[0] + shares[1], 0.9);  // the GPU stays busy while switching
  EXPECT_LT(shares[0] + shares[1], 1.02);
}

TEST(SimgpuTimeSlicing, ProcessesOnDifferentGpusDoNotSlowEachOther) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824}]})");
  auto shares = Saturate(node, 2, 1.5, {0, 1});
  for (double s : shares) EXPECT_GT(s, 0.9) << "share " << s;
}

}  // namespace
