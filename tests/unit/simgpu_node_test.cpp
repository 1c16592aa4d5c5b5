// simgpu's shared node state and cost model: the capacity ledger, dead-process
// reclaim, engine hand-off between processes, the fault table, and kernel costs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <thread>

#include "node.h"
#include "process.h"

namespace simgpu {
namespace {

class SimgpuNode : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = "simgpu-unit-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    shm_unlink(("/" + name_).c_str());  // one left by a killed run whose pid was reused
    std::string error;
    auto cfg =
        ParseConfig(R"({"gpus": [{"name": "a", "memory": 1000000}, {"name": "b", "memory": 500}]})", "t", &error);
    ASSERT_TRUE(cfg) << error;
    config_ = *cfg;
  }
  void TearDown() override { shm_unlink(("/" + name_).c_str()); }
  std::unique_ptr<Node> Attach() {
    std::string error;
    auto n = Node::Attach(config_, name_, true, &error);
    EXPECT_TRUE(n) << error;
    return n;
  }
  std::string name_;
  NodeConfig config_;
};

TEST_F(SimgpuNode, CapacityIsSharedBetweenAttachments) {
  auto a = Attach(), b = Attach();
  EXPECT_NE(a->slot(), b->slot());
  EXPECT_TRUE(a->TryCharge(0, 600000));
  EXPECT_FALSE(b->TryCharge(0, 500000));
  EXPECT_TRUE(b->TryCharge(0, 400000));
  EXPECT_EQ(b->Used(0), 1000000u);
  EXPECT_FALSE(a->TryCharge(0, 1));
  EXPECT_TRUE(a->TryCharge(1, 500));  // devices are independent
  a->Uncharge(0, 600000);
  EXPECT_EQ(b->Used(0), 400000u);
  b.reset();  // detaching gives back what the slot held
  EXPECT_EQ(a->Used(0), 0u);
}

TEST_F(SimgpuNode, DeadProcessShareIsReclaimed) {
  auto a = Attach();
  pid_t child = fork();
  if (child == 0) {
    std::string error;
    auto n = Node::Attach(config_, name_, true, &error);
    _exit(n && n->TryCharge(0, 900000) ? 0 : 1);  // dies without detaching
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(a->TryCharge(0, 1000000));  // the dead child's 900000 came back
}

// Issue 22, item 7: a liveness check that cannot be made (here /proc/PID/stat cannot be
// opened: the process is out of descriptors) is "unknown", never "dead": a live
// process's memory stays charged.
TEST_F(SimgpuNode, ALivenessCheckThatFailsIsNotDeath) {
  auto a = Attach(), b = Attach();
  ASSERT_TRUE(a->TryCharge(0, 600000));
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // No descriptor left: the lowest free one is the limit.
  const int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(probe, 0);
  close(probe);
  rlimit none = saved;
  none.rlim_cur = static_cast<rlim_t>(probe);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &none), 0);
  const int refused = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int refused_errno = errno;
  b->ReclaimDead();  // a's slot is another slot of this live process
  const uint64_t used = b->Used(0);
  setrlimit(RLIMIT_NOFILE, &saved);
  ASSERT_EQ(refused, -1);
  ASSERT_EQ(refused_errno, EMFILE);
  EXPECT_EQ(used, 600000u);
  EXPECT_FALSE(b->TryCharge(0, 500000));
}

// Item 7: giving back more than is held leaves the counters at zero, never wrapped.
TEST_F(SimgpuNode, CountersSaturateInsteadOfWrapping) {
  auto a = Attach(), b = Attach();
  ASSERT_TRUE(a->TryCharge(0, 100));
  ASSERT_TRUE(b->TryCharge(0, 50));
  a->Uncharge(0, 300);  // more than a holds: only a's 100 return
  EXPECT_EQ(b->Used(0), 50u);
  a->Uncharge(0, 1);
  EXPECT_EQ(b->Used(0), 50u);
  EXPECT_TRUE(a->TryCharge(0, 1000000 - 50));  // the device's room is exact
}

// Item 8: a stopped process that owns the engine loses it at its slice's end like
// anyone (a real GPU time-slices between contexts whatever their processes do).
TEST_F(SimgpuNode, AStoppedEngineOwnerIsPreemptedAtItsSlicesEnd) {
  auto b = Attach();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  if (child == 0) {
    std::string error;
    auto n = Node::Attach(config_, name_, true, &error);
    if (!n) _exit(1);
    n->AcquireEngine(0);
    char c = 'x';
    if (write(ready[1], &c, 1) != 1) _exit(2);
    raise(SIGSTOP);  // stopped while owning the engine
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, WUNTRACED), child);
  ASSERT_TRUE(WIFSTOPPED(status));
  // b gets the engine while the owner stays stopped. The slice is 2 ms; the bound is
  // generous for a loaded machine, and before the fix b waited forever.
  auto acquired = std::async(std::launch::async, [&] { b->AcquireEngine(0); });
  const bool got = acquired.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  kill(child, SIGKILL);  // also unblocks b if it failed (a dead owner is reclaimed)
  waitpid(child, &status, 0);
  acquired.wait();
  EXPECT_TRUE(got) << "the engine stayed with the stopped process";
  b->ReleaseEngine(0);
}

// A late owner that was preempted learns so at its slice boundary and acquires again.
TEST_F(SimgpuNode, APreemptedOwnerMustAcquireAgain) {
  auto a = Attach(), b = Attach();
  a->AcquireEngine(0);
  std::thread waiter([&] { b->AcquireEngine(0); });  // a stays late: b preempts it
  waiter.join();
  uint64_t end = 0;
  EXPECT_FALSE(a->ContinueOrYield(0, &end));
  a->ReleaseEngine(0);  // not the owner: changes nothing
  std::atomic<bool> a_running{false};
  std::thread again([&] {
    a->AcquireEngine(0);
    a_running = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  b->ReleaseEngine(0);
  again.join();
  EXPECT_TRUE(a_running);
  a->ReleaseEngine(0);
}

TEST_F(SimgpuNode, EngineIsHandedToTheWaiterAtSliceEnd) {
  auto a = Attach(), b = Attach();
  uint64_t slice_end = a->AcquireEngine(0);
  EXPECT_GT(slice_end, MonotonicNs());
  std::atomic<bool> b_running{false};
  std::thread waiter([&] {
    b->AcquireEngine(0);
    b_running = true;
  });
  // a keeps its slice while nobody waits; once b waits, a's next check at its slice's end
  // yields. On a loaded machine this thread may oversleep a slice past its end: then b
  // preempts it (a late owner loses the engine, as on a real GPU) and is running already.
  while (!b_running) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!b_running && !a->ContinueOrYield(0, &slice_end)) break;
  }
  waiter.join();
  EXPECT_TRUE(b_running);
  // a now waits in turn; b releasing hands the engine straight to a.
  std::thread again([&] { a->AcquireEngine(0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  b->ReleaseEngine(0);
  again.join();
  a->ReleaseEngine(0);
}

TEST_F(SimgpuNode, ContinueWithoutWaitersExtendsTheSlice) {
  auto a = Attach();
  a->AcquireEngine(0);
  uint64_t end = 0;
  EXPECT_TRUE(a->ContinueOrYield(0, &end));
  EXPECT_GT(end, MonotonicNs());
  a->ReleaseEngine(0);
}

// Safety, not timing: however acquire, continue, yield, release and preemption of late
// owners interleave, no two processes own the engine over overlapping time. An owner
// uses the engine from the moment it acquires until the slice end it was given (or
// until it releases earlier, if that comes first); a late owner may still be asleep
// while its successor runs, but its model time ended at its slice end, so these spans,
// recorded independently of the engine's state, must not overlap. Six attachments
// (six slots, as six processes) hammer one GPU with 100 us slices for about a
// second; a third of the waits oversleep one to three slices so that preemption races
// with renewals, hand-ons and fresh acquisitions.
TEST_F(SimgpuNode, EngineOwnershipSpansNeverOverlap) {
  config_.timeslice_us = 100;
  constexpr int kThreads = 6;
  constexpr uint64_t kSliceNs = 100000;
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < kThreads; ++i) nodes.push_back(Attach());
  struct Span {
    uint64_t begin, end;
    int who;
  };
  std::vector<std::vector<Span>> spans(kThreads);
  const uint64_t stop_at = MonotonicNs() + 1000000000ull;
  auto sleep_until = [](uint64_t t) {
    timespec ts{static_cast<time_t>(t / 1000000000ull), static_cast<long>(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Node& n = *nodes[i];
      uint64_t rng = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
      auto next = [&] { return rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; };
      while (MonotonicNs() < stop_at) {
        uint64_t end = n.AcquireEngine(0);
        const uint64_t begin = MonotonicNs();
        for (;;) {
          const uint64_t r = next() % 6;
          if (r == 0) {  // no more work: release before the slice ends
            const uint64_t now = MonotonicNs();
            spans[i].push_back({begin, std::min(now, end), i});
            n.ReleaseEngine(0);
            break;
          }
          // Run to the slice end; sometimes oversleep it (a descheduled owner).
          sleep_until(r <= 2 ? end + (1 + next() % 3) * kSliceNs : end);
          uint64_t renewed = 0;
          if (!n.ContinueOrYield(0, &renewed)) {  // yielded or preempted: it ran until `end`
            spans[i].push_back({begin, end, i});
            break;
          }
          end = renewed;
          if (MonotonicNs() >= stop_at) {
            spans[i].push_back({begin, std::min(MonotonicNs(), end), i});
            n.ReleaseEngine(0);
            break;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<Span> all;
  for (auto& v : spans) all.insert(all.end(), v.begin(), v.end());
  ASSERT_GT(all.size(), 100u) << "too few hand-offs to prove anything";
  std::sort(all.begin(), all.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  int overlaps = 0;
  uint64_t worst_ns = 0;
  Span latest = all[0];
  for (size_t k = 1; k < all.size(); ++k) {
    if (all[k].begin < latest.end) {
      ++overlaps;
      worst_ns = std::max(worst_ns, latest.end - all[k].begin);
    }
    if (all[k].end > latest.end) latest = all[k];
  }
  EXPECT_EQ(overlaps, 0) << "of " << all.size() << " ownership spans, " << overlaps
                         << " began while another owner's slice was running (worst by " << worst_ns << " ns)";
}

TEST_F(SimgpuNode, DisjointMaskedQueuesRunTogetherOverlappingOnesWait) {
  auto a = Attach(), b = Attach();
  const uint64_t low[kCuWords] = {0xffff}, high[kCuWords] = {0xffff0000}, middle[kCuWords] = {0xff00ff};
  const int qa = a->ClaimMaskedQueue(0, low), qb = b->ClaimMaskedQueue(0, high), qc = b->ClaimMaskedQueue(0, middle);
  ASSERT_GE(qa, 0);
  ASSERT_GE(qb, 0);
  ASSERT_GE(qc, 0);
  a->AcquireMasked(0, qa, false);
  b->AcquireMasked(0, qb, false);  // disjoint from a's: returns at once, in another process
  std::atomic<bool> c_running{false}, exclusive_running{false};
  std::thread overlapping([&] {
    b->AcquireMasked(0, qc, false);  // shares CUs with both
    c_running = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(c_running);
  a->ReleaseMasked(0, qa);
  EXPECT_FALSE(c_running);  // still overlaps b's queue
  b->ReleaseMasked(0, qb);
  overlapping.join();
  EXPECT_TRUE(c_running);
  // Unmasked work waits for masked mode to end; the masked queue yields at its slice end.
  std::thread exclusive([&] {
    a->AcquireEngine(0);
    exclusive_running = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(exclusive_running);
  uint64_t end = 0;
  EXPECT_FALSE(b->ContinueMasked(0, qc, &end));
  exclusive.join();
  EXPECT_TRUE(exclusive_running);
  a->ReleaseEngine(0);
}

TEST_F(SimgpuNode, ArmedFaultsFireTheirCountThenDisarm) {
  auto a = Attach(), observer = Attach();
  int error = 0;
  EXPECT_FALSE(a->AnyFaultArmed());
  ASSERT_TRUE(observer->ArmFault(FaultKind::kCall, "cuMemAlloc", -1, 2, 2, 0));
  EXPECT_TRUE(a->AnyFaultArmed());  // armed in one attachment, seen by every other
  EXPECT_FALSE(a->TakeFault(FaultKind::kAllocation, nullptr, 0, &error));  // another kind
  EXPECT_FALSE(a->TakeFault(FaultKind::kCall, "cuMemAllocPitch_v2", -1, &error));
  EXPECT_TRUE(a->TakeFault(FaultKind::kCall, "cuMemAlloc_v2", -1, &error));
  EXPECT_EQ(error, 2);
  EXPECT_TRUE(a->TakeFault(FaultKind::kCall, "cuMemAlloc", -1, &error));
  EXPECT_FALSE(a->TakeFault(FaultKind::kCall, "cuMemAlloc", -1, &error));  // spent
  EXPECT_FALSE(a->AnyFaultArmed());
  EXPECT_EQ(observer->FaultHits(), 2u);
}

TEST_F(SimgpuNode, AFaultAimsAtItsGpuAndProcessAndUntilClearedLastsUntilCleared) {
  auto a = Attach();
  int error = 0;
  ASSERT_TRUE(a->ArmFault(FaultKind::kAllocation, "", 1, 0, -1, 0));
  EXPECT_FALSE(a->TakeFault(FaultKind::kAllocation, nullptr, 0, &error));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(a->TakeFault(FaultKind::kAllocation, nullptr, 1, &error));
  ASSERT_TRUE(a->ArmFault(FaultKind::kLookup, "cuMemAlloc", -1, 0, -1, getpid() + 1));  // someone else
  EXPECT_FALSE(a->TakeFault(FaultKind::kLookup, "cuMemAlloc", -1, &error));
  EXPECT_EQ(a->ClearFaults(), 2);
  EXPECT_FALSE(a->AnyFaultArmed());
  for (int i = 0; i < kMaxFaults; ++i) EXPECT_TRUE(a->ArmFault(FaultKind::kCall, "cuX", -1, 1, 1, 0));
  EXPECT_FALSE(a->ArmFault(FaultKind::kCall, "cuX", -1, 1, 1, 0));  // the table is full
  EXPECT_EQ(a->ClearFaults(), kMaxFaults);
}

TEST(SimgpuCostModel, NamedKernelsRunTheirStatedTime) {
  NodeConfig c = DefaultConfig();
  LaunchGeometry g{{1, 1, 1}, {32, 1, 1}, 0};
  auto r = CostOfKernel(c, c.gpus[0], "simgpu_compute_250us", g);
  EXPECT_EQ(r.duration_ns, 250000u);
  EXPECT_EQ(r.work_class, WorkClass::kCompute);
  r = CostOfKernel(c, c.gpus[0], "_Z19simgpu_memory_40usPfS_i", g);  // mangled C++ name
  EXPECT_EQ(r.duration_ns, 40000u);
  EXPECT_EQ(r.work_class, WorkClass::kMemory);
}

TEST(SimgpuCostModel, ConfigOverridesThenDefaultScalesByWaves) {
  NodeConfig c = DefaultConfig();
  c.kernels["gemm"] = KernelCost{75, WorkClass::kCompute};
  LaunchGeometry one{{1, 1, 1}, {256, 1, 1}, 0};
  EXPECT_EQ(CostOfKernel(c, c.gpus[0], "gemm", one).duration_ns, 75000u);
  EXPECT_EQ(CostOfKernel(c, c.gpus[0], "other", one).duration_ns, 10000u);
  // 132 SMs x 8 resident blocks of 256 threads = 1056 blocks per wave.
  LaunchGeometry big{{1057, 1, 1}, {256, 1, 1}, 0};
  EXPECT_EQ(CostOfKernel(c, c.gpus[0], "other", big).duration_ns, 20000u);
}

TEST(SimgpuChargedSize, SmallGranulesLargePages) {
  EXPECT_EQ(ChargedSize(1), 512u);
  EXPECT_EQ(ChargedSize(1000), 1024u);
  EXPECT_EQ(ChargedSize(1u << 20), 2u << 20);
  EXPECT_EQ(ChargedSize((2u << 20) + 1), 4u << 20);
}

}  // namespace
}  // namespace simgpu
