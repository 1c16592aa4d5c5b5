// The broker's /metrics on simgpu: a real scrape passes Debian's `promtool check
// metrics`; it shows what the broker knows of its clients (memory held and cap, OOM
// refusals, GPU time, gate waits, hand-offs), and a departed client's series go away;
// a port in use stops the broker at start with a clear error.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "metrics_http.h"
#include "subprocess.h"
#include "test_broker.h"

namespace {

using testing_support::Child;
using testing_support::FreePort;
using testing_support::HttpGet;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";

std::string MetricsConfig(int port) {
  return "[metering]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:" + std::to_string(port) +
         "\"\nrefresh = 0.05\n";
}

// The value of the sample of `name` whose labels include every one of `labels`.
std::optional<double> Sample(const std::string& text, const std::string& name,
                             const std::map<std::string, std::string>& labels = {}) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool all = true;
    for (const auto& [k, v] : labels) all = all && line.find(k + "=\"" + v + "\"") != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

// The sum of the samples of `name` whose labels include every one of `labels`.
double SumOf(const std::string& text, const std::string& name, const std::map<std::string, std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& [k, v] : labels) all = all && line.find(k + "=\"" + v + "\"") != std::string::npos;
    if (all) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string AskClient(Child& c, const std::string& command) {
  c.Send(command + "\n");
  for (;;) {
    std::string line = c.ReadLine();
    if (line.rfind("gpushare", 0) != 0) return line;
  }
}

// Scrapes until `ready` holds for the text (the broker refreshes its snapshot every
// 50 ms; 15 s is a bound for a loaded machine, not a figure), then returns the last text.
std::string ScrapeUntil(int port, const std::function<bool(const std::string&)>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  std::string text;
  do {
    std::string error;
    text = HttpGet(port, "/metrics", &error).value_or("");
    if (ready(text)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  return text;
}

TEST(Metrics, AScrapePassesPromtoolAndShowsAClientsMemoryAndRefusalsUntilItLeaves) {
  if (std::string(PROMTOOL).empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  const int port = FreePort();
  // Tenant alpha's cap spans its processes: the broker refuses what the shim alone cannot see.
  testing_support::TestBroker broker(kOneGpu, MetricsConfig(port) + "[tenants.alpha]\nmemory = \"1GiB\"\n");
  auto first =
      std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, broker.ClientEnv({{"GPUSHARE_TENANT", "alpha"}}));
  ASSERT_EQ(AskClient(*first, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(AskClient(*first, "alloc 0 805306368"), "alloc=ok");  // 768 MiB
  auto c = std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH},
                                   broker.ClientEnv({{"GPUSHARE_TENANT", "alpha"}, {"GPUSHARE_JOB", "j1"}}));
  ASSERT_EQ(AskClient(*c, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(AskClient(*c, "alloc 0 134217728"), "alloc=ok");  // 128 MiB
  ASSERT_NE(AskClient(*c, "alloc 0 268435456"), "alloc=ok");  // 256 MiB more: past the tenant's 1 GiB
  const std::string pid = std::to_string(c->pid());

  const std::string text = ScrapeUntil(port, [&](const std::string& t) {
    return Sample(t, "gpushare_client_oom_refusals_total", {{"pid", pid}}) == 1.0;
  });
  std::string output;
  const int status = testing_support::RunWithInput(std::string(PROMTOOL) + " check metrics", text, &output);
  EXPECT_EQ(status, 0) << output << "\n" << text;

  const std::map<std::string, std::string> who{{"pid", pid}, {"tenant", "alpha"}, {"job", "j1"}};
  auto where = who;
  where["gpu"] = "0";
  EXPECT_EQ(Sample(text, "gpushare_clients"), 2.0);
  EXPECT_EQ(Sample(text, "gpushare_registrations_total"), 2.0);
  EXPECT_EQ(Sample(text, "gpushare_client_info", {{"pid", pid}, {"class", "unknown"}, {"profile", ""}}), 1.0);
  EXPECT_GE(Sample(text, "gpushare_client_memory_held_bytes", where).value_or(0), 134217728.0);
  EXPECT_EQ(Sample(text, "gpushare_client_memory_cap_bytes", where), 1073741824.0);
  EXPECT_EQ(Sample(text, "gpushare_client_oom_refusals_total", who), 1.0);
  EXPECT_EQ(Sample(text, "gpushare_tenant_oom_refusals_total", {{"tenant", "alpha"}}), 1.0);
  EXPECT_GE(Sample(text, "gpushare_tenant_memory_held_bytes", {{"tenant", "alpha"}, {"gpu", "0"}}).value_or(0),
            939524096.0);
  EXPECT_EQ(Sample(text, "gpushare_tenant_memory_cap_bytes", {{"tenant", "alpha"}, {"gpu", "0"}}), 1073741824.0);
  EXPECT_EQ(Sample(text, "gpushare_gpu_memory_total_bytes", {{"gpu", "0"}}), 17179869184.0);  // NVML
  EXPECT_TRUE(Sample(text, "gpushare_gpu_info", {{"gpu", "0"}, {"name", "sim0"}}));
  EXPECT_EQ(Sample(text, "gpushare_gpu_pcie_link_generation", {{"gpu", "0"}}), 4.0);  // simgpu's default
  EXPECT_EQ(Sample(text, "gpushare_gpu_pcie_link_width", {{"gpu", "0"}}), 16.0);

  c->Kill(SIGKILL);
  c->Wait();
  const std::string after =
      ScrapeUntil(port, [](const std::string& t) { return Sample(t, "gpushare_clients") == 1.0; });
  EXPECT_EQ(after.find("pid=\"" + pid + "\""), std::string::npos) << "a departed client's series stay:\n" << after;
  EXPECT_EQ(Sample(after, "gpushare_clients"), 1.0);
  EXPECT_EQ(Sample(after, "gpushare_reclaims_total"), 1.0);
  EXPECT_GE(Sample(after, "gpushare_reclaimed_bytes_total").value_or(0), 134217728.0);
  AskClient(*first, "quit");
  first->Wait();
  const std::string empty =
      ScrapeUntil(port, [](const std::string& t) { return Sample(t, "gpushare_clients") == 0.0; });
  EXPECT_FALSE(Sample(empty, "gpushare_tenant_oom_refusals_total", {{"tenant", "alpha"}})) << "bounded: live tenants";
  EXPECT_EQ(Sample(empty, "gpushare_clients"), 0.0);
}

TEST(Metrics, TwoSaturatingClientsShowGpuTimeGateWaitsAndHandOffs) {
  const int port = FreePort();
  testing_support::TestBroker broker(kOneGpu, MetricsConfig(port));
  std::vector<std::unique_ptr<Child>> workers;
  for (const char* tenant : {"a", "b"}) {
    workers.push_back(std::make_unique<Child>(
        std::vector<std::string>{WORKER_PATH, "--kind", "compute", "--us", "500", "--seconds", "30"},
        broker.ClientEnv({{"GPUSHARE_TENANT", tenant}})));
    workers.back()->CloseStdin();
  }
  // Until both have waited at their gates (each has been granted after a wait).
  const std::string text = ScrapeUntil(port, [&](const std::string& t) {
    for (auto& w : workers)
      if (Sample(t, "gpushare_client_gate_waits_total", {{"pid", std::to_string(w->pid())}}).value_or(0) < 2)
        return false;
    return true;
  });
  for (auto& w : workers) {
    const std::string pid = std::to_string(w->pid());
    // Two saturating clients on one GPU: each has held it and waited for it.
    EXPECT_GT(Sample(text, "gpushare_client_gpu_seconds_total", {{"pid", pid}}).value_or(0), 0.0) << text;
    EXPECT_GT(Sample(text, "gpushare_client_gate_waits_total", {{"pid", pid}}).value_or(0), 0.0) << text;
    EXPECT_GT(Sample(text, "gpushare_client_gate_wait_seconds_total", {{"pid", pid}}).value_or(0), 0.0) << text;
    EXPECT_GT(Sample(text, "gpushare_client_launches_total", {{"pid", pid}}).value_or(0), 0.0) << text;
  }
  EXPECT_GE(Sample(text, "gpushare_gpu_handoffs_total", {{"gpu", "0"}}).value_or(0), 2.0) << text;
  EXPECT_GT(Sample(text, "gpushare_records_total").value_or(0), 0.0);
  EXPECT_EQ(Sample(text, "gpushare_tenant_entitled_share_ratio", {{"tenant", "a"}, {"gpu", "0"}}), 0.5);  // 1 : 1
  for (const char* tenant : {"a", "b"}) {
    // The tenant's histogram: every grant after a wait in some bucket, +Inf holding them all.
    const double count = Sample(text, "gpushare_tenant_gate_wait_seconds_count", {{"tenant", tenant}}).value_or(0);
    EXPECT_GT(count, 0.0) << text;
    EXPECT_EQ(Sample(text, "gpushare_tenant_gate_wait_seconds_bucket", {{"tenant", tenant}, {"le", "+Inf"}}), count);
  }
  for (auto& w : workers) {
    w->Kill(SIGKILL);
    w->Wait();
  }
}

#ifdef NCCL_SAMPLE
// A two-rank NCCL job: its ranks' collective time (measured on their streams) per client
// and GPU, and per job beside the job's GPU time; the text passes promtool.
TEST(Metrics, AnNcclJobShowsItsCollectiveTimeBesideItsGpuTime) {
  const int port = FreePort();
  testing_support::TestBroker broker(
      R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}],
          "links": [[0, 1, "nvlink"]]})",
      MetricsConfig(port));
  const std::string id_file = "/tmp/gs-metrics-nccl-" + std::to_string(getpid()) + ".id";
  std::vector<std::unique_ptr<Child>> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.push_back(std::make_unique<Child>(
        std::vector<std::string>{NCCL_SAMPLE, "--rank", std::to_string(r), "--nranks", "2", "--id-file", id_file,
                                 "--count", "262144", "--rounds", "100000"},
        broker.ClientEnv({{"GPUSHARE_JOB", "pair"}, {"LOCAL_RANK", std::to_string(r)}, {"LOCAL_WORLD_SIZE", "2"}})));
  const std::map<std::string, std::string> job{{"tenant", "default"}, {"job", "pair"}};
  const std::string text = ScrapeUntil(port, [&](const std::string& t) {
    for (auto& r : ranks)
      if (SumOf(t, "gpushare_client_collective_seconds_total", {{"pid", std::to_string(r->pid())}}) <= 0) return false;
    return Sample(t, "gpushare_job_gpu_seconds_total", job).value_or(0) > 0;
  });
  for (auto& r : ranks) {
    r->Kill(SIGKILL);
    r->Wait();
  }
  std::filesystem::remove(id_file);
  double ranks_sum = 0;
  for (auto& r : ranks) {
    // Each rank sees both GPUs (LOCAL_WORLD_SIZE) and runs on one: its series per GPU add up.
    const double seconds =
        SumOf(text, "gpushare_client_collective_seconds_total", {{"pid", std::to_string(r->pid())}, {"job", "pair"}});
    EXPECT_GT(seconds, 0.0) << text;
    ranks_sum += seconds;
  }
  // The job's figure is its ranks' (one scrape, one snapshot).
  EXPECT_NEAR(Sample(text, "gpushare_job_collective_seconds_total", job).value_or(-1), ranks_sum, 1e-6) << text;
  const double gpu = Sample(text, "gpushare_job_gpu_seconds_total", job).value_or(0);
  EXPECT_GT(gpu, 0.0) << text;
  const double share = Sample(text, "gpushare_job_collective_share_ratio", job).value_or(-1);
  EXPECT_GT(share, 0.0) << text;
  EXPECT_LE(share, 1.0) << text;
  if (std::string(PROMTOOL).empty()) return;
  std::string output;
  EXPECT_EQ(testing_support::RunWithInput(std::string(PROMTOOL) + " check metrics", text, &output), 0) << output << "\n"
                                                                                                       << text;
}
#endif

TEST(Metrics, APortInUseStopsTheBrokerAtStartSayingSo) {
  const int port = FreePort();
  testing_support::TestBroker first(kOneGpu, MetricsConfig(port));
  // A second broker (its own socket) asked for the same port.
  const std::string config = "/tmp/gs-metrics-port-" + std::to_string(getpid()) + ".toml";
  std::ofstream(config) << MetricsConfig(port);
  const std::string socket = "/tmp/gs-metrics-port-" + std::to_string(getpid()) + ".sock";
  auto env = first.node().Env();
  env["STATE_DIRECTORY"] = "/tmp";
  Child second({BROKER_PATH, "--config", config, "--socket", socket}, env);
  const std::string out = second.ReadAll();
  const int status = second.Wait();
  std::remove(config.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << "\n" << out;
  EXPECT_NE(out.find("metrics: cannot listen on 127.0.0.1:" + std::to_string(port) + ": the port is in use"),
            std::string::npos)
      << out;
  EXPECT_TRUE(first.Alive());
}

}  // namespace

namespace {

// A real Prometheus server (Debian's) on 127.0.0.1 scrapes a broker on simgpu every
// 100 ms; its HTTP API then answers a query with what the broker exports.
TEST(Metrics, ARealPrometheusScrapesTheBrokerAndAnswersAQuery) {
  if (std::string(PROMETHEUS).empty()) GTEST_SKIP() << "prometheus not installed (Debian package prometheus)";
  const int port = FreePort();
  testing_support::TestBroker broker(kOneGpu, MetricsConfig(port) + "[tenants.alpha]\nmemory = \"2GiB\"\n");
  auto c =
      std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, broker.ClientEnv({{"GPUSHARE_TENANT", "alpha"}}));
  ASSERT_EQ(AskClient(*c, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(AskClient(*c, "alloc 0 1073741824"), "alloc=ok");

  const std::string dir = "/tmp/gs-prometheus-" + std::to_string(getpid());
  std::filesystem::create_directories(dir + "/data");
  std::ofstream(dir + "/prometheus.yml") << "global:\n  scrape_interval: 100ms\n  evaluation_interval: 1s\n"
                                         << "rule_files: ['" << PROJECT_DIR
                                         << "/deploy/prometheus/gpushare.rules.yml']\n"
                                         << "scrape_configs:\n  - job_name: gpushare\n    static_configs:\n"
                                         << "      - targets: ['127.0.0.1:" << port << "']\n";
  const int web = FreePort();
  Child prometheus({PROMETHEUS, "--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/data",
                    "--web.listen-address=127.0.0.1:" + std::to_string(web)},
                   {});
  // The tenant's memory as Prometheus stored it: what the ledger holds for alpha.
  const std::string query = "/api/v1/query?query=gpushare_tenant_memory_held_bytes%7Btenant%3D%22alpha%22%7D";
  std::string body, error;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);  // a loaded 2-core machine
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto b = HttpGet(web, query, &error); b && b->find("\"value\"") != std::string::npos) {
      body = *b;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  prometheus.Kill(SIGTERM);
  const std::string log = prometheus.ReadAll();
  prometheus.Wait();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  ASSERT_FALSE(body.empty()) << "no answer from Prometheus: " << error << "\n" << log;
  const nlohmann::json answer = nlohmann::json::parse(body);
  EXPECT_EQ(answer["status"], "success") << body;
  ASSERT_EQ(answer["data"]["result"].size(), 1u) << body;
  const nlohmann::json& r = answer["data"]["result"][0];
  EXPECT_EQ(r["metric"]["job"], "gpushare");
  EXPECT_EQ(r["metric"]["gpu"], "0");
  EXPECT_GE(std::stod(r["value"][1].get<std::string>()), 1073741824.0) << body;
  AskClient(*c, "quit");
  c->Wait();
}

}  // namespace
