// MPS co-location on simgpu (docs/scheduling.md), with real processes: a broker with
// `[scheduler] spatial = "mps"` that runs simgpu's MPS control daemon, and sched_worker
// clients of co-locating tenants under the shim. A compute- and a memory-bound client
// join MPS with shares fixed before their contexts (75 / 25 % of the SMs), hold the GPU
// at once and get more done than the same pair time-sliced; two compute-bound ones still
// take turns 2:1 by weight; when the daemon dies mid-run the clients go on, time-sliced.
// Timing-based (labelled `timing`).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "monotonic_clock.h"
#include "subprocess.h"
#include "test_broker.h"
#include "worker_timeline.h"

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::FinishAll;
using testing_support::MonotonicNs;
using testing_support::SleepUntilMs;
using testing_support::Timeline;

constexpr int kKernelUs = 500;
constexpr double kKernelMs = kKernelUs / 1000.0;
// 64 SMs, 16 of which saturate memory bandwidth: a memory-bound kernel on a quarter of
// the GPU is as fast as on all of it, a compute-bound one on three quarters 4/3 as long.
const char* kOneGpu =
    R"({"gpus": [{"name": "sim0", "memory": 17179869184, "sms": 64, "memory_saturation_cus": 16}], "links": []})";
constexpr uint64_t kLeadNs = 1'000'000'000;  // every process loaded and registered before they start together
const std::string kControl = std::string(SIMGPU_DIR) + "/simgpu-mps-control";

std::string Config(const std::string& spatial, const std::string& tenants) {
  return "[scheduler]\nspatial = \"" + spatial + "\"\n\n[mps]\ncontrol = \"" + kControl + "\"\n\n" + tenants;
}
std::string Tenant(const std::string& name, double weight) {
  return "[tenants." + name + "]\nweight = " + std::to_string(weight) + "\ncolocate = true\n\n";
}

// Where the broker's own daemon serves: beside its socket (broker/io/mps_control.h).
std::string PipeDirectory(const testing_support::TestBroker& broker) {
  const std::filesystem::path socket(broker.socket());
  return (socket.parent_path() / (socket.stem().string() + "-mps") / "pipe").string();
}

// What the control program says to `command` at `pipe_dir` (its exit status in *status).
std::string Control(const std::string& pipe_dir, const std::string& command, int* status) {
  Child c({kControl}, {{"CUDA_MPS_PIPE_DIRECTORY", pipe_dir}});
  c.Send(command + "\n");
  c.CloseStdin();
  const std::string out = c.ReadAll();
  *status = c.Wait();
  return out;
}

// Whether the daemon at `pipe_dir` answers within 5 s (the broker accepts connections
// once it listens, and starts its daemon after).
bool DaemonAnswers(const std::string& pipe_dir) {
  for (int i = 0; i < 50; ++i) {
    int status = 0;
    Control(pipe_dir, "get_server_list", &status);
    if (status == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Nominal GPU-seconds of kernels per second the workers did in [from_ms, to_ms]: one
// GPU running one kernel at a time at its full speed does 1.
double Work(const std::vector<Timeline>& t, double from_ms, double to_ms) {
  double kernels = 0;
  for (const Timeline& x : t) kernels += x.KernelsIn(from_ms, to_ms);
  return kernels * kKernelMs / (to_ms - from_ms);
}

struct PairRun {
  std::vector<Timeline> timelines;
  json status;  // the broker's, in the middle of the window
};

// A compute- and a memory-bound client of tenants tc and tm (each says its class), for
// `seconds`; `during(start)` runs while they do (the status is taken at 2 s).
template <typename During>
PairRun RunPair(testing_support::TestBroker& broker, const std::vector<std::pair<std::string, std::string>>& clients,
            double seconds, During during) {
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  for (const auto& [tenant, kind] : clients)
    workers.push_back(testing_support::StartWorker(
        broker.ClientEnv({{"GPUSHARE_TENANT", tenant}, {"GPUSHARE_CLASS", kind}}), start, seconds, kind, kKernelUs));
  PairRun r;
  SleepUntilMs(start, 2000);
  r.status = broker.Status();
  during(start);
  r.timelines = FinishAll(workers);
  return r;
}

// The broker stopped as a service manager stops it: it quits its MPS daemon.
void StopBroker(testing_support::TestBroker& broker) {
  kill(broker.pid(), SIGTERM);
  broker.process().Wait();
}

TEST(Mps, AnUnlikePairCoLocatedDoesAtLeastOneAndAHalfTimesTheWorkOfTheSamePairTimeSliced) {
  constexpr double kSeconds = 5, kFromMs = 1500, kToMs = 4500;
  const std::string tenants = Tenant("tc", 1) + Tenant("tm", 1);
  double sliced = 0;
  {
    testing_support::TestBroker broker(kOneGpu, Config("off", tenants));
    PairRun r = RunPair(broker, {{"tc", "compute"}, {"tm", "memory"}}, kSeconds, [](uint64_t) {});
    sliced = Work(r.timelines, kFromMs, kToMs);
  }
  testing_support::TestBroker broker(kOneGpu, Config("mps", tenants));
  const std::string pipe = PipeDirectory(broker);
  int status = 0;
  ASSERT_TRUE(DaemonAnswers(pipe)) << "the broker's MPS daemon does not answer at " << pipe;
  std::string smi;  // gpushare-smi's table during the run
  PairRun r = RunPair(broker, {{"tc", "compute"}, {"tm", "memory"}}, kSeconds, [&](uint64_t) {
    smi = testing_support::RunToEnd({GPUSHARE_SMI, "--socket", broker.socket()}, {}).out;
  });
  EXPECT_NE(smi.find("MPS 75%"), std::string::npos) << smi;
  EXPECT_NE(smi.find("MPS 25%"), std::string::npos) << smi;
  const double colocated = Work(r.timelines, kFromMs, kToMs);
  std::printf("work per second: time-sliced %.2f, co-located through MPS %.2f (x%.2f)\n", sliced, colocated,
              colocated / sliced);
  // The shares each client was given before its context, as gpushare-smi shows them.
  ASSERT_TRUE(r.status.contains("clients")) << r.status.dump();
  std::map<std::string, unsigned> percent;
  for (const json& c : r.status["clients"]) percent[c["tenant"]] = c["devices"][0]["mps_percent"].get<unsigned>();
  EXPECT_EQ(percent["tc"], 75u) << r.status.dump();
  EXPECT_EQ(percent["tm"], 25u) << r.status.dump();
  EXPECT_GE(colocated, 1.5 * sliced);

  StopBroker(broker);
  Control(pipe, "get_server_list", &status);
  EXPECT_NE(status, 0) << "the broker left its MPS daemon running";
}

TEST(Mps, TwoComputeBoundClientsCoLocatedStillTakeTurnsTwoToOneByWeight) {
  constexpr double kSeconds = 7, kFromMs = 1000, kToMs = 6500;
  testing_support::TestBroker broker(kOneGpu, Config("mps", Tenant("heavy", 2) + Tenant("light", 1)));
  ASSERT_TRUE(DaemonAnswers(PipeDirectory(broker)));
  PairRun r = RunPair(broker, {{"heavy", "compute"}, {"light", "compute"}}, kSeconds, [](uint64_t) {});
  const double heavy = r.timelines[0].KernelsIn(kFromMs, kToMs), light = r.timelines[1].KernelsIn(kFromMs, kToMs);
  const double share = heavy / (heavy + light);
  std::printf("heavy's share %.3f (ideal 0.667), both on 75%% of the SMs\n", share);
  for (const json& c : r.status["clients"]) EXPECT_EQ(c["devices"][0]["mps_percent"], 75u) << r.status.dump();
  EXPECT_NEAR(share, 2.0 / 3.0, 0.03);
  StopBroker(broker);
}

TEST(Mps, WhenTheMpsDaemonDiesMidRunTheClientsGoOnTimeSliced) {
  constexpr double kSeconds = 8, kKillMs = 3000;
  testing_support::TestBroker broker(kOneGpu, Config("mps", Tenant("tc", 1) + Tenant("tm", 1)));
  const std::string pipe = PipeDirectory(broker);
  ASSERT_TRUE(DaemonAnswers(pipe));
  json after;
  PairRun r = RunPair(broker, {{"tc", "compute"}, {"tm", "memory"}}, kSeconds, [&](uint64_t start) {
    SleepUntilMs(start, kKillMs);
    int status = 0;
    const int pid = std::atoi(Control(pipe, "get_server_list", &status).c_str());
    ASSERT_EQ(status, 0);
    ASSERT_GT(pid, 0);
    kill(pid, SIGKILL);
    SleepUntilMs(start, kKillMs + 2500);  // the broker asks every second
    after = broker.Status();
  });
  const double before_kill = Work(r.timelines, 1500, kKillMs), late = Work(r.timelines, kKillMs + 2500, 7500);
  std::printf("work per second: co-located %.2f, after the daemon died %.2f\n", before_kill, late);
  EXPECT_GE(before_kill, 1.4);  // co-located (1.75 nominal)
  EXPECT_LE(late, 1.1);         // one at a time again
  for (const Timeline& t : r.timelines) EXPECT_GT(t.KernelsIn(kKillMs + 2500, 7500), 0) << t.output;
  ASSERT_TRUE(after.contains("clients")) << after.dump();
  for (const json& c : after["clients"]) EXPECT_EQ(c["devices"][0]["mps_percent"], 0u) << after.dump();
  StopBroker(broker);
  const std::string log = broker.process().ReadAll();
  EXPECT_NE(log.find("stopped answering"), std::string::npos) << log;
}

}  // namespace
