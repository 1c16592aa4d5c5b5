// Saturating sched_worker processes and what they printed: kernels completed over time
// (50 ms samples) and when they did what, so a test can measure the GPU time each got
// over any window. Shared by the scheduling and the profile (ceiling) tests; the test
// target defines WORKER_PATH.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <time.h>

#include <cmath>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"

namespace testing_support {

inline void SleepUntilMs(uint64_t start_ns, double ms) {
  const uint64_t at = start_ns + uint64_t(ms * 1e6);
  timespec ts{time_t(at / 1000000000ull), long(at % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

struct Timeline {
  std::vector<std::pair<double, double>> done_at;  // (t_ms, kernels completed by then)
  std::map<std::string, double> events_ms;         // "first_launch", "switch", "stop"
  std::string output;

  // Kernels completed by `t_ms`, interpolated between the 50 ms samples.
  double DoneAt(double t_ms) const {
    if (done_at.empty() || t_ms <= done_at.front().first) return done_at.empty() ? 0 : done_at.front().second;
    for (size_t i = 1; i < done_at.size(); ++i) {
      const auto& [t1, d1] = done_at[i];
      if (t_ms <= t1) {
        const auto& [t0, d0] = done_at[i - 1];
        return d0 + (d1 - d0) * (t_ms - t0) / (t1 - t0);
      }
    }
    return done_at.back().second;
  }
  double KernelsIn(double from_ms, double to_ms) const { return DoneAt(to_ms) - DoneAt(from_ms); }
  double Event(const std::string& name) const {
    auto it = events_ms.find(name);
    return it == events_ms.end() ? NAN : it->second;
  }
};

// A sched_worker of `kernel_us` kernels started at `start_ns` (CLOCK_MONOTONIC) for
// `seconds`, plus `extra` options.
inline std::unique_ptr<Child> StartWorker(const std::map<std::string, std::string>& env, uint64_t start_ns,
                                          double seconds, const std::string& kind, int kernel_us,
                                          std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {WORKER_PATH, "--kind", kind, "--us", std::to_string(kernel_us)};
  argv.insert(argv.end(), {"--seconds", std::to_string(seconds), "--start-at", std::to_string(start_ns)});
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto c = std::make_unique<Child>(argv, env);
  c->CloseStdin();
  return c;
}

// Waits for the worker to end and reads its timeline.
inline Timeline Finish(Child& worker) {
  Timeline t;
  t.output = worker.ReadAll();
  const int status = worker.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << t.output;
  static const std::regex kSample(R"(^t_ms=([0-9.]+) done=([0-9]+)$)");
  static const std::regex kEvent(R"(^(first_launch|switch|stop) t_ms=([0-9.]+)$)");
  std::istringstream lines(t.output);
  std::smatch m;
  for (std::string line; std::getline(lines, line);) {
    if (std::regex_match(line, m, kSample))
      t.done_at.emplace_back(std::stod(m[1]), std::stod(m[2]));
    else if (std::regex_match(line, m, kEvent))
      t.events_ms[m[1]] = std::stod(m[2]);
  }
  EXPECT_GT(t.done_at.size(), 10u) << t.output;
  return t;
}

inline std::vector<Timeline> FinishAll(std::vector<std::unique_ptr<Child>>& workers) {
  std::vector<Timeline> timelines;
  for (auto& w : workers) timelines.push_back(Finish(*w));
  return timelines;
}

}  // namespace testing_support
