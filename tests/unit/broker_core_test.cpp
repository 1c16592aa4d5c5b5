// BrokerCore without sockets: registration terms, the ledger through Take/Give,
// hang-up reclaim, re-registration and protocol breaches (placement: broker_placement_test.cpp).
#include "broker/core/broker_core.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker/io/shm_channels.h"
#include "core_exchange.h"

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
  void SetGate(ClientId id, int device, uint32_t state, uint64_t slice) override {
    gates[{id, device}] = {state, slice};
  }
  size_t Drain(ClientId id, const std::function<void(const proto::RecordData&)>& on_record) override {
    size_t n = 0;
    for (const proto::RecordData& r : pending[id]) on_record(r), ++n;
    pending[id].clear();
    return n;
  }
  std::string KernelName(ClientId id, uint16_t name) override { return names[{id, name}]; }
  std::optional<uint64_t> ReportedUsed(ClientId id, int device) override {
    auto it = used.find({id, device});
    return it == used.end() ? std::nullopt : std::optional<uint64_t>(it->second);
  }
  void Recall(ClientId id) override { ++recalls[id]; }
  std::map<ClientId, Grants> live;
  std::map<std::pair<ClientId, int>, uint64_t> used;  // what clients report allocated
  std::map<ClientId, int> recalls;
  std::map<std::pair<ClientId, int>, std::pair<uint32_t, uint64_t>> gates;  // state, slice
  std::map<ClientId, std::vector<proto::RecordData>> pending;
  std::map<std::pair<ClientId, uint16_t>, std::string> names;
};

class BrokerCoreTest : public ::testing::Test {
 protected:
  BrokerCoreTest() : core_(BrokerConfig{}, {{0, "g0", 16 * kGiB}, {1, "g1", 16 * kGiB}}, &channels_) {}

  // Sends `bytes` on connection `id`; returns the replies, or nullopt if it was dropped.
  std::optional<std::vector<proto::Message>> Send(ClientId id, const std::vector<uint8_t>& bytes) {
    return core_exchange::Exchange(core_, id, &inbox_[id], bytes);
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

  proto::LeaseReply Lease(ClientId id, uint32_t device, uint64_t need, uint64_t want) {
    auto r = Send(id, proto::Encode(proto::Type::kLease, proto::Lease{device, 0, need, want}));
    EXPECT_TRUE(r && r->size() == 1);
    return r && r->size() == 1 ? proto::As<proto::LeaseReply>(r->at(0)) : proto::LeaseReply{};
  }
  static constexpr int32_t kGranted = static_cast<int32_t>(proto::LeaseStatus::kGranted);
  static constexpr int32_t kRefused = static_cast<int32_t>(proto::LeaseStatus::kRefused);
  static constexpr int32_t kRecalling = static_cast<int32_t>(proto::LeaseStatus::kRecalling);

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

TEST_F(BrokerCoreTest, AForcedTakeCannotPassTheTenantCapNorHurtAnotherTenant) {
  Hello(1, "a", 2 * kGiB, 1000, {0});
  Hello(2, "b", 4 * kGiB, 1000, {0});
  auto r = Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 1, 15 * kGiB}));
  ASSERT_TRUE(r && r->size() == 1);
  proto::TakeReply reply = proto::As<proto::TakeReply>(r->at(0));
  EXPECT_EQ(reply.granted, 0);
  EXPECT_NE(std::string(reply.reason).find("recorded 2.00 GiB of 15.00 GiB"), std::string::npos) << reply.reason;
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 2 * kGiB);
  EXPECT_EQ(core_.ledger().GpuHeld(0), 2 * kGiB);
  // Forcing again records nothing more.
  Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 1, 15 * kGiB}));
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 2 * kGiB);
  // b's whole cap is still there.
  EXPECT_TRUE(Take(2, 0, kGiB));
  EXPECT_TRUE(Take(2, 0, 3 * kGiB));
  EXPECT_FALSE(Take(2, 0, 1));
}

TEST_F(BrokerCoreTest, ALeaseGrantsWhatIsNeededAndAsMuchOfTheChunkAsTheCapLeaves) {
  Hello(1, "a", 4 * kGiB, 1000, {0});
  proto::LeaseReply r = Lease(1, 0, kGiB, 3 * kGiB);
  EXPECT_EQ(r.status, kGranted);
  EXPECT_EQ(r.granted_bytes, 3 * kGiB);
  r = Lease(1, 0, kGiB / 2, 8 * kGiB);  // only 1 GiB of the cap is left
  EXPECT_EQ(r.status, kGranted);
  EXPECT_EQ(r.granted_bytes, kGiB);
  r = Lease(1, 0, 1, 1);
  EXPECT_EQ(r.status, kRefused);
  EXPECT_NE(std::string(r.reason).find("tenant \"a\" holds 4.00 GiB"), std::string::npos) << r.reason;
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 4 * kGiB);
  EXPECT_EQ(channels_.live[1].tenant_held_bytes[0], 4 * kGiB);
}

TEST_F(BrokerCoreTest, AnIdleLeaseOfAnotherProcessOfTheTenantIsRecalledBeforeRefusing) {
  Hello(1, "a", 4 * kGiB, 1000, {0});
  Hello(2, "a", 4 * kGiB, 1000, {0});
  ASSERT_EQ(Lease(1, 0, 4 * kGiB, 4 * kGiB).status, kGranted);
  channels_.used[{1, 0}] = kGiB;  // 3 GiB of its lease idle
  // 2 GiB fit the cap once 1's idle lease is back: asked for, and 2 is told to ask again.
  EXPECT_EQ(Lease(2, 0, 2 * kGiB, 2 * kGiB).status, kRecalling);
  EXPECT_EQ(channels_.recalls[1], 1);
  Send(1, proto::Encode(proto::Type::kGive, proto::Give{0, 3 * kGiB}));
  EXPECT_EQ(Lease(2, 0, 2 * kGiB, 2 * kGiB).status, kGranted);
  // 1 GiB left under the cap, nothing idle: 2 GiB more is refused without a recall.
  channels_.used[{2, 0}] = 2 * kGiB;
  EXPECT_EQ(Lease(2, 0, 2 * kGiB, 2 * kGiB).status, kRefused);
  EXPECT_EQ(channels_.recalls[1], 1);
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 3 * kGiB);
}

TEST_F(BrokerCoreTest, AnotherTenantsIdleLeaseIsNotRecalledForATenantCap) {
  Hello(1, "a", 2 * kGiB, 1000, {0});
  Hello(2, "b", 8 * kGiB, 1000, {0});
  ASSERT_EQ(Lease(2, 0, 8 * kGiB, 8 * kGiB).status, kGranted);
  channels_.used[{2, 0}] = 0;
  ASSERT_EQ(Lease(1, 0, 2 * kGiB, 2 * kGiB).status, kGranted);
  EXPECT_EQ(Lease(1, 0, 1, 1).status, kRefused);  // a's own cap: b's lease does not matter
  EXPECT_EQ(channels_.recalls.count(2), 0u);
}

TEST_F(BrokerCoreTest, OnAFullGpuAnyTenantsIdleLeaseIsRecalled) {
  Hello(1, "a", 0, 1000, {0});
  Hello(2, "b", 0, 1000, {0});
  ASSERT_EQ(Lease(2, 0, 16 * kGiB, 16 * kGiB).status, kGranted);
  channels_.used[{2, 0}] = 15 * kGiB;
  EXPECT_EQ(Lease(1, 0, kGiB, kGiB).status, kRecalling);
  EXPECT_EQ(channels_.recalls[2], 1);
  EXPECT_EQ(Lease(1, 0, 2 * kGiB, 2 * kGiB).status, kRefused);  // more than all idle leases
}

TEST_F(BrokerCoreTest, AForcedTakeWithinTheCapIsGranted) {
  Hello(1, "a", 2 * kGiB, 1000, {0});
  auto r = Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 1, 300u << 20}));
  ASSERT_TRUE(r && r->size() == 1);
  EXPECT_EQ(proto::As<proto::TakeReply>(r->at(0)).granted, 1);
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 300u << 20);
}

proto::Hello ReattachHello(const std::string& tenant, uint64_t cap, int gpu, uint64_t held) {
  proto::Hello h{};
  proto::SetString(h.tenant, tenant);
  h.reattach = 1;
  h.device_count = 1;
  h.visible[0] = gpu;
  h.cap_bytes[0] = cap;
  h.held_bytes[0] = held;
  return h;
}

TEST_F(BrokerCoreTest, ReattachClaimsAreBoundedByTheTenantCap) {
  core_.Open(1, {101, 1000, 1000});
  auto r = Send(1, proto::Encode(proto::Type::kHello, ReattachHello("a", 2 * kGiB, 0, 15 * kGiB)));
  ASSERT_TRUE(r && r->size() == 1);
  proto::Welcome w = proto::As<proto::Welcome>(r->at(0));
  EXPECT_EQ(w.accepted, 1);
  EXPECT_NE(std::string(w.reason).find("claimed 15.00 GiB on GPU 0; recorded 2.00 GiB"), std::string::npos)
      << w.reason;
  EXPECT_EQ(core_.ledger().TenantHeld("a", 0), 2 * kGiB);
  // Another tenant is admitted with its whole cap beside it.
  proto::Welcome b = Hello(2, "b", 4 * kGiB, 1000, {0});
  EXPECT_EQ(b.accepted, 1) << b.reason;
  EXPECT_TRUE(Take(2, 0, 4 * kGiB));
}

TEST_F(BrokerCoreTest, ReattachClaimsAreBoundedByWhatTheDriverShowsTheProcessHolding) {
  std::vector<std::pair<int32_t, int>> asked;
  core_.SetProcessMemory([&](int32_t pid, int gpu) -> std::optional<uint64_t> {
    asked.push_back({pid, gpu});
    if (gpu == 1) return std::nullopt;  // the driver cannot say: the ledger's bounds only
    return pid == 101 ? std::optional<uint64_t>(kGiB) : std::optional<uint64_t>(0);
  });
  core_.Open(1, {101, 1000, 1000});
  ASSERT_TRUE(Send(1, proto::Encode(proto::Type::kHello, ReattachHello("a", 0, 0, 3 * kGiB))));
  EXPECT_EQ(core_.ledger().Held(1, 0), kGiB);
  core_.Open(2, {102, 1000, 1000});  // NVML does not list it at all
  ASSERT_TRUE(Send(2, proto::Encode(proto::Type::kHello, ReattachHello("b", 0, 0, 3 * kGiB))));
  EXPECT_EQ(core_.ledger().Held(2, 0), 0u);
  core_.Open(3, {103, 1000, 1000});
  ASSERT_TRUE(Send(3, proto::Encode(proto::Type::kHello, ReattachHello("c", 0, 1, 3 * kGiB))));
  EXPECT_EQ(core_.ledger().Held(3, 1), 3 * kGiB);
  EXPECT_EQ(asked, (std::vector<std::pair<int32_t, int>>{{101, 0}, {102, 0}, {103, 1}}));
}

TEST_F(BrokerCoreTest, AUserSeesOnlyTheirOwnTenantsInTheStatus) {
  core_.SetAdminUid(500);
  Hello(1, "alice", kGiB, 1001, {0});
  Hello(2, "bob", kGiB, 1002, {0});
  Hello(3, "bob", kGiB, 1002, {1});
  ASSERT_TRUE(Take(2, 0, kGiB));
  const auto status = [&](uint32_t uid) {
    core_.Open(99, {999, uid, uid});
    auto r = Send(99, proto::EncodeText(proto::Type::kStatus, ""));
    core_.Close(99);
    inbox_.erase(99);
    EXPECT_TRUE(r && r->size() == 1);
    return nlohmann::json::parse(proto::Decode<proto::Text>(r->at(0)));
  };
  auto alice = status(1001);
  ASSERT_EQ(alice["clients"].size(), 1u);
  EXPECT_EQ(alice["clients"][0]["tenant"], "alice");
  EXPECT_EQ(alice["hidden_clients"], 2);
  EXPECT_EQ(alice["gpus"][0]["memory_used"], kGiB);  // the node's totals include bob's
  auto stranger = status(1003);
  EXPECT_TRUE(stranger["clients"].empty());
  EXPECT_EQ(stranger["hidden_clients"], 3);
  for (uint32_t admin : {0u, 500u}) {
    auto all = status(admin);
    EXPECT_EQ(all["clients"].size(), 3u);
    EXPECT_EQ(all["hidden_clients"], 0);
  }
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

TEST_F(BrokerCoreTest, StatusReportsSharesByWeightWhenNotScheduling) {
  BrokerConfig config;
  config.scheduling = false;
  core_.Reload(config);
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

// The scheduler through the core: gates, revokes, measured shares, run-time weights
// and classification from records, on a fake clock.
class ScheduledCoreTest : public BrokerCoreTest {
 protected:
  static constexpr uint64_t kMs = 1'000'000;
  ScheduledCoreTest() {
    core_.SetClock([this] { return now_; });
    core_.SetAdminUid(4242);
  }
  void Sched(ClientId id, proto::SchedEvent e, uint64_t slice = 0, uint64_t drained = 0) {
    ASSERT_TRUE(
        Send(id, proto::Encode(proto::Type::kSched, proto::Sched{0, static_cast<uint32_t>(e), slice, drained})));
  }
  std::pair<uint32_t, uint64_t> Gate(ClientId id) { return channels_.gates[{id, 0}]; }
  std::string SetWeight(ClientId from, uint32_t uid, int32_t pid, const std::string& tenant, double weight) {
    core_.Open(from, {999, uid, uid});
    proto::SetWeight w{};
    w.pid = pid;
    proto::SetString(w.tenant, tenant);
    w.weight = weight;
    auto r = Send(from, proto::Encode(proto::Type::kSetWeight, w));
    EXPECT_TRUE(r && r->size() == 1);
    return std::string(r->at(0).payload.begin(), r->at(0).payload.end());
  }
  uint64_t now_ = 1000 * kMs;
};

TEST_F(ScheduledCoreTest, GrantsRevokesAndChargesWhatWasMeasured) {
  EXPECT_EQ(Hello(1, "a", 0, 1000, {0}).scheduled, 1u);
  Hello(2, "b", 0, 1000, {0});
  EXPECT_EQ(Gate(1).first, proto::kGateWait);  // nobody launches before asking
  Sched(1, proto::SchedEvent::kWant);
  EXPECT_EQ(Gate(1), (std::pair<uint32_t, uint64_t>{proto::kGateHeld, 1}));
  Sched(2, proto::SchedEvent::kWant);
  EXPECT_EQ(Gate(2).first, proto::kGateWait);
  now_ += 20 * kMs;
  core_.Poll();
  EXPECT_EQ(Gate(1), (std::pair<uint32_t, uint64_t>{proto::kGateWait, 1}));  // revoked: give back slice 1
  now_ += 2 * kMs;
  Sched(1, proto::SchedEvent::kReleased, 1, now_ - 1 * kMs);  // drained 1 ms ago
  EXPECT_EQ(Gate(2), (std::pair<uint32_t, uint64_t>{proto::kGateHeld, 2}));
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_DOUBLE_EQ(s["clients"][0]["devices"][0]["gpu_time_ms"].get<double>(), 21.0);
  EXPECT_DOUBLE_EQ(s["clients"][0]["gpu_share"].get<double>(), 1.0);  // the only time charged yet
  EXPECT_TRUE(s["clients"][1]["devices"][0]["holding"].get<bool>());
  // The holder hangs up: the GPU goes to the next waiter at once.
  Sched(1, proto::SchedEvent::kWant);
  core_.Close(2);
  EXPECT_EQ(Gate(1), (std::pair<uint32_t, uint64_t>{proto::kGateHeld, 3}));
}

TEST_F(ScheduledCoreTest, ASchedMessageBeforeHelloDropsThePeer) {
  core_.Open(7, {107, 1000, 1000});
  EXPECT_FALSE(Send(7, proto::Encode(proto::Type::kSched, proto::Sched{0, 1, 0, 0})));
}

TEST_F(ScheduledCoreTest, OnlyTheAdminChangesWeightsAndTheyApplyAtOnce) {
  Hello(1, "a", 0, 1000, {0});  // asks weight 2
  Hello(2, "a", 0, 1000, {0});
  EXPECT_NE(SetWeight(10, 1000, 101, "", 5).find("refused: only root"), std::string::npos);
  EXPECT_NE(SetWeight(11, 4242, 555, "", 5).find("no client with pid 555"), std::string::npos);
  EXPECT_NE(SetWeight(12, 4242, 101, "", -1).find("refused"), std::string::npos);
  EXPECT_EQ(SetWeight(13, 4242, 101, "", 5), "ok: weight 5 for 1 client(s)");
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_DOUBLE_EQ(s["clients"][0]["weight"].get<double>(), 5);
  EXPECT_DOUBLE_EQ(s["clients"][0]["effective_weight"].get<double>(), 5 * 0.5);  // unknown class: 0.5
  EXPECT_EQ(SetWeight(14, 0, 0, "a", 3), "ok: weight 3 for 2 client(s)");        // root may; a tenant's clients
  s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_DOUBLE_EQ(s["clients"][0]["weight"].get<double>(), 3);
  core_.Reload(BrokerConfig{});  // until a reload
  s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_DOUBLE_EQ(s["clients"][1]["effective_weight"].get<double>(), 2 * 0.5);
}

TEST_F(ScheduledCoreTest, RecordsClassifyAClientAndItsClassSetsItsWeight) {
  Hello(1, "a", 0, 1000, {0});  // weight 2
  channels_.names[{1, 1}] = "simgpu_memory_200us";
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 50; ++i) {
      proto::RecordData r{};
      r.stream = 7;
      r.kind = proto::RecordKind::kKernel;
      r.name = 1;
      channels_.pending[1].push_back(r);
    }
    now_ += 100 * kMs;
    core_.Poll();
  }
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(s["clients"][0]["class"], "memory");
  EXPECT_NE(s["clients"][0]["class_why"].get<std::string>().find("simgpu_memory_200us"), std::string::npos);
  EXPECT_DOUBLE_EQ(s["clients"][0]["effective_weight"].get<double>(), 2 * 0.3);
  EXPECT_EQ(s["clients"][0]["kernels"], 250);
  ASSERT_EQ(s["clients"][0]["streams"].size(), 1u);
  EXPECT_EQ(s["clients"][0]["streams"][0]["class"], "memory");
}

// Publishes a well-formed record at the client's next position.
void Publish(proto::Channel* c, uint8_t device, bool publish = true) {
  const uint64_t pos = c->ring_head.fetch_add(1);
  proto::LaunchRecord& r = c->ring[pos % proto::kRingRecords];
  r.device = device;
  r.kind = static_cast<uint8_t>(proto::RecordKind::kKernel);
  r.grid = static_cast<uint32_t>(pos);
  if (publish) r.seq.store(pos + 1);
}

TEST(DrainRing, PassesPublishedRecordsAndDropsMalformedOnes) {
  auto channel = std::make_unique<proto::Channel>();
  RingCursor cursor;
  Publish(channel.get(), 0);
  Publish(channel.get(), 200);  // no such device
  Publish(channel.get(), 3);
  std::vector<uint32_t> grids;
  EXPECT_EQ(DrainRing(channel.get(), &cursor, [&](const proto::RecordData& r) { grids.push_back(r.grid); }), 2u);
  EXPECT_EQ(grids, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(cursor.tail, 3u);
  EXPECT_EQ(cursor.dropped, 1u);
  EXPECT_EQ(channel->ring_tail.load(), 3u);
}

TEST(DrainRing, WaitsBrieflyForAClaimedRecordThenSkipsIt) {
  auto channel = std::make_unique<proto::Channel>();
  RingCursor cursor;
  Publish(channel.get(), 0);
  Publish(channel.get(), 0, /*publish=*/false);  // its writer was killed mid-record
  Publish(channel.get(), 0);
  int passed = 0;
  auto count = [&](const proto::RecordData&) { ++passed; };
  const uint64_t t0 = 1'000'000'000;
  EXPECT_EQ(DrainRing(channel.get(), &cursor, t0, count), 1u);
  EXPECT_EQ(cursor.tail, 1u);                                                      // stopped at the claimed record
  EXPECT_EQ(DrainRing(channel.get(), &cursor, t0 + kRingStallNs - 1, count), 0u);  // a preempted writer: waits
  EXPECT_EQ(DrainRing(channel.get(), &cursor, t0 + kRingStallNs, count), 1u);      // stuck: skipped, the next read
  EXPECT_EQ(cursor.tail, 3u);
  EXPECT_EQ(cursor.dropped, 1u);
  EXPECT_EQ(passed, 2);
}

TEST(DrainRing, ReadsAtMostARingAndCountsWhatWasOverrun) {
  auto channel = std::make_unique<proto::Channel>();
  RingCursor cursor;
  channel->ring_head = 10 * proto::kRingRecords;  // a head far ahead of anything written
  size_t read = DrainRing(channel.get(), &cursor, [](const proto::RecordData&) {});
  EXPECT_EQ(read, 0u);                               // nothing there was published at those positions: it waits there
  EXPECT_EQ(cursor.tail, 9u * proto::kRingRecords);  // the overrun is counted, a ring's worth left
  EXPECT_EQ(cursor.dropped, 9u * proto::kRingRecords);
  channel->ring_head = 3;  // rewound
  EXPECT_EQ(DrainRing(channel.get(), &cursor, [](const proto::RecordData&) {}), 0u);
  EXPECT_EQ(cursor.tail, 3u);
}

}  // namespace
}  // namespace gpushare::broker

namespace gpushare::broker {
namespace {

// The value of family `name`'s metric whose labels include `labels`, or -1.
double MetricValue(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
                   const std::map<std::string, std::string>& labels = {}) {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      bool all = true;
      for (const auto& [k, v] : labels)
        all = all && std::any_of(m.label.begin(), m.label.end(), [&](const auto& l) { return l.name == k && l.value == v; });
      if (!all) continue;
      return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return -1;
}

TEST_F(BrokerCoreTest, MetricsCountRefusalsAndReclaimsAndForgetDepartedClientsAndTenants) {
  Hello(1, "a", 4 * kGiB, 1000, {0});
  Hello(2, "a", 4 * kGiB, 1000, {0});
  Hello(3, "b", 0, 1000, {1});
  ASSERT_TRUE(Take(1, 0, 3 * kGiB));
  EXPECT_FALSE(Take(2, 0, 2 * kGiB));  // past tenant a's 4 GiB across its two clients
  EXPECT_FALSE(Take(2, 0, 2 * kGiB));
  std::vector<prometheus::MetricFamily> m;
  core_.AppendMetrics(&m);
  EXPECT_EQ(MetricValue(m, "gpushare_clients"), 3);
  EXPECT_EQ(MetricValue(m, "gpushare_registrations_total"), 3);
  EXPECT_EQ(MetricValue(m, "gpushare_client_oom_refusals_total", {{"pid", "102"}}), 2);
  EXPECT_EQ(MetricValue(m, "gpushare_client_oom_refusals_total", {{"pid", "101"}}), 0);
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_oom_refusals_total", {{"tenant", "a"}}), 2);
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_oom_refusals_total", {{"tenant", "b"}}), 0);  // from 0
  EXPECT_EQ(MetricValue(m, "gpushare_client_memory_held_bytes", {{"pid", "101"}, {"gpu", "0"}}), 3.0 * kGiB);
  EXPECT_EQ(MetricValue(m, "gpushare_client_memory_cap_bytes", {{"pid", "101"}, {"gpu", "0"}}), 4.0 * kGiB);
  EXPECT_EQ(MetricValue(m, "gpushare_client_memory_cap_bytes", {{"pid", "103"}}), -1);  // b is uncapped
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_memory_held_bytes", {{"tenant", "a"}, {"gpu", "0"}}), 3.0 * kGiB);
  EXPECT_EQ(MetricValue(m, "gpushare_gpu_memory_held_bytes", {{"gpu", "0"}}), 3.0 * kGiB);
  // Scheduled (the fake host gives channels): weights 2 and 2 of a on GPU 0, b alone on 1.
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_entitled_share_ratio", {{"tenant", "a"}, {"gpu", "0"}}), 1.0);
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_entitled_share_ratio", {{"tenant", "b"}, {"gpu", "1"}}), 1.0);
  EXPECT_EQ(MetricValue(m, "gpushare_client_info", {{"pid", "103"}, {"tenant", "b"}, {"class", "unknown"}}), 1);

  EXPECT_EQ(core_.Close(1), 3 * kGiB);
  m.clear();
  core_.AppendMetrics(&m);
  EXPECT_EQ(MetricValue(m, "gpushare_client_info", {{"pid", "101"}}), -1);  // its series are gone
  EXPECT_EQ(MetricValue(m, "gpushare_client_memory_held_bytes", {{"pid", "101"}}), -1);
  EXPECT_EQ(MetricValue(m, "gpushare_reclaims_total"), 1);
  EXPECT_EQ(MetricValue(m, "gpushare_reclaimed_bytes_total"), 3.0 * kGiB);
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_oom_refusals_total", {{"tenant", "a"}}), 2);  // a still has client 2
  core_.Close(2);
  m.clear();
  core_.AppendMetrics(&m);
  EXPECT_EQ(MetricValue(m, "gpushare_tenant_oom_refusals_total", {{"tenant", "a"}}), -1);  // a is gone
  EXPECT_EQ(MetricValue(m, "gpushare_clients"), 1);
}

TEST(WaitHistogram, SumsAddBucketByBucket) {
  WaitHistogram a, b;
  a.Observe(50'000);
  b.Observe(3'000'000);
  b.Observe(20'000'000'000);
  AddWaits(&a, b);
  EXPECT_EQ(a.count, 3u);
  EXPECT_EQ(a.sum_ns, 20'003'050'000u);
  EXPECT_EQ(a.counts[0], 1u);
  EXPECT_EQ(a.counts[5], 1u);  // (2.5 ms, 5 ms]
  EXPECT_EQ(a.counts[kWaitBuckets - 1], 1u);
}

}  // namespace
}  // namespace gpushare::broker
