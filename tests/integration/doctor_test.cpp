// gpushare-doctor on simgpu: each check driven to pass and to fail, through the
// simulated node's config (driver versions, MIG), fake /proc/modules and modprobe.d
// (GPUSHARE_DOCTOR_PROC_MODULES, GPUSHARE_DOCTOR_MODPROBE_DIR), a process named like an
// MPS daemon, a broker and its socket, configs, libraries and programs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "subprocess.h"
#include "test_broker.h"

namespace {

using nlohmann::json;
using testing_support::Child;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";

// A scratch directory with a /proc/modules and a modprobe.d of a healthy node.
class Scratch {
 public:
  Scratch() : dir_("/tmp/gs-doctor-" + std::to_string(getpid()) + "-" + std::to_string(counter_++)) {
    std::filesystem::create_directories(dir_ + "/modprobe.d");
    Write("modules", "nvidia_uvm 1998848 0 - Live 0x0\nnvidia 62087168 1 nvidia_uvm, Live 0x0\n");
    Write("modprobe.d/blacklist-nouveau.conf", "# keep NVIDIA's\nblacklist nouveau\noptions nouveau modeset=0\n");
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
    return dir_ + "/" + name;
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  static inline int counter_ = 0;
  std::string dir_;
};

std::string AskClient(Child& c, const std::string& command) {
  c.Send(command + "\n");
  for (;;) {
    std::string line = c.ReadLine();
    if (line.rfind("gpushare", 0) != 0) return line;
  }
}

struct Doctor {
  int exit_code;
  json report;
  std::string out;
  // The verdict of the first check named `name`, "" if none.
  std::string Verdict(const std::string& name) const {
    for (const json& c : report["checks"])
      if (c["check"] == name) return c["verdict"];
    return "";
  }
  std::string Detail(const std::string& name) const {
    for (const json& c : report["checks"])
      if (c["check"] == name) return c["detail"].get<std::string>() + " | fix: " + c["fix"].get<std::string>();
    return "";
  }
};

Doctor RunDoctor(const testing_support::SimNode& node, const Scratch& scratch, std::vector<std::string> args,
                 std::map<std::string, std::string> extra = {}) {
  auto env = node.Env();
  env["GPUSHARE_DOCTOR_PROC_MODULES"] = scratch.path("modules");
  env["GPUSHARE_DOCTOR_MODPROBE_DIR"] = scratch.path("modprobe.d");
  for (const auto& [k, v] : extra) env[k] = v;
  args.insert(args.begin(), {DOCTOR_PATH, "--json"});
  auto r = testing_support::RunToEnd(args, env);
  Doctor d{r.exit_code, json(), r.out};
  try {
    d.report = json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << r.out;
  }
  return d;
}

TEST(Doctor, AHealthyNodeWithABrokerPassesEveryCheck) {
  Scratch scratch;
  testing_support::TestBroker broker(kOneGpu, "[tenants.a]\nmemory = \"4GiB\"\n");
  const std::string config = scratch.Write("broker.toml", "[tenants.a]\nmemory = \"4GiB\"\n");
  Doctor d =
      RunDoctor(broker.node(), scratch,
                {"--socket", broker.socket(), "--config", config, "--lib", GPUSHARE_LIB, "--program", CLIENT_PATH});
  for (const char* check :
       {"driver", "nouveau", "mig", "mps", "broker", "socket", "config", "preload", "program", "memory", "nccl"})
    EXPECT_EQ(d.Verdict(check), "pass") << check << ": " << d.Detail(check);
  EXPECT_EQ(d.exit_code, 0) << d.out;
  EXPECT_EQ(d.report["ok"], true);
}

TEST(Doctor, ADriverWhoseNvmlSaysAnotherVersionFails) {
  Scratch scratch;
  testing_support::SimNode node(R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": [],
                                    "driver_version": 13000, "nvml_driver_version": 12040})");
  Doctor d = RunDoctor(node, scratch, {"--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("driver"), "fail") << d.Detail("driver");
  EXPECT_NE(d.Detail("driver").find("libcuda 13000, NVML 12040"), std::string::npos) << d.Detail("driver");
  EXPECT_EQ(d.exit_code, 1);
}

TEST(Doctor, NouveauLoadedFailsAndNotBlacklistedWarns) {
  testing_support::SimNode node(kOneGpu);
  Scratch loaded;
  loaded.Write("modules", "nouveau 2285568 0 - Live 0x0\ndrm 622592 1 nouveau, Live 0x0\n");
  Doctor d = RunDoctor(node, loaded, {"--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("nouveau"), "fail") << d.Detail("nouveau");
  EXPECT_NE(d.Detail("nouveau").find("blacklist nouveau"), std::string::npos);
  Scratch unlisted;
  std::filesystem::remove(unlisted.path("modprobe.d/blacklist-nouveau.conf"));
  unlisted.Write("modprobe.d/other.conf", "# blacklist nouveau\nblacklist pcspkr\n");
  EXPECT_EQ(RunDoctor(node, unlisted, {"--lib", GPUSHARE_LIB}).Verdict("nouveau"), "warn");
}

TEST(Doctor, MigModeOnFails) {
  Scratch scratch;
  testing_support::SimNode node(
      R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184, "mig": true}],
          "links": []})");
  Doctor d = RunDoctor(node, scratch, {"--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("mig"), "fail") << d.Detail("mig");
  EXPECT_NE(d.Detail("mig").find("GPU(s) 1:"), std::string::npos) << d.Detail("mig");
}

TEST(Doctor, AnMpsControlDaemonFails) {
  Scratch scratch;
  testing_support::SimNode node(kOneGpu);
  // A process that is, by its name, an MPS control daemon.
  const std::string fake = scratch.path("nvidia-cuda-mps-control");
  std::filesystem::copy_file("/bin/sleep", fake);
  Child mps({fake, "30"}, {});
  for (int i = 0; i < 1000; ++i) {  // until it has exec'd (a loaded machine: up to 10 s)
    std::string comm;
    std::getline(std::ifstream("/proc/" + std::to_string(mps.pid()) + "/comm"), comm);
    if (comm == "nvidia-cuda-mps") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Doctor d = RunDoctor(node, scratch, {"--lib", GPUSHARE_LIB});
  mps.Kill(SIGKILL);
  mps.Wait();
  EXPECT_EQ(d.Verdict("mps"), "fail") << d.Detail("mps");
  EXPECT_NE(d.Detail("mps").find("pid " + std::to_string(mps.pid())), std::string::npos) << d.Detail("mps");
}

TEST(Doctor, NoBrokerFailsAndASocketOthersCannotOpenFails) {
  Scratch scratch;
  testing_support::SimNode node(kOneGpu);
  Doctor none = RunDoctor(node, scratch, {"--socket", scratch.path("none.sock"), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(none.Verdict("broker"), "fail") << none.Detail("broker");
  EXPECT_EQ(none.Verdict("memory"), "skip");
  testing_support::TestBroker broker(kOneGpu, "");
  chmod(broker.socket().c_str(), 0600);
  Doctor closed = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(closed.Verdict("broker"), "pass") << closed.Detail("broker");  // its owner still may
  EXPECT_EQ(closed.Verdict("socket"), "fail") << closed.Detail("socket");
  EXPECT_NE(closed.Detail("socket").find("mode 0600"), std::string::npos) << closed.Detail("socket");
}

TEST(Doctor, AMalformedConfigFailsNamingFileAndLine) {
  Scratch scratch;
  testing_support::SimNode node(kOneGpu);
  const std::string config = scratch.Write("bad.toml", "[tenants.a]\nweight = 1\nmemroy = \"1GiB\"\n");
  Doctor d = RunDoctor(node, scratch, {"--config", config, "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("config"), "fail");
  EXPECT_NE(d.Detail("config").find(config + ":3: tenants.a.memroy: unknown key"), std::string::npos)
      << d.Detail("config");
}

TEST(Doctor, ALibraryThatIsNotTheShimFailsThePreloadProbe) {
  Scratch scratch;
  testing_support::SimNode node(kOneGpu);
  Doctor other = RunDoctor(node, scratch, {"--lib", "/lib/x86_64-linux-gnu/libm.so.6"});
  EXPECT_EQ(other.Verdict("preload"), "fail") << other.Detail("preload");  // the probe sees the whole 16 GiB
  EXPECT_NE(other.Detail("preload").find("16.00 GiB"), std::string::npos) << other.Detail("preload");
  Doctor missing = RunDoctor(node, scratch, {"--lib", scratch.path("libgpushare.so")});
  EXPECT_EQ(missing.Verdict("preload"), "fail") << missing.Detail("preload");
}

TEST(Doctor, StaticAndSetuidProgramsFail) {
  Scratch scratch;
  testing_support::SimNode node(kOneGpu);
  const std::string setuid = scratch.path("setuid-app");
  std::filesystem::copy_file(CLIENT_PATH, setuid);
  chmod(setuid.c_str(), 04755);
  Doctor d = RunDoctor(node, scratch, {"--lib", GPUSHARE_LIB, "--program", STATIC_PROBE_PATH, "--program", setuid});
  std::vector<std::string> verdicts, details;
  for (const json& c : d.report["checks"])
    if (c["check"] == "program") {
      verdicts.push_back(c["verdict"]);
      details.push_back(c["detail"]);
    }
  ASSERT_EQ(verdicts.size(), 2u) << d.out;
  EXPECT_EQ(verdicts[0], "fail");
  EXPECT_NE(details[0].find("statically linked"), std::string::npos) << details[0];
  EXPECT_EQ(verdicts[1], "fail");
  EXPECT_NE(details[1].find("setuid"), std::string::npos) << details[1];
}

TEST(Doctor, CapsPromisedPastAGpusMemoryFail) {
  Scratch scratch;
  // Admission refuses such promises by default; oversubscribed, the broker makes them.
  testing_support::TestBroker broker(
      kOneGpu,
      "[node]\nadmission = \"oversubscribe\"\n[tenants.a]\nmemory = \"10GiB\"\n[tenants.b]\nmemory = \"10GiB\"\n");
  std::vector<std::unique_ptr<Child>> clients;
  for (const char* tenant : {"a", "b"}) {
    clients.push_back(std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH},
                                              broker.ClientEnv({{"GPUSHARE_TENANT", tenant}})));
    clients.back()->Send("init\n");
    std::string line;
    while ((line = clients.back()->ReadLine()).rfind("gpushare", 0) == 0) {
    }
    ASSERT_EQ(line, "devices=1 init=CUDA_SUCCESS");
  }
  Doctor d = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("memory"), "fail") << d.Detail("memory");
  EXPECT_NE(d.Detail("memory").find("promised 20.00 GiB to 2 tenant(s)"), std::string::npos) << d.Detail("memory");
  for (auto& c : clients) c->Send("quit\n");
}

// A process outside gpushare (the test client without the shim) holds 10 GiB of a
// 16 GiB GPU on which tenant a was promised 8 GiB: a's clients would get out of memory
// below their cap, and the doctor names the process. With it gone, the same node passes
// and says what a new client has room for: the largest vGPU instance that still fits.
TEST(Doctor, MemoryHeldByAProcessOutsideGpushareFailsNamingIt) {
  Scratch scratch;
  testing_support::TestBroker broker(kOneGpu,
                                     "[tenants.a]\nmemory = \"8GiB\"\n[profiles.q4g]\nmemory = \"4GiB\"\n"
                                     "compute = 0.25\n[profiles.q2g]\nmemory = \"2GiB\"\ncompute = 0.125\n");
  Child a({CLIENT_PATH}, broker.ClientEnv({{"GPUSHARE_TENANT", "a"}}));
  ASSERT_EQ(AskClient(a, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(AskClient(a, "alloc 0 1073741824"), "alloc=ok");
  Doctor fits = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(fits.Verdict("memory"), "pass") << fits.Detail("memory");
  for (const char* said : {"promised 8.00 GiB to 1 tenant(s) [a 8.00 GiB (holds 1.00 GiB)]",
                           "room for a new client: 8.00 GiB", "largest instance that fits: q4g (4.00 GiB)"})
    EXPECT_NE(fits.Detail("memory").find(said), std::string::npos) << said << " in " << fits.Detail("memory");

  auto env = broker.node().Env();  // no LD_PRELOAD: not under gpushare
  Child outside({CLIENT_PATH}, env);
  ASSERT_EQ(AskClient(outside, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(AskClient(outside, "alloc 0 10737418240"), "alloc=ok");
  Doctor d = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("memory"), "fail") << d.Detail("memory");
  for (const std::string& said :
       {"not under gpushare: pid " + std::to_string(outside.pid()) + " (broker_client) 10.00 GiB",
        std::string("room for a new client: 0 MiB"), std::string("no instance profile fits"),
        std::string("Stop the processes not under gpushare")})
    EXPECT_NE(d.Detail("memory").find(said), std::string::npos) << said << " in " << d.Detail("memory");
  AskClient(outside, "quit");
  AskClient(a, "quit");
}

#ifdef NCCL_SAMPLE
// A two-rank job of the NCCL sample, one rank per GPU, running `extra` arguments until
// the end of the test.
class NcclJob {
 public:
  NcclJob(const testing_support::TestBroker& broker, const Scratch& scratch, std::vector<std::string> extra) {
    for (int r = 0; r < 2; ++r) {
      std::vector<std::string> args{NCCL_SAMPLE, "--rank",    std::to_string(r),      "--nranks",
                                    "2",         "--id-file", scratch.path("nccl.id")};
      args.insert(args.end(), extra.begin(), extra.end());
      ranks_.push_back(std::make_unique<Child>(
          args,
          broker.ClientEnv({{"GPUSHARE_JOB", "pair"}, {"LOCAL_RANK", std::to_string(r)}, {"LOCAL_WORLD_SIZE", "2"}})));
    }
  }
  ~NcclJob() {
    for (auto& r : ranks_) {
      r->Kill(SIGKILL);
      r->Wait();
    }
  }

 private:
  std::vector<std::unique_ptr<Child>> ranks_;
};

// The broker's reading of job "pair" once its ranks have timed `collectives` between
// them (a loaded machine: up to 20 s); null if they never do.
json WaitForCollectives(testing_support::TestBroker& broker, uint64_t collectives) {
  for (int i = 0; i < 2000; ++i) {
    json status = broker.Status();
    for (const json& j : status["jobs"])
      if (j["job"] == "pair" && j["collectives"].get<uint64_t>() >= collectives) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return nullptr;
}

const char* kTwoGpus = R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}],
                           "links": [[0, 1, "pcie"]]})";

// A two-rank job on two GPUs without P2P between them: NCCL's data goes through host
// memory, and the doctor says so with NCCL's own hints.
TEST(Doctor, AnNcclJobOnGpusWithoutP2pWarns) {
  Scratch scratch;
  testing_support::TestBroker broker(
      R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}], "links": []})",
      "");
  NcclJob job(broker, scratch, {"--count", "4096", "--rounds", "3000"});
  for (int i = 0; i < 500; ++i) {  // until both ranks joined (a loaded machine: up to 5 s)
    json status = broker.Status();
    if (!status["communicators"].empty() && status["communicators"][0]["members"].size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Doctor d = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("nccl"), "warn") << d.Detail("nccl");
  EXPECT_NE(d.Detail("nccl").find("NCCL_DEBUG=INFO"), std::string::npos) << d.Detail("nccl");
  EXPECT_NE(d.Detail("nccl").find("P2P"), std::string::npos) << d.Detail("nccl");
}

// A job that only all-reduces (1 MiB per round over PCIe P2P) spends nearly all its GPU
// time in collectives: flagged past 30 %, with the link between its GPUs and NCCL's hints.
TEST(Doctor, AnNcclJobMostlyInCollectivesIsFlagged) {
  Scratch scratch;
  testing_support::TestBroker broker(kTwoGpus, "");
  NcclJob job(broker, scratch, {"--count", "262144", "--rounds", "100000"});
  const json seen = WaitForCollectives(broker, 40);
  ASSERT_FALSE(seen.is_null()) << broker.Status().dump();
  EXPECT_GT(seen["collective_share"].get<double>(), 0.5) << seen.dump();
  EXPECT_EQ(seen["links"][0]["link"], "PCIe") << seen.dump();
  Doctor d = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("nccl"), "warn") << d.Detail("nccl");
  for (const char* said :
       {"job pair (tenant default):", "in collectives", "above 30 %", "GPUs 0-1 PCIe", "NCCL_DEBUG=INFO", "P2P/NVLink"})
    EXPECT_NE(d.Detail("nccl").find(said), std::string::npos) << said << " in " << d.Detail("nccl");
}

// The same job with 200 ms of compute per step (400 launches of 500 us on each rank's
// stream) before each all-reduce: a small share, and the check passes, saying it.
TEST(Doctor, AComputeBoundNcclJobPasses) {
  Scratch scratch;
  testing_support::TestBroker broker(kTwoGpus, "");
  NcclJob job(broker, scratch, {"--count", "262144", "--rounds", "100000", "--compute", "400"});
  const json seen = WaitForCollectives(broker, 6);
  ASSERT_FALSE(seen.is_null()) << broker.Status().dump();
  EXPECT_LT(seen["collective_share"].get<double>(), 0.3) << seen.dump();
  EXPECT_GT(seen["collective_ms"].get<double>(), 0) << seen.dump();
  Doctor d = RunDoctor(broker.node(), scratch, {"--socket", broker.socket(), "--lib", GPUSHARE_LIB});
  EXPECT_EQ(d.Verdict("nccl"), "pass") << d.Detail("nccl");
  EXPECT_NE(d.Detail("nccl").find("job pair (tenant default):"), std::string::npos) << d.Detail("nccl");
}
#endif

}  // namespace
