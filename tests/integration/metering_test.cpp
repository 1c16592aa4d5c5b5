// Metering with real processes on simgpu: the broker meters two tenants' sched_worker
// clients into its SQLite database and `usage` reports what they held (durations against
// the clients' own wall times, the GPU-time split against the WFQ weights); a broker
// killed mid-run and restarted continues the session, losing at most one interval and
// counting nothing twice; a corrupt database stops the broker at start, named.
// Timing-based (labelled `timing`), so kept out of the sanitizer flavor of the suite.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "monotonic_clock.h"
#include "subprocess.h"
#include "test_broker.h"

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::MonotonicNs;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";
constexpr double kIntervalS = 0.5;
constexpr double kRunSeconds = 5;

std::string Config(const std::string& extra = "") {
  return "[metering]\ninterval = " + std::to_string(kIntervalS) +
         "\n[billing]\nbase_rate = 2.0\n[tenants.a]\nweight = 2\n[tenants.b]\nweight = 1\n" + extra;
}

std::unique_ptr<Child> StartWorker(testing_support::TestBroker& broker, const std::string& tenant, uint64_t start_ns,
                                   double seconds) {
  auto c =
      std::make_unique<Child>(std::vector<std::string>{WORKER_PATH, "--kind", "compute", "--us", "500", "--seconds",
                                                       std::to_string(seconds), "--start-at", std::to_string(start_ns)},
                              broker.ClientEnv({{"GPUSHARE_TENANT", tenant}}));
  c->CloseStdin();
  return c;
}

// What a worker said of itself: its lifetime and, if it said so, when its first launch went.
struct WorkerRun {
  double lifetime_ms = NAN;
  double first_launch_ms = NAN;  // since --start-at
  std::string output;
};
WorkerRun Finish(Child& worker) {
  WorkerRun r;
  r.output = worker.ReadAll();
  const int status = worker.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << r.output;
  std::smatch m;
  static const std::regex kLifetime(R"(lifetime_ms=([0-9.]+))"), kFirst(R"(first_launch t_ms=([0-9.]+))");
  if (std::regex_search(r.output, m, kLifetime)) r.lifetime_ms = std::stod(m[1]);
  if (std::regex_search(r.output, m, kFirst)) r.first_launch_ms = std::stod(m[1]);
  EXPECT_FALSE(std::isnan(r.lifetime_ms)) << r.output;
  return r;
}

// The usage lines by session of `broker`, keyed by pid.
std::map<int, json> SessionsByPid(testing_support::TestBroker& broker) {
  json usage = broker.Usage({{"what", "usage"}, {"by", "session"}});
  EXPECT_FALSE(usage.contains("error")) << usage.dump();
  std::map<int, json> out;
  for (const json& l : usage["lines"]) out[l["pid"].get<int>()] = l;
  return out;
}

TEST(Metering, TwoTenantsDurationsMatchTheirWallTimesAndGpuTimeSplitsByWeight) {
  testing_support::TestBroker broker(kOneGpu, Config());
  const uint64_t start = MonotonicNs() + 1'000'000'000;  // both launching from the same instant
  auto a = StartWorker(broker, "a", start, kRunSeconds);
  auto b = StartWorker(broker, "b", start, kRunSeconds);
  const WorkerRun ra = Finish(*a), rb = Finish(*b);
  const auto sessions = SessionsByPid(broker);
  ASSERT_EQ(sessions.count(a->pid()), 1u);
  ASSERT_EQ(sessions.count(b->pid()), 1u);
  const json& sa = sessions.at(a->pid());
  const json& sb = sessions.at(b->pid());
  // A session runs from the client's registration to its hang-up: within its process's
  // life (main() to exit), and within 1 % of it (what lies outside is loading and exit).
  for (const auto& [s, r] : {std::pair{sa, ra}, std::pair{sb, rb}}) {
    const double billed_ms = s["wall_ns"].get<double>() / 1e6;
    std::printf("tenant %s: billed %.1f ms, lifetime %.1f ms\n", s["tenant"].get<std::string>().c_str(), billed_ms,
                r.lifetime_ms);
    EXPECT_NEAR(billed_ms, r.lifetime_ms, 0.01 * r.lifetime_ms) << s.dump() << "\n" << r.output;
    EXPECT_FALSE(s["end"].is_null()) << s.dump();
  }
  // Measured GPU time splits as WFQ's 2:1 weights give it while both are busy, within 3
  // points. Both stop at --start-at + 5 s; a worker that started late (a loaded machine)
  // left the other the whole GPU until its first launch, which the expected split counts.
  const double fa = ra.first_launch_ms / 1e3, fb = rb.first_launch_ms / 1e3;
  const double together = kRunSeconds - std::max(fa, fb);
  const double want_a = std::max(0.0, fb - fa) + together * 2 / 3, want_b = std::max(0.0, fa - fb) + together / 3;
  const double ga = sa["gpu_ns"].get<double>(), gb = sb["gpu_ns"].get<double>();
  ASSERT_GT(ga + gb, 0);
  ASSERT_GT(together, 1) << "the workers hardly ran together: " << fa << " s, " << fb << " s late";
  std::printf("GPU time: a %.3f s, b %.3f s: a's share %.1f %% (want %.1f; first launches %.3f s, %.3f s)\n", ga / 1e9,
              gb / 1e9, 100 * ga / (ga + gb), 100 * want_a / (want_a + want_b), fa, fb);
  EXPECT_NEAR(ga / (ga + gb), want_a / (want_a + want_b), 0.03) << sa.dump() << "\n" << sb.dump();
  // Allotted fractions: 1 while alone, 2/3 and 1/3 together.
  EXPECT_GE(sa["fraction"].get<double>(), 2.0 / 3 - 1e-4);  // (allotted ns are whole per row)
  EXPECT_LE(sb["fraction"].get<double>(), 1.0);
  // The bill prices each tenant by the formula and by measured GPU time.
  json bill = broker.Usage({{"what", "bill"}, {"period", sa["start"].get<std::string>().substr(0, 7)}});
  ASSERT_FALSE(bill.contains("error")) << bill.dump();
  ASSERT_EQ(bill["lines"].size(), 2u) << bill.dump();
  EXPECT_EQ(bill["lines"][0]["tenant"], "a");
  EXPECT_EQ(bill["lines"][0]["rate"], "2");
  EXPECT_EQ(bill["lines"][0]["allotted_ns"].get<uint64_t>(), sa["allotted_ns"].get<uint64_t>());
}

TEST(Metering, ABrokerKilledMidRunLosesAtMostOneIntervalAndCountsNothingTwice) {
  testing_support::TestBroker broker(kOneGpu, Config());
  const uint64_t start = MonotonicNs() + 300'000'000;
  auto a = StartWorker(broker, "a", start, 6);
  std::this_thread::sleep_for(std::chrono::milliseconds(2800));
  broker.Kill();
  const uint64_t killed = MonotonicNs();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  broker.Start();
  // The client re-registers at its next launch gate once the broker is back.
  uint64_t back = 0;
  for (int i = 0; i < 400 && back == 0; ++i) {
    json status = broker.Status();
    if (status.contains("clients") && !status["clients"].empty()) back = MonotonicNs();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_NE(back, 0u) << "the client did not re-register";
  const WorkerRun r = Finish(*a);
  const auto sessions = SessionsByPid(broker);
  ASSERT_EQ(sessions.size(), 1u);  // one session, continued: not a second one
  const json& s = sessions.at(a->pid());
  // Its duration is its life (the downtime was held too), within 1 %.
  EXPECT_NEAR(s["wall_ns"].get<double>() / 1e6, r.lifetime_ms, 0.01 * r.lifetime_ms) << s.dump();
  // Alone, it held the GPU from its first launch to the end (6 s after --start-at):
  // measured GPU time is that, less the time no broker measured (kill to re-registration)
  // and at most one interval of what the killed broker had not yet written (0.1 s beside
  // it: the loop flushes on its next wake after the interval, and the first grant after
  // re-registration comes at the client's next launch); never more
  // than it was busy (counted twice, the 2.5 s before the kill would be over).
  const double busy_s = 6.0 - r.first_launch_ms / 1e3;
  const double unmetered_s = static_cast<double>(back - killed) / 1e9;
  const double gpu_s = s["gpu_ns"].get<double>() / 1e9;
  std::printf("billed %.1f ms, lifetime %.1f ms; GPU time %.3f s, busy %.3f s, unmetered %.3f s\n",
              s["wall_ns"].get<double>() / 1e6, r.lifetime_ms, gpu_s, busy_s, unmetered_s);
  EXPECT_LE(gpu_s, busy_s * 1.01) << s.dump();
  EXPECT_GE(gpu_s, busy_s - unmetered_s - kIntervalS - 0.1) << s.dump() << " unmetered " << unmetered_s;
  EXPECT_FALSE(s["end"].is_null());
}

TEST(Metering, ASessionIsWrittenWhenItEndsNotOnlyEachInterval) {
  // An interval longer than the test: only the write at the session's end can keep it.
  testing_support::TestBroker broker(kOneGpu, "[metering]\ninterval = 3600\n");
  auto a = StartWorker(broker, "a", MonotonicNs() + 200'000'000, 1);
  const WorkerRun r = Finish(*a);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the broker sees the hang-up
  broker.Kill();
  broker.Start();
  const auto sessions = SessionsByPid(broker);
  ASSERT_EQ(sessions.count(a->pid()), 1u);
  const json& s = sessions.at(a->pid());
  EXPECT_FALSE(s["end"].is_null()) << s.dump();
  EXPECT_NEAR(s["wall_ns"].get<double>() / 1e6, r.lifetime_ms, 0.01 * r.lifetime_ms) << s.dump();
}

TEST(Metering, AReloadNamingAnotherDatabaseKeepsTheRunningMeter) {
  testing_support::TestBroker broker(kOneGpu, Config());
  const std::string other = broker.database() + ".other";
  broker.WriteConfig("[metering]\ninterval = 0.5\ndatabase = \"" + other + "\"\n[billing]\nbase_rate = 3.0\n");
  ASSERT_EQ(kill(broker.pid(), SIGHUP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto a = StartWorker(broker, "a", MonotonicNs() + 200'000'000, 1);
  Finish(*a);
  const auto sessions = SessionsByPid(broker);
  EXPECT_EQ(sessions.count(a->pid()), 1u);  // metered into the database it started with
  EXPECT_FALSE(std::filesystem::exists(other));
  // The new rates apply at once.
  json bill =
      broker.Usage({{"what", "bill"}, {"period", sessions.begin()->second["start"].get<std::string>().substr(0, 7)}});
  ASSERT_EQ(bill["lines"].size(), 1u) << bill.dump();
  EXPECT_EQ(bill["lines"][0]["rate"], "3");
}

TEST(Metering, ACorruptDatabaseStopsTheBrokerWithStatus2NamingTheFile) {
  testing_support::TestBroker broker(kOneGpu, Config());
  broker.Kill();
  std::ofstream(broker.database(), std::ios::trunc) << std::string(4096, 'x');
  std::remove((broker.database() + "-wal").c_str());
  std::remove((broker.database() + "-shm").c_str());
  auto env = broker.node().Env();
  env["STATE_DIRECTORY"] = std::filesystem::path(broker.database()).parent_path().string();
  Child again({BROKER_PATH, "--socket", broker.socket() + ".2"}, env);
  const std::string output = again.ReadAll();
  const int status = again.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status << "\n" << output;
  EXPECT_NE(output.find(broker.database()), std::string::npos) << output;
  EXPECT_NE(output.find("not a database"), std::string::npos) << output;
}

}  // namespace
