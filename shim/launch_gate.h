// The client's side of GPU-time scheduling, API-neutral: every launch and async copy
// passes a gate per virtual GPU and is counted for the broker (the thread's tally, else a ring record).
//
// Hot path (a launch with the GPU granted, or unscheduled): a load of the channel, a
// store to the calling thread's own in-flight counter (process memory, a cache line
// per thread; the drain thread orders it with membarrier) and a load of the gate, the
// launch counted in the thread's own tally in the channel (a load and a store), the
// in-flight count undone after the driver call. No lock, no system call, no
// allocation, and no line written by two threads. A launch without the GPU sends Want
// once and sleeps on the gate's futex until the broker grants it.
//
// A drain thread answers the broker's revokes: it waits for launches already past
// the gate, drains the process's queued work on that GPU (the hooks say how), and
// reports when the drain completed: that measured time ends the slice charged to it.
// It also watches the broker: if it goes away every gate opens (standalone), and it
// registers again when the broker is back.
//
// Channels are never unmapped while the process lives (a launch may still hold a
// pointer into an old one after the broker restarted).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/protocol/channel.h"
#include "common/protocol/protocol.h"

namespace gpushare {

class LaunchGate {
 public:
  LaunchGate() = default;
  // Stops the drain thread (the client's gate lives as long as the process; tests
  // make and destroy their own).
  ~LaunchGate();
  LaunchGate(const LaunchGate&) = delete;
  LaunchGate& operator=(const LaunchGate&) = delete;

  // What the gate needs from the rest of the client (set once, before Attach).
  struct Hooks {
    std::function<bool(const protocol::Sched&)> send;  // to the broker; false: the link is gone
    std::function<bool()> broker_alive;                // false: the broker hung up
    std::function<void()> reconnect;                   // try to register again (rate-limited by the caller)
    std::function<void()> tend;                        // each round while attached (allocation leases)
  };
  void SetHooks(Hooks hooks);
  void SetDrain(void (*drain)(int device));  // by the API family (hooks/), before registering

  // The broker's channel for this process; `scheduled`: launches wait for grants.
  void Attach(protocol::Channel* channel, bool scheduled);
  // The broker is gone: every gate opens, waiting launches go on.
  void Detach();
  // A forked child: the parent's channel is not its own (nothing is written to it).
  void Forget();

  // A launch passing the gate of virtual GPU `device`: constructed before the driver
  // call, destroyed after it.
  class Pass {
   public:
    Pass(LaunchGate& gate, int device);
    ~Pass();
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

   private:
    bool plain_ = false;                         // counted with a plain store (see Enter)
    std::atomic<uint32_t>* inflight_ = nullptr;  // the thread slot's counter for the gate passed
  };

  // Launches of virtual GPU `device` between passing its gate and their driver call
  // returning, over all threads.
  uint32_t Inflight(int device) const;

  // Counts a launch or copy on `device` in the calling thread's tally (channel.h), or,
  // when the thread has no tally slot or its slot is full, appends a record to the
  // ring; never blocks (a full ring is counted in the channel's dropped_* summary).
  void Record(int device, protocol::RecordKind kind, uint64_t stream, uint16_t name, uint32_t grid, uint32_t block,
              uint32_t shared_bytes, uint64_t bytes);

  // `ns` of GPU time spent in a collective on `device`, measured (hooks/nccl), for the
  // broker; nothing while standalone.
  void AddCollectiveTime(int device, uint64_t ns);

  // The name slot (1-based; 0: unknown) of the kernel `function`, asking `get_name`
  // the first time this function is seen. Lock-free after the first sight.
  uint16_t NameSlot(uintptr_t function, std::string (*get_name)(uintptr_t function));

  // The CU mask the broker published for virtual GPU `device` (spatial sharing): copies
  // up to `max_words` words (bit i of word i / 32: CU i) into `words` and returns how
  // many; 0: no mask (every CU). For stream creation, not the launch path: it reads
  // again while the broker is writing.
  size_t CuMask(int device, uint32_t* words, size_t max_words) const;

  bool scheduled() const { return scheduled_.load(std::memory_order_relaxed); }
  bool attached() const { return channel_.load(std::memory_order_relaxed) != nullptr; }

 private:
  std::atomic<uint32_t>* Enter(int device, bool* plain);
  std::atomic<uint32_t>* WaitForGrant(protocol::Channel* c, int device, std::atomic<uint32_t>* inflight);
  void StartDrainThread();
  void DrainLoop();
  void Release(protocol::Channel* c, int device, uint64_t slice);
  void PublishNames(protocol::Channel* c);
  bool Tally(protocol::Channel* c, int device, protocol::RecordKind kind, uint64_t stream, uint16_t name,
             uint64_t bytes);
  static void ForgetTallies(protocol::Channel* channel);

  std::atomic<protocol::Channel*> channel_{nullptr};
  std::atomic<bool> scheduled_{false};
  std::atomic<uint64_t> epoch_{0};  // of the last Attach (tally slots are claimed per epoch)
  Hooks hooks_;
  std::atomic<void (*)(int)> drain_{nullptr};  // waits for this process's work on a virtual GPU
  std::once_flag thread_once_;
  std::thread drain_thread_;
  std::atomic<bool> stop_{false};
  uint64_t released_[protocol::kMaxDevices] = {};  // drain thread only
  std::atomic<uint32_t> detach_seq_{0};            // futex word for the drain thread while detached

  // In-flight launches per virtual GPU, counted in one slot per thread: the process's
  // first kInflightSlots - 1 launching threads own one each, later ones share the last
  // (with locked instructions there).
  struct alignas(64) InflightSlot {
    std::atomic<uint32_t> count[protocol::kMaxDevices] = {};
  };
  static_assert(sizeof(InflightSlot) == 64, "one cache line per thread slot");
  static constexpr size_t kInflightSlots = 64;
  InflightSlot inflight_[kInflightSlots];

  // Kernel names, kept by the process (a new channel gets them all again).
  struct FunctionEntry {
    std::atomic<uintptr_t> function{0};
    std::atomic<uint16_t> slot{0};
  };
  static constexpr size_t kFunctionTable = 4096;  // a power of two
  FunctionEntry functions_[kFunctionTable];
  std::atomic<uint32_t> name_count_{0};
  char names_[protocol::kNameSlots][protocol::kNameBytes] = {};
  std::atomic<uint8_t> name_ready_[protocol::kNameSlots] = {};
};

}  // namespace gpushare
