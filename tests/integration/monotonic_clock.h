// CLOCK_MONOTONIC for the timing tests and their client programs: every process of a
// test reads the same clock, so timelines printed by clients line up with the test's.
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>

namespace testing_support {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Sleeps until CLOCK_MONOTONIC reads `ns` (signals do not cut it short).
inline void SleepUntil(uint64_t ns) {
  timespec ts{time_t(ns / 1000000000ull), long(ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

inline double MsSince(uint64_t start_ns) { return double(int64_t(MonotonicNs() - start_ns)) / 1e6; }

// A timing client's timeline: "t_ms=T done=K" every 50 ms from `start_ns` (K: the
// kernels it has seen complete), until Stop, from which the tests measure each
// client's GPU time over any window.
class TimelinePrinter {
 public:
  TimelinePrinter(uint64_t start_ns, const std::atomic<long long>& done)
      : thread_([this, start_ns, &done] {
          for (uint64_t tick = start_ns + 50000000; !finished_.load(); tick += 50000000) {
            SleepUntil(tick);
            std::printf("t_ms=%.1f done=%lld\n", MsSince(start_ns), done.load());
          }
        }) {}
  ~TimelinePrinter() { Stop(); }
  TimelinePrinter(const TimelinePrinter&) = delete;
  TimelinePrinter& operator=(const TimelinePrinter&) = delete;

  void Stop() {
    finished_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> finished_{false};
  std::thread thread_;  // after finished_: it reads the flag from its first iteration
};

}  // namespace testing_support
