// vGPU instances in BrokerCore without sockets: a profile client is granted an instance
// on a GPU with room (its memory the cap, its compute the weight, its ceiling on the
// flow), refused with the reason when none is free, and its instance is freed when it
// hangs up; an old client's Hello without the profile field still registers.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker/core/broker_core.h"
#include "core_exchange.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;
constexpr uint64_t kGiB = 1ull << 30;

class NullChannels : public ChannelHost {
 public:
  std::string Create(ClientId id, const PeerCredentials&) override { return "fake." + std::to_string(id); }
  void Publish(ClientId, const Grants&) override {}
  void Destroy(ClientId) override {}
  void SetGate(ClientId, int, uint32_t, uint64_t) override {}
  size_t Drain(ClientId, const std::function<void(const proto::RecordData&)>&) override { return 0; }
  std::string KernelName(ClientId, uint16_t) override { return ""; }
};

BrokerConfig Config(const std::string& text) {
  std::string error;
  auto c = ParseBrokerConfig(text, "broker.toml", &error);
  EXPECT_TRUE(c) << error;
  return c.value_or(BrokerConfig{});
}

constexpr const char* kTwoCardsAsEight = R"(
[profiles.q8g]
memory = "8GiB"
compute = 0.25
max_compute = 0.5

[tenants.render]
profile = "q8g"
)";

class InstancesTest : public ::testing::Test {
 protected:
  explicit InstancesTest(const std::string& config = kTwoCardsAsEight)
      : core_(Config(config), {{0, "g0", 32 * kGiB}, {1, "g1", 32 * kGiB}}, &channels_) {}

  std::optional<std::vector<proto::Message>> Send(ClientId id, const std::vector<uint8_t>& bytes) {
    return core_exchange::Exchange(core_, id, &inbox_[id], bytes);
  }
  proto::Welcome Hello(ClientId id, const std::string& tenant, const std::string& profile,
                       std::vector<int> visible = {}, const std::string& job = "", int rank = -1,
                       uint32_t job_size = 0) {
    core_.Open(id, {static_cast<int32_t>(100 + id), 1000, 1000});
    proto::Hello h{};
    proto::SetString(h.job, job);
    h.rank = rank;
    h.job_size = job_size;
    proto::SetString(h.tenant, tenant);
    proto::SetString(h.profile, profile);
    h.weight = 1;
    h.device_count = static_cast<uint32_t>(visible.size());
    for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = v < static_cast<int>(visible.size()) ? visible[v] : -1;
    auto r = Send(id, proto::EncodeHello(h));
    EXPECT_TRUE(r && r->size() == 1);
    return proto::Sanitized(proto::As<proto::Welcome>(r->at(0)));
  }
  bool Take(ClientId id, uint32_t device, uint64_t bytes) {
    auto r = Send(id, proto::Encode(proto::Type::kTake, proto::Take{device, 0, bytes}));
    return r && r->size() == 1 && proto::As<proto::TakeReply>(r->at(0)).granted == 1;
  }
  nlohmann::json Status() { return nlohmann::json::parse(core_.StatusJson()); }

  NullChannels channels_;
  BrokerCore core_;
  std::map<ClientId, std::vector<uint8_t>> inbox_;
};

TEST_F(InstancesTest, TwoGpusHoldEightQuartersAndTheNinthIsRefusedNamingTheProfileAndGpus) {
  std::map<int, int> per_gpu;
  for (ClientId id = 1; id <= 8; ++id) {
    proto::Welcome w = Hello(id, "a", "q8g");
    ASSERT_EQ(w.accepted, 1) << w.reason;
    ASSERT_EQ(w.device_count, 1u);  // an instance is one GPU
    EXPECT_EQ(w.cap_bytes[0], 8 * kGiB);
    EXPECT_DOUBLE_EQ(w.weight, 0.25);
    ++per_gpu[w.physical[0]];
  }
  EXPECT_EQ(per_gpu, (std::map<int, int>{{0, 4}, {1, 4}}));  // placement spreads them
  proto::Welcome w = Hello(9, "a", "q8g");
  EXPECT_EQ(w.accepted, 0);
  const std::string reason = w.reason;
  EXPECT_NE(reason.find("profile \"q8g\""), std::string::npos) << reason;
  EXPECT_NE(reason.find("GPU 0: compute 1.00 of 1.00 granted"), std::string::npos) << reason;
  EXPECT_NE(reason.find("GPU 1: compute 1.00 of 1.00 granted"), std::string::npos) << reason;
  // A client without a profile still joins beside the instances.
  EXPECT_EQ(Hello(10, "b", "").accepted, 1);
}

TEST_F(InstancesTest, TheRanksOfAJobGetTheirInstancesOnDistinctGpus) {
  proto::Welcome r0 = Hello(1, "a", "q8g", {}, "train", 0, 2);
  proto::Welcome r1 = Hello(2, "a", "q8g", {}, "train", 1, 2);
  ASSERT_EQ(r0.accepted, 1) << r0.reason;
  ASSERT_EQ(r1.accepted, 1) << r1.reason;
  // Each rank sees the job's two GPUs in rank order; its instance is on its own.
  ASSERT_EQ(r0.device_count, 2u);
  EXPECT_EQ(r0.physical[0], r1.physical[0]);
  EXPECT_EQ(r0.physical[1], r1.physical[1]);
  nlohmann::json s = Status();
  EXPECT_EQ(s["clients"][0]["instance"]["gpu"], r0.physical[0]);
  EXPECT_EQ(s["clients"][1]["instance"]["gpu"], r0.physical[1]);
  EXPECT_NE(s["clients"][0]["instance"]["gpu"], s["clients"][1]["instance"]["gpu"]);
}

TEST_F(InstancesTest, MemoryHeldByAClientWithoutAProfileLeavesRoomForFewerInstances) {
  // 20 GiB held on GPU 0 by an uncapped client: 12 GiB left there, one 8 GiB instance.
  ASSERT_EQ(Hello(1, "big", "", {0}).accepted, 1);
  ASSERT_TRUE(Take(1, 0, 20 * kGiB));
  std::map<int, int> per_gpu;
  for (ClientId id = 2; id <= 6; ++id) {
    proto::Welcome w = Hello(id, "a", "q8g");
    ASSERT_EQ(w.accepted, 1) << id << ": " << w.reason;
    ++per_gpu[w.physical[0]];
  }
  EXPECT_EQ(per_gpu, (std::map<int, int>{{0, 1}, {1, 4}}));
  proto::Welcome w = Hello(7, "a", "q8g");
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("GPU 0: memory 8.00 GiB granted to instances and 20.00 GiB promised to others"),
            std::string::npos)
      << w.reason;
}

TEST_F(InstancesTest, HangingUpFreesTheInstance) {
  for (ClientId id = 1; id <= 8; ++id) ASSERT_EQ(Hello(id, "a", "q8g").accepted, 1);
  const int gpu = Status()["clients"][2]["instance"]["gpu"].get<int>();
  core_.Close(3);
  proto::Welcome w = Hello(9, "a", "q8g");
  ASSERT_EQ(w.accepted, 1) << w.reason;
  EXPECT_EQ(w.physical[0], gpu);
}

TEST_F(InstancesTest, TheInstanceMemoryIsTheClientsOwnCap) {
  ASSERT_EQ(Hello(1, "a", "q8g").accepted, 1);
  ASSERT_EQ(Hello(2, "a", "q8g").accepted, 1);
  EXPECT_TRUE(Take(1, 0, 6 * kGiB));
  EXPECT_FALSE(Take(1, 0, 3 * kGiB));
  EXPECT_TRUE(Take(1, 0, 2 * kGiB));
  EXPECT_TRUE(Take(2, 0, 8 * kGiB));  // each instance its own 8 GiB, though one tenant
}

TEST_F(InstancesTest, StatusCarriesTheInstanceAndTheInventory) {
  ASSERT_EQ(Hello(1, "render", "").accepted, 1);  // the tenant's profile
  ASSERT_EQ(Hello(2, "b", "").accepted, 1);       // no profile
  nlohmann::json s = Status();
  const nlohmann::json& i = s["clients"][0]["instance"];
  EXPECT_EQ(i["profile"], "q8g");
  EXPECT_DOUBLE_EQ(i["compute"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(i["max_compute"].get<double>(), 0.5);
  EXPECT_EQ(i["memory_bytes"].get<uint64_t>(), 8 * kGiB);
  EXPECT_GT(i["granted_unix_ms"].get<int64_t>(), 1700000000000);
  EXPECT_DOUBLE_EQ(s["clients"][0]["max_compute"].get<double>(), 0.5);
  EXPECT_TRUE(s["clients"][1]["instance"].is_null());
  EXPECT_TRUE(s["clients"][1]["max_compute"].is_null());
  const nlohmann::json& pool = s["vgpu"]["pool"][0];
  EXPECT_EQ(pool["profile"], "q8g");
  EXPECT_EQ(pool["gpus"], 2);
  EXPECT_EQ(pool["total"], 8);
  EXPECT_EQ(pool["allocated"], 1);
  const int gpu = i["gpu"].get<int>();
  const nlohmann::json& row = s["vgpu"]["gpus"][gpu]["profiles"][0];
  EXPECT_EQ(row["allocated"], 1);
  EXPECT_EQ(row["holders"][0]["pid"], 101);
  EXPECT_EQ(row["holders"][0]["tenant"], "render");
}

TEST_F(InstancesTest, AnUnknownProfileOrAFullAskedGpuIsRefused) {
  proto::Welcome w = Hello(1, "a", "q16g");
  EXPECT_EQ(w.accepted, 0);
  EXPECT_STREQ(w.reason, "no profile \"q16g\" in the broker's config (it has q8g)");
  for (ClientId id = 2; id <= 5; ++id) ASSERT_EQ(Hello(id, "a", "q8g", {1}).accepted, 1);
  w = Hello(6, "a", "q8g", {1});
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("GPU 1: compute 1.00 of 1.00"), std::string::npos) << w.reason;
  EXPECT_EQ(std::string(w.reason).find("GPU 0"), std::string::npos) << w.reason;
}

TEST_F(InstancesTest, ATenantsConfiguredProfileIsItsClientsAndNoOther) {
  proto::Welcome w = Hello(1, "render", "half");
  EXPECT_EQ(w.accepted, 0);
  EXPECT_STREQ(w.reason, "tenant \"render\" has profile \"q8g\"; this process asked for \"half\"");
  EXPECT_EQ(Hello(2, "render", "q8g").accepted, 1);  // asking for its own is fine
}

TEST_F(InstancesTest, AnOldClientsHelloWithoutTheProfileFieldRegisters) {
  core_.Open(1, {101, 1000, 1000});
  proto::Hello h{};
  proto::SetString(h.tenant, "render");
  h.weight = 1;
  std::vector<uint8_t> bytes = proto::EncodeHello(h);  // no profile: the older, shorter form
  ASSERT_EQ(bytes.size(), sizeof(proto::Header) + proto::kHelloWithoutProfileBytes);
  auto r = Send(1, bytes);
  ASSERT_TRUE(r && r->size() == 1);
  proto::Welcome w = proto::Sanitized(proto::As<proto::Welcome>(r->at(0)));
  EXPECT_EQ(w.accepted, 1) << w.reason;
  EXPECT_EQ(Status()["clients"][0]["instance"]["profile"], "q8g");  // its tenant's profile
}

class ReservedInstancesTest : public InstancesTest {
 protected:
  ReservedInstancesTest() : InstancesTest(std::string("[node]\nreserved_instances = 1\n") + kTwoCardsAsEight) {}
};

TEST_F(ReservedInstancesTest, OneInstancePerGpuIsHeldBack) {
  for (ClientId id = 1; id <= 6; ++id) ASSERT_EQ(Hello(id, "a", "q8g").accepted, 1);
  EXPECT_EQ(Hello(7, "a", "q8g").accepted, 0);
  nlohmann::json s = Status();
  EXPECT_EQ(s["vgpu"]["pool"][0]["reserved"], 2);
  EXPECT_EQ(s["vgpu"]["pool"][0]["allocated"], 6);
  EXPECT_EQ(s["vgpu"]["pool"][0]["available"], 0);
}

}  // namespace
}  // namespace gpushare::broker
