// A saturating driver-API client for the scheduling tests: launches simgpu kernels of
// a known duration on one stream and prints a timeline of completed kernels every
// 50 ms, so a test can measure the GPU time each process got over any window.
//
// sched_worker --seconds S --kind compute|memory --us N [--switch-after S2]
//              [--stop-after S3] [--device D] [--start-at NS]
// --start-at: CLOCK_MONOTONIC ns at which to start (t_ms=0); several workers given the
// same value have aligned timelines. Output: "t_ms=T done=K" lines; "first_launch t_ms=T",
// "switch t_ms=T" and "stop t_ms=T" when those happen; "summary launched=L done=K"; last,
// "lifetime_ms=W": from main() to its device closed (what a meter of its session should see).
#include <time.h>

#include <atomic>
#include <map>
#include <thread>

#include "../../samples/common.h"
#include "monotonic_clock.h"

using testing_support::MonotonicNs;
using testing_support::MsSince;
using testing_support::SleepUntil;

namespace {

// "--name value" pairs, only the names in kOptions; anything else is a usage error.
std::map<std::string, std::string> ParseOptions(int argc, char** argv) {
  static const char* kOptions[] = {"--seconds",    "--kind",   "--us",      "--switch-after",
                                   "--stop-after", "--device", "--start-at"};
  std::map<std::string, std::string> options;
  for (int i = 1; i < argc; i += 2) {
    bool known = false;
    for (const char* o : kOptions) known = known || std::string(argv[i]) == o;
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: sched_worker --seconds S --kind compute|memory --us N [--switch-after S2] "
                   "[--stop-after S3] [--device D] [--start-at MONOTONIC_NS]\n");
      std::exit(2);
    }
    options[argv[i]] = argv[i + 1];
  }
  return options;
}

double Number(const std::map<std::string, std::string>& options, const std::string& name, double fallback) {
  auto it = options.find(name);
  return it == options.end() ? fallback : std::strtod(it->second.c_str(), nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t main_ns = MonotonicNs();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const auto options = ParseOptions(argc, argv);
  const double seconds = Number(options, "--seconds", 5);
  const long long us = static_cast<long long>(Number(options, "--us", 500));
  const std::string kind = options.count("--kind") ? options.at("--kind") : "compute";
  if (kind != "compute" && kind != "memory") return 2;
  const bool memory_first = kind == "memory";
  const double switch_after = Number(options, "--switch-after", -1);
  const double stop_after = Number(options, "--stop-after", -1);
  if (seconds <= 0 || us <= 0) return 2;

  samples::Device d = samples::OpenDevice(static_cast<long long>(Number(options, "--device", 0)));
  const std::string compute = "simgpu_compute_" + std::to_string(us) + "us";
  const std::string memory = "simgpu_memory_" + std::to_string(us) + "us";
  const std::string ptx = ".version 7.8\n.target sm_70\n.address_size 64\n.visible .entry " + compute +
                          "() { ret; }\n.visible .entry " + memory + "() { ret; }\n";
  CUmodule module = samples::LoadPtx(ptx.c_str());
  CUfunction kernels[2];  // 0: compute, 1: memory
  CHECK(cuModuleGetFunction(&kernels[0], module, compute.c_str()));
  CHECK(cuModuleGetFunction(&kernels[1], module, memory.c_str()));
  CUstream stream = nullptr;
  CHECK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  // At most kInFlight launches queued: a completion is counted when its event is waited for.
  constexpr int kInFlight = 16;
  CUevent events[kInFlight];
  for (CUevent& e : events) CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));

  const uint64_t start_ns =
      options.count("--start-at") ? std::strtoull(options.at("--start-at").c_str(), nullptr, 10) : MonotonicNs();
  const uint64_t end_ns = start_ns + uint64_t(seconds * 1e9);
  const uint64_t switch_ns = switch_after >= 0 ? start_ns + uint64_t(switch_after * 1e9) : UINT64_MAX;
  const uint64_t stop_ns = stop_after >= 0 ? start_ns + uint64_t(stop_after * 1e9) : end_ns;
  std::atomic<long long> done{0};
  SleepUntil(start_ns);
  testing_support::TimelinePrinter timeline(start_ns, done);

  long long launched = 0;
  bool switched = false;
  for (uint64_t now; (now = MonotonicNs()) < stop_ns;) {
    if (now >= switch_ns && !switched) {
      switched = true;
      std::printf("switch t_ms=%.1f\n", MsSince(start_ns));
    }
    CUevent& slot = events[launched % kInFlight];
    if (launched >= kInFlight) {
      CHECK(cuEventSynchronize(slot));
      ++done;
    }
    CHECK(cuLaunchKernel(kernels[memory_first != switched], 1, 1, 1, 128, 1, 1, 0, stream, nullptr, nullptr));
    CHECK(cuEventRecord(slot, stream));
    if (launched++ == 0) std::printf("first_launch t_ms=%.1f\n", MsSince(start_ns));
  }
  if (stop_ns < end_ns) std::printf("stop t_ms=%.1f\n", MsSince(start_ns));
  for (long long i = std::max(0LL, launched - kInFlight); i < launched; ++i) {
    CHECK(cuEventSynchronize(events[i % kInFlight]));
    ++done;
  }
  if (stop_ns < end_ns) SleepUntil(end_ns);  // alive and idle: the GPU is the others' to use
  timeline.Stop();
  std::printf("summary launched=%lld done=%lld\n", launched, done.load());
  for (CUevent e : events) CHECK(cuEventDestroy(e));
  CHECK(cuStreamDestroy(stream));
  CHECK(cuModuleUnload(module));
  samples::CloseDevice(d);
  std::printf("lifetime_ms=%.1f\n", MsSince(main_ns));
  return 0;
}
