// The client's side of GPU-time scheduling, API-neutral: every launch and async copy
// passes a gate per virtual GPU and is counted for the broker (the thread's tally, else a ring record).
//
// Hot path (LaunchGate::Launch, inline here: a launch with the GPU granted, or
// unscheduled, of the same kernel on the same stream as the thread's previous launch):
// a load of the channel, a store to the calling thread's own in-flight counter
// (process memory, a cache line per thread; the drain thread orders it with
// membarrier) and a load of the gate, the thread's cached tally entry checked against
// the launch (registers against thread-local memory), the count moved in that entry
// (a load and a store), and the in-flight count undone after the driver call. No
// lock, no system call, no allocation, no call out of line, and no line written by
// two threads. Anything else (a new kernel, stream or GPU, a first launch, a full
// tally) takes the out-of-line path once and is cached for the next. A launch without
// the GPU sends Want once and sleeps on the gate's futex until the broker grants it.
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

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/protocol/channel.h"
#include "common/protocol/protocol.h"

namespace gpushare {

// What a launch or copy was, for the ring record written when it cannot be tallied
// (the products are formed only then).
struct LaunchShape {
  uint64_t grid[3] = {0, 0, 0};
  uint64_t block[3] = {0, 0, 0};
  uint64_t shared_bytes = 0;
  uint64_t bytes = 0;  // copies and memsets
};

// A kernel's name, asked of the driver the first time its function is seen.
using KernelNameFn = std::string (*)(uintptr_t function);

namespace launch_detail {

// What a launching thread keeps for itself (plain initial-exec TLS, read on every
// launch without a TLS wrapper call).
struct ThreadLaunch {
  // Its in-flight slot in every gate (LaunchGate::kOwnSlots: the shared one; UINT32_MAX: none yet).
  uint32_t inflight_slot;
  // Whether it is inside a launch that passed a gate (one within it, e.g. the
  // runtime's call into the driver, takes the slow path).
  bool in_launch;
  // The attach epoch (LaunchGate::Attach) and channel of what follows; 0: nothing yet.
  uint64_t epoch;
  protocol::Channel* channel;
  protocol::TallySlot* slot;  // the thread's tally slot there; null: none was free
  // The previous launch counted, and where: its function, name slot, stream, GPU and
  // kind (`site`), and its tally entry (null: it went to the ring).
  uintptr_t function;
  uint64_t stream;
  uint32_t site;
  uint16_t name;
  protocol::TallyEntry* entry;
};
__attribute__((tls_model("initial-exec"))) inline thread_local ThreadLaunch t_launch = {
    UINT32_MAX, false, 0, nullptr, nullptr, 0, 0, UINT32_MAX, 0, nullptr};

inline uint32_t Site(int device, protocol::RecordKind kind) {
  return static_cast<uint32_t>(device) << 8 | static_cast<uint8_t>(kind);
}

// One more launch or copy (of `bytes`) in a tally entry: a load and a store each (only
// the thread owning the entry writes it), no locked instruction.
inline void Count(protocol::TallyEntry* e, uint64_t bytes) {
  if (bytes != 0) e->bytes.store(e->bytes.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  e->count.store(e->count.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// a * b * c, or UINT32_MAX past it (a record's grid and block sizes).
inline uint32_t Saturating(const uint64_t (&v)[3]) {
  uint64_t ab, abc;
  return __builtin_mul_overflow(v[0], v[1], &ab) || __builtin_mul_overflow(ab, v[2], &abc) || abc > UINT32_MAX
             ? UINT32_MAX
             : static_cast<uint32_t>(abc);
}

}  // namespace launch_detail

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
    Pass(LaunchGate& gate, int device) : Pass(gate, gate.channel_.load(std::memory_order_acquire), device) {}
    // With the gate's channel as the caller loaded it (Launch: one load for both).
    Pass(LaunchGate& gate, protocol::Channel* c, int device);
    ~Pass();
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

   private:
    bool plain_ = false;                         // counted with a plain store of 1 (see Pass())
    bool outer_ = false;                         // not within another launch of this thread
    std::atomic<uint32_t>* inflight_ = nullptr;  // the thread slot's counter for the gate passed
  };

  // A launch or copy of `kind` on `stream` and virtual GPU `device` (of kernel
  // `function`, 0 for none, named by `name` the first time; `shape`: what it was):
  // passes the gate (a Pass) and, once the driver took it (Taken), is counted for the
  // broker. Constructed before the driver call, destroyed after it. What a hook wraps
  // around the driver.
  class Launch {
   public:
    Launch(LaunchGate& gate, int device, protocol::RecordKind kind, uint64_t stream, uintptr_t function,
           KernelNameFn name, const LaunchShape& shape);
    Launch(const Launch&) = delete;
    Launch& operator=(const Launch&) = delete;
    // The driver took it: counted in the thread's tally, else recorded in the ring.
    void Taken();

   private:
    LaunchGate& gate_;
    protocol::Channel* channel_;  // null: not attached, nothing is counted
    Pass pass_;                   // after channel_, which it is given
    protocol::TallyEntry* entry_;  // null: a ring record instead, of what follows
    uint64_t bytes_;
    // Set only when entry_ is null with a channel (a ring record): no stores on the hot path.
    int device_;
    protocol::RecordKind kind_;
    uint64_t stream_;
    uint32_t grid_, block_, shared_bytes_;
    uint16_t name_;
  };

  // Launches of virtual GPU `device` between passing its gate and their driver call
  // returning, over all threads.
  uint32_t Inflight(int device) const;

  // Counts a launch or copy on `device` in the calling thread's tally (channel.h), or,
  // when the thread has no tally slot or its slot is full, appends a record to the
  // ring; never blocks (a full ring is counted in the channel's dropped_* summary).
  // Launch is the hooks' way; this is the general one (name slot known).
  void Record(int device, protocol::RecordKind kind, uint64_t stream, uint16_t name, uint32_t grid, uint32_t block,
              uint32_t shared_bytes, uint64_t bytes);

  // `ns` of GPU time spent in a collective on `device`, measured (hooks/nccl), for the
  // broker; nothing while standalone.
  void AddCollectiveTime(int device, uint64_t ns);

  // The name slot (1-based; 0: unknown) of the kernel `function`, asking `get_name`
  // the first time this function is seen. Lock-free after the first sight.
  uint16_t NameSlot(uintptr_t function, KernelNameFn get_name);

  // The CU mask the broker published for virtual GPU `device` (spatial sharing): copies
  // up to `max_words` words (bit i of word i / 32: CU i) into `words` and returns how
  // many; 0: no mask (every CU). For stream creation, not the launch path: it reads
  // again while the broker is writing.
  size_t CuMask(int device, uint32_t* words, size_t max_words) const;

  bool scheduled() const { return scheduled_.load(std::memory_order_relaxed); }
  bool attached() const { return channel_.load(std::memory_order_relaxed) != nullptr; }

  // In-flight launches per virtual GPU are counted in one slot per thread: up to
  // kOwnSlots threads at a time own one each (a thread's slot is freed when it ends);
  // the rest share slot kOwnSlots (with locked instructions there).
  static constexpr uint32_t kOwnSlots = 63;
  // How many threads own an in-flight slot now (diagnostics, tests).
  static uint32_t OwnSlotsInUse();

 private:
  std::atomic<uint32_t>* EnterSlow(protocol::Channel* c, int device);
  std::atomic<uint32_t>* WaitForGrant(protocol::Channel* c, int device, std::atomic<uint32_t>* inflight);
  // Where the calling thread counts this launch (cached in t_launch for the next):
  // its tally entry, or null for a ring record (the kernel's name slot then in
  // t_launch.name).
  protocol::TallyEntry* FindTally(protocol::Channel* c, int device, protocol::RecordKind kind, uint64_t stream,
                                  uintptr_t function, KernelNameFn name);
  void RecordRing(protocol::Channel* c, int device, protocol::RecordKind kind, uint64_t stream, uint16_t name,
                  uint32_t grid, uint32_t block, uint32_t shared_bytes, uint64_t bytes);
  // The calling thread's tally slot in `c` (claimed at its first count in this
  // epoch); null when none is free.
  protocol::TallySlot* ThreadTally(protocol::Channel* c);
  // The entry for these in the calling thread's tally slot, claimed if new; null when
  // the thread has no slot or its slot is full.
  protocol::TallyEntry* ThreadEntry(protocol::Channel* c, int device, protocol::RecordKind kind, uint64_t stream,
                                    uint16_t name);
  void StartDrainThread();
  void DrainLoop();
  void Release(protocol::Channel* c, int device, uint64_t slice);
  void PublishNames(protocol::Channel* c);
  static void ForgetTallies(protocol::Channel* channel);

  std::atomic<protocol::Channel*> channel_{nullptr};
  std::atomic<bool> scheduled_{false};
  std::atomic<uint64_t> epoch_{0};  // of the last Attach (tally slots are claimed per epoch)
  // Whether launches may count themselves in flight with plain stores (the drain
  // thread then orders them with membarrier(2)): once per process.
  static inline std::atomic<bool> asymmetric_{false};
  Hooks hooks_;
  std::atomic<void (*)(int)> drain_{nullptr};  // waits for this process's work on a virtual GPU
  std::once_flag thread_once_;
  std::thread drain_thread_;
  std::atomic<bool> stop_{false};
  uint64_t released_[protocol::kMaxDevices] = {};  // drain thread only
  std::atomic<uint32_t> detach_seq_{0};            // futex word for the drain thread while detached

  struct alignas(64) InflightSlot {
    std::atomic<uint32_t> count[protocol::kMaxDevices] = {};
  };
  static_assert(sizeof(InflightSlot) == 64, "one cache line per thread slot");
  InflightSlot inflight_[kOwnSlots + 1];

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

// ---- The hot path, inline (see the top of this file) ----

inline LaunchGate::Pass::Pass(LaunchGate& gate, protocol::Channel* c, int device) {
  if (c == nullptr || !gate.scheduled_.load(std::memory_order_relaxed) ||
      static_cast<unsigned>(device) >= protocol::kMaxDevices)
    return;
  launch_detail::ThreadLaunch& t = launch_detail::t_launch;
  // Counted before the state is read: the drain thread, reading them the other way
  // round, either sees this launch in flight or this launch sees the revoke. With the
  // asymmetric fence a plain store and a compiler barrier suffice (the drain thread's
  // membarrier orders them); else (EnterSlow) both are sequentially consistent. The
  // thread's own counter goes 0 -> 1 -> 0 outside nested launches: constants stored,
  // never loaded (a launch within one takes the slow path, with locked instructions).
  if (t.in_launch) {  // nested: counted again on top of the outer launch
    inflight_ = gate.EnterSlow(c, device);
    return;
  }
  outer_ = true;
  t.in_launch = true;
  if (t.inflight_slot < kOwnSlots && asymmetric_.load(std::memory_order_relaxed)) {
    std::atomic<uint32_t>* inflight = &gate.inflight_[t.inflight_slot].count[device];
    inflight->store(1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (c->gates[device].state.load(std::memory_order_acquire) != protocol::kGateWait) {
      plain_ = true;
      inflight_ = inflight;
      return;
    }
    inflight->store(0, std::memory_order_release);
  }
  inflight_ = gate.EnterSlow(c, device);
}

inline LaunchGate::Pass::~Pass() {
  if (outer_) launch_detail::t_launch.in_launch = false;
  if (inflight_ == nullptr) return;
  if (plain_)  // this thread alone writes the counter, which was 0 before it
    inflight_->store(0, std::memory_order_release);
  else
    inflight_->fetch_sub(1, std::memory_order_release);
}

inline LaunchGate::Launch::Launch(LaunchGate& gate, int device, protocol::RecordKind kind, uint64_t stream,
                                  uintptr_t function, KernelNameFn name, const LaunchShape& shape)
    : gate_(gate),
      channel_(gate.channel_.load(std::memory_order_acquire)),
      pass_(gate, channel_, device),
      entry_(nullptr),
      bytes_(shape.bytes) {
  if (channel_ == nullptr) return;
  const launch_detail::ThreadLaunch& t = launch_detail::t_launch;
  const uint32_t site = launch_detail::Site(device, kind);
  if (t.epoch == gate.epoch_.load(std::memory_order_acquire) && t.channel == channel_ && t.function == function &&
      t.stream == stream && t.site == site && t.entry != nullptr) {
    entry_ = t.entry;  // as the previous launch
    return;
  }
  entry_ = gate.FindTally(channel_, device, kind, stream, function, name);
  if (entry_ != nullptr) return;
  // No tally room: a ring record, whose shape is formed now.
  device_ = device;
  kind_ = kind;
  stream_ = stream;
  name_ = launch_detail::t_launch.name;
  grid_ = launch_detail::Saturating(shape.grid);
  block_ = launch_detail::Saturating(shape.block);
  shared_bytes_ = static_cast<uint32_t>(std::min<uint64_t>(shape.shared_bytes, UINT32_MAX));
}

inline void LaunchGate::Launch::Taken() {
  if (entry_ != nullptr)
    launch_detail::Count(entry_, bytes_);
  else if (channel_ != nullptr)
    gate_.RecordRing(channel_, device_, kind_, stream_, name_, grid_, block_, shared_bytes_, bytes_);
}

}  // namespace gpushare
