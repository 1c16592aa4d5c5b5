// The meter with a fake clock: exact integrals, interval and day boundaries, restart
// continuation without double counting.
#include "broker/policy/meter.h"

#include <gtest/gtest.h>

namespace gpushare::broker {
namespace {

constexpr uint64_t kS = 1'000'000'000;
constexpr uint64_t kGiB = 1ull << 30;
// 2026-12-01T00:00:00Z
constexpr uint64_t kDec1 = 1'796'083'200ull * kS;

MeterSession Identity(int32_t pid, std::string tenant, double fraction) {
  MeterSession s;
  s.pid = pid;
  s.uid = 1000;
  s.tenant = std::move(tenant);
  s.gpus = std::string(1, '0');  // (GCC 12's -Wrestrict misfires on assigning a one-letter literal)
  s.fraction = fraction;
  return s;
}

// The day rows of `session` in `f`, by day.
std::map<int64_t, MeterDay> DaysOf(const MeterFlush& f, uint64_t session) {
  std::map<int64_t, MeterDay> out;
  for (const MeterDay& d : f.days)
    if (d.session_id == session) out[d.day] = d;
  return out;
}

// Sums rows the way the store keeps them: the last row written for a (session, day) wins.
struct Store {
  std::map<std::pair<uint64_t, int64_t>, MeterDay> days;
  std::map<uint64_t, MeterSession> sessions;
  void Write(const MeterFlush& f) {
    for (const MeterSession& s : f.sessions) sessions[s.id] = s;
    for (const MeterDay& d : f.days) days[{d.session_id, d.day}] = d;
  }
  MeterDay Total(uint64_t session) const {
    MeterDay t;
    for (const auto& [key, d] : days)
      if (key.first == session) {
        t.wall_ns += d.wall_ns;
        t.allotted_ns += d.allotted_ns;
        t.gpu_ns += d.gpu_ns;
        t.memory_byte_ns += d.memory_byte_ns;
        t.launches += d.launches;
        t.copy_bytes += d.copy_bytes;
      }
    return t;
  }
};

TEST(Meter, DayOfCountsUtcDaysSinceTheEpoch) {
  EXPECT_EQ(DayOf(0), 0);
  EXPECT_EQ(DayOf(kDec1 - 1), DayOf(kDec1) - 1);
  EXPECT_EQ(DayOf(kDec1), 20788);  // 2026-12-01
}

TEST(Meter, MemoryChangingMidIntervalIsIntegratedExactly) {
  Meter m(1);
  const uint64_t t0 = kDec1 + 3600 * kS;
  const uint64_t id = m.Begin(7, Identity(100, "a", 0.5), t0);
  m.SetHeld(7, 2 * kGiB, t0 + 1 * kS);  // 0 bytes for 1 s
  m.SetHeld(7, 1 * kGiB, t0 + 4 * kS);  // 2 GiB for 3 s
  MeterFlush f = m.Take(t0 + 10 * kS);  // 1 GiB for 6 s
  MeterDay d = DaysOf(f, id).at(DayOf(t0));
  EXPECT_EQ(d.wall_ns, 10 * kS);
  EXPECT_EQ(d.memory_byte_ns, static_cast<unsigned __int128>(kGiB) * (6 + 6) * kS);
  EXPECT_EQ(d.memory_byte_s(), 12 * kGiB);
  EXPECT_DOUBLE_EQ(d.allotted_ns, 5.0 * kS);
  ASSERT_EQ(f.sessions.size(), 1u);
  EXPECT_EQ(f.sessions[0].last_ns, t0 + 10 * kS);
  EXPECT_EQ(f.sessions[0].held_bytes, 1 * kGiB);
  EXPECT_EQ(f.sessions[0].end_ns, 0u);
}

TEST(Meter, FractionChangesAreIntegratedPiecewise) {
  Meter m(1);
  const uint64_t id = m.Begin(1, Identity(100, "a", 1.0), kDec1);
  m.SetFraction(1, 0.25, kDec1 + 40 * kS);
  m.End(1, kDec1 + 100 * kS);
  MeterDay d = DaysOf(m.Take(kDec1 + 200 * kS), id).at(DayOf(kDec1));
  EXPECT_EQ(d.wall_ns, 100 * kS);
  EXPECT_DOUBLE_EQ(d.allotted_ns, (40 + 0.25 * 60) * kS);
}

TEST(Meter, ASessionCarriesTheProfileItIsBilledBy) {
  Meter m(1);
  m.Begin(1, Identity(100, "a", 0.25), kDec1);
  m.SetProfile(1, "1g.10gb");
  MeterFlush f = m.Take(kDec1 + kS);
  ASSERT_EQ(f.sessions.size(), 1u);
  EXPECT_EQ(f.sessions[0].profile, "1g.10gb");
}

TEST(Meter, IntervalsAddUpToOneWholeIntegral) {
  // Flushing every 10 s writes the same totals as one flush at the end.
  Meter every(1), once(1);
  const uint64_t t0 = kDec1 + 5 * kS;
  every.Begin(1, Identity(100, "a", 0.5), t0);
  once.Begin(1, Identity(100, "a", 0.5), t0);
  Store s1, s2;
  for (uint64_t t = 1; t <= 35; ++t) {
    const uint64_t now = t0 + t * kS;
    if (t % 7 == 0) {
      every.SetHeld(1, t * kGiB, now);
      once.SetHeld(1, t * kGiB, now);
    }
    every.SetCounters(1, {t * 100, t, 0, t * 10}, now);
    if (t % 10 == 0) s1.Write(every.Take(now));
  }
  once.SetCounters(1, {3500, 35, 0, 350}, t0 + 35 * kS);
  every.End(1, t0 + 35 * kS);
  once.End(1, t0 + 35 * kS);
  s1.Write(every.Take(t0 + 40 * kS));
  s2.Write(once.Take(t0 + 40 * kS));
  const MeterDay a = s1.Total(1), b = s2.Total(1);
  EXPECT_EQ(a.wall_ns, 35 * kS);
  EXPECT_EQ(a.wall_ns, b.wall_ns);
  EXPECT_EQ(a.memory_byte_ns, b.memory_byte_ns);
  EXPECT_EQ(a.memory_byte_ns, static_cast<unsigned __int128>(kGiB) * kS * (7 * 7 + 14 * 7 + 21 * 7 + 28 * 7));
  EXPECT_EQ(a.gpu_ns, 3500u);
  EXPECT_EQ(a.launches, 35u);
  EXPECT_EQ(a.copy_bytes, 350u);
  EXPECT_EQ(s1.sessions.at(1).end_ns, t0 + 35 * kS);
  EXPECT_EQ(every.live_count(), 0u);
}

TEST(Meter, ASessionAcrossMidnightIsSplitAtMidnight) {
  Meter m(1);
  const uint64_t midnight = kDec1 + kNsPerDay;
  const uint64_t id = m.Begin(1, Identity(100, "a", 0.5), midnight - 90 * kS);
  m.SetHeld(1, kGiB, midnight - 60 * kS);
  Store s;
  s.Write(m.Take(midnight - 30 * kS));
  m.SetCounters(1, {1000, 3, 0, 0}, midnight + 20 * kS);  // read after midnight: booked on the new day
  m.End(1, midnight + 30 * kS);
  s.Write(m.Take(midnight + 40 * kS));
  const MeterDay before = s.days.at({id, DayOf(kDec1)});
  const MeterDay after = s.days.at({id, DayOf(midnight)});
  EXPECT_EQ(before.wall_ns, 90 * kS);
  EXPECT_EQ(after.wall_ns, 30 * kS);
  EXPECT_DOUBLE_EQ(before.allotted_ns, 45.0 * kS);
  EXPECT_DOUBLE_EQ(after.allotted_ns, 15.0 * kS);
  EXPECT_EQ(before.memory_byte_s(), 60 * kGiB);
  EXPECT_EQ(after.memory_byte_s(), 30 * kGiB);
  EXPECT_EQ(before.gpu_ns, 0u);
  EXPECT_EQ(after.gpu_ns, 1000u);
  EXPECT_EQ(after.launches, 3u);
}

TEST(Meter, ALongGapIsCutAtEveryMidnight) {
  Meter m(1);
  const uint64_t id = m.Begin(1, Identity(100, "a", 1.0), kDec1 + kNsPerDay / 2);
  MeterFlush f = m.Take(kDec1 + 3 * kNsPerDay + kNsPerDay / 4);
  auto days = DaysOf(f, id);
  ASSERT_EQ(days.size(), 4u);
  EXPECT_EQ(days.at(DayOf(kDec1)).wall_ns, kNsPerDay / 2);
  EXPECT_EQ(days.at(DayOf(kDec1) + 1).wall_ns, kNsPerDay);
  EXPECT_EQ(days.at(DayOf(kDec1) + 2).wall_ns, kNsPerDay);
  EXPECT_EQ(days.at(DayOf(kDec1) + 3).wall_ns, kNsPerDay / 4);
  // Past days are written once; the next take has the current day only.
  EXPECT_EQ(DaysOf(m.Take(kDec1 + 3 * kNsPerDay + kNsPerDay / 2), id).size(), 1u);
}

TEST(Meter, CountersBookOnlyTheirIncrease) {
  Meter m(1);
  const uint64_t id = m.Begin(1, Identity(100, "a", 1.0), kDec1);
  m.SetCounters(1, {500, 5, 1, 64}, kDec1 + kS);
  m.SetCounters(1, {500, 5, 1, 64}, kDec1 + 2 * kS);
  m.SetCounters(1, {800, 9, 2, 128}, kDec1 + 3 * kS);
  MeterDay d = DaysOf(m.Take(kDec1 + 4 * kS), id).at(DayOf(kDec1));
  EXPECT_EQ(d.gpu_ns, 800u);
  EXPECT_EQ(d.launches, 9u);
  EXPECT_EQ(d.copies, 2u);
  EXPECT_EQ(d.copy_bytes, 128u);
}

TEST(Meter, ARestartedBrokerContinuesTheSessionWithoutCountingTwice) {
  const uint64_t t0 = kDec1 + 100 * kS;
  Store store;
  uint64_t id;
  {
    Meter before(40);
    id = before.Begin(3, Identity(4242, "alice", 0.5), t0);
    before.SetHeld(3, 2 * kGiB, t0);
    before.SetCounters(3, {3 * kS, 30, 0, 0}, t0 + 10 * kS);
    store.Write(before.Take(t0 + 10 * kS));
    before.SetCounters(3, {5 * kS, 50, 0, 0}, t0 + 15 * kS);
    // SIGKILL at t0 + 15 s: what was not flushed (2 s of GPU time, 20 launches) is lost.
  }
  // The restarted broker adopts what the store has open; the client re-registers at t0 + 25 s.
  Meter after(900);
  MeterSnapshot snap{store.sessions.at(id), store.days.at({id, DayOf(t0)})};
  after.Adopt({snap});
  EXPECT_FALSE(after.Continue(9, 4242, "bob", t0 + 25 * kS));  // another tenant's pid is not it
  ASSERT_EQ(after.Continue(9, 4242, "alice", t0 + 25 * kS), id);
  EXPECT_EQ(after.orphan_count(), 0u);
  after.SetCounters(9, {1 * kS, 10, 0, 0}, t0 + 30 * kS);  // the new broker's counts start at 0
  after.End(9, t0 + 40 * kS);
  store.Write(after.Take(t0 + 41 * kS));
  const MeterDay total = store.Total(id);
  EXPECT_EQ(total.wall_ns, 40 * kS);  // start to end: the downtime was held too
  EXPECT_DOUBLE_EQ(total.allotted_ns, 20.0 * kS);
  EXPECT_EQ(total.memory_byte_s(), 80 * kGiB);
  EXPECT_EQ(total.gpu_ns, 4 * kS);  // 3 s flushed + 1 s after: the unflushed 2 s lost, none twice
  EXPECT_EQ(total.launches, 40u);
  EXPECT_EQ(store.sessions.at(id).start_ns, t0);
  EXPECT_EQ(store.sessions.at(id).end_ns, t0 + 40 * kS);
  EXPECT_EQ(store.sessions.size(), 1u);
}

TEST(Meter, OrphansNotClaimedEndAtTheirLastRecord) {
  Meter m(1);
  MeterSession gone = Identity(77, "a", 1.0);
  gone.id = 5;
  gone.start_ns = kDec1;
  gone.last_ns = kDec1 + 10 * kS;
  MeterSession reused = Identity(78, "a", 1.0);
  reused.id = 6;
  reused.start_ns = kDec1;
  reused.last_ns = kDec1 + 20 * kS;
  m.Adopt({{gone, std::nullopt}, {reused, std::nullopt}});
  // pid 78 registers afresh: a new process, so the orphan of that pid is over.
  const uint64_t fresh = m.Begin(1, Identity(78, "a", 1.0), kDec1 + 30 * kS);
  EXPECT_NE(fresh, 6u);
  m.CloseOrphans(kDec1 + 15 * kS);
  EXPECT_EQ(m.orphan_count(), 0u);
  MeterFlush f = m.Take(kDec1 + 31 * kS);
  std::map<uint64_t, MeterSession> by_id;
  for (const MeterSession& s : f.sessions) by_id[s.id] = s;
  EXPECT_EQ(by_id.at(5).end_ns, kDec1 + 10 * kS);
  EXPECT_EQ(by_id.at(6).end_ns, kDec1 + 20 * kS);
  EXPECT_EQ(by_id.at(fresh).end_ns, 0u);
}

TEST(Meter, TimeGoingBackCountsNothing) {
  Meter m(1);
  const uint64_t id = m.Begin(1, Identity(100, "a", 1.0), kDec1 + 10 * kS);
  m.SetHeld(1, kGiB, kDec1 + 5 * kS);
  m.SetFraction(1, -1, kDec1 + 11 * kS);  // refused
  MeterDay d = DaysOf(m.Take(kDec1 + 12 * kS), id).at(DayOf(kDec1));
  EXPECT_EQ(d.wall_ns, 2 * kS);
  EXPECT_DOUBLE_EQ(d.allotted_ns, 2.0 * kS);
  EXPECT_EQ(d.memory_byte_s(), 2 * kGiB);
}

}  // namespace
}  // namespace gpushare::broker
