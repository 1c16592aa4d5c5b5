// CLOCK_MONOTONIC for the timing tests and their client programs: every process of a
// test reads the same clock, so timelines printed by clients line up with the test's.
#pragma once

#include <time.h>

#include <cstdint>

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

}  // namespace testing_support
