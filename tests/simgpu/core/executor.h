// One in-order work queue per (process, simulated GPU): kernels, copies, memsets,
// event records and host callbacks run here in submission order, taking simulated
// time. Kernels also need the GPU's compute engine, which Node time-slices between
// processes. Simulated time advances on an ideal cursor (absolute deadlines), so
// short kernels keep their modeled throughput despite sleep granularity.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "config.h"

namespace simgpu {

class Node;

struct Work {
  uint64_t duration_ns = 0;
  bool needs_engine = false;  // kernels: time-sliced with other processes
  bool may_block = false;     // waits for another queue: the engine is given up first
  double sm_factor = 0;       // busy accounting for NVML, per ns of duration
  double mem_factor = 0;
  // Side effect at completion; gets the simulated completion time (monotonic ns).
  std::function<void(uint64_t)> effect;
};

class Executor {
 public:
  // `masked_queue` >= 0: this queue runs a CU-masked stream, taking the engine through
  // the node's masked queue of that index rather than exclusively.
  Executor(Node* node, int gpu, int masked_queue = -1);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues work; returns its sequence number (1, 2, …).
  uint64_t Submit(Work work);
  uint64_t submitted() const;
  uint64_t completed() const { return completed_.load(std::memory_order_acquire); }
  bool Done(uint64_t seq) const { return completed() >= seq; }
  void Wait(uint64_t seq);  // until work `seq` and everything before it completed

 private:
  void Run();
  void Execute(Work& w, bool* owning, uint64_t* slice_end);

  void Acquire(uint64_t* slice_end);   // blocks until this queue may run; sets the slice end
  bool Continue(uint64_t* slice_end);  // at a slice boundary: false when the engine was given up
  void Release();

  Node* node_;
  int gpu_;
  int masked_queue_;
  bool yielded_ = false;  // a masked queue that gave way waits a turn before trying again
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Work> queue_;
  uint64_t submitted_ = 0;
  std::atomic<uint64_t> completed_{0};
  bool stop_ = false;
  uint64_t cursor_ns_ = 0;  // simulated time at which the last work completed
  bool was_idle_ = true;
  std::thread thread_;
};

}  // namespace simgpu
