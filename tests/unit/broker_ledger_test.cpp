// The node-wide memory ledger: tenant caps across processes, device capacity, what a
// client may give back, hang-up reclaim and rebuilding after a broker restart.
#include <gtest/gtest.h>

#include "broker/policy/ledger.h"

namespace gpushare::broker {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

TEST(NodeLedger, TenantCapHoldsAcrossItsProcesses) {
  NodeLedger l({16 * kGiB, 16 * kGiB});
  l.SetTenantCap("a", 4 * kGiB);
  ASSERT_TRUE(l.AddClient(1, "a"));
  ASSERT_TRUE(l.AddClient(2, "a"));
  EXPECT_EQ(l.Take(1, 0, 3 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Take(2, 0, 2 * kGiB), NodeLedger::Grant::kTenantCap);  // 3 + 2 > 4 for the tenant
  EXPECT_EQ(l.Take(2, 0, 1 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Take(2, 1, 4 * kGiB), NodeLedger::Grant::kGranted);  // the cap is per GPU
  EXPECT_EQ(l.TenantHeld("a", 0), 4 * kGiB);
  EXPECT_EQ(l.GpuHeld(0), 4 * kGiB);
}

TEST(NodeLedger, DeviceCapacityBoundsEveryone) {
  NodeLedger l({8 * kGiB});
  l.AddClient(1, "a");
  l.AddClient(2, "b");
  EXPECT_EQ(l.Take(1, 0, 6 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Take(2, 0, 3 * kGiB), NodeLedger::Grant::kDeviceFull);
  EXPECT_EQ(l.Take(2, 0, 2 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Take(2, 0, UINT64_MAX), NodeLedger::Grant::kDeviceFull);  // no overflow
}

TEST(NodeLedger, AClientGivesBackOnlyWhatItHolds) {
  NodeLedger l({8 * kGiB});
  l.AddClient(1, "a");
  l.AddClient(2, "b");
  l.Take(1, 0, 2 * kGiB);
  l.Take(2, 0, 1 * kGiB);
  EXPECT_EQ(l.Give(2, 0, 5 * kGiB), 1 * kGiB);  // a lying client cannot free another's memory
  EXPECT_EQ(l.Held(1, 0), 2 * kGiB);
  EXPECT_EQ(l.TenantHeld("a", 0), 2 * kGiB);
  EXPECT_EQ(l.Give(7, 0, 1), 0u);
  EXPECT_EQ(l.Take(1, 3, 1), NodeLedger::Grant::kBadRequest);
  EXPECT_EQ(l.Take(7, 0, 1), NodeLedger::Grant::kBadRequest);
}

TEST(NodeLedger, HangUpReturnsEverythingTheClientHeld) {
  NodeLedger l({8 * kGiB, 8 * kGiB});
  l.SetTenantCap("a", 4 * kGiB);
  l.AddClient(1, "a");
  l.AddClient(2, "a");
  l.Take(1, 0, 3 * kGiB);
  l.Take(1, 1, 1 * kGiB);
  l.Take(2, 0, 1 * kGiB);
  EXPECT_EQ(l.RemoveClient(1), 4 * kGiB);
  EXPECT_FALSE(l.HasClient(1));
  EXPECT_EQ(l.TenantHeld("a", 0), 1 * kGiB);
  EXPECT_EQ(l.GpuHeld(1), 0u);
  EXPECT_EQ(l.Take(2, 0, 3 * kGiB), NodeLedger::Grant::kGranted);  // the room is the tenant's again
  EXPECT_FALSE(l.AddClient(2, "b"));                               // ids are unique
}

TEST(NodeLedger, RecordIsBoundedByTheTenantCap) {
  NodeLedger l({8 * kGiB});
  l.SetTenantCap("a", 2 * kGiB);
  l.AddClient(1, "a");
  // "Already held" (a forced Take, a re-registration) cannot book past the cap.
  EXPECT_EQ(l.Record(1, 0, 3 * kGiB), 2 * kGiB);
  EXPECT_EQ(l.TenantHeld("a", 0), 2 * kGiB);
  EXPECT_EQ(l.Room(1, 0), 0u);
  EXPECT_EQ(l.Take(1, 0, 1), NodeLedger::Grant::kTenantCap);
  EXPECT_EQ(l.Record(1, 0, 1), 0u);
  EXPECT_EQ(l.RemoveClient(1), 2 * kGiB);
  EXPECT_EQ(l.GpuHeld(0), 0u);
}

TEST(NodeLedger, RecordIsBoundedByTheDevice) {
  NodeLedger l({8 * kGiB});
  l.AddClient(1, "a");  // uncapped
  l.AddClient(2, "b");
  ASSERT_EQ(l.Take(2, 0, 5 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Room(1, 0), 3 * kGiB);
  EXPECT_EQ(l.Record(1, 0, 15 * kGiB), 3 * kGiB);
  EXPECT_EQ(l.GpuHeld(0), 8 * kGiB);
  EXPECT_EQ(l.Held(2, 0), 5 * kGiB);  // the other tenant's holding is untouched
}

TEST(NodeLedger, RoomIsTheSmallerOfTheTenantsAndTheDevicesAcrossProcesses) {
  NodeLedger l({8 * kGiB, 8 * kGiB});
  l.SetTenantCap("a", 4 * kGiB);
  l.AddClient(1, "a");
  l.AddClient(2, "a");
  l.AddClient(3, "b");
  ASSERT_EQ(l.Take(1, 0, 1 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Room(2, 0), 3 * kGiB);  // the cap is the tenant's, across its processes
  ASSERT_EQ(l.Take(3, 0, 6 * kGiB), NodeLedger::Grant::kGranted);
  EXPECT_EQ(l.Room(2, 0), 1 * kGiB);  // now the device is the tighter bound
  EXPECT_EQ(l.Room(2, 1), 4 * kGiB);
  EXPECT_EQ(l.Room(9, 0), 0u);   // unknown client
  EXPECT_EQ(l.Room(1, 2), 0u);   // unknown GPU
  EXPECT_EQ(l.Room(1, -1), 0u);
  EXPECT_EQ(l.Record(9, 0, kGiB), 0u);
  EXPECT_EQ(l.Record(1, 5, kGiB), 0u);
}

}  // namespace
}  // namespace gpushare::broker
