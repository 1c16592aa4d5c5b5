// MPS co-location (issue 20): the SM share a client is given before its context exists
// (MpsShares), the plan it co-holds its GPU on (SpatialPolicy under kMps), and the
// broker core's MpsAsk -> Hello -> scheduler path, with exact expected results.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker/core/broker_core.h"
#include "broker/policy/config.h"
#include "broker/policy/mps_shares.h"
#include "broker/policy/spatial.h"
#include "core_exchange.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;
using WC = WorkClass;

TEST(MpsShares, AClientThatSaysItsClassGetsThatClassShare) {
  MpsShares s;
  EXPECT_EQ(s.Decide(true, true, WC::kMemory, "t/etl", 25).percent, 25u);
  EXPECT_EQ(s.Decide(true, true, WC::kCompute, "t/train", 25).percent, 75u);
  EXPECT_EQ(s.Decide(true, true, WC::kCompute, "t/train", 40).percent, 60u);
  EXPECT_EQ(s.Decide(true, true, WC::kMemory, "t/etl", 25).cls, WC::kMemory);
}

TEST(MpsShares, AnUnknownProgramStaysOutUntilItsClassWasMeasured) {
  MpsShares s;
  MpsShare first = s.Decide(true, true, WC::kUnknown, "t/train", 25);
  EXPECT_EQ(first.percent, 0u);
  EXPECT_EQ(first.cls, WC::kUnknown);
  s.Learn("t/train", WC::kIdle);  // says nothing
  s.Learn("t/train", WC::kCopy);
  EXPECT_EQ(s.Decide(true, true, WC::kUnknown, "t/train", 25).percent, 0u);
  s.Learn("t/train", WC::kCompute);
  EXPECT_EQ(s.Decide(true, true, WC::kUnknown, "t/train", 25).percent, 75u);
  s.Learn("t/train", WC::kMemory);  // its next run follows the latest measurement
  EXPECT_EQ(s.Decide(true, true, WC::kUnknown, "t/train", 25).percent, 25u);
  EXPECT_EQ(s.Decide(true, true, WC::kUnknown, "other/train", 25).percent, 0u);  // another tenant's program
  // What the client says wins over what was measured.
  EXPECT_EQ(s.Decide(true, true, WC::kCompute, "t/train", 25).percent, 75u);
}

TEST(MpsShares, NoShareWithoutColocateOrWithoutADaemon) {
  MpsShares s;
  EXPECT_EQ(s.Decide(false, true, WC::kMemory, "t/etl", 25).percent, 0u);
  EXPECT_EQ(s.Decide(true, false, WC::kMemory, "t/etl", 25).percent, 0u);
  EXPECT_NE(s.Decide(false, true, WC::kMemory, "t/etl", 25).reason.find("colocate"), std::string::npos);
}

TEST(MpsShares, ProgramsRememberedAreBoundedTheOldestForgottenFirst) {
  MpsShares s;
  for (size_t i = 0; i <= MpsShares::kMaxPrograms; ++i) s.Learn("t/p" + std::to_string(i), WC::kCompute);
  EXPECT_FALSE(s.Known("t/p0").has_value());
  EXPECT_TRUE(s.Known("t/p1").has_value());
  EXPECT_TRUE(s.Known("t/p" + std::to_string(MpsShares::kMaxPrograms)).has_value());
}

TEST(MpsShares, AnAskIsClaimedOnceByItsPidAndForgottenAfterAMinute) {
  MpsShares s;
  MpsShare share{WC::kMemory, 25, ""};
  EXPECT_TRUE(s.Asked(10, {share, "t/etl"}, 1000));
  EXPECT_FALSE(s.Claim(11, 2000).has_value());
  auto got = s.Claim(10, 2000);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->share.percent, 25u);
  EXPECT_EQ(got->program, "t/etl");
  EXPECT_FALSE(s.Claim(10, 3000).has_value());
  EXPECT_TRUE(s.Asked(12, {share, "t/etl"}, 1000));
  EXPECT_FALSE(s.Claim(12, 1000 + MpsShares::kPendingNs + 1).has_value());
  for (int pid = 1; pid <= static_cast<int>(MpsShares::kMaxPending); ++pid) EXPECT_TRUE(s.Asked(pid, {share, "t"}, 5));
  EXPECT_FALSE(s.Asked(-5, {share, "t"}, 5));
}

TEST(SpatialPolicyMps, SharesArePercentUnitsAndAComputeBoundFlowKeepsItsShareAlone) {
  SpatialPolicy p(SpatialMode::kMps, 25);
  auto alone = p.Assign(kMpsUnits, {{1, 0, WC::kCompute}});
  EXPECT_EQ(alone[0], (SpatialAssignment{1, 0, CuMask::Range(25, 75), 0.75}));
  auto pair = p.Assign(kMpsUnits, {{1, 0, WC::kCompute}, {2, 0, WC::kMemory}, {3, 0, WC::kUnknown}});
  EXPECT_EQ(pair[1], (SpatialAssignment{2, 0, CuMask::Range(0, 25), 0.25}));
  EXPECT_FALSE(pair[2].mask.has_value());  // not in MPS: the whole GPU, in turns
  EXPECT_TRUE(SpatialPolicy::MayCoHold(pair[0].mask, pair[1].mask));
  EXPECT_FALSE(SpatialPolicy::MayCoHold(pair[0].mask, p.Assign(kMpsUnits, {{4, 0, WC::kCompute}})[0].mask));
}

TEST(BrokerConfigMps, SpatialMpsItsSectionAndColocateAreParsedAndChecked) {
  std::string error;
  auto c = ParseBrokerConfig(
      "[scheduler]\nspatial = \"mps\"\n[mps]\ncontrol = \"/opt/sim/ctl\"\npipe_directory = \"/run/mps\"\n"
      "memory_percent = 40\n[tenants.a]\ncolocate = true\n[tenants.b]\n",
      "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->spatial, SpatialMode::kMps);
  EXPECT_EQ(c->mps.control, "/opt/sim/ctl");
  EXPECT_EQ(c->mps.pipe_directory, "/run/mps");
  EXPECT_EQ(c->mps.memory_percent, 40u);
  EXPECT_TRUE(c->tenants.at("a").colocate);
  EXPECT_FALSE(c->tenants.at("b").colocate);
  auto defaults = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(defaults) << error;
  EXPECT_EQ(defaults->mps.control, "");  // nvidia-cuda-mps-control
  EXPECT_EQ(defaults->mps.pipe_directory, "");
  EXPECT_EQ(defaults->mps.memory_percent, 25u);
  const auto error_of = [](const std::string& text) {
    std::string e;
    EXPECT_FALSE(ParseBrokerConfig(text, "broker.toml", &e));
    return e;
  };
  EXPECT_EQ(error_of("[scheduler]\nspatial = \"green\"\n"),
            "broker.toml:2: scheduler.spatial: expected \"off\", \"cu_mask\" or \"mps\"");
  EXPECT_EQ(error_of("[mps]\nmemory_percent = 100\n"), "broker.toml:2: mps.memory_percent: expected 1 to 99");
  EXPECT_EQ(error_of("[mps]\n\npipe_directory = \"relative\"\n"),
            "broker.toml:3: mps.pipe_directory: expected an absolute path shorter than 100 bytes, or \"\"");
  EXPECT_EQ(error_of("[mps]\ncontrol = \"\"\n"), "broker.toml:2: mps.control: expected the control program's path");
  EXPECT_EQ(error_of("[mps]\nserver = 1\n"), "broker.toml:2: mps.server: unknown key");
  EXPECT_EQ(error_of("[tenants.a]\ncolocate = \"yes\"\n"), "broker.toml:2: tenants.a.colocate: expected true or false");
}

// The core: what a client asks before its driver starts, and the flow its Hello makes.
class MpsCoreTest : public ::testing::Test {
 protected:
  static BrokerConfig Config() {
    BrokerConfig c;
    c.spatial = SpatialMode::kMps;
    c.tenants["tc"].colocate = true;
    c.tenants["tm"].colocate = true;
    c.tenants["solo"] = TenantPolicy{};
    return c;
  }
  MpsCoreTest() : core_(Config(), {{0, "g0", 16ull << 30, 0}}, nullptr) {
    core_.SetClock([this] { return now_; });
    core_.SetMpsPipe("/run/gpushare/broker-mps/pipe");
  }
  // MpsAsk on connection `conn` of process `pid`.
  proto::MpsTerms Ask(ClientId conn, int32_t pid, const std::string& tenant, proto::MpsClass hint,
                      const std::string& program = "worker") {
    core_.Open(conn, {pid, 1000, 1000});
    proto::MpsAsk a{};
    proto::SetString(a.tenant, tenant);
    proto::SetString(a.program, program);
    a.hint = static_cast<uint32_t>(hint);
    std::vector<uint8_t> inbox;
    auto replies = core_exchange::Exchange(core_, conn, &inbox, proto::Encode(proto::Type::kMpsAsk, a));
    core_.Close(conn);
    EXPECT_TRUE(replies && replies->size() == 1 && (*replies)[0].type == proto::Type::kMpsTerms);
    if (!replies || replies->empty()) return {};
    return proto::Decode<proto::MpsTerms>((*replies)[0]);
  }
  void Hello(ClientId conn, int32_t pid, const std::string& tenant) {
    core_.Open(conn, {pid, 1000, 1000});
    proto::Hello h{};
    proto::SetString(h.tenant, tenant);
    h.weight = 1;
    h.device_count = 1;
    for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = v == 0 ? 0 : -1;
    std::vector<uint8_t> inbox;
    ASSERT_TRUE(core_exchange::Exchange(core_, conn, &inbox, proto::Encode(proto::Type::kHello, h)));
  }
  const ClientRecord& Record(ClientId conn) { return *core_.Client(conn); }

  uint64_t now_ = 1'000'000'000;
  BrokerCore core_;
};

TEST_F(MpsCoreTest, AColocatingClientIsToldItsShareAndThePipeDirectory) {
  proto::MpsTerms t = Ask(1, 501, "tm", proto::MpsClass::kMemory);
  EXPECT_EQ(t.percent, 25u);
  EXPECT_STREQ(t.pipe_directory, "/run/gpushare/broker-mps/pipe");
  t = Ask(2, 502, "tc", proto::MpsClass::kCompute);
  EXPECT_EQ(t.percent, 75u);
  t = Ask(3, 503, "solo", proto::MpsClass::kCompute);
  EXPECT_EQ(t.percent, 0u);
  EXPECT_STREQ(t.pipe_directory, "");
}

TEST_F(MpsCoreTest, ItsHelloBringsTheShareItWasToldToTheClientRecord) {
  Ask(1, 501, "tm", proto::MpsClass::kMemory);
  Hello(10, 501, "tm");
  EXPECT_EQ(Record(10).mps_class, WC::kMemory);
  EXPECT_EQ(Record(10).mps_program, "tm/worker");
  Hello(11, 777, "tc");  // asked nothing (an older shim, a HIP client): not in MPS
  EXPECT_EQ(Record(11).mps_class, WC::kUnknown);
}

TEST_F(MpsCoreTest, WithoutADaemonOrWithSpatialOffNobodyJoins) {
  core_.SetMpsPipe("");
  EXPECT_EQ(Ask(1, 501, "tm", proto::MpsClass::kMemory).percent, 0u);
  BrokerConfig off = Config();
  off.spatial = SpatialMode::kOff;
  core_.Reload(off);
  core_.SetMpsPipe("/run/mps");
  proto::MpsTerms t = Ask(2, 502, "tm", proto::MpsClass::kMemory);
  EXPECT_EQ(t.percent, 0u);
  EXPECT_NE(std::string(t.reason).find("spatial"), std::string::npos) << t.reason;
}

TEST_F(MpsCoreTest, ATenantTheClientMayNotUseGetsNoShare) {
  BrokerConfig c = Config();
  c.tenants["tm"].uids = std::vector<uint32_t>{4242};
  core_.Reload(c);
  EXPECT_EQ(Ask(1, 501, "tm", proto::MpsClass::kMemory).percent, 0u);
}

TEST(ProtocolMps, GarbageInAnAskOrTermsIsReadSafely) {
  proto::MpsAsk a;
  std::memset(&a, 'x', sizeof a);
  a.hint = 77;
  proto::MpsAsk sa = proto::Sanitized(a);
  EXPECT_EQ(sa.hint, 0u);
  EXPECT_EQ(std::strlen(sa.tenant), sizeof sa.tenant - 1);
  proto::MpsTerms t;
  std::memset(&t, 'y', sizeof t);
  t.percent = 101;
  proto::MpsTerms st = proto::Sanitized(t);
  EXPECT_EQ(st.percent, 0u);
  EXPECT_EQ(std::strlen(st.pipe_directory), sizeof st.pipe_directory - 1);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kMpsAsk))->route, proto::Route::kAnyone);
}

}  // namespace
}  // namespace gpushare::broker
