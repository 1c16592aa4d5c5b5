// Placement at registration (BrokerCore with a topology): ranks of a job get distinct
// GPUs planned as one set, in link order, and see the job's GPUs as their virtual GPUs;
// a job that cannot be placed is refused with the reason; compute-bound clients are
// spread; the explanation is in the status; communicators gather their ranks and warn
// when a pair has no P2P; the baselines stay selectable.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker/core/broker_core.h"
#include "core_exchange.h"
#include "test_topologies.h"

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;
using namespace test_topologies;

std::vector<GpuInfo> Gpus(int n) {
  std::vector<GpuInfo> g;
  for (int i = 0; i < n; ++i) {
    std::string name = "g";  // appended, not "g" + ...: GCC 12's -Wrestrict false positive at -O3
    name += std::to_string(i);
    g.push_back({i, name, 80 * kGiB});
  }
  return g;
}

class PlacementCoreTest : public ::testing::Test {
 protected:
  explicit PlacementCoreTest(int gpus = 4, BrokerConfig config = {}) : core_(std::move(config), Gpus(gpus), nullptr) {}

  std::optional<std::vector<proto::Message>> Send(ClientId id, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t> inbox;  // each call whole messages
    return core_exchange::Exchange(core_, id, &inbox, bytes);
  }
  // Registers client `id` (pid 100 + id); `job_size` 0: size unknown.
  proto::Welcome Hello(ClientId id, const std::string& job = "", int rank = -1, uint32_t job_size = 0,
                       const std::string& tenant = "t") {
    core_.Open(id, {static_cast<int32_t>(100 + id), 1000, 1000});
    proto::Hello h{};
    proto::SetString(h.tenant, tenant);
    proto::SetString(h.job, job);
    h.rank = rank;
    h.job_size = job_size;
    h.weight = 1;
    for (int& v : h.visible) v = -1;
    auto r = Send(id, proto::Encode(proto::Type::kHello, h));
    EXPECT_TRUE(r && r->size() == 1);
    return proto::Sanitized(proto::As<proto::Welcome>(r->at(0)));
  }
  static std::vector<int> Map(const proto::Welcome& w) { return {w.physical, w.physical + w.device_count}; }
  std::string Comm(ClientId id, uint64_t comm_id, int rank, uint32_t nranks, uint32_t device,
                   proto::CommEvent event = proto::CommEvent::kJoined) {
    proto::Comm c{};
    c.event = static_cast<uint32_t>(event);
    c.nranks = nranks;
    c.rank = rank;
    c.device = device;
    c.comm_id = comm_id;
    c.handle = 0x1000 + id;
    auto r = Send(id, proto::Encode(proto::Type::kComm, c));
    EXPECT_TRUE(r && r->size() == 1 && r->at(0).type == proto::Type::kCommReply);
    return r && !r->empty() ? std::string(r->at(0).payload.begin(), r->at(0).payload.end()) : "?";
  }
  nlohmann::json Status() { return nlohmann::json::parse(core_.StatusJson()); }

  BrokerCore core_;
};

class FourGpuTest : public PlacementCoreTest {
 protected:
  FourGpuTest() { EXPECT_TRUE(core_.SetTopology(FourGpusAsTwoNvlinkPairs())); }
};

TEST_F(FourGpuTest, AFourRankJobLandsOnTheNvlinkPairsInRankOrder) {
  for (int rank = 0; rank < 4; ++rank) {
    proto::Welcome w = Hello(1 + rank, "train", rank, 4);
    ASSERT_EQ(w.accepted, 1) << w.reason;
    // Every rank sees the job's four GPUs in rank order: ranks 0,1 and 2,3 are NVLink pairs.
    EXPECT_EQ(Map(w), (std::vector<int>{0, 1, 2, 3})) << "rank " << rank;
  }
  const nlohmann::json s = Status();
  ASSERT_EQ(s["clients"].size(), 4u);
  const std::string first = s["clients"][0]["placement"].dump(), third = s["clients"][2]["placement"].dump();
  EXPECT_NE(first.find("planned for its 4 ranks"), std::string::npos) << first;
  EXPECT_NE(third.find("its plan, made when its first rank came"), std::string::npos) << third;
  EXPECT_NE(third.find("rank 2 uses virtual 2 -> GPU 2"), std::string::npos) << third;
}

TEST_F(FourGpuTest, TwoTwoRankJobsGetOneNvlinkPairEach) {
  const proto::Welcome a0 = Hello(1, "a", 0, 2), b0 = Hello(2, "b", 0, 2);
  const proto::Welcome a1 = Hello(3, "a", 1, 2), b1 = Hello(4, "b", 1, 2);
  for (const proto::Welcome* w : {&a0, &a1, &b0, &b1}) ASSERT_EQ(w->accepted, 1) << w->reason;
  EXPECT_EQ(Map(a0), Map(a1));
  EXPECT_EQ(Map(b0), Map(b1));
  const Topology t = FourGpusAsTwoNvlinkPairs();
  EXPECT_EQ(t.link(Map(a0)[0], Map(a0)[1]), Link::kNvlink);
  EXPECT_EQ(t.link(Map(b0)[0], Map(b0)[1]), Link::kNvlink);
  std::vector<int> all = Map(a0), b = Map(b0);
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int>{0, 1, 2, 3}));  // the two jobs do not share a GPU
}

TEST_F(FourGpuTest, AJobLargerThanTheGpusItMayUseIsRefusedWithTheReason) {
  const proto::Welcome w = Hello(1, "big", 0, 5);
  EXPECT_EQ(w.accepted, 0);
  const std::string reason = w.reason;
  EXPECT_NE(reason.find("job \"big\" has 5 ranks"), std::string::npos) << reason;
  EXPECT_NE(reason.find("NCCL refuses two ranks on one GPU"), std::string::npos) << reason;
}

TEST_F(FourGpuTest, ARankWithoutAJobSizeGetsOneGpuApartFromItsJobsOtherRanks) {
  const proto::Welcome r0 = Hello(1, "j", 0), r1 = Hello(2, "j", 1);
  ASSERT_EQ(r0.accepted, 1);
  ASSERT_EQ(r1.accepted, 1);
  ASSERT_EQ(r0.device_count, 1u);
  ASSERT_EQ(r1.device_count, 1u);
  EXPECT_NE(r0.physical[0], r1.physical[0]);
  EXPECT_EQ(FourGpusAsTwoNvlinkPairs().link(r0.physical[0], r1.physical[0]), Link::kNvlink);
}

TEST_F(FourGpuTest, AJobsPlanIsForgottenWhenItsLastRankLeaves) {
  ASSERT_EQ(Hello(1, "j", 0, 2).accepted, 1);
  core_.Close(1);
  const proto::Welcome w = Hello(2, "j", 0, 3);  // a new incarnation of the job, of another size
  EXPECT_EQ(w.accepted, 1) << w.reason;
  EXPECT_EQ(w.device_count, 3u);
}

TEST_F(FourGpuTest, ARankReRegisteringAfterABrokerRestartKeepsItsJobsPlanForTheOthers) {
  core_.Open(1, {101, 1000, 1000});
  proto::Hello h{};
  proto::SetString(h.tenant, "t");
  proto::SetString(h.job, "j");
  h.rank = 0;
  h.job_size = 2;
  h.weight = 1;
  h.reattach = 1;
  h.device_count = 2;
  for (int& v : h.visible) v = -1;
  h.visible[0] = 3;  // the plan the old broker made: GPUs 3, 2
  h.visible[1] = 2;
  auto r = Send(1, proto::Encode(proto::Type::kHello, h));
  ASSERT_TRUE(r && r->size() == 1);
  ASSERT_EQ(proto::As<proto::Welcome>(r->at(0)).accepted, 1);
  EXPECT_EQ(Map(Hello(2, "j", 1, 2)), (std::vector<int>{3, 2}));  // rank 1 joins the same plan
}

TEST_F(FourGpuTest, ARankThatDisagreesOnTheJobSizeIsRefused) {
  ASSERT_EQ(Hello(1, "j", 0, 2).accepted, 1);
  const proto::Welcome w = Hello(2, "j", 1, 3);
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("planned for 2 ranks"), std::string::npos) << w.reason;
}

TEST_F(FourGpuTest, JobsOfTwoTenantsWithOneNameArePlannedApart) {
  ASSERT_EQ(Hello(1, "j", 0, 2, "alice").accepted, 1);
  const proto::Welcome w = Hello(2, "j", 0, 4, "bob");  // bob's "j" is not alice's
  EXPECT_EQ(w.accepted, 1) << w.reason;
  EXPECT_EQ(w.device_count, 4u);
}

TEST_F(FourGpuTest, ComputeClientsAreSpreadBeforeTheyAreStacked) {
  std::vector<int> used;
  for (ClientId id = 1; id <= 4; ++id) {
    core_.Open(id, {static_cast<int32_t>(100 + id), 1000, 1000});
    proto::Hello h{};
    proto::SetString(h.tenant, "t");
    h.weight = 1;
    h.rank = -1;
    h.device_count = 1;
    for (int& v : h.visible) v = -1;
    auto r = Send(id, proto::Encode(proto::Type::kHello, h));
    ASSERT_TRUE(r && r->size() == 1);
    used.push_back(proto::As<proto::Welcome>(r->at(0)).physical[0]);
  }
  std::sort(used.begin(), used.end());
  EXPECT_EQ(used, (std::vector<int>{0, 1, 2, 3}));
}

TEST_F(FourGpuTest, CommunicatorsGatherTheirRanksAndLeaveWithThem) {
  ASSERT_EQ(Hello(1, "j", 0, 2).accepted, 1);
  ASSERT_EQ(Hello(2, "j", 1, 2).accepted, 1);
  EXPECT_EQ(Comm(1, 0xabc, 0, 2, 0), "");
  EXPECT_EQ(Comm(2, 0xabc, 1, 2, 1), "");  // GPUs 0 and 1: NVLink, nothing to warn of
  nlohmann::json s = Status();
  ASSERT_EQ(s["communicators"].size(), 1u);
  EXPECT_EQ(s["communicators"][0]["id"], "0000000000000abc");
  EXPECT_EQ(s["communicators"][0]["nranks"], 2);
  ASSERT_EQ(s["communicators"][0]["members"].size(), 2u);
  EXPECT_EQ(s["communicators"][0]["members"][1]["physical"], 1);
  Comm(1, 0xabc, 0, 2, 0, proto::CommEvent::kLeft);
  EXPECT_EQ(Status()["communicators"][0]["members"].size(), 1u);
  core_.Close(2);
  EXPECT_TRUE(Status()["communicators"].empty());
}

TEST_F(PlacementCoreTest, ACommunicatorAcrossGpusWithoutP2pIsWarnedOf) {
  // The default topology: no link known between the 4 GPUs.
  ASSERT_EQ(Hello(1, "j", 0, 2).accepted, 1);
  ASSERT_EQ(Hello(2, "j", 1, 2).accepted, 1);
  EXPECT_EQ(Comm(1, 7, 0, 2, 0), "");
  const std::string warning = Comm(2, 7, 1, 2, 1);
  EXPECT_NE(warning.find("without P2P"), std::string::npos) << warning;
  EXPECT_EQ(Status()["communicators"][0]["warning"], warning);
}

TEST_F(PlacementCoreTest, ACommunicatorMessageBeforeHelloDropsThePeer) {
  core_.Open(9, {109, 1000, 1000});
  EXPECT_FALSE(Send(9, proto::Encode(proto::Type::kComm, proto::Comm{})).has_value());
}

TEST_F(PlacementCoreTest, ATopologyOfAnotherSizeIsNotTaken) {
  EXPECT_FALSE(core_.SetTopology(Topology({kGiB, kGiB})));
  EXPECT_EQ(core_.topology().gpu_count, 4);
}

TEST(PlacementBaselines, RoundRobinAndLeastLoadedCanBeChosen) {
  BrokerConfig config;
  config.placement = "round-robin";
  BrokerCore core(config, Gpus(3), nullptr);
  std::vector<int> got;
  for (ClientId id = 1; id <= 4; ++id) {
    core.Open(id, {static_cast<int32_t>(id), 1000, 1000});
    proto::Hello h{};
    h.weight = 1;
    h.rank = -1;
    h.device_count = 1;
    for (int& v : h.visible) v = -1;
    std::vector<uint8_t> in = proto::Encode(proto::Type::kHello, h), out;
    std::string error;
    ASSERT_TRUE(core.Input(id, &in, &out, &error));
    auto m = proto::Split(&out, &error);
    ASSERT_TRUE(m);
    got.push_back(proto::As<proto::Welcome>(*m).physical[0]);
  }
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 0}));
}

}  // namespace
}  // namespace gpushare::broker
