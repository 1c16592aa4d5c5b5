// Executor: the per-GPU work queue of one process (see executor.h).
#include "executor.h"

#include <sys/prctl.h>
#include <time.h>

#include <algorithm>

#include "node.h"

namespace simgpu {
namespace {

// How far the ideal cursor may trail the real clock: lets a briefly starved executor
// catch up without handing out unbounded "free" GPU time.
constexpr uint64_t kMaxLagNs = 2000000;

void SleepUntil(uint64_t deadline_ns) {
  if (deadline_ns <= MonotonicNs()) return;  // already due: no system call
  timespec ts{static_cast<time_t>(deadline_ns / 1000000000ull), static_cast<long>(deadline_ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

}  // namespace

Executor::Executor(Node* node, int gpu, int masked_queue)
    : node_(node), gpu_(gpu), masked_queue_(masked_queue), thread_([this] { Run(); }) {}

void Executor::Acquire(uint64_t* slice_end) {
  *slice_end = masked_queue_ < 0 ? node_->AcquireEngine(gpu_) : node_->AcquireMasked(gpu_, masked_queue_, yielded_);
  yielded_ = false;
}

bool Executor::Continue(uint64_t* slice_end) {
  if (masked_queue_ < 0) return node_->ContinueOrYield(gpu_, slice_end);
  yielded_ = !node_->ContinueMasked(gpu_, masked_queue_, slice_end);
  return !yielded_;
}

void Executor::Release() {
  if (masked_queue_ < 0)
    node_->ReleaseEngine(gpu_);
  else
    node_->ReleaseMasked(gpu_, masked_queue_);
}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

uint64_t Executor::Submit(Work work) {
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
    seq = ++submitted_;
  }
  work_cv_.notify_one();
  return seq;
}

uint64_t Executor::submitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submitted_;
}

void Executor::Wait(uint64_t seq) {
  if (Done(seq)) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return completed_.load() >= seq; });
}

void Executor::Execute(Work& w, bool* owning, uint64_t* slice_end) {
  cursor_ns_ = std::max(cursor_ns_, MonotonicNs() - (was_idle_ ? 0 : kMaxLagNs));
  uint64_t remaining = w.duration_ns;
  if (!w.needs_engine || node_ == nullptr || node_->slot() < 0) {
    cursor_ns_ += remaining;
    SleepUntil(cursor_ns_);
    if (node_ && w.mem_factor > 0) node_->AddBusy(gpu_, 0, static_cast<uint64_t>(remaining * w.mem_factor));
    return;
  }
  while (remaining > 0) {
    if (!*owning) {
      Acquire(slice_end);
      *owning = true;
      cursor_ns_ = std::max(cursor_ns_, MonotonicNs());
    }
    if (cursor_ns_ >= *slice_end) {  // slice used up: yield if someone waits
      *owning = Continue(slice_end);
      if (*owning) cursor_ns_ = std::max(cursor_ns_, MonotonicNs() - kMaxLagNs);
      continue;
    }
    uint64_t chunk = std::min(remaining, *slice_end - cursor_ns_);
    SleepUntil(cursor_ns_ + chunk);
    if (masked_queue_ < 0 && !node_->OwnsEngine(gpu_)) {
      // Preempted while the chunk "ran" (this process was late, descheduled on a loaded
      // machine, and another took the engine): the GPU ran the other context meanwhile,
      // so the chunk runs again once the engine is back. Counting it would let two
      // late processes each count the whole window as theirs.
      *owning = false;
      continue;
    }
    cursor_ns_ += chunk;
    remaining -= chunk;
    node_->AddBusy(gpu_, static_cast<uint64_t>(chunk * w.sm_factor), static_cast<uint64_t>(chunk * w.mem_factor));
  }
}

void Executor::Run() {
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake at the modeled completion time, not 50 us later
  bool owning = false;
  uint64_t slice_end = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (queue_.empty() && owning) {  // idle: let other processes have the GPU
      lock.unlock();
      Release();
      node_->RecordSample(gpu_);
      owning = false;
      lock.lock();
      continue;
    }
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    Work w = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (w.may_block && owning) {  // the queue it waits for may need this GPU's engine
      Release();
      owning = false;
    }
    Execute(w, &owning, &slice_end);
    if (w.effect) w.effect(cursor_ns_);
    lock.lock();
    completed_.fetch_add(1, std::memory_order_release);
    was_idle_ = queue_.empty();  // work arriving at an idle queue starts now, with no catch-up credit
    done_cv_.notify_all();
  }
}

}  // namespace simgpu
