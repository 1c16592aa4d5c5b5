// libgpushare.so under unmodified HIP programs (hip_client, linked with -lamdhip64) on
// simgpu's HIP runtime: caps on every allocation family, the memory views, virtual
// device order, dlsym lookups, broker registration and reclaim, a CUDA and a HIP client
// accounted on one node, and (label `timing`) weighted GPU-time shares of HIP clients.
#include <gtest/gtest.h>
#include <time.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "monotonic_clock.h"
#include "subprocess.h"
#include "test_broker.h"

using testing_support::MonotonicNs;

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::Field;
using testing_support::RunToEnd;
using testing_support::SimNode;

constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

const char* kNode = R"({"gpus": [{"name": "alpha", "memory": 4294967296}, {"name": "beta", "memory": 2147483648}],
                        "links": [[0, 1, "pcie"]]})";
const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

testing_support::RunResult Client(const SimNode& node, std::vector<std::string> args,
                                  std::map<std::string, std::string> env = {}) {
  auto all = node.Env();
  all["LD_PRELOAD"] = GPUSHARE_LIB;
  for (auto& [k, v] : env) all[k] = v;
  args.insert(args.begin(), HIP_CLIENT_PATH);
  return RunToEnd(args, all);
}

// ---- standalone: caps, views, devices ----

// Each allocation family and the HIP call the shim names when it refuses one.
const std::map<std::string, std::string> kFamilies = {{"malloc", "hipMalloc"},
                                                      {"extflags", "hipExtMallocWithFlags"},
                                                      {"managed", "hipMallocManaged"},
                                                      {"pitch", "hipMallocPitch"},
                                                      {"3d", "hipMalloc3D"},
                                                      {"async", "hipMallocAsync"},
                                                      {"pool", "hipMallocFromPoolAsync"},
                                                      {"array", "hipMallocArray"},
                                                      {"array3d", "hipMalloc3DArray"},
                                                      {"arraycreate", "hipArrayCreate"},
                                                      {"vmm", "hipMemCreate"}};

class HipAllocationFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(HipAllocationFamilies, RefusedWithHipErrorOutOfMemoryAtTheCapAndAFreeMakesRoom) {
  SimNode node(kNode);
  auto r = Client(node, {"fill", "0", std::to_string(256 * kMiB), GetParam()}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), kGiB) << r.out;  // four chunks fit, a fifth would pass the cap
  EXPECT_TRUE(Has(r.out, "stopped_by=hipErrorOutOfMemory")) << r.out;
  EXPECT_TRUE(Has(r.out, kFamilies.at(GetParam()) + ": out of memory on virtual GPU 0 (physical 0)")) << r.out;
  // At the cap the view shows nothing free; a freed chunk can be taken again; all freed,
  // the whole cap is free.
  EXPECT_EQ(Field(r.out, "full_free"), 0u) << r.out;
  EXPECT_EQ(Field(r.out, "full_total"), kGiB) << r.out;
  EXPECT_TRUE(Has(r.out, "after_free=hipSuccess")) << r.out;
  EXPECT_EQ(Field(r.out, "emptied_free"), kGiB) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Every, HipAllocationFamilies,
                         ::testing::Values("malloc", "extflags", "managed", "pitch", "3d", "async", "pool", "array",
                                           "array3d", "arraycreate", "vmm"));

TEST(Hip, WithoutSettingsTheNodeIsSeenAsItIs) {
  SimNode node(kNode);
  auto r = Client(node, {"info"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "count"), 2u) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_totalmem"), 4 * kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_total"), 2 * kGiB) << r.out;
  EXPECT_TRUE(Has(r.out, "dev1_name=beta")) << r.out;
}

TEST(Hip, PropertiesTotalMemAndMemGetInfoShowTheCap) {
  SimNode node(kNode);
  auto r = Client(node, {"info"}, {{"GPUSHARE_MEMORY_LIMIT", "0=1GiB,1=512MiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_totalmem"), kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_props_total"), kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_total"), kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_free"), kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_totalmem"), 512 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_props_total"), 512 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_free"), 512 * kMiB) << r.out;
}

TEST(Hip, ACapAboveTheDeviceNeverShowsMoreThanTheDeviceHas) {
  SimNode node(kNode);
  auto r = Client(node, {"info"}, {{"GPUSHARE_MEMORY_LIMIT", "8GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_totalmem"), 2 * kGiB) << r.out;  // beta has 2 GiB
  EXPECT_EQ(Field(r.out, "dev1_props_total"), 2 * kGiB) << r.out;
  EXPECT_EQ(Field(r.out, "dev1_free"), 2 * kGiB) << r.out;
}

TEST(Hip, VisibleDevicesReorderEveryOrdinalInAndOut) {
  SimNode node(kNode);
  const std::map<std::string, std::string> env = {{"GPUSHARE_VISIBLE_DEVICES", "1,0"}};
  auto info = Client(node, {"info"}, env);
  ASSERT_EQ(info.exit_code, 0) << info.out;
  EXPECT_TRUE(Has(info.out, "dev0_name=beta")) << info.out;
  EXPECT_TRUE(Has(info.out, "dev1_name=alpha")) << info.out;
  EXPECT_EQ(Field(info.out, "dev0_totalmem"), 2 * kGiB) << info.out;
  // hipSetDevice/hipGetDevice, the bus id lookup and a pointer's device all speak of
  // virtual ordinals; the ordinal past the last virtual GPU is refused.
  for (int v : {0, 1}) {
    auto r = Client(node, {"where", std::to_string(v)}, env);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const std::string n = std::to_string(v);
    EXPECT_TRUE(Has(r.out, "current=" + n + " name=" + (v == 0 ? "beta" : "alpha") + " by_bus=" + n +
                               " ptr_device=" + n + " can_peer=1"))
        << r.out;
    EXPECT_TRUE(Has(r.out, "set_invisible=hipErrorInvalidDevice")) << r.out;
  }
}

TEST(Hip, OneVisibleDeviceIsTheOnlyOne) {
  SimNode node(kNode);
  auto r = Client(node, {"info"}, {{"GPUSHARE_VISIBLE_DEVICES", "1"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "count"), 1u) << r.out;
  EXPECT_TRUE(Has(r.out, "dev0_name=beta")) << r.out;
  EXPECT_FALSE(Has(r.out, "dev1_")) << r.out;
}

TEST(Hip, FunctionsFoundWithDlsymAreTheHooks) {
  SimNode node(kNode);
  auto r = Client(node, {"dlsym-fill", "1", std::to_string(256 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), kGiB) << r.out;
  EXPECT_TRUE(Has(r.out, "stopped_by=hipErrorOutOfMemory")) << r.out;
  EXPECT_EQ(Field(r.out, "full_total"), kGiB) << r.out;
}

// ---- with a broker ----

class Broker : public testing_support::TestBroker {
 public:
  using TestBroker::TestBroker;
  std::unique_ptr<Child> Hip(const std::map<std::string, std::string>& extra) {
    return std::make_unique<Child>(std::vector<std::string>{HIP_CLIENT_PATH, "serve"}, ClientEnv(extra));
  }
  std::unique_ptr<Child> Cuda(const std::map<std::string, std::string>& extra) {
    return std::make_unique<Child>(std::vector<std::string>{CUDA_CLIENT_PATH}, ClientEnv(extra));
  }
};

std::string Ask(Child& c, const std::string& command) {
  c.Send(command + "\n");
  // The shim may log before the answer: skip its lines.
  for (;;) {
    std::string line = c.ReadLine();
    if (line.rfind("gpushare", 0) != 0) return line;
  }
}

TEST(HipBroker, ClientRegistersIsRecordedAndItsMemoryReturnsWhenKilled) {
  Broker broker(kOneGpu, "");
  auto c = broker.Hip({{"GPUSHARE_TENANT", "h"}, {"GPUSHARE_MEMORY_LIMIT", "4GiB"}});
  ASSERT_EQ(Ask(*c, "alloc 0 2147483648"), "alloc=ok");
  // 100 kernels through each of hipLaunchKernel, hipExtLaunchKernel,
  // hipLaunchCooperativeKernel, hipModuleLaunchKernel and hipExtModuleLaunchKernel:
  // gated, recorded, named.
  ASSERT_EQ(Ask(*c, "launch 100"), "launched=hipSuccess");
  json s = broker.Status();
  const json* me = ClientWithPid(s, c->pid());
  ASSERT_NE(me, nullptr) << s.dump();
  EXPECT_EQ((*me)["tenant"], "h");
  EXPECT_EQ((*me)["devices"][0]["memory_cap"], 4 * kGiB);
  EXPECT_EQ((*me)["devices"][0]["memory_used"], 2 * kGiB);
  EXPECT_EQ(s["gpus"][0]["memory_used"], 2 * kGiB);
  // The records reach the broker (drained on its next poll), and the kernel's name
  // (hipKernelNameRefByPtr) its classifier: polled for less than the 1 s after which
  // a client without work is idle.
  json me_now;
  for (int i = 0; i < 45; ++i) {
    me_now = *ClientWithPid(broker.Status(), c->pid());
    if (me_now["kernels"].get<uint64_t>() >= 500 && Has(me_now["class_why"].get<std::string>(), "simgpu_compute_500us"))
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(me_now["kernels"], 500) << me_now.dump();
  EXPECT_TRUE(Has(me_now["class_why"].get<std::string>(), "simgpu_compute_500us")) << me_now.dump();
  // Async copies and memsets are records too.
  ASSERT_EQ(Ask(*c, "copy 50"), "copied=hipSuccess");
  for (int i = 0; i < 100 && (*ClientWithPid(broker.Status(), c->pid()))["copies"].get<uint64_t>() < 150; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ((*ClientWithPid(broker.Status(), c->pid()))["copies"], 150);
  // 50 graph launches, plus the launch made while capturing the graph (recorded as any).
  ASSERT_EQ(Ask(*c, "graph 50"), "graphed=hipSuccess");
  for (int i = 0; i < 100 && (*ClientWithPid(broker.Status(), c->pid()))["kernels"].get<uint64_t>() < 551; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ((*ClientWithPid(broker.Status(), c->pid()))["kernels"], 551);
  // An over-cap allocation is refused by the shim with the API's own error.
  EXPECT_EQ(Ask(*c, "alloc 0 3221225472"), "alloc=hipErrorOutOfMemory");

  c->Kill(SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  uint64_t used = 1;
  while (used != 0 && std::chrono::steady_clock::now() - killed < std::chrono::seconds(5))
    used = broker.Status()["gpus"][0]["memory_used"].get<uint64_t>();
  EXPECT_EQ(used, 0u);
  EXPECT_TRUE(broker.Status()["clients"].empty());
}

TEST(HipBroker, ACudaAndAHipClientOnOneNodeAreBothAccountedInGpushareSmi) {
  Broker broker(kOneGpu, "");
  auto cuda = broker.Cuda({{"GPUSHARE_TENANT", "c"}});
  auto hip = broker.Hip({{"GPUSHARE_TENANT", "h"}});
  ASSERT_EQ(Ask(*cuda, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(Ask(*cuda, "alloc 0 1073741824"), "alloc=ok");
  ASSERT_EQ(Ask(*hip, "alloc 0 536870912"), "alloc=ok");
  auto smi = RunToEnd({GPUSHARE_SMI, "--socket", broker.socket(), "--json"}, {});
  ASSERT_EQ(smi.exit_code, 0) << smi.out;
  const json s = json::parse(smi.out);
  const json* c = ClientWithPid(s, cuda->pid());
  const json* h = ClientWithPid(s, hip->pid());
  ASSERT_TRUE(c != nullptr && h != nullptr) << s.dump();
  EXPECT_EQ((*c)["tenant"], "c");
  EXPECT_EQ((*h)["tenant"], "h");
  // The CUDA client's context may be charged on top of its allocation (NVML's figure).
  const uint64_t cuda_used = (*c)["devices"][0]["memory_used"].get<uint64_t>();
  EXPECT_GE(cuda_used, kGiB);
  EXPECT_EQ((*h)["devices"][0]["memory_used"], 512 * kMiB);
  EXPECT_EQ(s["gpus"][0]["memory_used"].get<uint64_t>(), cuda_used + 512 * kMiB);
}

// What the shim logs before answering `command`.
std::string LogBefore(Child& c, const std::string& command) {
  c.Send(command + "\n");
  std::string log;
  for (std::string line; (line = c.ReadLine(5000)) != "" && line.rfind("gpushare", 0) == 0;) log += line + "\n";
  return log;
}

TEST(HipBroker, ARuntimeMaskWhoseOrderIsUnknownIsWarnedAboutUnderABroker) {
  Broker broker(kOneGpu, "");
  auto c = broker.Hip({{"HIP_VISIBLE_DEVICES", "GPU-8f3c5b2e"}});
  const std::string log = LogBefore(*c, "alloc 0 1048576");
  EXPECT_TRUE(Has(log, "HIP_VISIBLE_DEVICES=GPU-8f3c5b2e is set")) << log;
}

// HIP_VISIBLE_DEVICES=1: the runtime shows node GPU 1 as its GPU 0, so the broker's GPU
// 1 is used as runtime GPU 0. (simgpu does not apply the mask, so its GPU 0, "alpha",
// answers here; a real runtime would answer with node GPU 1.)
TEST(HipBroker, TheBrokersNodeIndexIsFoundInTheRuntimesMaskedNumbering) {
  Broker broker(kNode, "[tenants.t]\ngpus = [1]\n");
  auto r = RunToEnd({HIP_CLIENT_PATH, "where", "0"},
                    broker.ClientEnv({{"GPUSHARE_TENANT", "t"}, {"HIP_VISIBLE_DEVICES", "1"}}));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(Has(r.out, "current=0 name=alpha")) << r.out;
  EXPECT_FALSE(Has(r.out, "is set")) << r.out;  // no warning: the order is known
}

TEST(HipBroker, ABrokersGpuTheRuntimesMaskHidesIsAnErrorNamingIt) {
  Broker broker(kNode, "[tenants.t]\ngpus = [0]\n");
  auto r =
      RunToEnd({HIP_CLIENT_PATH, "info"}, broker.ClientEnv({{"GPUSHARE_TENANT", "t"}, {"HIP_VISIBLE_DEVICES", "1"}}));
  EXPECT_TRUE(Has(r.out,
                  "the broker placed virtual GPU 0 on GPU 0, which the runtime's visible-devices variable "
                  "hides from this process"))
      << r.out;
  EXPECT_TRUE(Has(r.out, "HIP_VISIBLE_DEVICES=1 is set")) << r.out;
}

// ---- GPU-time shares (timing) ----

// Kernels completed by `t_ms` in a client's timeline ("t_ms=T done=K" every 50 ms), interpolated.
double DoneAt(const std::vector<std::pair<double, double>>& done, double t_ms) {
  if (done.empty() || t_ms <= done.front().first) return done.empty() ? 0 : done.front().second;
  for (size_t i = 1; i < done.size(); ++i)
    if (t_ms <= done[i].first)
      return done[i - 1].second +
             (done[i].second - done[i - 1].second) * (t_ms - done[i - 1].first) / (done[i].first - done[i - 1].first);
  return done.back().second;
}

std::vector<std::pair<double, double>> Timeline(Child& c) {
  const std::string out = c.ReadAll();
  const int status = c.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  std::vector<std::pair<double, double>> done;
  static const std::regex kSample(R"(^t_ms=([0-9.]+) done=([0-9]+)$)");
  std::istringstream lines(out);
  std::smatch m;
  for (std::string line; std::getline(lines, line);)
    if (std::regex_match(line, m, kSample)) done.emplace_back(std::stod(m[1]), std::stod(m[2]));
  EXPECT_GT(done.size(), 10u) << out;
  return done;
}

TEST(HipScheduling, TwoSaturatingHipClientsWeighted2To1GetTwoThirdsAndOneThird) {
  Broker broker(kOneGpu, "[tenants.a]\nweight = 2\ngpus = [0]\n[tenants.b]\nweight = 1\ngpus = [0]\n");
  // As scheduling_test: start together after 1 s, measure over [1, 6.5] s of a 7 s run.
  constexpr double kFromMs = 1000, kToMs = 6500, kKernelMs = 0.5;
  const uint64_t start = MonotonicNs() + 1'000'000'000;
  std::vector<std::unique_ptr<Child>> workers;
  for (const char* tenant : {"a", "b"}) {
    workers.push_back(std::make_unique<Child>(
        std::vector<std::string>{HIP_CLIENT_PATH, "sched", "--seconds", "7", "--start-at", std::to_string(start)},
        broker.ClientEnv({{"GPUSHARE_TENANT", tenant}})));
    workers.back()->CloseStdin();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const json s = broker.Status();
  for (auto& w : workers) {
    const json* c = ClientWithPid(s, w->pid());
    ASSERT_NE(c, nullptr) << s.dump();
    EXPECT_TRUE((*c)["scheduled"].get<bool>()) << c->dump();  // the broker, not simgpu alone, shares the GPU
  }
  std::vector<double> kernels;
  for (auto& w : workers) {
    const auto done = Timeline(*w);
    kernels.push_back(DoneAt(done, kToMs) - DoneAt(done, kFromMs));
  }
  const double total = kernels[0] + kernels[1];
  ASSERT_GT(total, 0);
  const double busy = total * kKernelMs / (kToMs - kFromMs);
  std::printf("HIP 2:1: shares %.1f / %.1f %% (want 66.7 / 33.3), busy %.1f %%\n", 100 * kernels[0] / total,
              100 * kernels[1] / total, 100 * busy);
  EXPECT_NEAR(kernels[0] / total, 2.0 / 3, 0.03);
  EXPECT_NEAR(kernels[1] / total, 1.0 / 3, 0.03);
  EXPECT_GE(busy, 0.95);
}

}  // namespace
