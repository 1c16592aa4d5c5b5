// The broker with real client processes on simgpu: registration, tenant caps across
// processes, reclaim on SIGKILL, restart, forged tenants, hostile bytes, reload.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "simgpu_control.h"
#include "subprocess.h"
#include "test_broker.h"

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::SimNode;
namespace proto = gpushare::protocol;

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMiB = 1ull << 20;
const char* kTwoGpus =
    R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}],
        "links": [[0, 1, "nvlink"]]})";
const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";

// The broker under test, and a client process (broker_client) preloaded with the shim.
class Broker : public testing_support::TestBroker {
 public:
  using TestBroker::TestBroker;
  std::unique_ptr<Child> Client(const std::map<std::string, std::string>& extra) {
    return std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, ClientEnv(extra));
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

TEST(Broker, ClientJoinsAndStatusShowsWhatItHoldsWithTheContractFields) {
  Broker broker(kTwoGpus, "");
  auto c = broker.Client({{"GPUSHARE_TENANT", "alpha"}, {"GPUSHARE_MEMORY_LIMIT", "4GiB"}, {"GPUSHARE_JOB", "j1"}});
  EXPECT_EQ(Ask(*c, "init"), "devices=2 init=CUDA_SUCCESS");
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");
  json s = broker.Status();
  ASSERT_EQ(s["gpus"].size(), 2u);
  for (const char* key : {"index", "name", "memory_total", "memory_used"}) EXPECT_TRUE(s["gpus"][0].contains(key));
  const json* me = ClientWithPid(s, c->pid());
  ASSERT_NE(me, nullptr) << s.dump();
  for (const char* key : {"pid", "tenant", "job", "rank", "weight", "class", "gpu_share", "devices"})
    EXPECT_TRUE(me->contains(key)) << key;
  EXPECT_EQ((*me)["tenant"], "alpha");
  EXPECT_EQ((*me)["job"], "j1");
  const json& d0 = (*me)["devices"][0];
  EXPECT_EQ(d0["virtual"], 0);
  EXPECT_EQ(d0["memory_cap"], 4 * kGiB);
  EXPECT_GE(d0["memory_used"].get<uint64_t>(), kGiB);
  EXPECT_EQ(s["gpus"][d0["physical"].get<int>()]["memory_used"], d0["memory_used"]);
}

TEST(Broker, TenantCapHoldsAcrossItsProcessesAndNotAcrossTenants) {
  Broker broker(kOneGpu, "[tenants.a]\nmemory = \"3GiB\"\n");
  std::vector<std::unique_ptr<Child>> a;
  for (int i = 0; i < 3; ++i) {
    a.push_back(broker.Client({{"GPUSHARE_TENANT", "a"}}));
    EXPECT_EQ(Ask(*a.back(), "init"), "devices=1 init=CUDA_SUCCESS");
    EXPECT_EQ(Ask(*a.back(), "alloc 0 1073741824"), "alloc=ok") << "process " << i;
  }
  EXPECT_EQ(Ask(*a[0], "alloc 0 1048576"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  EXPECT_EQ(Ask(*a[2], "alloc 0 1048576"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  // cuMemGetInfo speaks of the tenant: nothing left of its 3 GiB.
  EXPECT_EQ(Ask(*a[1], "info 0"), "free=0 total=3221225472");
  auto b = broker.Client({{"GPUSHARE_TENANT", "b"}});
  Ask(*b, "init");
  EXPECT_EQ(Ask(*b, "alloc 0 4294967296"), "alloc=ok");
  // Freeing in one process of the tenant makes room for another.
  EXPECT_EQ(Ask(*a[0], "freeall"), "freed=1");
  EXPECT_EQ(Ask(*a[2], "alloc 0 1073741824"), "alloc=ok");
}

// Allocation leases: a process keeps what it frees as lease, yet the tenant's cap holds
// exactly across its processes (another's idle lease is recalled before a refusal),
// and a killed process's lease returns with the rest.
TEST(Broker, LeasesKeepTheTenantCapExactAcrossProcessesAndReturnOnSigkill) {
  Broker broker(kOneGpu, "[tenants.a]\nmemory = \"1GiB\"\n");
  auto a = broker.Client({{"GPUSHARE_TENANT", "a"}});
  auto b = broker.Client({{"GPUSHARE_TENANT", "a"}});
  ASSERT_EQ(Ask(*a, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(Ask(*b, "init"), "devices=1 init=CUDA_SUCCESS");
  for (int round = 0; round < 3; ++round) {  // a allocates the whole cap and frees it, again and again
    for (int i = 0; i < 8; ++i) ASSERT_EQ(Ask(*a, "alloc 0 134217728"), "alloc=ok") << round << " " << i;
    ASSERT_EQ(Ask(*a, "freeall"), "freed=8");
  }
  // What a freed it may still hold as lease: b's whole cap fits all the same.
  EXPECT_EQ(Ask(*b, "alloc 0 1073741824"), "alloc=ok");
  EXPECT_EQ(Ask(*a, "alloc 0 1048576"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  EXPECT_EQ(broker.Status()["gpus"][0]["memory_used"].get<uint64_t>(), kGiB);
  // b frees and is killed while it may hold that gigabyte as lease: it returns.
  ASSERT_EQ(Ask(*b, "freeall"), "freed=1");
  b->Kill(SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  while (broker.Status()["clients"].size() > 1 && std::chrono::steady_clock::now() - killed < std::chrono::seconds(5))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(broker.Status()["gpus"][0]["memory_used"].get<uint64_t>(), 0u);
  EXPECT_EQ(Ask(*a, "alloc 0 1073741824"), "alloc=ok");
}

TEST(Broker, MemoryOfAKilledClientReturnsAtOnce) {
  Broker broker(kOneGpu, "");
  auto c = broker.Client({{"GPUSHARE_TENANT", "a"}});
  Ask(*c, "init");
  ASSERT_EQ(Ask(*c, "alloc 0 2147483648"), "alloc=ok");
  ASSERT_GE(broker.Status()["gpus"][0]["memory_used"].get<uint64_t>(), 2 * kGiB);
  const auto killed = std::chrono::steady_clock::now();
  c->Kill(SIGKILL);
  uint64_t used = 1;
  while (used != 0 && std::chrono::steady_clock::now() - killed < std::chrono::seconds(5))
    used = broker.Status()["gpus"][0]["memory_used"].get<uint64_t>();
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_EQ(used, 0u);
  std::printf("reclaim after SIGKILL: %.2f ms (figure: tests/bench/broker_bench)\n", ms);
  EXPECT_TRUE(broker.Status()["clients"].empty());
}

// The driver itself refuses an allocation the tenant's cap allows (a fault aimed at
// this client through simgpu's control interface): the client gets the API's
// out-of-memory error, and the broker's ledger, like the node's, holds nothing for it.
TEST(Broker, ADriverRefusalUnderTheCapLeavesTheLedgerAsItWas) {
  Broker broker(kOneGpu, "");
  ASSERT_EQ(simgpuControlOpen(broker.node().config_path().c_str(), broker.node().name().c_str()), 0);
  auto c = broker.Client({{"GPUSHARE_TENANT", "a"}, {"GPUSHARE_MEMORY_LIMIT", "4GiB"}});
  Ask(*c, "init");
  ASSERT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");
  const uint64_t ledger = broker.Status()["gpus"][0]["memory_used"].get<uint64_t>();
  const long long node = simgpuControlUsedBytes(0);
  ASSERT_EQ(simgpuControlFailAllocations(0, 1, c->pid()), 0);
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  json s = broker.Status();
  EXPECT_EQ(s["gpus"][0]["memory_used"].get<uint64_t>(), ledger) << s.dump();
  const json* me = ClientWithPid(s, c->pid());
  ASSERT_NE(me, nullptr) << s.dump();
  EXPECT_EQ((*me)["devices"][0]["memory_used"].get<uint64_t>(), ledger) << s.dump();
  EXPECT_EQ(simgpuControlUsedBytes(0), node);
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");  // the fault fired once
  EXPECT_EQ(broker.Status()["gpus"][0]["memory_used"].get<uint64_t>(), ledger + kGiB);
}

size_t CountEntries(const std::string& dir, const std::string& prefix) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) ++n;
  return n;
}

TEST(Broker, HundredKillCyclesLeakNothing) {
  Broker broker(kOneGpu, "");
  const std::string fd_dir = "/proc/" + std::to_string(broker.pid()) + "/fd";
  const std::string channels = "gpushare." + std::to_string(broker.pid()) + ".";
  const size_t fds_before = CountEntries(fd_dir, "");
  for (int i = 0; i < 100; ++i) {
    auto c = broker.Client({{"GPUSHARE_TENANT", i % 2 ? "odd" : "even"}});
    Ask(*c, "init");
    ASSERT_EQ(Ask(*c, "alloc 0 268435456"), "alloc=ok") << "cycle " << i;
    c->Kill(SIGKILL);
    c->Wait();
  }
  json s;
  for (int i = 0; i < 500; ++i) {
    s = broker.Status();
    if (s["clients"].empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(s["clients"].empty()) << s.dump();
  EXPECT_EQ(s["gpus"][0]["memory_used"], 0);
  EXPECT_EQ(CountEntries("/dev/shm", channels), 0u);
  EXPECT_LE(CountEntries(fd_dir, ""), fds_before + 1);  // +1: a status connection in flight
  EXPECT_TRUE(broker.Alive());
}

TEST(Broker, RestartRebuildsTheLedgerFromClientsWithoutDoubleCounting) {
  Broker broker(kOneGpu, "");
  auto c = broker.Client({{"GPUSHARE_TENANT", "a"}, {"GPUSHARE_MEMORY_LIMIT", "4GiB"}});
  Ask(*c, "init");
  ASSERT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");
  broker.Kill();
  // Standalone on the last caps: still capped.
  EXPECT_EQ(Ask(*c, "alloc 0 536870912"), "alloc=ok");
  EXPECT_EQ(Ask(*c, "alloc 0 4294967296"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  broker.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past the client's retry interval
  EXPECT_EQ(Ask(*c, "alloc 0 268435456"), "alloc=ok");
  json s = broker.Status();
  const json* me = ClientWithPid(s, c->pid());
  ASSERT_NE(me, nullptr) << s.dump();
  const uint64_t held = (*me)["devices"][0]["memory_used"].get<uint64_t>();
  EXPECT_GE(held, kGiB + 512 * kMiB + 256 * kMiB);
  EXPECT_LT(held, kGiB + 512 * kMiB + 256 * kMiB + 256 * kMiB);  // context overhead at most, no double count
  EXPECT_EQ(s["gpus"][0]["memory_used"].get<uint64_t>(), held);
}

TEST(Broker, AForgedTenantIsRefusedAndSeesNoGpu) {
  Broker broker(kOneGpu, "[tenants.alice]\nuids = [" + std::to_string(getuid() + 1) + "]\n");
  auto c = broker.Client({{"GPUSHARE_TENANT", "alice"}});
  c->Send("init\n");
  std::string all;
  for (std::string line; (line = c->ReadLine(5000)) != "";) {
    all += line + "\n";
    if (line.rfind("devices=", 0) == 0) break;
  }
  EXPECT_NE(all.find("devices=0"), std::string::npos) << all;
  EXPECT_NE(all.find("may not use tenant \"alice\""), std::string::npos) << all;
  EXPECT_TRUE(broker.Status()["clients"].empty());
}

// Sends raw bytes on a fresh connection and closes it.
void SendRaw(const std::string& socket, const std::vector<uint8_t>& bytes) {
  std::string error;
  int fd = proto::ConnectUnix(socket, &error);
  ASSERT_GE(fd, 0) << error;
  proto::SendAll(fd, bytes);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  close(fd);
}

TEST(Broker, GarbageAndTruncatedMessagesNeverHurtTheBroker) {
  Broker broker(kOneGpu, "");
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    std::vector<uint8_t> junk(rng() % 4096);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    SendRaw(broker.socket(), junk);
  }
  proto::Hello hello{};
  auto whole = proto::Encode(proto::Type::kHello, hello);
  SendRaw(broker.socket(), std::vector<uint8_t>(whole.begin(), whole.begin() + whole.size() / 2));  // truncated
  proto::Header huge{proto::kMagic, proto::kVersion, static_cast<uint16_t>(proto::Type::kStatus), 0xffffffffu};
  std::vector<uint8_t> h(sizeof huge);
  std::memcpy(h.data(), &huge, sizeof huge);
  SendRaw(broker.socket(), h);
  SendRaw(broker.socket(), proto::Encode(proto::Type::kTake, proto::Take{0, 0, kGiB}));  // before Hello
  SendRaw(broker.socket(), proto::Encode(proto::Type::kWelcome, proto::Welcome{}));      // a broker's message
  hello.weight = std::numeric_limits<double>::quiet_NaN();
  hello.device_count = 1000;
  std::memset(hello.tenant, 'x', sizeof hello.tenant);  // not terminated
  SendRaw(broker.socket(), proto::Encode(proto::Type::kHello, hello));
  ASSERT_TRUE(broker.Alive());
  auto c = broker.Client({{"GPUSHARE_TENANT", "a"}});
  EXPECT_EQ(Ask(*c, "init"), "devices=1 init=CUDA_SUCCESS");
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");
  json s = broker.Status();
  ASSERT_EQ(s["clients"].size(), 1u) << s.dump();
  EXPECT_EQ(s["gpus"][0]["memory_used"], s["clients"][0]["devices"][0]["memory_used"]);
}

TEST(Broker, AClientScribblingOverItsChannelHurtsOnlyItself) {
  Broker broker(kOneGpu, "[tenants.a]\nmemory = \"2GiB\"\n");
  auto a = broker.Client({{"GPUSHARE_TENANT", "a"}});
  auto b = broker.Client({{"GPUSHARE_TENANT", "b"}, {"GPUSHARE_MEMORY_LIMIT", "2GiB"}});
  Ask(*a, "init");
  Ask(*b, "init");
  ASSERT_EQ(Ask(*a, "alloc 0 1073741824"), "alloc=ok");
  ASSERT_EQ(Ask(*b, "alloc 0 1073741824"), "alloc=ok");
  EXPECT_NE(Ask(*a, "scribble"), "scribbled=0");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the broker drains rings every 20 ms
  ASSERT_TRUE(broker.Alive());
  // The broker's ledger, not the channel, decides: a's tenant cap still holds.
  EXPECT_EQ(Ask(*a, "alloc 0 2147483648"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");
  EXPECT_EQ(Ask(*b, "alloc 0 536870912"), "alloc=ok");
  EXPECT_EQ(Ask(*b, "info 0"), "free=536870912 total=2147483648");
  json s = broker.Status();
  EXPECT_EQ(s["clients"].size(), 2u);
}

TEST(Broker, SighupAppliesANewConfigAndKeepsTheOldOneWhenInvalid) {
  Broker broker(kOneGpu, "[tenants.a]\nmemory = \"2GiB\"\n");
  auto c = broker.Client({{"GPUSHARE_TENANT", "a"}});
  Ask(*c, "init");
  ASSERT_EQ(Ask(*c, "alloc 0 1610612736"), "alloc=ok");
  broker.WriteConfig("[tenants.a]\nmemory = \"lots\"\n");
  kill(broker.pid(), SIGHUP);
  std::string line;
  while ((line = broker.process().ReadLine(5000)) != "" && line.find("reload refused") == std::string::npos) {
  }
  EXPECT_NE(line.find(".toml:2:"), std::string::npos) << line;
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=CUDA_ERROR_OUT_OF_MEMORY");  // still 2 GiB
  broker.WriteConfig("[tenants.a]\nmemory = \"4GiB\"\n");
  kill(broker.pid(), SIGHUP);
  while ((line = broker.process().ReadLine(5000)) != "" && line.find("reloaded") == std::string::npos) {
  }
  EXPECT_EQ(Ask(*c, "alloc 0 1073741824"), "alloc=ok");
  EXPECT_EQ(broker.Status()["clients"][0]["devices"][0]["memory_cap"], 4 * kGiB);
}

TEST(Broker, AdmissionRefusesACapTheGpuCannotHoldUnlessOversubscriptionIsAllowed) {
  const std::string tenants = "[tenants.a]\nmemory = \"12GiB\"\n[tenants.b]\nmemory = \"8GiB\"\n";
  {
    Broker broker(kOneGpu, "[node]\nadmission = \"refuse\"\n" + tenants);
    auto a = broker.Client({{"GPUSHARE_TENANT", "a"}});
    EXPECT_EQ(Ask(*a, "init"), "devices=1 init=CUDA_SUCCESS");
    auto b = broker.Client({{"GPUSHARE_TENANT", "b"}});
    b->Send("init\n");
    std::string all;
    for (std::string line; (line = b->ReadLine(5000)) != "";) {
      all += line + "\n";
      if (line.rfind("devices=", 0) == 0) break;
    }
    EXPECT_NE(all.find("cannot be met"), std::string::npos) << all;
    EXPECT_NE(all.find("devices=0"), std::string::npos) << all;
  }
  {
    Broker broker(kOneGpu, "[node]\nadmission = \"oversubscribe\"\n" + tenants);
    auto a = broker.Client({{"GPUSHARE_TENANT", "a"}});
    auto b = broker.Client({{"GPUSHARE_TENANT", "b"}});
    EXPECT_EQ(Ask(*a, "init"), "devices=1 init=CUDA_SUCCESS");
    EXPECT_EQ(Ask(*b, "init"), "devices=1 init=CUDA_SUCCESS");
  }
}

TEST(Broker, NewClientsGoToTheLeastLoadedGpuFirst) {
  Broker broker(kTwoGpus, "");
  auto a = broker.Client({{"GPUSHARE_TENANT", "a"}});
  Ask(*a, "init");
  ASSERT_EQ(Ask(*a, "alloc 0 4294967296"), "alloc=ok");
  const int a_gpu = ClientWithPid(broker.Status(), a->pid())->at("devices")[0]["physical"];
  auto b = broker.Client({{"GPUSHARE_TENANT", "b"}});
  EXPECT_EQ(Ask(*b, "init"), "devices=2 init=CUDA_SUCCESS");
  const int b_gpu = ClientWithPid(broker.Status(), b->pid())->at("devices")[0]["physical"];
  EXPECT_NE(a_gpu, b_gpu);
}

}  // namespace
