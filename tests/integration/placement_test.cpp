// Placement with real processes on simgpu: the broker, the shim, the NCCL sample over
// simgpu's NCCL (which, like NCCL, refuses two ranks on one GPU). A 2-rank job lands on
// two GPUs and all-reduces; a 4-rank job lands on the NVLink pairs; a third heavy
// client goes to the less loaded GPU; a job that cannot be placed is told why; a
// communicator across GPUs without P2P is warned of; `gpushare-smi --explain` says why.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "test_broker.h"

namespace {

using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::RunResult;
using testing_support::RunToEnd;
using testing_support::TestBroker;

// Four GPUs as two NVLink pairs (0=1, 2=3), PCIe P2P across the pairs, with PCI ids the
// test can map back to indices.
const char kFourGpus[] = R"({"gpus": [
  {"name": "sim0", "memory": 17179869184, "pci_bus_id": "0000:10:00.0"},
  {"name": "sim1", "memory": 17179869184, "pci_bus_id": "0000:11:00.0"},
  {"name": "sim2", "memory": 17179869184, "pci_bus_id": "0000:12:00.0"},
  {"name": "sim3", "memory": 17179869184, "pci_bus_id": "0000:13:00.0"}],
  "links": [[0, 1, "nvlink"], [2, 3, "nvlink"], [0, 2, "pcie"], [0, 3, "pcie"], [1, 2, "pcie"], [1, 3, "pcie"]]})";
const char kTwoGpus[] = R"({"gpus": [
  {"name": "sim0", "memory": 17179869184, "pci_bus_id": "0000:10:00.0"},
  {"name": "sim1", "memory": 17179869184, "pci_bus_id": "0000:11:00.0"}],
  "links": [[0, 1, "pcie"]]})";
const char kTwoGpusWithoutP2p[] = R"({"gpus": [
  {"name": "sim0", "memory": 17179869184, "pci_bus_id": "0000:10:00.0"},
  {"name": "sim1", "memory": 17179869184, "pci_bus_id": "0000:11:00.0"}]})";

// The physical GPU (by its PCI id 0000:1N:00.0) the sample's rank line names, or -1.
int GpuOf(const std::string& output, int rank) {
  std::smatch m;
  const std::regex line("rank " + std::to_string(rank) +
                        R"( of \d+ on virtual GPU \d+ \([^,]*, PCI 0000:1(\d):00\.0\): sum ok)");
  return std::regex_search(output, m, line) ? std::stoi(m[1]) : -1;
}

// The ranks of one job, each a process of the NCCL sample under the shim.
class Job {
 public:
  Job(TestBroker& broker, const std::string& name, int ranks, std::vector<std::string> args = {},
      std::map<std::string, std::string> extra = {}) {
    id_file_ = "/tmp/gs-placement-" + std::to_string(getpid()) + "-" + name + ".id";
    std::remove(id_file_.c_str());
    for (int r = 0; r < ranks; ++r) {
      auto env = extra;
      env["GPUSHARE_JOB"] = name;
      env["LOCAL_RANK"] = std::to_string(r);
      env.emplace("LOCAL_WORLD_SIZE", std::to_string(ranks));
      std::vector<std::string> argv = {NCCL_SAMPLE, "--rank", std::to_string(r), "--nranks", std::to_string(ranks),
                                       "--id-file", id_file_, "--count",         "4096"};
      argv.insert(argv.end(), args.begin(), args.end());
      ranks_.push_back(std::make_unique<Child>(argv, broker.ClientEnv(env)));
    }
  }
  ~Job() { std::remove(id_file_.c_str()); }
  Child& rank(int r) { return *ranks_[r]; }
  // Every rank's exit code and output.
  std::vector<std::pair<int, std::string>> Finish() {
    std::vector<std::pair<int, std::string>> out;
    for (auto& c : ranks_) {
      c->CloseStdin();
      std::string text = c->ReadAll();
      const int st = c->Wait();
      out.emplace_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), text);
    }
    return out;
  }

 private:
  std::string id_file_;
  std::vector<std::unique_ptr<Child>> ranks_;
};

TEST(Placement, ATwoRankJobLandsOnTwoGpusAndAllReduces) {
  TestBroker broker(kTwoGpus, "");
  Job job(broker, "pair", 2, {"--rounds", "3000"});  // alive for a few seconds
  // While it runs: the communicator and the explanation.
  nlohmann::json status;
  for (int i = 0; i < 200; ++i) {
    status = broker.Status();
    if (!status["communicators"].empty() && status["communicators"][0]["members"].size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(status["communicators"].size(), 1u) << status.dump();
  EXPECT_EQ(status["communicators"][0]["nranks"], 2);
  EXPECT_EQ(status["communicators"][0]["warning"], "");
  const RunResult explain =
      RunToEnd({SMI_PATH, "--socket", broker.socket(), "--explain", std::to_string(job.rank(1).pid())}, {});
  EXPECT_EQ(explain.exit_code, 0) << explain.out;
  EXPECT_NE(explain.out.find("rank 1 uses virtual 1 -> GPU"), std::string::npos) << explain.out;

  auto results = job.Finish();
  for (const auto& [code, out] : results) EXPECT_EQ(code, 0) << out;
  const int g0 = GpuOf(results[0].second, 0), g1 = GpuOf(results[1].second, 1);
  EXPECT_NE(g0, -1) << results[0].second;
  EXPECT_NE(g1, -1) << results[1].second;
  EXPECT_NE(g0, g1);
}

TEST(Placement, WithoutTheBrokerTwoRanksOnOneGpuAreRefusedByNccl) {
  // The check the test above relies on: simgpu's NCCL does refuse a shared GPU.
  TestBroker broker(kTwoGpus, "");
  Job job(broker, "shared", 2, {"--device", "0"},
          {{"GPUSHARE_SOCKET", "/nonexistent/gpushare.sock"}, {"GPUSHARE_VISIBLE_DEVICES", "0"}});
  auto results = job.Finish();
  EXPECT_NE(results[0].first, 0);
  EXPECT_NE(results[0].second.find("Duplicate GPU detected"), std::string::npos) << results[0].second;
}

TEST(Placement, AFourRankJobLandsOnTheNvlinkPairs) {
  TestBroker broker(kFourGpus, "");
  Job job(broker, "quad", 4);
  auto results = job.Finish();
  std::vector<int> gpus;
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(results[r].first, 0) << results[r].second;
    gpus.push_back(GpuOf(results[r].second, r));
  }
  EXPECT_EQ(std::set<int>(gpus.begin(), gpus.end()).size(), 4u);
  // Ranks 0,1 and 2,3 (neighbours in the ring) each on an NVLink pair: {0,1} or {2,3}.
  EXPECT_EQ(gpus[0] / 2, gpus[1] / 2) << gpus[0] << " " << gpus[1];
  EXPECT_EQ(gpus[2] / 2, gpus[3] / 2) << gpus[2] << " " << gpus[3];
}

TEST(Placement, AThirdHeavyClientGoesToTheLessLoadedGpu) {
  TestBroker broker(kTwoGpus, "");
  auto worker = [&](const std::string& seconds, const std::string& stop_after) {
    std::vector<std::string> argv = {WORKER_PATH, "--seconds", seconds, "--kind", "compute", "--us", "500"};
    if (!stop_after.empty()) argv.insert(argv.end(), {"--stop-after", stop_after});
    return std::make_unique<Child>(argv, broker.ClientEnv());
  };
  auto busy = worker("8", "");
  ASSERT_NE(busy->ReadLine().find("first_launch"), std::string::npos);
  auto light = worker("8", "0.3");  // a short burst, then idle
  ASSERT_NE(light->ReadLine().find("first_launch"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  nlohmann::json status = broker.Status();
  const nlohmann::json* a = ClientWithPid(status, busy->pid());
  const nlohmann::json* b = ClientWithPid(status, light->pid());
  ASSERT_TRUE(a && b) << status.dump();
  const int busy_gpu = (*a)["devices"][0]["physical"], light_gpu = (*b)["devices"][0]["physical"];
  ASSERT_NE(busy_gpu, light_gpu) << "two compute clients are spread first";
  auto third = worker("1", "");
  ASSERT_NE(third->ReadLine().find("first_launch"), std::string::npos);
  status = broker.Status();
  const nlohmann::json* c = ClientWithPid(status, third->pid());
  ASSERT_TRUE(c) << status.dump();
  EXPECT_EQ((*c)["devices"][0]["physical"], light_gpu) << nlohmann::json((*c)["placement"]).dump(1);
  const std::string why = nlohmann::json((*c)["placement"]).dump();
  EXPECT_NE(why.find("demand"), std::string::npos) << why;
}

TEST(Placement, AJobThatCannotBePlacedIsToldWhy) {
  TestBroker broker(kTwoGpus, "");
  Job job(broker, "triple", 3);
  auto results = job.Finish();
  for (const auto& [code, out] : results) {
    EXPECT_NE(code, 0);
    EXPECT_NE(out.find("job \"triple\" has 3 ranks on this node but the tenant may use only 2 GPUs"), std::string::npos)
        << out;
    EXPECT_NE(out.find("NCCL refuses two ranks on one GPU"), std::string::npos) << out;
  }
}

TEST(Placement, ACommunicatorAcrossGpusWithoutP2pIsWarnedOf) {
  TestBroker broker(kTwoGpusWithoutP2p, "");
  Job job(broker, "far", 2);
  auto results = job.Finish();
  std::string all;
  for (const auto& [code, out] : results) {
    EXPECT_EQ(code, 0) << out;
    all += out;
  }
  EXPECT_NE(all.find("communicator spans GPUs without P2P"), std::string::npos) << all;
}

TEST(Placement, TheDriversPeerAccessOverrulesNvmlsP2pStatus) {
  // NVML says "not supported" for the pair, the driver allows peer access: the broker's
  // topology takes the driver's word (PIX: P2P behind one switch), not NVML's ("-").
  TestBroker broker(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824}],
                        "links": [[0, 1, "pcie"]], "nvml_p2p": false})",
                    "");
  const std::string topology = broker.Status()["topology"];
  EXPECT_NE(topology.find("GPU0  X     PIX"), std::string::npos) << topology;
  TestBroker control(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824}]})", "");
  const std::string none = control.Status()["topology"];
  EXPECT_NE(none.find("GPU0  X     -"), std::string::npos) << none;
}

}  // namespace
