// The spatial-sharing policy: CU masks as sets, which flow gets which CUs for its class,
// and which flows may hold one GPU at once. Exact results.
#include "spatial.h"

#include <gtest/gtest.h>

namespace gpushare::broker {
namespace {

using WC = WorkClass;

TEST(CuMask, RangeSetsExactlyThoseCusAcrossWords) {
  const CuMask m = CuMask::Range(30, 4);  // 30, 31 in word 0; 32, 33 in word 1
  EXPECT_EQ(m.words()[0], 0xc0000000u);
  EXPECT_EQ(m.words()[1], 0x3u);
  EXPECT_EQ(m.Count(), 4u);
  EXPECT_TRUE(m.Has(33));
  EXPECT_FALSE(m.Has(34));
  EXPECT_EQ(m.UsedWords(), 2u);
  EXPECT_EQ(m.Hex(), "0x3c0000000");
}

TEST(CuMask, RangeIsClippedAtTheLargestMask) {
  EXPECT_EQ(CuMask::Range(500, 100).Count(), 12u);
  EXPECT_EQ(CuMask::Range(0, kMaxCus).Count(), kMaxCus);
  EXPECT_EQ(CuMask::Range(0, 1000).UsedWords(), kCuMaskWords);
  EXPECT_TRUE(CuMask::Range(600, 4).Empty());
  EXPECT_EQ(CuMask().Hex(), "0x0");
}

TEST(CuMask, OverlapAndUnion) {
  const CuMask low = CuMask::Range(0, 15);
  const CuMask high = CuMask::Range(15, 45);
  EXPECT_FALSE(low.Overlaps(high));
  EXPECT_TRUE(low.Overlaps(CuMask::Range(14, 1)));
  CuMask both = low;
  both |= high;
  EXPECT_EQ(both, CuMask::Range(0, 60));
  EXPECT_EQ(CuMask::FromWords(both.words().data(), both.UsedWords()), both);
}

TEST(SpatialPolicy, MemoryCusIsThePercentRoundedAndLeavesComputeSome) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  EXPECT_EQ(p.MemoryCus(60), 15u);
  EXPECT_EQ(p.MemoryCus(104), 26u);
  EXPECT_EQ(p.MemoryCus(110), 28u);                                      // 27.5 rounds up
  EXPECT_EQ(p.MemoryCus(2), 1u);                                         // 0.5: at least one
  EXPECT_EQ(p.MemoryCus(3), 1u);                                         // 0.75 -> 1
  EXPECT_EQ(SpatialPolicy(SpatialMode::kCuMask, 99).MemoryCus(10), 9u);  // at most all but one
  EXPECT_EQ(SpatialPolicy(SpatialMode::kCuMask, 1).MemoryCus(10), 1u);
}

TEST(SpatialPolicy, MemoryBoundGetsTheLowCusAndComputeBoundTheRest) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kMemory}, {2, 0, WC::kCompute}});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], (SpatialAssignment{1, 0, CuMask::Range(0, 15), 0.25}));
  EXPECT_EQ(a[1], (SpatialAssignment{2, 0, CuMask::Range(15, 45), 0.75}));
  EXPECT_EQ(a[0].mask->Hex(), "0x7fff");
  EXPECT_EQ(a[1].mask->Hex(), "0xfffffffffff8000");
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[0].mask, a[1].mask));
}

TEST(SpatialPolicy, AComputeBoundFlowWithoutAMemoryBoundNeighbourKeepsTheWholeGpu) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kCompute}, {2, 0, WC::kCompute}});
  EXPECT_FALSE(a[0].mask.has_value());
  EXPECT_FALSE(a[1].mask.has_value());
  EXPECT_EQ(a[0].fraction, 1.0);
}

TEST(SpatialPolicy, AMemoryBoundFlowAloneIsStillHeldToItsCus) {
  // Its kernels are as fast there (those CUs saturate the bandwidth), and a compute-bound
  // client that comes later finds it already masked.
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(64, {{7, 1, WC::kMemory}});
  EXPECT_EQ(a[0], (SpatialAssignment{7, 1, CuMask::Range(0, 16), 0.25}));
}

TEST(SpatialPolicy, TwoMemoryBoundFlowsShareTheLowCusAndSoTakeTurns) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kMemory}, {2, 0, WC::kMemory}, {3, 0, WC::kCompute}});
  EXPECT_EQ(a[0].mask, a[1].mask);
  EXPECT_FALSE(SpatialPolicy::MayCoHold(a[0].mask, a[1].mask));
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[0].mask, a[2].mask));
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[1].mask, a[2].mask));
}

TEST(SpatialPolicy, CopyUnknownAndIdleFlowsAreNotMaskedAndShareWithNobody) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kCopy}, {2, 0, WC::kUnknown}, {3, 0, WC::kIdle}, {4, 0, WC::kMemory}});
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(a[i].mask.has_value()) << i;
    EXPECT_FALSE(SpatialPolicy::MayCoHold(a[i].mask, a[3].mask)) << i;
  }
  EXPECT_FALSE(SpatialPolicy::MayCoHold(std::nullopt, std::nullopt));
}

TEST(SpatialPolicy, OffOrUnknownCuCountMasksNobody) {
  const std::vector<SpatialFlow> flows = {{1, 0, WC::kMemory}, {2, 0, WC::kCompute}};
  for (const auto& a : SpatialPolicy(SpatialMode::kOff, 25).Assign(60, flows)) EXPECT_FALSE(a.mask.has_value());
  SpatialPolicy on(SpatialMode::kCuMask, 25);
  for (unsigned cus : {0u, 1u, kMaxCus + 1})
    for (const auto& a : on.Assign(cus, flows)) EXPECT_FALSE(a.mask.has_value()) << cus;
  EXPECT_TRUE(on.Assign(kMaxCus, flows)[0].mask.has_value());
}

TEST(SpatialPolicy, ThePercentIsHonoured) {
  SpatialPolicy p(SpatialMode::kCuMask, 50);
  auto a = p.Assign(120, {{1, 0, WC::kCompute}, {2, 0, WC::kMemory}});
  EXPECT_EQ(a[0], (SpatialAssignment{1, 0, CuMask::Range(60, 60), 0.5}));
  EXPECT_EQ(a[1], (SpatialAssignment{2, 0, CuMask::Range(0, 60), 0.5}));
}

}  // namespace
}  // namespace gpushare::broker
