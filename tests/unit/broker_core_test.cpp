// BrokerCore without sockets: registration terms, the ledger through Take/Give,
// hang-up reclaim, re-registration, protocol breaches, and the placement rule.
#include "broker_core.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "placement.h"
#include "shm_channels.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;
constexpr uint64_t kGiB = 1ull << 30;

class FakeChannels : public ChannelHost {
 public:
  std::string Create(ClientId id, const PeerCredentials&) override {
    live[id] = Grants{};
    return "fake." + std::to_string(id);
  }
  void Publish(ClientId id, const Grants& g) override { live[id] = g; }
  void Destroy(ClientId id) override { live.erase(id); }
  std::map<ClientId, Grants> live;
};

class BrokerCoreTest : public ::testing::Test {
 protected:
  BrokerCoreTest() : core_(BrokerConfig{}, {{0, "g0", 16 * kGiB}, {1, "g1", 16 * kGiB}}, &channels_) {}

  // Sends `bytes` on connection `id`; returns the replies, or nullopt if it was dropped.
  std::optional<std::vector<proto::Message>> Send(ClientId id, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t>& in = inbox_[id];
    in.insert(in.end(), bytes.begin(), bytes.end());
    std::vector<uint8_t> out;
    std::string error;
    if (!core_.Input(id, &in, &out, &error)) return std::nullopt;
    std::vector<proto::Message> replies;
    while (auto m = proto::Split(&out, &error)) replies.push_back(*m);
    return replies;
  }
  proto::Welcome Hello(ClientId id, const std::string& tenant, uint64_t cap, uint32_t uid = 1000,
                       std::vector<int> visible = {}) {
    core_.Open(id, {static_cast<int32_t>(100 + id), uid, uid});
    proto::Hello h{};
    proto::SetString(h.tenant, tenant);
    h.weight = 2;
    h.device_count = static_cast<uint32_t>(visible.size());
    for (int v = 0; v < proto::kMaxDevices; ++v) {
      h.visible[v] = v < static_cast<int>(visible.size()) ? visible[v] : -1;
      h.cap_bytes[v] = cap;
    }
    auto r = Send(id, proto::Encode(proto::Type::kHello, h));
    EXPECT_TRUE(r && r->size() == 1);
    return proto::As<proto::Welcome>(r->at(0));
  }
  bool Take(ClientId id, uint32_t device, uint64_t bytes) {
    auto r = Send(id, proto::Encode(proto::Type::kTake, proto::Take{device, 0, bytes}));
    return r && r->size() == 1 && proto::As<proto::TakeReply>(r->at(0)).granted == 1;
  }

  FakeChannels channels_;
  BrokerCore core_;
  std::map<ClientId, std::vector<uint8_t>> inbox_;
};

TEST_F(BrokerCoreTest, AClientGetsEveryGpuItsCapAndAChannel) {
  proto::Welcome w = Hello(1, "a", 4 * kGiB);
  EXPECT_EQ(w.accepted, 1);
  EXPECT_EQ(w.device_count, 2u);
  EXPECT_EQ(w.cap_bytes[0], 4 * kGiB);
  EXPECT_EQ(w.weight, 2);
  EXPECT_STREQ(w.channel, "fake.1");
  EXPECT_EQ(channels_.live[1].cap_bytes, (std::vector<uint64_t>{4 * kGiB, 4 * kGiB}));
}

TEST_F(BrokerCoreTest, TheTenantCapIsSharedByItsClientsAndPublishedToThem) {
  Hello(1, "a", 4 * kGiB, 1000, {0});
  Hello(2, "a", 4 * kGiB, 1000, {0});
  EXPECT_TRUE(Take(1, 0, 3 * kGiB));
  EXPECT_FALSE(Take(2, 0, 2 * kGiB));
  EXPECT_TRUE(Take(2, 0, kGiB));
  EXPECT_EQ(channels_.live[1].tenant_held_bytes[0], 4 * kGiB);
  EXPECT_EQ(channels_.live[2].tenant_held_bytes[0], 4 * kGiB);
}

TEST_F(BrokerCoreTest, GivingBackMoreThanHeldFreesOnlyWhatIsHeld) {
  Hello(1, "a", 0, 1000, {0});
  Hello(2, "b", 0, 1000, {0});
  ASSERT_TRUE(Take(1, 0, kGiB));
  ASSERT_TRUE(Take(2, 0, kGiB));
  Send(1, proto::Encode(proto::Type::kGive, proto::Give{0, 100 * kGiB}));
  EXPECT_EQ(core_.ledger().GpuHeld(0), kGiB);  // b's gigabyte stays
}

TEST_F(BrokerCoreTest, CloseReturnsEverythingAndDestroysTheChannel) {
  Hello(1, "a", 0);
  ASSERT_TRUE(Take(1, 0, kGiB));
  ASSERT_TRUE(Take(1, 1, 2 * kGiB));
  EXPECT_EQ(core_.Close(1), 3 * kGiB);
  EXPECT_EQ(core_.ledger().GpuHeld(0) + core_.ledger().GpuHeld(1), 0u);
  EXPECT_EQ(channels_.live.count(1), 0u);
  EXPECT_EQ(core_.client_count(), 0u);
}

TEST_F(BrokerCoreTest, ReattachKeepsTheMapAndRestoresHoldingsBoundedByTheGpu) {
  core_.Open(1, {101, 1000, 1000});
  proto::Hello h{};
  h.reattach = 1;
  h.device_count = 2;
  h.visible[0] = 1;
  h.visible[1] = 0;
  h.held_bytes[0] = 3 * kGiB;
  h.held_bytes[1] = 1000 * kGiB;  // more than the GPU has: bounded
  auto r = Send(1, proto::Encode(proto::Type::kHello, h));
  ASSERT_TRUE(r);
  proto::Welcome w = proto::As<proto::Welcome>(r->at(0));
  EXPECT_EQ(w.physical[0], 1);
  EXPECT_EQ(w.physical[1], 0);
  EXPECT_EQ(core_.ledger().GpuHeld(1), 3 * kGiB);
  EXPECT_EQ(core_.ledger().GpuHeld(0), 16 * kGiB);
}

TEST_F(BrokerCoreTest, ProtocolBreachesDropThePeer) {
  core_.Open(1, {});
  EXPECT_FALSE(Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 0, kGiB})));  // before Hello
  Hello(2, "a", 0);
  proto::Hello again{};
  EXPECT_FALSE(Send(2, proto::Encode(proto::Type::kHello, again)));  // a second Hello
  core_.Open(3, {});
  EXPECT_FALSE(Send(3, proto::Encode(proto::Type::kTakeReply, proto::TakeReply{})));
  core_.Open(4, {});
  EXPECT_FALSE(Send(4, std::vector<uint8_t>(64, 0xab)));
}

TEST_F(BrokerCoreTest, ATruncatedMessageWaitsForTheRest) {
  core_.Open(1, {101, 1000, 1000});
  proto::Hello h{};
  auto bytes = proto::Encode(proto::Type::kHello, h);
  auto first = Send(1, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 10));
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->empty());
  auto rest = Send(1, std::vector<uint8_t>(bytes.begin() + 10, bytes.end()));
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->size(), 1u);
}

TEST_F(BrokerCoreTest, ABoundTenantRefusesOtherUids) {
  BrokerConfig config;
  config.tenants["alice"].uids = std::vector<uint32_t>{5};
  core_.Reload(config);
  proto::Welcome w = Hello(1, "alice", 0, 6);
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("uid 6"), std::string::npos);
  EXPECT_EQ(Hello(2, "alice", 0, 5).accepted, 1);
}

TEST_F(BrokerCoreTest, StatusReportsSharesByWeight) {
  Hello(1, "a", 0, 1000, {0});  // weight 2
  core_.Open(2, {102, 1000, 1000});
  proto::Hello h{};
  proto::SetString(h.tenant, "b");
  h.weight = 6;
  h.device_count = 1;
  h.visible[0] = 0;
  Send(2, proto::Encode(proto::Type::kHello, h));
  auto s = nlohmann::json::parse(core_.StatusJson());
  ASSERT_EQ(s["clients"].size(), 2u);
  EXPECT_DOUBLE_EQ(s["clients"][0]["gpu_share"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(s["clients"][1]["gpu_share"].get<double>(), 0.75);
}

TEST(PlaceLeastLoaded, OrdersAllowedGpusByMemoryHeld) {
  NodeLedger ledger({kGiB * 16, kGiB * 16, kGiB * 16});
  ledger.AddClient(1, "t");
  ASSERT_EQ(ledger.Take(1, 0, 5 * kGiB), NodeLedger::Grant::kGranted);
  ASSERT_EQ(ledger.Take(1, 2, 1 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(PlaceLeastLoaded(ledger, {}).physical, (std::vector<int>{1, 2, 0}));
  EXPECT_EQ(PlaceLeastLoaded(ledger, {{}, std::vector<int>{0, 2}}).physical, (std::vector<int>{2, 0}));
  EXPECT_EQ(PlaceLeastLoaded(ledger, {{0}, std::nullopt}).physical, (std::vector<int>{0}));
  EXPECT_FALSE(PlaceLeastLoaded(ledger, {{1}, std::vector<int>{0}}).refusal.empty());
  EXPECT_FALSE(PlaceLeastLoaded(ledger, {{7}, std::nullopt}).refusal.empty());
}

TEST(DrainRing, ReadsAtMostARingAndSkipsRecordsItCannotTrust) {
  auto channel = std::make_unique<proto::Channel>();
  for (uint32_t i = 0; i < proto::kRingRecords; ++i) channel->ring[i].device = i % 2 ? 999 : 0;
  channel->ring_head = 10 * proto::kRingRecords;  // a head far ahead of anything written
  uint64_t tail = 0, dropped = 0, good = 0;
  size_t read = DrainRing(channel.get(), &tail, &dropped, [&](const proto::LaunchRecord&) { ++good; });
  EXPECT_EQ(read, proto::kRingRecords);
  EXPECT_EQ(good, proto::kRingRecords / 2);
  EXPECT_EQ(tail, 10u * proto::kRingRecords);
  channel->ring_head = 3;  // rewound
  EXPECT_EQ(DrainRing(channel.get(), &tail, &dropped, [&](const proto::LaunchRecord&) { ++good; }), 0u);
  EXPECT_EQ(tail, 3u);
}

}  // namespace
}  // namespace gpushare::broker
