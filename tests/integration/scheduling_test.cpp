// GPU-time scheduling with real processes on simgpu: the broker plus saturating
// sched_worker clients under the shim. Weighted shares (2:1, 4:2:1:1) against simgpu's
// own even time-slicing, the GPU kept busy when a client goes idle, classification of
// compute- and memory-bound clients, and a weight changed at run time.
// Timing-based (labelled `timing`), so kept out of the sanitizer flavor of the suite.
#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "monotonic_clock.h"
#include "subprocess.h"
#include "test_broker.h"
#include "worker_timeline.h"

using testing_support::Finish;
using testing_support::FinishAll;
using testing_support::MonotonicNs;
using testing_support::MsSince;
using testing_support::SleepUntilMs;
using testing_support::Timeline;

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::SimNode;
namespace proto = gpushare::protocol;

constexpr int kKernelUs = 500;
constexpr double kKernelMs = kKernelUs / 1000.0;
constexpr double kTolerance = 0.03;  // the issue's 3 percentage points
const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";
const char* kThreeGpus = R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184},
                                      {"name": "sim2", "memory": 17179869184}], "links": []})";

// The broker under test; a client of `tenant` gets simgpu, the shim and this broker.
class Broker : public testing_support::TestBroker {
 public:
  using TestBroker::TestBroker;
  std::map<std::string, std::string> ClientEnv(const std::string& tenant) const {
    return TestBroker::ClientEnv({{"GPUSHARE_TENANT", tenant}});
  }
};

// A worker of kKernelUs kernels (worker_timeline.h).
std::unique_ptr<Child> StartWorker(const std::map<std::string, std::string>& env, uint64_t start_ns, double seconds,
                                   const std::string& kind, std::vector<std::string> extra = {}) {
  return testing_support::StartWorker(env, start_ns, seconds, kind, kKernelUs, std::move(extra));
}

// Each worker's share of the GPU time all of them got in [from_ms, to_ms].
std::vector<double> Shares(const std::vector<Timeline>& timelines, double from_ms, double to_ms) {
  double total = 0;
  for (const Timeline& t : timelines) total += t.KernelsIn(from_ms, to_ms);
  std::vector<double> shares;
  for (const Timeline& t : timelines) shares.push_back(total > 0 ? t.KernelsIn(from_ms, to_ms) / total : 0);
  return shares;
}

// The fraction of [from_ms, to_ms] the GPU spent on the workers' kernels.
double Busy(const std::vector<Timeline>& timelines, double from_ms, double to_ms) {
  double kernels = 0;
  for (const Timeline& t : timelines) kernels += t.KernelsIn(from_ms, to_ms);
  return kernels * kKernelMs / (to_ms - from_ms);
}

std::string Percents(const std::vector<double>& shares) {
  std::string s;
  char one[16];
  for (double x : shares) {
    std::snprintf(one, sizeof one, "%.1f", 100 * x);
    s += (s.empty() ? "" : " / ") + std::string(one);
  }
  return s;
}

// Workers start together after this lead, once every process has loaded and registered.
constexpr uint64_t kLeadNs = 1'000'000'000;
// Shares are measured over [kFromMs, kToMs] of a kRunSeconds run: past start-up
// (classification, first grants) and before the first worker stops.
constexpr double kRunSeconds = 7, kFromMs = 1000, kToMs = 6500;

struct SaturatedRun {
  std::vector<Timeline> timelines;
  std::vector<double> charged;  // with a broker: its share of the GPU time it charged each, same window
  std::string classes;          // with a broker: class and effective weight of each at the window's start
};

// Saturating compute workers, one per environment, on GPU 0 over the same window.
SaturatedRun RunSaturating(const std::vector<std::map<std::string, std::string>>& envs, Broker* broker = nullptr) {
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  for (const auto& env : envs) workers.push_back(StartWorker(env, start, kRunSeconds, "compute"));
  SaturatedRun run;
  if (broker != nullptr) {
    // What the broker charged over the window: tells a scheduling error (charges off the
    // weights) from slices a client held but did not fill (charges right, kernels short).
    SleepUntilMs(start, kFromMs);
    const json first = broker->Status();
    SleepUntilMs(start, kToMs);
    const json last = broker->Status();
    std::vector<double> used;
    for (auto& w : workers) {
      const json* a = ClientWithPid(first, w->pid());
      const json* b = ClientWithPid(last, w->pid());
      EXPECT_TRUE(a != nullptr && b != nullptr) << "pid " << w->pid() << " not in the status: " << first.dump();
      if (a == nullptr || b == nullptr) continue;
      EXPECT_TRUE((*a)["scheduled"].get<bool>()) << a->dump();  // the broker, not simgpu alone, shares the GPU
      used.push_back((*b)["devices"][0]["gpu_time_ms"].get<double>() - (*a)["devices"][0]["gpu_time_ms"].get<double>());
      run.classes +=
          (run.classes.empty() ? "" : ", ") + (*a)["class"].get<std::string>() + " x" + (*a)["effective_weight"].dump();
    }
    double total = 0;
    for (double u : used) total += u;
    for (double u : used) run.charged.push_back(total > 0 ? u / total : 0);
  }
  run.timelines = FinishAll(workers);
  return run;
}

TEST(Scheduling, WithoutGpushareTwoSaturatingProcessesSplitTheGpuEvenly) {
  SimNode node(kOneGpu);
  auto run = RunSaturating({node.Env(), node.Env()});
  auto shares = Shares(run.timelines, kFromMs, kToMs);
  std::printf("without gpushare: shares %s %%, busy %.1f %%\n", Percents(shares).c_str(),
              100 * Busy(run.timelines, kFromMs, kToMs));
  for (double s : shares) EXPECT_NEAR(s, 0.5, 0.10);
}

TEST(Scheduling, TwoSaturatingClientsWeighted2To1GetTwoThirdsAndOneThird) {
  Broker broker(kOneGpu, "[tenants.a]\nweight = 2\ngpus = [0]\n[tenants.b]\nweight = 1\ngpus = [0]\n");
  auto run = RunSaturating({broker.ClientEnv("a"), broker.ClientEnv("b")}, &broker);
  auto shares = Shares(run.timelines, kFromMs, kToMs);
  const double busy = Busy(run.timelines, kFromMs, kToMs);
  std::printf("2:1: shares %s %% (want 66.7 / 33.3), busy %.1f %%; charged by the broker %s %% (%s)\n",
              Percents(shares).c_str(), 100 * busy, Percents(run.charged).c_str(), run.classes.c_str());
  EXPECT_NEAR(shares[0], 2.0 / 3, kTolerance) << "charged " << Percents(run.charged);
  EXPECT_NEAR(shares[1], 1.0 / 3, kTolerance);
  EXPECT_GE(busy, 0.95);
}

TEST(Scheduling, FourSaturatingClientsWeighted4To2To1To1GetHalfQuarterEighthEighth) {
  Broker broker(kOneGpu,
                "[tenants.a]\nweight = 4\ngpus = [0]\n[tenants.b]\nweight = 2\ngpus = [0]\n"
                "[tenants.c]\nweight = 1\ngpus = [0]\n[tenants.d]\nweight = 1\ngpus = [0]\n");
  auto run = RunSaturating({broker.ClientEnv("a"), broker.ClientEnv("b"), broker.ClientEnv("c"), broker.ClientEnv("d")},
                           &broker);
  auto shares = Shares(run.timelines, kFromMs, kToMs);
  const double busy = Busy(run.timelines, kFromMs, kToMs);
  std::printf("4:2:1:1: shares %s %% (want 50 / 25 / 12.5 / 12.5), busy %.1f %%; charged by the broker %s %% (%s)\n",
              Percents(shares).c_str(), 100 * busy, Percents(run.charged).c_str(), run.classes.c_str());
  const double want[] = {0.5, 0.25, 0.125, 0.125};
  for (size_t i = 0; i < shares.size(); ++i)
    EXPECT_NEAR(shares[i], want[i], kTolerance) << "client " << i << "; charged " << Percents(run.charged);
  EXPECT_GE(busy, 0.95);
}

TEST(Scheduling, AClientGoingIdleLeavesTheWholeGpuToTheOtherWithin100Ms) {
  Broker broker(kOneGpu, "[tenants.a]\nweight = 1\ngpus = [0]\n[tenants.b]\nweight = 1\ngpus = [0]\n");
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  workers.push_back(StartWorker(broker.ClientEnv("a"), start, 5, "compute"));
  workers.push_back(StartWorker(broker.ClientEnv("b"), start, 5, "compute", {"--stop-after", "3"}));
  auto timelines = FinishAll(workers);
  const Timeline& stays = timelines[0];
  const double stop_ms = timelines[1].Event("stop");
  ASSERT_FALSE(std::isnan(stop_ms)) << timelines[1].output;

  const double busy_both = Busy(timelines, 1000, 3000);
  // The GPU can run (window / kernel) kernels: the one left must get nearly all of them.
  // Had the broker kept the two shares, it would get half (equal weights); 0.9 over
  // 1.5 s says "the whole GPU" while a loaded 2-core machine's late wake-ups of the
  // client itself (not the broker) cost it a few percent, as they did over 0.5 s.
  const double fill = stays.KernelsIn(stop_ms + 100, stop_ms + 1600) * kKernelMs / 1500;
  // For the report: GPU time left idle in the hand-off (both clients' kernels counted:
  // the one stopping still drains what it queued), +-8 ms (16 kernels in flight).
  const double idle_ms = 600 - Busy(timelines, stop_ms, stop_ms + 600) * 600;
  std::printf(
      "idle: both running busy %.1f %%; after the stop the other runs %.1f %% of the GPU in "
      "[+100, +1600] ms; GPU idle %.0f ms of the 600 ms after the stop\n",
      100 * busy_both, 100 * fill, idle_ms);
  EXPECT_GE(busy_both, 0.95);
  EXPECT_GE(fill, 0.9);
}

// The status's class of each pid, polled every 100 ms for `ms` after `start_ns`.
std::map<pid_t, std::vector<std::pair<double, std::string>>> PollClasses(Broker& broker, uint64_t start_ns, double ms,
                                                                         const std::vector<pid_t>& pids) {
  std::map<pid_t, std::vector<std::pair<double, std::string>>> seen;
  for (double at = 0; at < ms; at += 100) {
    SleepUntilMs(start_ns, at);
    json s = broker.Status();
    const double t = MsSince(start_ns);  // after the answer: latencies are not understated
    for (pid_t pid : pids)
      if (const json* c = ClientWithPid(s, pid)) seen[pid].emplace_back(t, (*c)["class"].get<std::string>());
  }
  return seen;
}

// When `classes` first shows `cls` at or after `from_ms`; NAN if never.
double FirstSeen(const std::vector<std::pair<double, std::string>>& classes, const std::string& cls, double from_ms) {
  for (const auto& [t, c] : classes)
    if (t >= from_ms && c == cls) return t;
  return NAN;
}

// Every class shown in [from_ms, to_ms) that is not `cls`, as "t_ms:class" (empty: none).
std::string OtherThan(const std::vector<std::pair<double, std::string>>& classes, const std::string& cls,
                      double from_ms, double to_ms) {
  std::string out;
  for (const auto& [t, c] : classes)
    if (t >= from_ms && t < to_ms && c != cls) out += std::to_string(std::lround(t)) + ":" + c + " ";
  return out;
}

TEST(Scheduling, ComputeAndMemoryClientsAreClassifiedWithin1SAndReclassifiedWithin2SOfASwitch) {
  // Each on its own GPU, so what simgpu reports of one is not mixed with another.
  Broker broker(kThreeGpus, "[tenants.c]\ngpus = [0]\n[tenants.m]\ngpus = [1]\n[tenants.s]\ngpus = [2]\n");
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  workers.push_back(StartWorker(broker.ClientEnv("c"), start, 5, "compute"));
  workers.push_back(StartWorker(broker.ClientEnv("m"), start, 5, "memory"));
  workers.push_back(StartWorker(broker.ClientEnv("s"), start, 5, "compute", {"--switch-after", "2"}));
  auto seen = PollClasses(broker, start, 4800, {workers[0]->pid(), workers[1]->pid(), workers[2]->pid()});
  auto timelines = FinishAll(workers);

  const char* expected[] = {"compute", "memory", "compute"};
  for (size_t i = 0; i < 3; ++i) {
    const auto& classes = seen[workers[i]->pid()];
    const double first_launch = timelines[i].Event("first_launch");
    const double classified = FirstSeen(classes, expected[i], first_launch);
    const double end = i == 2 ? timelines[2].Event("switch") : 1e9;
    std::printf("classified %s %.0f ms after its first launch\n", expected[i], classified - first_launch);
    EXPECT_LE(classified - first_launch, 1000) << expected[i] << " client, first launch at " << first_launch;
    EXPECT_EQ(OtherThan(classes, expected[i], classified, end), "") << expected[i] << " client: later classes";
  }
  const auto& switcher = seen[workers[2]->pid()];
  const double switch_ms = timelines[2].Event("switch");
  ASSERT_FALSE(std::isnan(switch_ms)) << timelines[2].output;
  const double reclassified = FirstSeen(switcher, "memory", switch_ms);
  std::printf("reclassified memory %.0f ms after the switch\n", reclassified - switch_ms);
  EXPECT_LE(reclassified - switch_ms, 2000);
  EXPECT_EQ(OtherThan(switcher, "memory", reclassified, 1e9), "") << "after reclassification";
  // Between the switch and the new class: the old one, nothing else.
  EXPECT_EQ(OtherThan(switcher, "compute", switch_ms, reclassified), "") << "before reclassification";
}

TEST(Scheduling, AWeightRaisedAtRunTimeFrom1To3GivesThreeQuartersWithinHalfASecond) {
  Broker broker(kOneGpu, "[tenants.a]\nweight = 1\ngpus = [0]\n[tenants.b]\nweight = 1\ngpus = [0]\n");
  const uint64_t start = MonotonicNs() + kLeadNs;
  std::vector<std::unique_ptr<Child>> workers;
  workers.push_back(StartWorker(broker.ClientEnv("a"), start, 6, "compute"));
  workers.push_back(StartWorker(broker.ClientEnv("b"), start, 6, "compute"));
  SleepUntilMs(start, 2000);
  const std::string reply = broker.SetWeight(workers[0]->pid(), 3);
  const double changed_ms = MsSince(start);
  EXPECT_EQ(reply.rfind("ok", 0), 0u) << reply;
  json s = broker.Status();
  const json* a = ClientWithPid(s, workers[0]->pid());
  ASSERT_NE(a, nullptr) << s.dump();
  EXPECT_EQ((*a)["weight"], 3.0) << a->dump();
  // What the broker schedules by (weight x class weight), to explain a miss.
  std::string weights;
  for (double at = changed_ms + 250; at < 5500; at += 500) {
    SleepUntilMs(start, at);
    json now = broker.Status();
    weights += "\n  at " + std::to_string(std::lround(MsSince(start))) + " ms:";
    for (auto& w : workers)
      if (const json* c = ClientWithPid(now, w->pid())) {
        // Appended piece by piece: GCC 12 at -O3 misreads `" " + std::string&&` (-Wrestrict).
        weights += ' ';
        weights += (*c)["class"].get<std::string>();
        weights += " x";
        weights += (*c)["effective_weight"].dump();
      }
  }
  auto timelines = FinishAll(workers);

  const auto before = Shares(timelines, 1000, changed_ms);
  const double from = changed_ms + 500, to = std::min(changed_ms + 3000, 5500.0);
  const auto after = Shares(timelines, from, to);
  std::printf("weight 1:1 -> 3:1 at %.0f ms: before %s %%, in [+500, +%.0f] ms %s %% (want 75 / 25)\n", changed_ms,
              Percents(before).c_str(), to - changed_ms, Percents(after).c_str());
  EXPECT_GE(to - from, 2000);
  EXPECT_NEAR(before[0], 0.5, 0.10);  // a sanity check: 1:1 before, over 1 s only
  EXPECT_NEAR(after[0], 0.75, kTolerance) << "the broker's classes and effective weights:" << weights;
  EXPECT_NEAR(after[1], 0.25, kTolerance);
}

}  // namespace
