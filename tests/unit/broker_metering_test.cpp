// The meter inside BrokerCore, with fake clocks and a real SQLite store in a temporary
// directory: sessions from registration to hang-up, memory from Take/Give, fractions from
// the weights of the clients on a GPU, re-registration after a restart continuing a
// session, and who may read which tenant's usage and bill.
#include "broker/core/metering.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "broker/core/broker_core.h"
#include "broker/io/meter_store.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;
using nlohmann::json;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kS = 1'000'000'000;
constexpr uint64_t kDec1 = 1'796'083'200ull * kS;  // 2026-12-01T00:00:00Z
constexpr uint32_t kAdmin = 500;

BrokerConfig Config() {
  std::string error;
  auto c = ParseBrokerConfig(R"(
[billing]
base_rate = 2.0
[tenants.a]
weight = 2
uids = [1001]
[tenants.b]
weight = 1
uids = [1002, 1001]
)",
                             "t.toml", &error);
  EXPECT_TRUE(c) << error;
  return *c;
}

class MeteringTest : public ::testing::Test {
 protected:
  MeteringTest() {
    dir_ = std::filesystem::temp_directory_path() / ("gs-metering-" + std::to_string(getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Restart();
  }
  ~MeteringTest() override { std::filesystem::remove_all(dir_); }

  // A broker (re)started on the same database, with what it left open.
  void Restart() {
    core_.reset();
    store_.reset();
    std::string error;
    store_ = MeterStore::Open((dir_ / "metering.db").string(), &error);
    ASSERT_TRUE(store_) << error;
    auto open = store_->OpenSessions(&error);
    ASSERT_TRUE(open) << error;
    core_ = std::make_unique<BrokerCore>(Config(), std::vector<GpuInfo>{{0, "g0", 16 * kGiB}}, nullptr);
    core_->SetClock([this] { return mono_; });
    core_->SetAdminUid(kAdmin);
    core_->AttachMeter(store_.get(), 1000 * (++generation_), std::move(*open), [this] { return wall_; });
  }
  proto::Welcome Hello(ClientId id, const std::string& tenant, int32_t pid, bool reattach = false, uint64_t held = 0) {
    // Members as the config lists them: a's 1001, b's 1002; other tenants anyone.
    const uint32_t uid = tenant == "a" ? 1001 : tenant == "b" ? 1002 : 1000;
    core_->Open(id, {pid, uid, uid});
    proto::Hello h{};
    proto::SetString(h.tenant, tenant);
    h.weight = 1;
    h.reattach = reattach ? 1 : 0;
    h.device_count = reattach ? 1 : 0;
    for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = reattach && v == 0 ? 0 : -1;
    h.held_bytes[0] = held;
    std::vector<uint8_t> in = proto::Encode(proto::Type::kHello, h), out;
    std::string error;
    EXPECT_TRUE(core_->Input(id, &in, &out, &error)) << error;
    auto m = proto::Split(&out, &error);
    return proto::As<proto::Welcome>(*m);
  }
  void Send(ClientId id, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t> in = bytes, out;
    std::string error;
    EXPECT_TRUE(core_->Input(id, &in, &out, &error)) << error;
  }
  // A usage or bill request as `uid` on a fresh tool connection.
  json Ask(uint32_t uid, const json& request) {
    const ClientId tool = 900 + uid;
    core_->Open(tool, {1, uid, uid});
    std::vector<uint8_t> in = proto::EncodeText(proto::Type::kUsage, request.dump()), out;
    std::string error;
    EXPECT_TRUE(core_->Input(tool, &in, &out, &error)) << error;
    core_->Close(tool);
    auto m = proto::Split(&out, &error);
    EXPECT_TRUE(m && m->type == proto::Type::kUsageReply);
    return json::parse(std::string(m->payload.begin(), m->payload.end()));
  }
  std::map<std::string, json> ByTenant(uint32_t uid) {
    std::map<std::string, json> out;
    const json usage = Ask(uid, {{"what", "usage"}, {"by", "tenant"}});
    for (const json& l : usage["lines"]) out[l["tenant"].get<std::string>()] = l;
    return out;
  }

  std::filesystem::path dir_;
  std::unique_ptr<MeterStore> store_;
  std::unique_ptr<BrokerCore> core_;
  uint64_t mono_ = 1'000 * kS;
  uint64_t wall_ = kDec1 + 3600 * kS;
  int generation_ = 0;
};

TEST_F(MeteringTest, SessionsRunFromRegistrationToHangUpAtTheirWeightShares) {
  ASSERT_EQ(Hello(1, "a", 101).accepted, 1);
  wall_ += 10 * kS;  // a alone: all of the GPU
  ASSERT_EQ(Hello(2, "b", 102).accepted, 1);
  wall_ += 30 * kS;  // a 2/3, b 1/3
  core_->Close(2);
  wall_ += 20 * kS;  // a alone again
  core_->Close(1);
  auto t = ByTenant(kAdmin);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t["a"]["wall_ns"], 60 * kS);
  EXPECT_EQ(t["a"]["allotted_ns"], 50 * kS);  // 10 + 30 x 2/3 + 20
  EXPECT_EQ(t["b"]["wall_ns"], 30 * kS);
  EXPECT_EQ(t["b"]["allotted_ns"], 10 * kS);
  json bill = Ask(kAdmin, {{"what", "bill"}, {"period", "2026-12"}});
  // a: 2.00 x 50 s / 3600 s = 0.0278 -> 3 cents; b: 2.00 x 10 s -> 0.56 cent -> 1 cent.
  EXPECT_EQ(bill["lines"][0]["formula_minor"], 3) << bill.dump();
  EXPECT_EQ(bill["lines"][1]["formula_minor"], 1) << bill.dump();
  EXPECT_EQ(bill["total"]["formula"], "0.04");
}

TEST_F(MeteringTest, MemoryHeldIsIntegratedFromTakeAndGive) {
  Hello(1, "a", 101);
  Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 0, 2 * kGiB}));
  wall_ += 1800 * kS;  // 2 GiB for half an hour
  Send(1, proto::Encode(proto::Type::kGive, proto::Give{0, kGiB}));
  wall_ += 3600 * kS;  // 1 GiB for an hour
  core_->Close(1);
  EXPECT_DOUBLE_EQ(ByTenant(kAdmin)["a"]["memory_gib_h"].get<double>(), 2.0);
}

TEST_F(MeteringTest, AReRegisteringClientContinuesItsSessionAfterARestart) {
  Hello(1, "a", 4242);
  Send(1, proto::Encode(proto::Type::kTake, proto::Take{0, 0, kGiB}));
  wall_ += 10 * kS;
  std::string error;
  ASSERT_TRUE(core_->FlushMeter(&error)) << error;
  wall_ += 5 * kS;  // then the broker dies: these 5 s were not written
  Restart();
  wall_ += 5 * kS;
  Hello(7, "a", 4242, /*reattach=*/true, kGiB);
  Hello(8, "a", 5555);  // another process: a session of its own
  wall_ += 10 * kS;
  core_->Close(7);
  core_->Close(8);
  json usage = Ask(kAdmin, {{"what", "usage"}, {"by", "session"}});
  ASSERT_EQ(usage["lines"].size(), 2u) << usage.dump();
  const json& s = usage["lines"][0]["pid"] == 4242 ? usage["lines"][0] : usage["lines"][1];
  EXPECT_EQ(s["wall_ns"], 30 * kS);  // start to end, downtime included
  EXPECT_DOUBLE_EQ(s["memory_gib_h"].get<double>(), 30.0 / 3600);
  EXPECT_EQ(s["session"].get<uint64_t>() / 1000, 1u);  // the first broker's id
}

TEST_F(MeteringTest, OrphansWaitForTheirClientsAGraceFromTheBrokersStart) {
  Hello(1, "a", 4242);
  Hello(2, "a", 4343);
  wall_ += 10 * kS;
  std::string error;
  ASSERT_TRUE(core_->FlushMeter(&error)) << error;
  wall_ += 3600 * kS;  // the broker was down an hour: the grace counts from its restart
  Restart();
  core_->CloseMeterOrphans(300 * kS);
  wall_ += 299 * kS;
  core_->CloseMeterOrphans(300 * kS);
  Hello(7, "a", 4242, /*reattach=*/true);  // within the grace: continues
  wall_ += 2 * kS;
  core_->CloseMeterOrphans(300 * kS);  // past it: 4343's session ends at its last record
  Hello(8, "a", 4343, /*reattach=*/true);
  core_->Close(7);
  core_->Close(8);
  json usage = Ask(kAdmin, {{"what", "usage"}, {"by", "session"}});
  ASSERT_EQ(usage["lines"].size(), 3u) << usage.dump();
  std::map<uint64_t, json> by_id;
  for (const json& l : usage["lines"]) by_id[l["session"].get<uint64_t>()] = l;
  EXPECT_EQ(by_id.at(1000)["wall_ns"], (10 + 3600 + 299) * kS + 2 * kS);  // continued through the downtime
  EXPECT_EQ(by_id.at(1001)["wall_ns"], 10 * kS);                          // ended at its last record
  EXPECT_EQ(by_id.at(2000)["pid"], 4343);                                 // a session of its own
}

TEST_F(MeteringTest, ATenantMemberReadsOnlyTheTenantsListingIt) {
  Hello(1, "a", 101);
  Hello(2, "b", 102);
  Hello(3, "c", 103);  // not in the config: the operator's only
  wall_ += 10 * kS;
  EXPECT_EQ(ByTenant(kAdmin).size(), 3u);
  EXPECT_EQ(ByTenant(0).size(), 3u);
  auto for_1001 = ByTenant(1001);  // listed in a and b
  EXPECT_EQ(for_1001.size(), 2u);
  EXPECT_EQ(for_1001.count("c"), 0u);
  auto for_1002 = ByTenant(1002);
  ASSERT_EQ(for_1002.size(), 1u);
  EXPECT_EQ(for_1002.count("b"), 1u);
  EXPECT_EQ(Ask(4000, {{"what", "usage"}})["error"], "uid 4000 may read no tenant's usage");
  json refused = Ask(1002, {{"what", "bill"}, {"period", "2026-12"}, {"tenant", "a"}});
  EXPECT_EQ(refused["error"], "uid 1002 may not read tenant \"a\"'s usage");
}

TEST_F(MeteringTest, MalformedRequestsAreAnsweredWithAnError) {
  EXPECT_TRUE(Ask(kAdmin, {{"what", "usage"}, {"since", "2026-13-01"}}).contains("error"));
  EXPECT_TRUE(Ask(kAdmin, {{"what", "usage"}, {"by", "week"}}).contains("error"));
  EXPECT_TRUE(Ask(kAdmin, {{"what", "bill"}}).contains("error"));
  EXPECT_TRUE(Ask(kAdmin, {{"what", "drop table"}}).contains("error"));
  EXPECT_TRUE(Ask(kAdmin, json::array({1, 2})).contains("error"));
}

TEST(SessionTerms, WithoutAProfileTheFractionIsTheWeightOverTheWeightsOnEachGpu) {
  ClientRecord c;
  c.physical = {0, 1};
  const SessionTerms t = SessionTermsOf(c, 2, {{0, 3}, {1, 2}});
  EXPECT_EQ(t.profile, "");
  EXPECT_DOUBLE_EQ(t.fraction, 2.0 / 3 + 1.0);
}

TEST(SessionTerms, AnInstanceIsBilledByItsProfilesComputeFractionWhoeverElseRuns) {
  ClientRecord c;
  c.physical = {1};
  c.instance = Instance{"q8g", 1, 0.25, 0.5, 8ull << 30, 0};
  const SessionTerms t = SessionTermsOf(c, 0.25, {{1, 0.5}});
  EXPECT_EQ(t.profile, "q8g");
  EXPECT_DOUBLE_EQ(t.fraction, 0.25);
}

TEST(MaySeeUsage, RootAndTheAdminSeeAllATenantsListedUidsOrGidsTheirTenant) {
  BrokerConfig c = Config();
  const auto as = [](uint32_t uid, uint32_t gid = 5000) { return PeerCredentials{1, uid, gid}; };
  EXPECT_TRUE(MaySeeUsage(c, as(0), kAdmin, "a"));
  EXPECT_TRUE(MaySeeUsage(c, as(kAdmin), kAdmin, "anything"));
  EXPECT_TRUE(MaySeeUsage(c, as(1001), kAdmin, "a"));
  EXPECT_FALSE(MaySeeUsage(c, as(1002), kAdmin, "a"));
  EXPECT_FALSE(MaySeeUsage(c, as(1001), kAdmin, "unlisted"));
  c.tenants["a"].gids = std::vector<uint32_t>{777};
  EXPECT_TRUE(MaySeeUsage(c, as(1002, 777), kAdmin, "a"));
  EXPECT_FALSE(MaySeeUsage(c, as(1002, 778), kAdmin, "a"));
}

}  // namespace
}  // namespace gpushare::broker
