// vGPU profiles with real processes on simgpu: a two-GPU node granting 8 x q8g, the ninth
// refused with a reason naming the profile and the GPUs, an instance freed by SIGKILL,
// the instance's memory as the cap; and ceilings that hold (ProfileCeilings, labelled
// timing): a lone client with max_compute 0.25 gets a quarter of its solo rate, two
// clients with ceilings 0.66 and 0.33 get those, the GPU otherwise idle.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "monotonic_clock.h"
#include "subprocess.h"
#include "test_broker.h"
#include "worker_timeline.h"

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::MonotonicNs;
using testing_support::Timeline;

constexpr uint64_t kGiB = 1ull << 30;
const char* kTwoGpus32GiB =
    R"({"gpus": [{"name": "sim0", "memory": 34359738368}, {"name": "sim1", "memory": 34359738368}],
        "links": [[0, 1, "nvlink"]]})";
const char* kOneGpu32GiB = R"({"gpus": [{"name": "sim0", "memory": 34359738368}], "links": []})";
const char* kQ8g = "[profiles.q8g]\nmemory = \"8GiB\"\ncompute = 0.25\n";

class Broker : public testing_support::TestBroker {
 public:
  using TestBroker::TestBroker;
  std::unique_ptr<Child> Client(const std::map<std::string, std::string>& extra) {
    return std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, ClientEnv(extra));
  }
};

// broker_client's answer to `command`, past the shim's own log lines.
std::string Ask(Child& c, const std::string& command, std::string* log = nullptr) {
  c.Send(command + "\n");
  for (;;) {
    std::string line = c.ReadLine(10000);
    if (line.empty() || line.rfind("gpushare", 0) != 0) return line;
    if (log != nullptr) *log += line + "\n";
  }
}

int Instances(const json& status, int gpu) {
  int n = 0;
  for (const json& c : status["clients"])
    if (!c["instance"].is_null() && c["instance"]["gpu"] == gpu) ++n;
  return n;
}

TEST(Profiles, TwoGpusHoldEightQ8gInstancesAndTheNinthIsRefusedNamingTheProfileAndTheGpus) {
  Broker broker(kTwoGpus32GiB, kQ8g);
  std::vector<std::unique_ptr<Child>> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(broker.Client({{"GPUSHARE_TENANT", "t" + std::to_string(i)}, {"GPUSHARE_PROFILE", "q8g"}}));
    ASSERT_EQ(Ask(*clients.back(), "init"), "devices=1 init=CUDA_SUCCESS");
  }
  json s = broker.Status();
  EXPECT_EQ(Instances(s, 0), 4) << s.dump();
  EXPECT_EQ(Instances(s, 1), 4) << s.dump();
  EXPECT_EQ(s["vgpu"]["pool"][0]["allocated"], 8);
  auto ninth = broker.Client({{"GPUSHARE_PROFILE", "q8g"}});
  std::string log;
  EXPECT_EQ(Ask(*ninth, "init", &log), "devices=0 init=CUDA_SUCCESS");
  EXPECT_NE(log.find("refused this process: no instance of profile \"q8g\""), std::string::npos) << log;
  EXPECT_NE(log.find("GPU 0: compute 1.00 of 1.00 granted"), std::string::npos) << log;
  EXPECT_NE(log.find("GPU 1: compute 1.00 of 1.00 granted"), std::string::npos) << log;
  EXPECT_EQ(ClientWithPid(broker.Status(), ninth->pid()), nullptr);
}

TEST(Profiles, ASigkilledClientsInstanceIsFreedForTheNext) {
  Broker broker(kOneGpu32GiB, kQ8g);
  std::vector<std::unique_ptr<Child>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(broker.Client({{"GPUSHARE_PROFILE", "q8g"}}));
    ASSERT_EQ(Ask(*clients.back(), "init"), "devices=1 init=CUDA_SUCCESS");
  }
  ASSERT_EQ(Ask(*clients[1], "alloc 0 4294967296"), "alloc=ok");
  clients[1]->Kill(SIGKILL);
  clients[1]->Wait();
  int left = 4;
  for (int i = 0; i < 500 && left != 3; ++i) {
    left = Instances(broker.Status(), 0);
    if (left != 3) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(left, 3);
  EXPECT_EQ(broker.Status()["gpus"][0]["memory_used"].get<uint64_t>() < 4 * kGiB, true);
  auto next = broker.Client({{"GPUSHARE_PROFILE", "q8g"}});
  EXPECT_EQ(Ask(*next, "init"), "devices=1 init=CUDA_SUCCESS");
  EXPECT_EQ(Instances(broker.Status(), 0), 4);
}

TEST(Profiles, TheInstancesMemoryIsTheProcessCap) {
  Broker broker(kOneGpu32GiB, kQ8g);
  auto c = broker.Client({{"GPUSHARE_PROFILE", "q8g"}, {"GPUSHARE_MEMORY_LIMIT", "20GiB"}});
  ASSERT_EQ(Ask(*c, "init"), "devices=1 init=CUDA_SUCCESS");
  EXPECT_EQ(Ask(*c, "alloc 0 6442450944"), "alloc=ok");                        // 6 GiB
  EXPECT_EQ(Ask(*c, "alloc 0 3221225472"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");  // 9 GiB > 8 GiB
  const json status = broker.Status();
  const json* me = ClientWithPid(status, c->pid());
  ASSERT_NE(me, nullptr);
  EXPECT_EQ((*me)["devices"][0]["memory_cap"].get<uint64_t>(), 8 * kGiB);
  EXPECT_DOUBLE_EQ((*me)["weight"].get<double>(), 0.25);
}

// `gpushare-smi ARGS...` against the broker: its output and exit status.
std::pair<std::string, int> Smi(Broker& broker, std::vector<std::string> args) {
  args.insert(args.begin(), {GPUSHARE_SMI, "--socket", broker.socket()});
  Child smi(args, {});
  std::string out = smi.ReadAll();
  const int status = smi.Wait();
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST(Profiles, GpushareSmiVgpuShowsEachGpusInstancesTheirHoldersAndTheNodesPool) {
  Broker broker(kTwoGpus32GiB, std::string("[node]\nreserved_instances = 1\n") + kQ8g);
  std::vector<std::unique_ptr<Child>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(broker.Client({{"GPUSHARE_TENANT", "t" + std::to_string(i)}, {"GPUSHARE_PROFILE", "q8g"}}));
    ASSERT_EQ(Ask(*clients.back(), "init"), "devices=1 init=CUDA_SUCCESS");
  }
  auto [text, status] = Smi(broker, {"vgpu"});
  EXPECT_EQ(status, 0) << text;
  EXPECT_NE(text.find("Node pool: 2 GPUs -> 8 x q8g, 3 allocated, 2 reserved, 3 available"), std::string::npos) << text;
  EXPECT_NE(text.find("Profile q8g (8.00 GiB, compute 0.25)  VGPUs: "), std::string::npos) << text;
  EXPECT_NE(text.find("(1 reserved for system)"), std::string::npos) << text;
  for (const auto& c : clients)
    EXPECT_NE(text.find("pid " + std::to_string(c->pid()) + "  tenant t"), std::string::npos);

  auto [one, one_status] = Smi(broker, {"vgpu", "-i", "1", "--json"});
  ASSERT_EQ(one_status, 0) << one;
  const json v = json::parse(one);
  ASSERT_EQ(v["gpus"].size(), 1u);
  EXPECT_EQ(v["gpus"][0]["index"], 1);
  EXPECT_EQ(v["gpus"][0]["profiles"][0]["name"], "q8g");
  EXPECT_EQ(v["gpus"][0]["profiles"][0]["total"], 4);
  EXPECT_EQ(v["gpus"][0]["profiles"][0]["reserved"], 1);
  EXPECT_EQ(v["gpus"][0]["profiles"][0]["holders"].size(), v["gpus"][0]["profiles"][0]["allocated"].get<size_t>());
  EXPECT_EQ(v["pool"][0]["allocated"], 3);
  EXPECT_EQ(Smi(broker, {"vgpu", "-i", "7"}).second, 1);
  EXPECT_EQ(Smi(broker, {"vgpu", "-i"}).second, 2);
}

// Ceilings. Kernels of 500 us; the rate of a client is what it completes over a window
// past start-up, against what the same worker completes alone without a ceiling.
constexpr int kKernelUs = 500;
constexpr uint64_t kLeadNs = 1'000'000'000;
constexpr double kRunSeconds = 7, kFromMs = 1000, kToMs = 6500;

std::vector<Timeline> RunWorkers(Broker& broker, const std::vector<std::string>& tenants) {
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  for (const std::string& t : tenants)
    workers.push_back(testing_support::StartWorker(broker.ClientEnv({{"GPUSHARE_TENANT", t}}), start, kRunSeconds,
                                                   "compute", kKernelUs));
  return testing_support::FinishAll(workers);
}

// Kernels per second of one worker alone on the broker's GPU, without a ceiling.
double SoloRate(Broker& broker) {
  std::vector<Timeline> solo = RunWorkers(broker, {"solo"});
  return solo[0].KernelsIn(kFromMs, kToMs) / (kToMs - kFromMs);
}

TEST(ProfileCeilings, ALoneClientWithMaxCompute025GetsAQuarterOfItsSoloRate) {
  Broker broker(kOneGpu32GiB, "[tenants.capped]\nmax_compute = 0.25\n");
  const double solo = SoloRate(broker);
  ASSERT_GT(solo, 0);
  std::vector<Timeline> t = RunWorkers(broker, {"capped"});
  const double fraction = t[0].KernelsIn(kFromMs, kToMs) / (kToMs - kFromMs) / solo;
  std::printf("lone client, max_compute 0.25: %.3f of its solo rate (%.0f kernels/s solo)\n", fraction, solo * 1000);
  EXPECT_NEAR(fraction, 0.25, 0.02);
}

TEST(ProfileCeilings, TwoClientsWithCeilings066And033GetThoseFractions) {
  // Guarantees 0.5 and 0.33 (WFQ alone would give 0.6 / 0.4); ceilings 0.66 and 0.33.
  Broker broker(kOneGpu32GiB, R"(
[profiles.big]
memory = "8GiB"
compute = 0.5
max_compute = 0.66

[profiles.small]
memory = "8GiB"
compute = 0.33
max_compute = 0.33

[tenants.big]
profile = "big"

[tenants.small]
profile = "small"
)");
  const double solo = SoloRate(broker);
  ASSERT_GT(solo, 0);
  std::vector<Timeline> t = RunWorkers(broker, {"big", "small"});
  const double big = t[0].KernelsIn(kFromMs, kToMs) / (kToMs - kFromMs) / solo;
  const double small = t[1].KernelsIn(kFromMs, kToMs) / (kToMs - kFromMs) / solo;
  std::printf("ceilings 0.66 / 0.33: %.3f / %.3f of the solo rate\n", big, small);
  EXPECT_NEAR(big, 0.66, 0.02);
  EXPECT_NEAR(small, 0.33, 0.02);
}

}  // namespace
