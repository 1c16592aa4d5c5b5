// The client's launch gate against an in-memory channel, with the broker's side of
// the channel (SetGate, DrainRing) played by the test: passing, waiting and waking,
// revokes answered by the drain thread, records and their summary when the ring is
// full, kernel names, and the gates opening when the broker goes away.
#include "launch_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "broker/io/shm_channels.h"
#include "common/base/futex.h"

namespace gpushare {
namespace {

namespace proto = gpushare::protocol;
using namespace std::chrono_literals;

// A LaunchGate attached to a fresh channel; what it sends to the "broker" is kept.
class LaunchGateTest : public ::testing::Test {
 protected:
  LaunchGateTest() : channel_(std::make_unique<proto::Channel>()) {
    std::memset(static_cast<void*>(channel_.get()), 0, sizeof(proto::Channel));
    LaunchGate::Hooks hooks;
    hooks.send = [this](const proto::Sched& s) {
      std::lock_guard<std::mutex> lock(mu_);
      sent_.push_back(s);
      return true;
    };
    hooks.broker_alive = [this] { return alive_.load(); };
    gate_.SetHooks(hooks);
    gate_.SetDrain([](int device) { drained_device.store(device); });
  }
  std::vector<proto::Sched> Sent() {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }
  // Waits (up to 2 s) until `pred` holds.
  template <typename Pred>
  static bool Eventually(Pred pred) {
    for (int i = 0; i < 400; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return pred();
  }

  // Runs `check` while `threads` threads are each inside a launch on GPU 0 (a Pass
  // held), then lets them leave and joins them.
  template <typename Check>
  void WhileThreadsAreInALaunch(int threads, Check check) {
    std::atomic<int> inside{0};
    std::atomic<bool> leave{false};
    std::vector<std::thread> launchers;
    for (int i = 0; i < threads; ++i)
      launchers.emplace_back([&] {
        LaunchGate::Pass pass(gate_, 0);
        inside.fetch_add(1);
        while (!leave.load()) std::this_thread::yield();
      });
    while (inside.load() < threads) std::this_thread::yield();
    check();
    leave.store(true);
    for (std::thread& t : launchers) t.join();
  }

  static inline std::atomic<int> drained_device{-1};
  std::unique_ptr<proto::Channel> channel_;
  std::unique_ptr<proto::Channel> spare_;  // a second channel, alive as long as the gate
  std::mutex mu_;
  std::vector<proto::Sched> sent_;
  std::atomic<bool> alive_{true};
  LaunchGate gate_;  // last: destroyed first (its drain thread uses the members above)
};

TEST_F(LaunchGateTest, UnattachedOrUnscheduledLaunchesPassAndRecordNothingWhenUnattached) {
  { LaunchGate::Pass pass(gate_, 0); }
  gate_.Record(0, proto::RecordKind::kKernel, 1, 0, 1, 1, 0, 0);
  EXPECT_EQ(channel_->ring_head.load(), 0u);
  gate_.Attach(channel_.get(), /*scheduled=*/false);
  channel_->gates[0].state = proto::kGateWait;  // not scheduled: the gate is not looked at
  { LaunchGate::Pass pass(gate_, 0); }
  EXPECT_EQ(gate_.Inflight(0), 0u);
}

TEST_F(LaunchGateTest, AHeldGateCountsTheLaunchInFlightOnlyDuringIt) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 1);
  {
    LaunchGate::Pass pass(gate_, 0);
    EXPECT_EQ(gate_.Inflight(0), 1u);
  }
  EXPECT_EQ(gate_.Inflight(0), 0u);
  EXPECT_TRUE(Sent().empty());
}

TEST_F(LaunchGateTest, ALaunchWithinALaunchOfTheSameThreadKeepsTheOuterOneInFlight) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 1);
  std::thread([&] {
    // Twice: the thread's first launch takes the slow path, the second the plain one.
    for (int round = 0; round < 2; ++round) {
      {
        LaunchGate::Pass outer(gate_, 0);  // e.g. the runtime's launch ...
        {
          LaunchGate::Pass inner(gate_, 0);  // ... calling the driver's
          EXPECT_EQ(gate_.Inflight(0), 2u) << "round " << round;
        }
        EXPECT_EQ(gate_.Inflight(0), 1u) << "round " << round;
      }
      EXPECT_EQ(gate_.Inflight(0), 0u) << "round " << round;
    }
  }).join();
}

TEST_F(LaunchGateTest, LaunchesInFlightOnSeveralThreadsAreAllCounted) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 1);
  constexpr int kThreads = 4;
  WhileThreadsAreInALaunch(kThreads, [&] {
    EXPECT_EQ(gate_.Inflight(0), static_cast<uint32_t>(kThreads));
    EXPECT_EQ(gate_.Inflight(1), 0u);
  });
  EXPECT_EQ(gate_.Inflight(0), 0u);
}

TEST_F(LaunchGateTest, AClosedGateAsksWaitsAndGoesOnWhenGranted) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateWait, 0);
  std::atomic<bool> passed{false};
  std::thread launcher([&] {
    LaunchGate::Pass pass(gate_, 0);
    passed = true;
  });
  ASSERT_TRUE(Eventually([&] { return !Sent().empty(); }));
  EXPECT_EQ(Sent()[0].event, static_cast<uint32_t>(proto::SchedEvent::kWant));
  EXPECT_EQ(Sent()[0].device, 0u);
  std::this_thread::sleep_for(30ms);
  EXPECT_FALSE(passed.load());  // asleep, not through
  EXPECT_EQ(channel_->gates[0].waiting.load(), 1u);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 5);
  launcher.join();
  EXPECT_TRUE(passed.load());
  EXPECT_EQ(channel_->gates[0].waiting.load(), 0u);
  EXPECT_GT(channel_->gates[0].waited_ns.load(), 20'000'000u);
}

TEST_F(LaunchGateTest, TheDrainThreadAnswersARevokeWithTheMeasuredDrain) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 2, proto::kGateHeld, 7);
  drained_device = -1;
  const uint64_t before = gpushare::MonotonicNs();
  broker::SetGate(channel_.get(), 2, proto::kGateWait, 7);  // revoke grant 7
  ASSERT_TRUE(Eventually([&] { return !Sent().empty(); }));
  const proto::Sched s = Sent()[0];
  EXPECT_EQ(s.event, static_cast<uint32_t>(proto::SchedEvent::kReleased));
  EXPECT_EQ(s.device, 2u);
  EXPECT_EQ(s.slice, 7u);
  EXPECT_GE(s.drained_ns, before);
  EXPECT_EQ(drained_device.load(), 2);
  EXPECT_EQ(channel_->gates[2].released_slice.load(), 7u);
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(Sent().size(), 1u);  // given back once
}

TEST_F(LaunchGateTest, LaunchesPastTheThreadsTallyGoToTheRingInOrderAndAFullRingIsSummarized) {
  gate_.Attach(channel_.get(), true);
  for (uint64_t stream = 100; stream < 100 + proto::kTallyEntries; ++stream)  // the thread's tally: full
    gate_.Record(1, proto::RecordKind::kKernel, stream, 0, 1, 32, 0, 0);
  EXPECT_EQ(channel_->ring_head.load(), 0u);
  for (uint32_t i = 0; i < proto::kRingRecords + 3; ++i)
    gate_.Record(1, i % 2 ? proto::RecordKind::kCopyHtoD : proto::RecordKind::kKernel, 9, 0, i, 32, 0, 100);
  EXPECT_EQ(channel_->ring_head.load(), proto::kRingRecords);
  EXPECT_EQ(channel_->dropped_records.load(), 3u);
  EXPECT_EQ(channel_->dropped_copies.load(), 1u);  // records 4096..4098: one copy among them
  EXPECT_EQ(channel_->dropped_bytes.load(), 100u);
  broker::RingCursor cursor;
  std::vector<uint32_t> grids;
  broker::DrainRing(channel_.get(), &cursor, [&](const proto::RecordData& r) {
    EXPECT_EQ(r.device, 1);
    EXPECT_EQ(r.stream, 9u);
    grids.push_back(r.grid);
  });
  ASSERT_EQ(grids.size(), proto::kRingRecords);
  for (uint32_t i = 0; i < grids.size(); ++i) ASSERT_EQ(grids[i], i);
  gate_.Record(1, proto::RecordKind::kKernel, 9, 0, 77, 32, 0, 0);  // room again
  EXPECT_EQ(channel_->ring_head.load(), proto::kRingRecords + 1);
}

// What ReadTallies reports, summed per stream.
std::map<uint64_t, std::pair<uint64_t, uint64_t>> TallyGrowth(const proto::Channel* c, broker::TallyCursor* cursor) {
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> by_stream;  // count, bytes
  broker::ReadTallies(c, cursor, [&](const proto::RecordData& r, uint64_t count) {
    by_stream[r.stream].first += count;
    by_stream[r.stream].second += r.bytes;
  });
  return by_stream;
}

TEST_F(LaunchGateTest, EachThreadCountsItsLaunchesAndTheBrokerReadsTheGrowthOnce) {
  gate_.Attach(channel_.get(), true);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i)
        gate_.Record(0, i % 2 ? proto::RecordKind::kCopyHtoD : proto::RecordKind::kKernel, static_cast<uint64_t>(t), 0,
                     1, 1, 0, 10);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(channel_->ring_head.load(), 0u);  // no record needed
  broker::TallyCursor cursor;
  auto growth = TallyGrowth(channel_.get(), &cursor);
  ASSERT_EQ(growth.size(), 4u);
  for (const auto& [stream, cb] : growth) {
    EXPECT_EQ(cb.first, 500u) << stream;
    EXPECT_EQ(cb.second, 5000u) << stream;
  }
  EXPECT_TRUE(TallyGrowth(channel_.get(), &cursor).empty());  // nothing new
  gate_.Record(0, proto::RecordKind::kKernel, 2, 0, 1, 1, 0, 0);
  growth = TallyGrowth(channel_.get(), &cursor);
  EXPECT_EQ(growth[2].first, 1u);
}

TEST_F(LaunchGateTest, ThreadsBeyondTheTallySlotsRecordInTheRingAndNoLaunchIsLost) {
  gate_.Attach(channel_.get(), true);
  constexpr int kThreads = proto::kTallySlots + 6;  // all alive at once: 6 find no slot
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) gate_.Record(0, proto::RecordKind::kKernel, 1, 0, 1, 1, 0, 0);
      done.fetch_add(1);
      while (done.load() < kThreads) std::this_thread::yield();
    });
  for (auto& t : threads) t.join();
  broker::TallyCursor cursor;
  const uint64_t tallied = TallyGrowth(channel_.get(), &cursor)[1].first;
  broker::RingCursor ring;
  const size_t recorded = broker::DrainRing(channel_.get(), &ring, [](const proto::RecordData&) {});
  EXPECT_EQ(tallied, proto::kTallySlots * 10u);
  EXPECT_EQ(recorded, 60u);
  // Ended threads gave their slots back: a new thread counts in a tally again.
  std::thread([&] { gate_.Record(0, proto::RecordKind::kKernel, 1, 0, 1, 1, 0, 0); }).join();
  EXPECT_EQ(TallyGrowth(channel_.get(), &cursor)[1].first, 1u);
}

// A hook's launch (LaunchGate::Launch) of `function` on `stream`; `taken`: the driver took it.
void HookLaunch(LaunchGate& gate, int device, proto::RecordKind kind, uint64_t stream, uintptr_t function,
                std::string (*name)(uintptr_t), uint64_t bytes = 0, bool taken = true) {
  LaunchGate::Launch launch(gate, device, kind, stream, function, name, {{7, 2, 1}, {32, 1, 1}, 0, bytes});
  if (taken) launch.Taken();
}

std::string PlainName(uintptr_t f) { return std::to_string(f); }

TEST_F(LaunchGateTest, AHookLaunchIsCountedPerKernelAndStreamAsTheThreadSwitchesBetweenThem) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 1);
  const uint16_t a = gate_.NameSlot(0x100, PlainName), b = gate_.NameSlot(0x200, PlainName);
  // The same launch again and again (the cached path), then switching kernel, stream,
  // GPU and kind at every launch (the looked-up path), then failed launches.
  for (int i = 0; i < 1000; ++i) HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1, 0x100, PlainName);
  for (int i = 0; i < 1000; ++i) {
    HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1 + i % 2, i % 3 ? 0x100 : 0x200, PlainName);
    HookLaunch(gate_, 1, proto::RecordKind::kCopyHtoD, 1, 0, PlainName, 64);
  }
  for (int i = 0; i < 10; ++i) HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1, 0x100, PlainName, 0, false);
  EXPECT_EQ(gate_.Inflight(0), 0u);
  EXPECT_EQ(channel_->ring_head.load(), 0u);  // all tallied
  std::map<std::tuple<int, int, uint16_t, uint64_t>, std::pair<uint64_t, uint64_t>> seen;  // count, bytes
  broker::TallyCursor cursor;
  broker::ReadTallies(channel_.get(), &cursor, [&](const proto::RecordData& r, uint64_t count) {
    auto& cb = seen[{r.device, static_cast<int>(r.kind), r.name, r.stream}];
    cb.first += count;
    cb.second += r.bytes;
  });
  const int kernel = static_cast<int>(proto::RecordKind::kKernel), copy = static_cast<int>(proto::RecordKind::kCopyHtoD);
  // Of i = 0..999, i % 3 == 0 (kernel b) for 334: 167 even (stream 1), 167 odd (stream
  // 2); kernel a for the other 666: 333 on each stream.
  EXPECT_EQ(seen[std::make_tuple(0, kernel, a, uint64_t{1})].first, 1000u + 333u);
  EXPECT_EQ(seen[std::make_tuple(0, kernel, a, uint64_t{2})].first, 333u);
  EXPECT_EQ(seen[std::make_tuple(0, kernel, b, uint64_t{1})].first, 167u);
  EXPECT_EQ(seen[std::make_tuple(0, kernel, b, uint64_t{2})].first, 167u);
  EXPECT_EQ(seen[std::make_tuple(1, copy, uint16_t{0}, uint64_t{1})], std::make_pair(uint64_t{1000}, uint64_t{64000}));
  EXPECT_EQ(seen.size(), 5u);
}

TEST_F(LaunchGateTest, AHookLaunchPastAFullTallyIsARingRecordWithItsShape) {
  gate_.Attach(channel_.get(), true);
  for (uint64_t stream = 100; stream < 100 + proto::kTallyEntries; ++stream)  // the thread's tally: full
    HookLaunch(gate_, 0, proto::RecordKind::kKernel, stream, 0x100, PlainName);
  EXPECT_EQ(channel_->ring_head.load(), 0u);
  HookLaunch(gate_, 2, proto::RecordKind::kCooperative, 9, 0x100, PlainName);
  {  // a grid past 2^32 blocks saturates
    LaunchGate::Launch launch(gate_, 2, proto::RecordKind::kKernel, 9, 0x100, PlainName,
                              {{1u << 20, 1u << 20, 1}, {1024, 1, 1}, 1 << 16, 0});
    launch.Taken();
  }
  std::vector<proto::RecordData> records;
  broker::RingCursor ring;
  broker::DrainRing(channel_.get(), &ring, [&](const proto::RecordData& r) { records.push_back(r); });
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].device, 2);
  EXPECT_EQ(records[0].kind, proto::RecordKind::kCooperative);
  EXPECT_EQ(records[0].stream, 9u);
  EXPECT_EQ(records[0].name, gate_.NameSlot(0x100, PlainName));
  EXPECT_EQ(records[0].grid, 14u);
  EXPECT_EQ(records[0].block, 32u);
  EXPECT_EQ(records[1].grid, UINT32_MAX);
  EXPECT_EQ(records[1].block, 1024u);
  EXPECT_EQ(records[1].shared_bytes, 1u << 16);
}

TEST_F(LaunchGateTest, AThreadsCachedLaunchFollowsTheGateToANewChannel) {
  gate_.Attach(channel_.get(), true);
  for (int i = 0; i < 5; ++i) HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1, 0x100, PlainName);
  spare_ = std::make_unique<proto::Channel>();  // the broker restarted: a new channel
  std::memset(static_cast<void*>(spare_.get()), 0, sizeof(proto::Channel));
  gate_.Attach(spare_.get(), true);
  for (int i = 0; i < 3; ++i) HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1, 0x100, PlainName);
  broker::TallyCursor old_cursor, new_cursor;
  EXPECT_EQ(TallyGrowth(channel_.get(), &old_cursor)[1].first, 5u);
  EXPECT_EQ(TallyGrowth(spare_.get(), &new_cursor)[1].first, 3u);
  gate_.Detach();
  HookLaunch(gate_, 0, proto::RecordKind::kKernel, 1, 0x100, PlainName);  // standalone: counted nowhere
  EXPECT_TRUE(TallyGrowth(spare_.get(), &new_cursor).empty());
}

TEST_F(LaunchGateTest, ThreadsBeyondTheOwnInFlightSlotsShareOneAndEndedThreadsFreeTheirs) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateHeld, 1);
  const uint32_t before = LaunchGate::OwnSlotsInUse();
  constexpr int kThreads = LaunchGate::kOwnSlots + 8;
  WhileThreadsAreInALaunch(kThreads, [&] {
    EXPECT_EQ(gate_.Inflight(0), static_cast<uint32_t>(kThreads));
    EXPECT_EQ(LaunchGate::OwnSlotsInUse(), LaunchGate::kOwnSlots);
  });
  EXPECT_EQ(gate_.Inflight(0), 0u);
  EXPECT_EQ(LaunchGate::OwnSlotsInUse(), before);  // every ended thread gave its slot back
  std::thread([&] {
    LaunchGate::Pass pass(gate_, 0);
    EXPECT_EQ(LaunchGate::OwnSlotsInUse(), before + 1);  // a new thread owns one again
    EXPECT_EQ(gate_.Inflight(0), 1u);
  }).join();
}

TEST_F(LaunchGateTest, AScribbledTallyIsSkippedAndHurtsNothingElse) {
  gate_.Attach(channel_.get(), true);
  gate_.Record(0, proto::RecordKind::kKernel, 1, 0, 1, 1, 0, 0);
  broker::TallyCursor cursor;
  ASSERT_EQ(TallyGrowth(channel_.get(), &cursor)[1].first, 1u);
  proto::TallyEntry* claimed = nullptr;  // the one entry the record went to
  for (proto::TallySlot& slot : channel_->tallies)
    for (proto::TallyEntry& entry : slot.entries)
      if (entry.key.load() != 0) claimed = &entry;
  ASSERT_NE(claimed, nullptr);
  proto::TallyEntry& e = *claimed;
  e.key.store(~0ull);  // out of range
  e.count.store(1000);
  EXPECT_TRUE(TallyGrowth(channel_.get(), &cursor).empty());
  e.key.store(proto::TallyKey(0, proto::RecordKind::kKernel, 0));  // valid again, count went back
  e.count.store(5);
  EXPECT_TRUE(TallyGrowth(channel_.get(), &cursor).empty());
  e.count.store(7);
  EXPECT_EQ(TallyGrowth(channel_.get(), &cursor)[1].first, 2u);
}

std::atomic<int> g_name_asks{0};
std::string NameOf(uintptr_t f) {
  ++g_name_asks;
  return "kernel_" + std::to_string(f);
}

TEST_F(LaunchGateTest, AKernelIsNamedOnceAndANewChannelGetsEveryName) {
  gate_.Attach(channel_.get(), true);
  g_name_asks = 0;
  const uint16_t a = gate_.NameSlot(0x1000, NameOf);
  const uint16_t b = gate_.NameSlot(0x2000, NameOf);
  EXPECT_EQ(gate_.NameSlot(0x1000, NameOf), a);
  EXPECT_EQ(g_name_asks.load(), 2);
  EXPECT_NE(a, b);
  EXPECT_EQ(gate_.NameSlot(0, NameOf), 0);
  EXPECT_EQ(broker::ReadKernelName(channel_.get(), a), "kernel_4096");
  EXPECT_EQ(broker::ReadKernelName(channel_.get(), b), "kernel_8192");
  spare_ = std::make_unique<proto::Channel>();  // the broker restarted: a new channel
  std::memset(static_cast<void*>(spare_.get()), 0, sizeof(proto::Channel));
  gate_.Attach(spare_.get(), true);
  EXPECT_EQ(broker::ReadKernelName(spare_.get(), b), "kernel_8192");
  EXPECT_EQ(g_name_asks.load(), 2);
}

TEST_F(LaunchGateTest, WhenTheBrokerGoesAwayWaitingLaunchesGoOnAndGatesStayOpen) {
  gate_.Attach(channel_.get(), true);
  broker::SetGate(channel_.get(), 0, proto::kGateWait, 0);
  std::atomic<bool> passed{false};
  std::thread launcher([&] {
    LaunchGate::Pass pass(gate_, 0);
    passed = true;
  });
  ASSERT_TRUE(Eventually([&] { return !Sent().empty(); }));
  alive_ = false;  // the drain thread notices within its poll period and opens the gates
  launcher.join();
  EXPECT_TRUE(passed.load());
  EXPECT_FALSE(gate_.attached());
  { LaunchGate::Pass pass(gate_, 0); }  // standalone now: passes at once
}

TEST_F(LaunchGateTest, ACuMaskPublishedByTheBrokerIsReadWholeAndNoneIsZeroWords) {
  uint32_t words[proto::kCuMaskWords] = {};
  EXPECT_EQ(gate_.CuMask(0, words, proto::kCuMaskWords), 0u);  // unattached
  gate_.Attach(channel_.get(), true);
  EXPECT_EQ(gate_.CuMask(0, words, proto::kCuMaskWords), 0u);  // never set
  const uint32_t mask[2] = {0xffff8000u, 0x0fffffffu};
  broker::SetCuMask(channel_.get(), 1, mask, 2);
  EXPECT_EQ(gate_.CuMask(0, words, proto::kCuMaskWords), 0u);  // another virtual GPU's
  ASSERT_EQ(gate_.CuMask(1, words, proto::kCuMaskWords), 2u);
  EXPECT_EQ(words[0], 0xffff8000u);
  EXPECT_EQ(words[1], 0x0fffffffu);
  EXPECT_EQ(gate_.CuMask(1, words, 1), 1u);  // bounded by the caller's room
  EXPECT_EQ(gate_.CuMask(-1, words, proto::kCuMaskWords), 0u);
  broker::SetCuMask(channel_.get(), 1, nullptr, 0);  // withdrawn
  EXPECT_EQ(gate_.CuMask(1, words, proto::kCuMaskWords), 0u);
}

}  // namespace
}  // namespace gpushare
