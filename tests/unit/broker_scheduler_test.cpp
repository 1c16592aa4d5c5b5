// The WFQ scheduler with a fake clock: grants, revokes, measured charging, shares.
#include "broker/policy/scheduler.h"

#include <gtest/gtest.h>

#include <map>

namespace gpushare::broker {
namespace {

constexpr uint64_t kMs = 1'000'000;
using Kind = SchedAction::Kind;

Scheduler::Params Quantum(uint64_t ms) {
  Scheduler::Params p;
  p.quantum_ns = ms * kMs;
  return p;
}

// Saturating clients driven by the scheduler's actions: a granted client runs until
// revoked, drains for `drain_ns`, gives back, and at once wants the GPU again.
struct Sim {
  explicit Sim(Scheduler::Params p) : s(p) {}
  Scheduler s;
  uint64_t now = 0;
  uint64_t drain_ns = 0;
  uint64_t want_delay_ns = 0;                             // from giving back to wanting again (its next launch)
  std::map<std::pair<ClientId, int>, uint64_t> releases;  // flow -> time it gives back
  std::map<std::pair<ClientId, int>, uint64_t> wants;     // flow -> time it wants again
  std::map<std::pair<ClientId, int>, uint64_t> slices;
  std::map<std::pair<ClientId, int>, int> grants;

  void Apply(const std::vector<SchedAction>& actions) {
    for (const SchedAction& a : actions) {
      if (a.kind == Kind::kGrant) {
        slices[{a.client, a.device}] = a.slice;
        ++grants[{a.client, a.device}];
        s.Launched(a.client, a.device, now);  // saturating: launches at once
      } else {
        releases[{a.client, a.device}] = now + drain_ns;
      }
    }
  }
  void RunUntil(uint64_t end) {
    Apply(s.Tick(now));
    while (now < end) {
      uint64_t next = end;
      if (auto d = s.NextDeadline()) next = std::min(next, *d);
      for (const auto& [flow, at] : releases) next = std::min(next, at);
      for (const auto& [flow, at] : wants) next = std::min(next, at);
      now = std::max(now, next);
      for (auto it = releases.begin(); it != releases.end();) {
        if (it->second > now) {
          ++it;
          continue;
        }
        s.Released(it->first.first, it->first.second, slices[it->first], now, now);
        wants[it->first] = now + want_delay_ns;
        it = releases.erase(it);
      }
      Apply(s.Tick(now));  // the GPU is handed on before the one that gave it back asks again
      for (auto it = wants.begin(); it != wants.end();) {
        if (it->second > now) {
          ++it;
          continue;
        }
        s.Want(it->first.first, it->first.second, now);
        it = wants.erase(it);
      }
      Apply(s.Tick(now));
    }
  }
  uint64_t Used(ClientId c) { return s.Status(c, 0, now)->used_ns; }
};

TEST(Scheduler, ALoneClientIsGrantedAtOnceAndKeepsTheGpu) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.Want(1, 0, 5 * kMs);
  auto a = s.Tick(5 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kGrant);
  EXPECT_EQ(a[0].client, 1u);
  EXPECT_EQ(s.NextDeadline(), 25 * kMs);
  EXPECT_TRUE(s.Tick(25 * kMs).empty());                   // nobody else waits: no revoke
  EXPECT_EQ(s.Status(1, 0, 25 * kMs)->used_ns, 20 * kMs);  // its account is kept up to date
  EXPECT_TRUE(s.Status(1, 0, 25 * kMs)->holding);
  EXPECT_DOUBLE_EQ(s.Status(1, 0, 25 * kMs)->share, 1.0);
}

TEST(Scheduler, AWaiterGetsTheGpuAfterTheQuantumAndTheMeasuredDrainIsCharged) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  ASSERT_EQ(s.Tick(0).size(), 1u);
  s.Want(2, 0, 5 * kMs);
  EXPECT_TRUE(s.Tick(5 * kMs).empty());  // the holder keeps its quantum
  auto a = s.Tick(20 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  EXPECT_EQ(a[0].client, 1u);
  EXPECT_EQ(a[0].slice, 1u);
  EXPECT_TRUE(s.Tick(22 * kMs).empty());  // not given back yet: nobody else is granted
  s.Released(1, 0, 1, 23 * kMs, 23 * kMs);
  a = s.Tick(23 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kGrant);
  EXPECT_EQ(a[0].client, 2u);
  EXPECT_EQ(a[0].slice, 2u);
  EXPECT_EQ(s.Status(1, 0, 23 * kMs)->used_ns, 23 * kMs);  // 20 ms quantum + 3 ms drain
  EXPECT_EQ(s.Holder(0), (std::pair<ClientId, int>{2, 0}));
}

TEST(Scheduler, StaleOrForgedReleasesChangeNothing) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  s.Tick(0);
  s.Released(2, 0, 1, 10 * kMs, 10 * kMs);  // not the holder
  s.Released(1, 0, 7, 10 * kMs, 10 * kMs);  // not its grant
  EXPECT_EQ(s.Holder(0), (std::pair<ClientId, int>{1, 0}));
  // A drain "in the future" is clamped to the broker's clock.
  s.Released(1, 0, 1, 500 * kMs, 12 * kMs);
  EXPECT_EQ(s.Status(1, 0, 12 * kMs)->used_ns, 12 * kMs);
  EXPECT_FALSE(s.Holder(0).has_value());
}

TEST(Scheduler, AHolderThatLaunchesNothingGivesWayAndIsNotPresumedBacklogged) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  s.Tick(0);
  s.Launched(1, 0, 1 * kMs);
  s.Want(2, 0, 2 * kMs);
  ASSERT_EQ(s.Tick(20 * kMs).size(), 1u);   // quantum over: revoked
  s.Released(1, 0, 1, 21 * kMs, 21 * kMs);  // still backlogged: waits without asking
  auto a = s.Tick(21 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 2u);
  EXPECT_TRUE(s.Status(1, 0, 21 * kMs)->waiting);
  // Client 2 had finished after all: it launches nothing, and after the grace gives way.
  EXPECT_EQ(s.NextDeadline(), 26 * kMs);
  EXPECT_TRUE(s.Tick(25 * kMs).empty());
  a = s.Tick(26 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  EXPECT_EQ(a[0].client, 2u);
  s.Released(2, 0, 2, 26 * kMs, 26 * kMs);
  a = s.Tick(26 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 1u);
  EXPECT_FALSE(s.Status(2, 0, 26 * kMs)->waiting);  // not presumed to want it back
  EXPECT_EQ(s.Status(2, 0, 26 * kMs)->used_ns, 5 * kMs);
}

TEST(Scheduler, AHolderThatIgnoresARevokeLosesTheGpuAtTheTimeout) {
  Scheduler::Params p = Quantum(20);
  p.revoke_timeout_ns = 100 * kMs;
  Scheduler s(p);
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  s.Tick(0);
  s.Want(2, 0, 1 * kMs);
  ASSERT_EQ(s.Tick(20 * kMs).size(), 1u);
  EXPECT_TRUE(s.Tick(119 * kMs).empty());
  auto a = s.Tick(120 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 2u);
  EXPECT_TRUE(s.Status(1, 0, 120 * kMs)->unresponsive);
  EXPECT_EQ(s.Status(1, 0, 120 * kMs)->used_ns, 120 * kMs);
}

TEST(Scheduler, TwoSaturatingClientsWeighted2To1GetTwoThirdsAndOneThird) {
  Sim sim(Quantum(20));
  sim.drain_ns = 2 * kMs;
  sim.s.AddFlow(1, 0, 0, 2.0);
  sim.s.AddFlow(2, 0, 0, 1.0);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(6000 * kMs);
  const double a = static_cast<double>(sim.Used(1)), b = static_cast<double>(sim.Used(2));
  // Work-conserving: the GPU was always someone's (all charged but the slice in progress).
  EXPECT_LE(sim.Used(1) + sim.Used(2), sim.now);
  EXPECT_GE(sim.Used(1) + sim.Used(2), sim.now - 22 * kMs);
  EXPECT_NEAR(a / (a + b), 2.0 / 3, 0.005);
  // The lag of a flow is bounded by one slice (quantum + drain) of service.
  EXPECT_LE(std::abs(a / 2 - b), 22.0 * kMs);
  EXPECT_NEAR(sim.s.Status(1, 0, sim.now)->share, 2.0 / 3, 0.02);
}

TEST(Scheduler, AClientAskingAgainJustAfterGivingBackKeepsItsPlace) {
  // As clients really do: the launch that finds the gate closed asks only after the
  // drain, so the GPU has already gone to the other client.
  Sim sim(Quantum(20));
  sim.drain_ns = 2 * kMs;
  sim.want_delay_ns = 200'000;
  sim.s.AddFlow(1, 0, 0, 1.4);
  sim.s.AddFlow(2, 0, 0, 0.7);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(6000 * kMs);
  const double a = static_cast<double>(sim.Used(1)), b = static_cast<double>(sim.Used(2));
  EXPECT_NEAR(a / (a + b), 2.0 / 3, 0.005);
}

TEST(Scheduler, FourClientsWeighted4To2To1To1) {
  Sim sim(Quantum(10));
  sim.drain_ns = 1 * kMs;
  const double w[] = {4, 2, 1, 1};
  for (ClientId c = 1; c <= 4; ++c) {
    sim.s.AddFlow(c, 0, 0, w[c - 1]);
    sim.s.Want(c, 0, 0);
  }
  sim.RunUntil(5000 * kMs);
  for (ClientId c = 1; c <= 4; ++c)
    EXPECT_NEAR(static_cast<double>(sim.Used(c)) / sim.now, w[c - 1] / 8, 0.01) << "client " << c;
}

TEST(Scheduler, GpusAreScheduledIndependently) {
  Sim sim(Quantum(20));
  sim.s.AddFlow(1, 0, 0, 1.0);
  sim.s.AddFlow(2, 0, 1, 1.0);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(1000 * kMs);
  EXPECT_EQ(sim.Used(1), 1000 * kMs);  // each alone on its GPU: never revoked
  EXPECT_EQ(sim.Used(2), 1000 * kMs);
  EXPECT_EQ((sim.grants[{1, 0}]), 1);
}

TEST(Scheduler, AClientBackFromIdleCannotBankService) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  s.Tick(0);
  // Client 1 runs alone for a second; client 2 then wants the GPU.
  s.Want(2, 0, 1000 * kMs);
  auto a = s.Tick(1000 * kMs);  // 1's quantum long over: revoked at once
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  s.Released(1, 0, 1, 1000 * kMs, 1000 * kMs);
  s.Want(1, 0, 1000 * kMs);
  a = s.Tick(1000 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 2u);
  // After one quantum of 2, 1 is granted again: 2 did not get a second's worth in a row.
  s.Want(1, 0, 1001 * kMs);
  a = s.Tick(1020 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  s.Released(2, 0, a[0].slice, 1020 * kMs, 1020 * kMs);
  s.Want(2, 0, 1020 * kMs);
  a = s.Tick(1020 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 1u);
}

TEST(Scheduler, AWeightChangeShiftsSharesWithinOnePeriod) {
  Sim sim(Quantum(10));
  sim.s.AddFlow(1, 0, 0, 1.0);
  sim.s.AddFlow(2, 0, 0, 1.0);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(1000 * kMs);
  EXPECT_NEAR(static_cast<double>(sim.Used(1)) / sim.now, 0.5, 0.011);
  sim.s.SetWeight(1, 0, 3.0);
  const uint64_t a0 = sim.Used(1), t0 = sim.now;
  sim.RunUntil(2000 * kMs);
  EXPECT_NEAR(static_cast<double>(sim.Used(1) - a0) / (sim.now - t0), 0.75, 0.011);
  // Within one period (four quanta, the weights' sum) the new ratio shows.
  const uint64_t a1 = sim.Used(1), b1 = sim.Used(2);
  sim.RunUntil(2040 * kMs);
  EXPECT_EQ(sim.Used(1) - a1, 30 * kMs);
  EXPECT_EQ(sim.Used(2) - b1, 10 * kMs);
}

TEST(Scheduler, ARemovedHolderFreesTheGpuForTheNextWaiter) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  s.Tick(0);
  s.Want(2, 0, 1 * kMs);
  s.RemoveClient(1);
  auto a = s.Tick(2 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kGrant);
  EXPECT_EQ(a[0].client, 2u);
  EXPECT_FALSE(s.Status(1, 0, 2 * kMs).has_value());
}

// Spatial sharing: flows on disjoint CU masks hold one GPU together (docs/scheduling.md).
const CuMask kLow = CuMask::Range(0, 15);    // a memory-bound flow's 15 of 60 CUs
const CuMask kHigh = CuMask::Range(15, 45);  // a compute-bound flow's other 45

TEST(Scheduler, FlowsOnDisjointMasksHoldTogetherEachChargedItsFraction) {
  Sim sim(Quantum(20));
  sim.s.AddFlow(1, 0, 0, 0.3);
  sim.s.AddFlow(2, 0, 0, 0.7);
  sim.s.SetMask(1, 0, kLow, 0.25, 0);
  sim.s.SetMask(2, 0, kHigh, 0.75, 0);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(1000 * kMs);
  EXPECT_EQ(sim.s.Holders(0), (std::vector<std::pair<ClientId, int>>{{1, 0}, {2, 0}}));
  EXPECT_EQ((sim.grants[{1, 0}]), 1);  // granted at once, never revoked: nobody waits for their CUs
  EXPECT_EQ((sim.grants[{2, 0}]), 1);
  EXPECT_EQ(sim.Used(1), 250 * kMs);  // a second held on a quarter of the CUs
  EXPECT_EQ(sim.Used(2), 750 * kMs);
  EXPECT_NEAR(sim.s.Status(1, 0, sim.now)->share, 0.25, 1e-9);
}

TEST(Scheduler, FlowsOnOneMaskTakeTurnsBesideAFlowOnTheOtherCus) {
  Sim sim(Quantum(20));
  sim.drain_ns = 1 * kMs;
  for (ClientId c : {1, 2}) {
    sim.s.AddFlow(c, 0, 0, 0.3);
    sim.s.SetMask(c, 0, kLow, 0.25, 0);
  }
  sim.s.AddFlow(3, 0, 0, 0.7);
  sim.s.SetMask(3, 0, kHigh, 0.75, 0);
  for (ClientId c : {1, 2, 3}) sim.s.Want(c, 0, 0);
  sim.RunUntil(3000 * kMs);
  EXPECT_EQ((sim.grants[{3, 0}]), 1);
  EXPECT_EQ(sim.Used(3), 2250 * kMs);
  // The low CUs: taken in turns, each a quarter of the GPU while it holds them.
  EXPECT_LE(sim.Used(1) + sim.Used(2), 750 * kMs);
  EXPECT_GE(sim.Used(1) + sim.Used(2), 745 * kMs);
  EXPECT_NEAR(static_cast<double>(sim.Used(1)) / static_cast<double>(sim.Used(2)), 1.0, 0.02);
}

TEST(Scheduler, AFlowNeedingTheWholeGpuIsNotStarvedByFlowsOnItsParts) {
  // Equal weights, all saturating: each gets the same charged service. The unmasked flow
  // pays 1 per second held, the masked ones their fraction, so the memory-bound flow
  // holds its quarter longest: .25 x1 = .75 x2 = y with x1 + y = 1 gives y = 0.2.
  Sim sim(Quantum(20));
  sim.drain_ns = 1 * kMs;
  for (ClientId c : {1, 2, 3}) sim.s.AddFlow(c, 0, 0, 1.0);
  sim.s.SetMask(1, 0, kLow, 0.25, 0);
  sim.s.SetMask(2, 0, kHigh, 0.75, 0);
  for (ClientId c : {1, 2, 3}) sim.s.Want(c, 0, 0);
  sim.RunUntil(5000 * kMs);
  for (ClientId c : {1, 2, 3}) EXPECT_NEAR(static_cast<double>(sim.Used(c)) / sim.now, 0.2, 0.02) << "client " << c;
}

TEST(Scheduler, AMaskTakenAwayEndsCoHoldingAtTheQuantum) {
  Sim sim(Quantum(20));
  sim.s.AddFlow(1, 0, 0, 1.0);
  sim.s.AddFlow(2, 0, 0, 1.0);
  sim.s.SetMask(1, 0, kLow, 0.25, 0);
  sim.s.SetMask(2, 0, kHigh, 0.75, 0);
  sim.s.Want(1, 0, 0);
  sim.s.Want(2, 0, 0);
  sim.RunUntil(10 * kMs);
  EXPECT_EQ(sim.s.Holders(0).size(), 2u);
  sim.s.SetMask(2, 0, std::nullopt, 1.0, sim.now);  // charged 7.5 ms for its first 10 ms
  EXPECT_EQ(sim.Used(2), 7500 * 1000u);
  sim.RunUntil(1000 * kMs);
  EXPECT_EQ(sim.s.Holders(0).size(), 1u);  // from the quantum's end on they take turns
  EXPECT_GT((sim.grants[{2, 0}]), 5);
  EXPECT_NEAR(static_cast<double>(sim.Used(2)) / static_cast<double>(sim.Used(1)), 1.0, 0.1);
}

}  // namespace
}  // namespace gpushare::broker

namespace gpushare::broker {
namespace {

// Ceilings: a flow gets at most its ceiling of the GPU's wall time, even alone.

TEST(SchedulerCeiling, ALoneHolderIsRevokedWhenItsBudgetRunsOutAndRegrantedWhenItRefills) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.SetCeiling(1, 0, 0.25, 0);
  s.Want(1, 0, 0);
  auto a = s.Tick(0);  // a quantum of budget to start with: granted at once
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kGrant);
  s.Launched(1, 0, 1 * kMs);
  EXPECT_EQ(s.NextDeadline(), 20 * kMs);                         // its quantum ends before its budget (20 / 0.75 ms)
  EXPECT_TRUE(s.Tick(20 * kMs).empty());                         // alone: it keeps the GPU; 5 ms of budget left
  const uint64_t budget_end = 20 * kMs + (5 * kMs * 4 + 2) / 3;  // 5 ms spent at 1 - 0.25 per ns
  EXPECT_EQ(s.NextDeadline(), budget_end);
  EXPECT_TRUE(s.Tick(budget_end - 1).empty());
  a = s.Tick(budget_end);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);  // alone, revoked all the same
  s.Released(1, 0, a[0].slice, 27 * kMs, 27 * kMs);
  EXPECT_TRUE(s.Status(1, 0, 27 * kMs)->waiting);  // still backlogged
  EXPECT_TRUE(s.Status(1, 0, 27 * kMs)->throttled);
  EXPECT_TRUE(s.Tick(27 * kMs).empty());
  // Budget -0.25 ms at 27 ms: a quantum again after (20 + 0.25) / 0.25 = 81 ms.
  EXPECT_EQ(s.NextDeadline(), 108 * kMs);
  EXPECT_TRUE(s.Tick(108 * kMs - 1000).empty());
  a = s.Tick(108 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kGrant);
}

TEST(SchedulerCeiling, ALoneSaturatingFlowGetsItsCeilingOfWallTime) {
  for (double ceiling : {0.1, 0.25, 0.5, 0.9}) {
    Sim sim(Quantum(20));
    sim.drain_ns = 2 * kMs;  // what is queued when revoked runs on, and is charged
    sim.s.AddFlow(1, 0, 0, 1.0);
    sim.s.SetCeiling(1, 0, ceiling, 0);
    sim.s.Want(1, 0, 0);
    sim.RunUntil(2000 * kMs);
    const uint64_t before = sim.Used(1);
    sim.RunUntil(12000 * kMs);
    EXPECT_NEAR(static_cast<double>(sim.Used(1) - before) / (10000.0 * kMs), ceiling, 0.005) << ceiling;
  }
}

TEST(SchedulerCeiling, TwoFlowsWithCeilings066And033GetThoseSharesWhateverTheirWeights) {
  for (double weight_a : {1.0, 2.0, 0.5}) {
    Sim sim(Quantum(20));
    sim.drain_ns = 2 * kMs;
    sim.s.AddFlow(1, 0, 0, weight_a);
    sim.s.AddFlow(2, 0, 0, 1.0);
    sim.s.SetCeiling(1, 0, 0.66, 0);
    sim.s.SetCeiling(2, 0, 0.33, 0);
    sim.s.Want(1, 0, 0);
    sim.s.Want(2, 0, 0);
    sim.RunUntil(2000 * kMs);
    const uint64_t a0 = sim.Used(1), b0 = sim.Used(2);
    sim.RunUntil(12000 * kMs);
    EXPECT_NEAR(static_cast<double>(sim.Used(1) - a0) / (10000.0 * kMs), 0.66, 0.01) << weight_a;
    EXPECT_NEAR(static_cast<double>(sim.Used(2) - b0) / (10000.0 * kMs), 0.33, 0.01) << weight_a;
  }
}

TEST(SchedulerCeiling, BelowItsCeilingAFlowSharesByWeightAndWhatACeilingLeavesGoesToTheOthers) {
  struct Case {
    double weight_a, ceiling_a, weight_b, share_a, share_b;
  };
  // Weights 3:1 would give 0.75 / 0.25: a 0.5 ceiling on A leaves B the other half.
  // Weights 1:3 give 0.25 / 0.75: A's 0.5 ceiling does not bind.
  for (const Case& c : {Case{3, 0.5, 1, 0.5, 0.5}, Case{1, 0.5, 3, 0.25, 0.75}}) {
    Sim sim(Quantum(20));
    sim.drain_ns = 1 * kMs;
    sim.s.AddFlow(1, 0, 0, c.weight_a);
    sim.s.AddFlow(2, 0, 0, c.weight_b);
    sim.s.SetCeiling(1, 0, c.ceiling_a, 0);
    sim.s.Want(1, 0, 0);
    sim.s.Want(2, 0, 0);
    sim.RunUntil(2000 * kMs);
    const uint64_t a0 = sim.Used(1), b0 = sim.Used(2);
    sim.RunUntil(12000 * kMs);
    EXPECT_NEAR(static_cast<double>(sim.Used(1) - a0) / (10000.0 * kMs), c.share_a, 0.02) << c.weight_a;
    EXPECT_NEAR(static_cast<double>(sim.Used(2) - b0) / (10000.0 * kMs), c.share_b, 0.02) << c.weight_a;
  }
}

TEST(SchedulerCeiling, AThrottledFlowDoesNotMakeTheHolderHandOff) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.SetCeiling(1, 0, 0.1, 0);
  s.Want(2, 0, 0);
  ASSERT_EQ(s.Tick(0).size(), 1u);  // 2 holds
  s.Launched(2, 0, 0);
  s.Want(1, 0, 1 * kMs);
  // 1 has a quantum of budget: it is a waiter, so 2 gives way at its quantum's end.
  auto a = s.Tick(20 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  s.Released(2, 0, a[0].slice, 21 * kMs, 21 * kMs);
  a = s.Tick(21 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 1u);
  s.Launched(1, 0, 21 * kMs);
  // 1 holds until its quantum ends (2 waits), then waits ~200 ms for budget: meanwhile
  // 2 holds past its quanta without being asked to give way.
  a = s.Tick(41 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  s.Released(1, 0, a[0].slice, 41 * kMs, 41 * kMs);
  a = s.Tick(41 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 2u);
  s.Launched(2, 0, 41 * kMs);
  EXPECT_TRUE(s.Status(1, 0, 61 * kMs)->throttled);
  EXPECT_TRUE(s.Tick(61 * kMs).empty());
  EXPECT_TRUE(s.Tick(81 * kMs).empty());
  EXPECT_TRUE(s.Tick(101 * kMs).empty());
  // Budget 0 at 41 ms (20 + 0.1 x 20 - 20 = 2 ms): back to a quantum after 180 ms.
  const auto deadline = s.NextDeadline();
  ASSERT_TRUE(deadline);
  EXPECT_LE(*deadline, 221 * kMs);
  a = s.Tick(221 * kMs);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  EXPECT_EQ(a[0].client, 2u);
}

TEST(SchedulerCeiling, AThrottledWaiterNeverPutsTheNextDeadlineInThePast) {
  // An idle holder (launches nothing) beside a waiter short of budget: the holder gives
  // way only once the waiter has its budget, and the broker is not woken before then.
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.SetCeiling(1, 0, 0.1, 0);
  s.Want(1, 0, 0);
  auto a = s.Tick(0);
  ASSERT_EQ(a.size(), 1u);
  s.Launched(1, 0, 0);
  a = s.Tick(22 * kMs);  // 1's budget (20 ms + 0.1 x 22) runs out at 22.2 ms: not yet
  EXPECT_TRUE(a.empty());
  const uint64_t out_at = *s.NextDeadline();
  a = s.Tick(out_at);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);
  s.Released(1, 0, a[0].slice, out_at, out_at);
  s.Want(2, 0, out_at);
  a = s.Tick(out_at);  // 2 is granted; 1 waits, short of budget; 2 launches nothing
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].client, 2u);
  // 1's budget: 20 + 0.1 x 22.2 - 22.2 = 0 ms at its release; a quantum again 200 ms later.
  std::optional<uint64_t> revoked_at;
  for (uint64_t t = out_at + kMs; t < out_at + 250 * kMs && !revoked_at; t += kMs / 2) {
    for (const SchedAction& x : s.Tick(t))
      if (x.kind == Kind::kRevoke && x.client == 2) revoked_at = t;
    if (!revoked_at) {
      ASSERT_TRUE(s.NextDeadline());
      EXPECT_GT(*s.NextDeadline(), t) << "the broker would spin at " << t;
    }
  }
  ASSERT_TRUE(revoked_at);  // the idle holder gave way once 1 had its budget, not before
  EXPECT_GE(*revoked_at, out_at + 200 * kMs);
  EXPECT_LE(*revoked_at, out_at + 201 * kMs);
}

TEST(SchedulerCeiling, ATinyCeilingWaitsFarAheadWithoutOverflowingTime) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.SetCeiling(1, 0, 1e-15, 0);
  s.Want(1, 0, 0);
  auto a = s.Tick(0);
  ASSERT_EQ(a.size(), 1u);  // its first quantum of budget
  s.Launched(1, 0, 0);
  a.clear();
  for (int i = 0; i < 3 && a.empty(); ++i) a = s.Tick(*s.NextDeadline());
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kRevoke);  // its budget spent, about 20 ms on
  s.Released(1, 0, a[0].slice, 21 * kMs, 21 * kMs);
  EXPECT_TRUE(s.Tick(21 * kMs).empty());
  ASSERT_TRUE(s.NextDeadline());
  EXPECT_GT(*s.NextDeadline(), uint64_t{1} << 62);  // saturated, not wrapped
}

TEST(SchedulerCeiling, ACeilingOfOneOrNoneIsNoCeiling) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.SetCeiling(1, 0, 1.0, 0);
  EXPECT_FALSE(s.Status(1, 0, 0)->ceiling);
  s.SetCeiling(1, 0, 0.5, 0);
  EXPECT_EQ(s.Status(1, 0, 0)->ceiling, 0.5);
  s.SetCeiling(1, 0, std::nullopt, 0);
  s.Want(1, 0, 0);
  ASSERT_EQ(s.Tick(0).size(), 1u);
  s.Launched(1, 0, 0);
  EXPECT_EQ(s.NextDeadline(), 20 * kMs);
  EXPECT_TRUE(s.Tick(20 * kMs).empty());
  EXPECT_TRUE(s.Tick(40 * kMs).empty());
}

}  // namespace
}  // namespace gpushare::broker

namespace gpushare::broker {
namespace {

TEST(Scheduler, GateWaitsAreMeasuredFromWantToGrantInTheirBuckets) {
  Scheduler s(Quantum(20));
  s.AddFlow(1, 0, 0, 1.0);
  s.AddFlow(2, 0, 0, 1.0);
  s.Want(1, 0, 0);
  ASSERT_EQ(s.Tick(0).size(), 1u);  // granted at once: a wait of 0
  s.Want(2, 0, 5 * kMs);
  ASSERT_EQ(s.Tick(20 * kMs).size(), 1u);  // revoke 1
  s.Released(1, 0, 1, 23 * kMs, 23 * kMs);
  ASSERT_EQ(s.Tick(23 * kMs).size(), 1u);  // grant 2: it waited 18 ms
  const auto one = s.Status(1, 0, 23 * kMs), two = s.Status(2, 0, 23 * kMs);
  EXPECT_EQ(one->waits.count, 1u);
  EXPECT_EQ(one->waits.sum_ns, 0u);
  EXPECT_EQ(one->waits.counts[0], 1u);  // <= 0.1 ms
  EXPECT_EQ(two->waits.count, 1u);
  EXPECT_EQ(two->waits.sum_ns, 18 * kMs);
  EXPECT_EQ(two->waits.counts[7], 1u);  // (10 ms, 25 ms]
  EXPECT_EQ(s.Grants(0), 2u);
  EXPECT_EQ(one->grants, 1u);
  WaitHistogram h;
  h.Observe(kWaitBoundsNs[kWaitBuckets - 2] + 1);  // past every bound: the last bucket
  EXPECT_EQ(h.counts[kWaitBuckets - 1], 1u);
}

}  // namespace
}  // namespace gpushare::broker
