// The placement policy on the topologies the placement issue names (2 GPUs with P2P;
// 4 GPUs as two NVLink pairs; 8 GPUs behind two PCIe switches; mixed memory sizes):
// exact placements, the explanation's words, refusals and warnings; and the baselines.
#include <gtest/gtest.h>

#include <algorithm>

#include "broker/policy/placement_policy.h"
#include "broker/policy/topology.h"
#include "test_topologies.h"

namespace gpushare::broker {
namespace {

using namespace test_topologies;

GpuLoad Busy(int compute, int memory = 0, double demand = 1.0) {
  GpuLoad l;
  l.compute_clients = compute;
  l.memory_clients = memory;
  l.clients = compute + memory;
  l.demand = demand;
  return l;
}

PolicyRequest Rank(const std::string& job, int rank, std::vector<JobPeer> peers) {
  PolicyRequest r;
  r.job = job;
  r.rank = rank;
  r.job_peers = std::move(peers);
  return r;
}

bool Mentions(const PolicyDecision& d, const std::string& text) {
  return std::any_of(d.explanation.begin(), d.explanation.end(),
                     [&](const std::string& line) { return line.find(text) != std::string::npos; });
}

std::string Explained(const PolicyDecision& d) {
  std::string s;
  for (const std::string& line : d.explanation) s += line + "\n";
  return s;
}

const PlacementPolicy kPolicy;

// --- Topology ---------------------------------------------------------------------

TEST(Topology, LinksAreSymmetricAndDescribedLikeNvidiaSmi) {
  Topology t = FourGpusAsTwoNvlinkPairs();
  EXPECT_EQ(t.link(1, 0), Link::kNvlink);
  EXPECT_EQ(t.link(3, 0), Link::kPcie);
  EXPECT_EQ(t.level(0, 3), PathLevel::kHostBridge);
  EXPECT_EQ(t.link(2, 2), Link::kNone);
  EXPECT_EQ(t.link(0, 9), Link::kNone);
  EXPECT_EQ(t.names[3], "GPU 3");
  EXPECT_EQ(t.Describe(),
            "      GPU0  GPU1  GPU2  GPU3\n"
            "GPU0  X     NV    PHB   PHB\n"
            "GPU1  NV    X     PHB   PHB\n"
            "GPU2  PHB   PHB   X     NV\n"
            "GPU3  PHB   PHB   NV    X\n");
  EXPECT_FALSE(EightGpusBehindTwoSwitches().p2p(3, 4));
}

TEST(PlacementPolicy, LinkValuesRankNvlinkThenPcieByDistanceThenNone) {
  Topology t({kGiB, kGiB, kGiB, kGiB});
  t.Connect(0, 1, Link::kNvlink);
  t.Connect(0, 2, Link::kPcie, PathLevel::kSingleSwitch);
  t.Connect(0, 3, Link::kPcie, PathLevel::kHostBridge);
  EXPECT_GT(kPolicy.LinkValue(t, 0, 1), kPolicy.LinkValue(t, 0, 2));
  EXPECT_GT(kPolicy.LinkValue(t, 0, 2), kPolicy.LinkValue(t, 0, 3));
  EXPECT_GT(kPolicy.LinkValue(t, 0, 3), kPolicy.LinkValue(t, 1, 2));
  EXPECT_EQ(kPolicy.LinkValue(t, 1, 2), 0);
}

// --- 2 GPUs with P2P ----------------------------------------------------------------

TEST(TwoGpusWithP2p, AnEmptyNodeTakesTheLowerIndexOnATieAndSaysSo) {
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {{}, {}}, {});
  EXPECT_EQ(d.physical, (std::vector<int>{0}));
  EXPECT_EQ(d.explanation,
            (std::vector<std::string>{
                "client: wants 1 GPU; class compute (unknown at registration: treated as compute); uncapped",
                "GPU 0: score +1.00: headroom +1.00 (16.00 GiB of 16.00 GiB free)",
                "GPU 1: score +1.00: headroom +1.00 (16.00 GiB of 16.00 GiB free)",
                "placed: virtual 0 -> GPU 0 (the best score; tied with GPU 1, the lower index first)",
            }));
}

TEST(TwoGpusWithP2p, ASecondComputeBoundClientIsSpreadNotStacked) {
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {Busy(1), {}}, {});
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
  EXPECT_EQ(d.explanation[1],
            "GPU 0: score -2.10: headroom +1.00 (16.00 GiB of 16.00 GiB free), demand -1.00 (measured 1.00), "
            "class mix -2.00 (1 compute-bound, 0 memory-bound beside a compute client), clients -0.10 (1 there)");
}

TEST(TwoGpusWithP2p, ComputeIsSpreadEvenOntoTheGpuWithLessMemoryFree) {
  std::vector<GpuLoad> gpus = {Busy(1), {}};
  gpus[1].held_bytes = 12 * kGiB;  // an idle client's 12 GiB
  gpus[1].clients = 1;
  EXPECT_EQ(kPolicy.Place(TwoGpusWithP2p(), gpus, {}).physical, (std::vector<int>{1}));
}

TEST(TwoGpusWithP2p, AMemoryBoundClientJoinsTheComputeBoundOneNotTheMemoryBoundOne) {
  PolicyRequest r;
  r.expected_class = WorkClass::kMemory;
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {Busy(1, 0), Busy(0, 1)}, r);
  EXPECT_EQ(d.physical, (std::vector<int>{0}));
  EXPECT_EQ(d.assumed_class, WorkClass::kMemory);
  EXPECT_TRUE(Mentions(d,
                       "GPU 0: score -0.60: headroom +1.00 (16.00 GiB of 16.00 GiB free), demand -1.00 "
                       "(measured 1.00), class mix -0.50 (1 compute-bound, 0 memory-bound beside a memory client)"))
      << Explained(d);
}

TEST(TwoGpusWithP2p, AnUnknownClassIsTakenFromTheTenantsOtherClients) {
  PolicyRequest r;
  r.tenant = "etl";
  r.tenant_classes = {WorkClass::kMemory, WorkClass::kIdle, WorkClass::kCopy, WorkClass::kCompute};
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {Busy(1, 0), Busy(0, 1)}, r);
  EXPECT_EQ(d.assumed_class, WorkClass::kMemory);
  EXPECT_EQ(d.physical, (std::vector<int>{0}));
  EXPECT_EQ(d.explanation[0],
            "client of tenant \"etl\": wants 1 GPU; class memory (as the tenant's other clients: 1 compute, 2 memory); "
            "uncapped");
}

TEST(TwoGpusWithP2p, TwoRanksGetBothGpusAndAThirdIsRefusedWithTheReason) {
  const Topology t = TwoGpusWithP2p();
  PolicyDecision r0 = kPolicy.Place(t, {{}, {}}, Rank("train", 0, {}));
  ASSERT_EQ(r0.physical, (std::vector<int>{0}));
  std::vector<GpuLoad> gpus = {Busy(1, 0, 0), {}};  // rank 0, counted as compute until measured
  PolicyDecision r1 = kPolicy.Place(t, gpus, Rank("train", 1, {{0, 0}}));
  EXPECT_EQ(r1.physical, (std::vector<int>{1}));
  EXPECT_TRUE(r1.warning.empty());
  EXPECT_EQ(r1.explanation, (std::vector<std::string>{
                                "job \"train\" rank 1: wants 1 GPU; class compute (unknown at registration: treated "
                                "as compute); uncapped",
                                "GPU 0: excluded: holds rank 0 of job \"train\" (NCCL refuses two ranks on one GPU)",
                                "GPU 1: score +2.00: headroom +1.00 (16.00 GiB of 16.00 GiB free), link +1.00 (PCIe "
                                "PIX to rank 0 on GPU 0)",
                                "placed: virtual 0 -> GPU 1 (the best score)",
                            }));
  PolicyDecision r2 = kPolicy.Place(t, {Busy(1), Busy(1)}, Rank("train", 2, {{0, 0}, {1, 1}}));
  EXPECT_TRUE(r2.physical.empty());
  EXPECT_EQ(r2.refusal,
            "job \"train\" rank 2: all 2 GPUs the tenant may use already hold a rank of job \"train\"; NCCL refuses "
            "two ranks on one GPU");
  EXPECT_EQ(r2.explanation.back(), "refused: " + r2.refusal);
}

TEST(TwoGpusWithP2p, ARankAloneOnItsTenantsOnlyGpuIsRefusedInTheSingular) {
  PolicyRequest r = Rank("train", 1, {{0, 0}});
  r.allowed = std::vector<int>{0};
  EXPECT_EQ(kPolicy.Place(TwoGpusWithP2p(), {{}, {}}, r).refusal,
            "job \"train\" rank 1: the only GPU the tenant may use already holds a rank of job \"train\"; NCCL "
            "refuses two ranks on one GPU");
}

TEST(TwoGpusWithP2p, AClientNamingAJobWithoutARankIsPlacedAsAnyClient) {
  // GPUSHARE_JOB alone (no GPUSHARE_RANK, LOCAL_RANK or RANK): no rank to keep apart.
  PolicyRequest r = Rank("j1", -1, {{0, 0}});
  r.device_count = 0;
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {{}, {}}, r);
  EXPECT_EQ(d.physical, (std::vector<int>{0, 1}));
  EXPECT_TRUE(d.refusal.empty());
  EXPECT_EQ(d.explanation[0].rfind("client (job \"j1\", rank unknown: placed as any client): wants every GPU", 0), 0u)
      << Explained(d);
}

TEST(TwoGpusWithP2p, ARankThatWantsEveryGpuGetsOne) {
  PolicyRequest r = Rank("train", 0, {});
  r.device_count = 0;
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {Busy(1), {}}, r);
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
  EXPECT_TRUE(Mentions(d, "wants 1 GPU (a rank of a job uses one)"));
}

TEST(TwoGpusWithP2p, AClientThatWantsEveryGpuGetsThemBestFirst) {
  PolicyRequest r;
  r.device_count = 0;
  PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), {Busy(1), {}}, r);
  EXPECT_EQ(d.physical, (std::vector<int>{1, 0}));
  EXPECT_TRUE(Mentions(d, "set {0, 1}: score -0.10 = GPUs -1.10, links +1.00 (PCIe)")) << Explained(d);
  EXPECT_EQ(d.explanation.back(), "placed: virtual 0 -> GPU 1, virtual 1 -> GPU 0 (the best set)");
  r.device_count = 3;  // more than the node has: what there is
  EXPECT_EQ(kPolicy.Place(TwoGpusWithP2p(), {Busy(1), {}}, r).physical, (std::vector<int>{1, 0}));
}

TEST(TwoGpusWithP2p, AskedGpusAreHonouredAndCheckedAsToday) {
  const Topology t = TwoGpusWithP2p();
  PolicyRequest r;
  r.asked = {1, 0};
  EXPECT_EQ(kPolicy.Place(t, {Busy(3), {}}, r).physical, (std::vector<int>{1, 0}));
  r.allowed = std::vector<int>{0};
  EXPECT_EQ(kPolicy.Place(t, {{}, {}}, r).refusal, "GPU 1 is not among the tenant's GPUs");
  r.asked = {7};
  EXPECT_EQ(kPolicy.Place(t, {{}, {}}, r).refusal, "there is no GPU 7");
  // A rank asking for its job's GPU is not refused (it may not use it), but warned.
  PolicyRequest rank = Rank("train", 1, {{0, 1}});
  rank.asked = {1};
  PolicyDecision d = kPolicy.Place(t, {{}, {}}, rank);
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
  EXPECT_EQ(d.warning, "GPU 1 already holds rank 0 of job \"train\": NCCL refuses two ranks on one GPU if both use it");
}

TEST(TwoGpusWithP2p, ATenantWithNoGpuIsRefused) {
  PolicyRequest r;
  r.allowed = std::vector<int>{};
  EXPECT_EQ(kPolicy.Place(TwoGpusWithP2p(), {{}, {}}, r).refusal, "the tenant may use no GPU of this node");
  EXPECT_FALSE(kPolicy.Place(TwoGpusWithP2p(), {{}}, {}).refusal.empty());  // load of the wrong node
}

// --- 4 GPUs as two NVLink pairs -------------------------------------------------------

TEST(FourGpusAsTwoNvlinkPairs, ATwoGpuClientGetsAnNvlinkPair) {
  PolicyRequest r;
  r.device_count = 2;
  PolicyDecision d = kPolicy.Place(FourGpusAsTwoNvlinkPairs(), std::vector<GpuLoad>(4), r);
  EXPECT_EQ(d.physical, (std::vector<int>{0, 1}));
  EXPECT_TRUE(Mentions(d,
                       "sets of 2 among GPUs 0, 1, 2, 3: 6 weighed (the cap met, then P2P-connected, then the "
                       "score); the best:"));
  EXPECT_TRUE(Mentions(d, "  set {0, 1}: score +3.50 = GPUs +2.00, links +1.50 (NVLink)"));
  EXPECT_TRUE(Mentions(d, "  set {2, 3}: score +3.50 = GPUs +2.00, links +1.50 (NVLink)"));
  EXPECT_TRUE(Mentions(d, "  set {0, 2}: score +2.80 = GPUs +2.00, links +0.80 (PCIe)")) << Explained(d);
}

TEST(FourGpusAsTwoNvlinkPairs, TheNextTwoGpuClientTakesTheOtherPair) {
  PolicyRequest r;
  r.device_count = 2;
  EXPECT_EQ(kPolicy.Place(FourGpusAsTwoNvlinkPairs(), {Busy(1), Busy(1), {}, {}}, r).physical,
            (std::vector<int>{2, 3}));
}

TEST(FourGpusAsTwoNvlinkPairs, ASetBesideABusyGpuLosesItsNvlinkToSpreading) {
  // One heavy client in each pair: the NVLink pairs would stack; the idle PCIe pair wins.
  PolicyRequest r;
  r.device_count = 2;
  PolicyDecision d = kPolicy.Place(FourGpusAsTwoNvlinkPairs(), {Busy(1), {}, Busy(1), {}}, r);
  EXPECT_EQ(d.physical, (std::vector<int>{1, 3}));
}

TEST(FourGpusAsTwoNvlinkPairs, RanksOfAJobFillAnNvlinkPairFirst) {
  const Topology t = FourGpusAsTwoNvlinkPairs();
  std::vector<GpuLoad> gpus(4);
  std::vector<JobPeer> peers;
  std::vector<int> placed;
  for (int rank = 0; rank < 4; ++rank) {
    PolicyDecision d = kPolicy.Place(t, gpus, Rank("ddp", rank, peers));
    ASSERT_EQ(d.physical.size(), 1u) << d.refusal;
    placed.push_back(d.physical[0]);
    peers.push_back({rank, d.physical[0]});
    gpus[d.physical[0]] = Busy(1, 0, 0);
    if (rank == 3) {
      EXPECT_TRUE(Mentions(d, "link +0.80 (PCIe PHB to rank 0 on GPU 0, the weakest to the job's ranks)"))
          << Explained(d);
    }
  }
  EXPECT_EQ(placed, (std::vector<int>{0, 1, 2, 3}));
  PolicyDecision fifth = kPolicy.Place(t, gpus, Rank("ddp", 4, peers));
  EXPECT_EQ(fifth.refusal,
            "job \"ddp\" rank 4: all 4 GPUs the tenant may use already hold a rank of job \"ddp\"; NCCL refuses two "
            "ranks on one GPU");
}

TEST(FourGpusAsTwoNvlinkPairs, ARankGoesToItsPeersNvlinkPartner) {
  PolicyDecision d = kPolicy.Place(FourGpusAsTwoNvlinkPairs(), std::vector<GpuLoad>(4), Rank("ddp", 1, {{0, 2}}));
  EXPECT_EQ(d.physical, (std::vector<int>{3}));
  EXPECT_TRUE(Mentions(d,
                       "GPU 3: score +2.50: headroom +1.00 (80.00 GiB of 80.00 GiB free), link +1.50 (NVLink to "
                       "rank 0 on GPU 2)"))
      << Explained(d);
}

TEST(FourGpusAsTwoNvlinkPairs, AnNvlinkPartnerBusyWithHeavyWorkLosesToAnIdlePcieGpu) {
  std::vector<GpuLoad> gpus(4);
  gpus[3] = Busy(1);  // another tenant's heavy compute client
  PolicyDecision d = kPolicy.Place(FourGpusAsTwoNvlinkPairs(), gpus, Rank("ddp", 1, {{0, 2}}));
  EXPECT_EQ(d.physical, (std::vector<int>{0}));
  EXPECT_TRUE(Mentions(d, "GPU 3: score -0.60:")) << Explained(d);
  EXPECT_TRUE(Mentions(d, "GPU 0: score +1.80:")) << Explained(d);
}

// --- 8 GPUs behind two PCIe switches -------------------------------------------------

TEST(EightGpusBehindTwoSwitches, AFourGpuClientStaysBehindOneSwitch) {
  PolicyRequest r;
  r.device_count = 4;
  PolicyDecision d = kPolicy.Place(EightGpusBehindTwoSwitches(), std::vector<GpuLoad>(8), r);
  EXPECT_EQ(d.physical, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(Mentions(d, "70 weighed"));
  EXPECT_TRUE(Mentions(d, "  set {0, 1, 2, 3}: score +5.00 = GPUs +4.00, links +1.00 (mean of 6 pairs: 6 PCIe)"))
      << Explained(d);
  EXPECT_TRUE(d.warning.empty());
}

TEST(EightGpusBehindTwoSwitches, WhenOneSwitchIsBusyAFourGpuClientTakesTheOther) {
  std::vector<GpuLoad> gpus(8);
  gpus[0] = gpus[1] = Busy(1);
  PolicyRequest r;
  r.device_count = 4;
  EXPECT_EQ(kPolicy.Place(EightGpusBehindTwoSwitches(), gpus, r).physical, (std::vector<int>{4, 5, 6, 7}));
}

TEST(EightGpusBehindTwoSwitches, ATwoGpuClientGetsAP2pPairWhileOneExistsEvenIfBusier) {
  // Only GPUs 3 and 7 are idle, and they are behind different switches.
  std::vector<GpuLoad> gpus(8, Busy(1));
  gpus[3] = gpus[7] = GpuLoad{};
  PolicyRequest r;
  r.device_count = 2;
  PolicyDecision d = kPolicy.Place(EightGpusBehindTwoSwitches(), gpus, r);
  EXPECT_EQ(d.physical, (std::vector<int>{3, 0}));
  EXPECT_TRUE(d.warning.empty());
  EXPECT_TRUE(Mentions(d, "  set {0, 3}: score -0.10 = GPUs -1.10, links +1.00 (PCIe)")) << Explained(d);
}

TEST(EightGpusBehindTwoSwitches, WithoutAnyP2pSetTheClientIsPlacedAndWarned) {
  PolicyRequest r;
  r.device_count = 2;
  r.allowed = std::vector<int>{3, 7};
  PolicyDecision d = kPolicy.Place(EightGpusBehindTwoSwitches(), std::vector<GpuLoad>(8), r);
  EXPECT_EQ(d.physical, (std::vector<int>{3, 7}));
  EXPECT_EQ(d.warning,
            "no P2P-connected set of 2 GPUs the tenant may use: GPUs 3 and 7 copy to each other through host memory");
  EXPECT_EQ(d.explanation.back(), "warning: " + d.warning);
}

TEST(EightGpusBehindTwoSwitches, ARankPlacedAcrossTheSwitchesIsWarned) {
  PolicyRequest r = Rank("ddp", 1, {{0, 0}});
  r.allowed = std::vector<int>{0, 4};
  PolicyDecision d = kPolicy.Place(EightGpusBehindTwoSwitches(), std::vector<GpuLoad>(8), r);
  EXPECT_EQ(d.physical, (std::vector<int>{4}));
  EXPECT_EQ(d.warning,
            "job \"ddp\" rank 1 on GPU 4 has no P2P path to rank 0 on GPU 0: NCCL will copy through host memory");
  EXPECT_TRUE(Mentions(d, "link +0.00 (no P2P to rank 0 on GPU 0)")) << Explained(d);
}

TEST(EightGpusBehindTwoSwitches, RanksStayBehindTheirFirstRanksSwitch) {
  std::vector<GpuLoad> gpus(8);
  gpus[0] = Busy(1, 0, 0);
  PolicyDecision d = kPolicy.Place(EightGpusBehindTwoSwitches(), gpus, Rank("ddp", 1, {{0, 0}}));
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
}

TEST(EightGpusBehindTwoSwitches, ARankWantingMoreGpusThanItsJobLeavesFreeIsRefused) {
  PolicyRequest r = Rank("j", 1, {{0, 0}, {2, 1}});
  r.device_count = 2;
  r.allowed = std::vector<int>{0, 1, 2};
  EXPECT_EQ(kPolicy.Place(EightGpusBehindTwoSwitches(), std::vector<GpuLoad>(8), r).refusal,
            "job \"j\" rank 1 wants 2 GPUs, but only 1 of the 3 GPUs the tenant may use hold no rank of job \"j\"; "
            "NCCL refuses two ranks on one GPU");
}

TEST(EightGpusBehindTwoSwitches, PcieBehindOneSwitchBeatsAcrossTheHostBridge) {
  Topology t(std::vector<uint64_t>(4, 80 * kGiB));
  t.Connect(0, 1, Link::kPcie, PathLevel::kSingleSwitch);
  t.Connect(2, 3, Link::kPcie, PathLevel::kSingleSwitch);
  for (int a : {0, 1})
    for (int b : {2, 3}) t.Connect(a, b, Link::kPcie, PathLevel::kHostBridge);
  std::vector<GpuLoad> gpus(4);
  gpus[1].held_bytes = 8 * kGiB;  // a little less room than GPU 2: the switch still wins
  EXPECT_EQ(kPolicy.Place(t, gpus, Rank("ddp", 1, {{0, 0}})).physical, (std::vector<int>{1}));
}

TEST(EightGpusBehindTwoSwitches, ANodeTooLargeToWeighEverySetGrowsOneGreedilyBehindOneSwitch) {
  // 18 GPUs behind two switches of 9: C(18, 9) = 48,620 sets, more than are weighed.
  Topology t(std::vector<uint64_t>(18, 80 * kGiB));
  for (int a = 0; a < 18; ++a)
    for (int b = a + 1; b < 18; ++b)
      if (a / 9 == b / 9) t.Connect(a, b, Link::kPcie, PathLevel::kSingleSwitch);
  std::vector<GpuLoad> gpus(18);
  gpus[0] = Busy(1);
  PolicyRequest r;
  r.device_count = 9;
  PolicyDecision d = kPolicy.Place(t, gpus, r);
  EXPECT_EQ(d.physical, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 0}));
  EXPECT_TRUE(Mentions(d, "too many to weigh all, grown greedily from the best GPU")) << Explained(d);
  EXPECT_TRUE(d.warning.empty());
}

// --- Mixed memory sizes -------------------------------------------------------------

TEST(MixedMemorySizes, AnEmptyNodeFillsTheLargerGpusFirst) {
  PolicyDecision d = kPolicy.Place(MixedMemorySizes(), std::vector<GpuLoad>(4), {});
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
  EXPECT_TRUE(Mentions(d, "GPU 0: score +0.30: headroom +0.30 (24.00 GiB of 24.00 GiB free)")) << Explained(d);
}

TEST(MixedMemorySizes, AGpuWhereTheCapCannotBeMetIsRankedLastWhateverItsLoad) {
  std::vector<GpuLoad> gpus(4);
  gpus[1] = gpus[2] = Busy(5);  // much busier than the small GPUs, but only they can hold the cap
  PolicyRequest r;
  r.cap_bytes = 40 * kGiB;
  PolicyDecision d = kPolicy.Place(MixedMemorySizes(), gpus, r);
  EXPECT_EQ(d.physical, (std::vector<int>{1}));
  EXPECT_TRUE(Mentions(d,
                       "GPU 0: score -9.70: headroom +0.30 (24.00 GiB of 24.00 GiB free), cap -10.00 (the "
                       "40.00 GiB cap cannot be met: the GPU is smaller)"))
      << Explained(d);
}

TEST(MixedMemorySizes, PromisedMemoryCountsAgainstHeadroomAndTheCap) {
  std::vector<GpuLoad> gpus(4);
  gpus[1].held_bytes = 10 * kGiB;
  gpus[1].promised_bytes = 60 * kGiB;  // other tenants' caps
  gpus[2].held_bytes = 30 * kGiB;
  PolicyRequest r;
  r.cap_bytes = 30 * kGiB;
  PolicyDecision d = kPolicy.Place(MixedMemorySizes(), gpus, r);
  EXPECT_EQ(d.physical, (std::vector<int>{2}));
  EXPECT_TRUE(Mentions(d,
                       "GPU 1: score -9.75: headroom +0.25 (20.00 GiB of 80.00 GiB free), cap -10.00 (the "
                       "30.00 GiB cap cannot be met: 60.00 GiB is promised to other tenants)"))
      << Explained(d);
  // Where the tenant already is, its cap is counted in what is promised: met.
  gpus[1].tenant_present = true;
  gpus[2].held_bytes = 70 * kGiB;
  EXPECT_EQ(kPolicy.Place(MixedMemorySizes(), gpus, r).physical, (std::vector<int>{1}));
}

TEST(MixedMemorySizes, ATwoGpuClientGetsTheLargePair) {
  PolicyRequest r;
  r.device_count = 2;
  r.cap_bytes = 16 * kGiB;
  EXPECT_EQ(kPolicy.Place(MixedMemorySizes(), std::vector<GpuLoad>(4), r).physical, (std::vector<int>{1, 2}));
}

// --- Baselines ------------------------------------------------------------------------

TEST(PlacementBaselines, RoundRobinCyclesThroughTheTenantsGpus) {
  const Topology t = EightGpusBehindTwoSwitches();
  int cursor = 0;
  PolicyRequest one, two;
  two.device_count = 2;
  EXPECT_EQ(PlaceRoundRobin(t, one, &cursor).physical, (std::vector<int>{0}));
  EXPECT_EQ(PlaceRoundRobin(t, two, &cursor).physical, (std::vector<int>{1, 2}));
  two.allowed = std::vector<int>{0, 5};
  EXPECT_EQ(PlaceRoundRobin(t, two, &cursor).physical, (std::vector<int>{5, 0}));
  EXPECT_EQ(cursor, 1);
  EXPECT_EQ(PlaceRoundRobin(t, one, &cursor).physical, (std::vector<int>{1}));
}

TEST(PlacementBaselines, LeastMemoryHeldPutsTheEmptiestGpuFirst) {
  const Topology t = TwoGpusWithP2p();
  std::vector<GpuLoad> gpus(2);
  gpus[0].held_bytes = kGiB;
  PolicyRequest all;
  all.device_count = 0;
  EXPECT_EQ(PlaceLeastMemoryHeld(t, gpus, all).physical, (std::vector<int>{1, 0}));
  EXPECT_EQ(PlaceLeastMemoryHeld(t, gpus, {}).physical, (std::vector<int>{1}));
  PolicyRequest asked;
  asked.asked = {3};
  EXPECT_EQ(PlaceLeastMemoryHeld(t, gpus, asked).refusal, "there is no GPU 3");
}

TEST(TwoGpusWithP2p, OneGpuAskedForTwiceIsRefused) {
  PolicyRequest r;
  r.asked = {1, 1};
  const PolicyDecision d = kPolicy.Place(TwoGpusWithP2p(), std::vector<GpuLoad>(2), r);
  EXPECT_TRUE(d.physical.empty());
  EXPECT_EQ(d.refusal, "GPU 1 is asked for twice: two virtual GPUs cannot share one physical GPU");
}

}  // namespace
}  // namespace gpushare::broker
