// Launch gates, records and the drain thread (see launch_gate.h).
#include "launch_gate.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "common/base/futex.h"
#include "log.h"

namespace gpushare {
namespace {

namespace proto = gpushare::protocol;

constexpr uint64_t kWantResendNs = 100'000'000;  // a waiting launch re-asks this often
constexpr uint64_t kDrainPollNs = 50'000'000;    // the drain thread checks the broker this often
constexpr uint64_t kInflightWaitNs = 200'000'000;

// The calling thread's in-flight slot, fixed at its first launch: the process's first
// threads each own one (only they write it); later threads share the last slot.
std::atomic<uint32_t> g_next_slot{0};
__attribute__((tls_model("initial-exec"))) thread_local uint32_t t_slot = UINT32_MAX;

uint32_t ThreadSlot(size_t slots) {
  if (t_slot == UINT32_MAX) t_slot = g_next_slot.fetch_add(1, std::memory_order_relaxed);
  return std::min<uint32_t>(t_slot, static_cast<uint32_t>(slots - 1));
}

// Whether launches may count themselves in flight with plain stores: the drain thread
// then makes them visible with membarrier(2) before it reads the counts (the revoke
// is the rare side). Not under ThreadSanitizer, which does not know membarrier.
bool RegisterAsymmetricFence() {
#if defined(__SANITIZE_THREAD__)
  return false;
#else
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
#endif
}
std::atomic<bool> g_asymmetric{false};

// Every Attach starts an epoch: a thread's tally slot belongs to the channel of one.
std::atomic<uint64_t> g_attach_epoch{0};
// The channel attached last (null once its gate detached or went): a thread that ends
// frees its tally slot only there, never in a channel that may be gone.
std::atomic<proto::Channel*> g_tally_channel{nullptr};

// The calling thread's tally slot: claimed at its first launch in an epoch. Plain
// initial-exec TLS, read on every launch without a TLS wrapper call.
struct ThreadTally {
  uint64_t epoch;
  proto::Channel* channel;
  proto::TallySlot* slot;   // null: none was free (its launches go to the ring)
  proto::TallyEntry* last;  // the previous launch's entry
};
__attribute__((tls_model("initial-exec"))) thread_local ThreadTally t_tally = {0, nullptr, nullptr, nullptr};

// Gives the thread's slot up when the thread ends (touched only when a slot is claimed).
struct TallyRelease {
  ~TallyRelease() {
    if (t_tally.slot != nullptr && t_tally.channel == g_tally_channel.load(std::memory_order_acquire))
      t_tally.slot->owner.store(0, std::memory_order_release);
  }
};
thread_local TallyRelease t_tally_release;

// The entry for `key` and `stream` in the thread's own slot, claimed if new; null if the
// slot is full. Only the owning thread writes a slot, so nothing here is contended.
proto::TallyEntry* FindEntry(proto::TallySlot* slot, uint64_t key, uint64_t stream) {
  for (proto::TallyEntry& e : slot->entries) {
    const uint64_t k = e.key.load(std::memory_order_relaxed);
    if (k == key && e.stream.load(std::memory_order_relaxed) == stream) return &e;
    if (k != 0) continue;
    e.stream.store(stream, std::memory_order_relaxed);
    e.key.store(key, std::memory_order_release);  // before the count first moves
    return &e;
  }
  return nullptr;
}

}  // namespace

LaunchGate::~LaunchGate() {
  ForgetTallies(channel_.load());
  stop_.store(true);
  detach_seq_.fetch_add(1);
  FutexWakeAll(&detach_seq_);
  if (proto::Channel* c = channel_.load()) {
    c->client_wake.fetch_add(1);
    FutexWakeAll(&c->client_wake);
  }
  if (drain_thread_.joinable()) drain_thread_.join();
}

void LaunchGate::SetHooks(Hooks hooks) { hooks_ = std::move(hooks); }

void LaunchGate::SetDrain(void (*drain)(int device)) { drain_.store(drain, std::memory_order_release); }

void LaunchGate::Forget() {
  scheduled_.store(false, std::memory_order_relaxed);
  ForgetTallies(channel_.exchange(nullptr, std::memory_order_acq_rel));
}

void LaunchGate::ForgetTallies(proto::Channel* channel) {
  proto::Channel* expected = channel;
  if (channel != nullptr) g_tally_channel.compare_exchange_strong(expected, nullptr);
}

void LaunchGate::Attach(proto::Channel* channel, bool scheduled) {
  if (channel != nullptr) PublishNames(channel);
  epoch_.store(g_attach_epoch.fetch_add(1) + 1, std::memory_order_release);
  g_tally_channel.store(channel, std::memory_order_release);
  scheduled_.store(scheduled && channel != nullptr, std::memory_order_relaxed);
  channel_.store(channel, std::memory_order_release);
  detach_seq_.fetch_add(1);
  FutexWakeAll(&detach_seq_);
  StartDrainThread();
}

void LaunchGate::Detach() {
  proto::Channel* c = channel_.exchange(nullptr, std::memory_order_acq_rel);
  scheduled_.store(false, std::memory_order_relaxed);
  if (c == nullptr) return;
  ForgetTallies(c);
  // The broker is gone: open its gates ourselves so no launch waits for it.
  for (proto::Gate& g : c->gates) {
    g.grant_seq.fetch_add(1, std::memory_order_seq_cst);  // odd while changing, as the broker does
    g.state.store(proto::kGateFree, std::memory_order_seq_cst);
    g.grant_seq.fetch_add(1, std::memory_order_seq_cst);
    FutexWakeAll(&g.grant_seq);
  }
}

LaunchGate::Pass::Pass(LaunchGate& gate, int device) : inflight_(gate.Enter(device, &plain_)) {}

LaunchGate::Pass::~Pass() {
  if (inflight_ == nullptr) return;
  if (plain_)  // this thread alone writes the counter
    inflight_->store(inflight_->load(std::memory_order_relaxed) - 1, std::memory_order_release);
  else
    inflight_->fetch_sub(1, std::memory_order_release);
}

uint32_t LaunchGate::Inflight(int device) const {
  uint32_t total = 0;
  for (const InflightSlot& s : inflight_) total += s.count[device].load(std::memory_order_seq_cst);
  return total;
}

std::atomic<uint32_t>* LaunchGate::Enter(int device, bool* plain) {
  *plain = false;
  proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c == nullptr || !scheduled_.load(std::memory_order_relaxed) || device < 0 || device >= proto::kMaxDevices)
    return nullptr;
  proto::Gate& g = c->gates[device];
  const uint32_t slot = ThreadSlot(kInflightSlots);
  std::atomic<uint32_t>* inflight = &inflight_[slot].count[device];
  // Counted before the state is read: the drain thread, reading them the other way
  // round, either sees this launch in flight or this launch sees the revoke. With the
  // asymmetric fence a plain store and a compiler barrier suffice (the drain thread's
  // membarrier orders them); else both are sequentially consistent.
  if (slot + 1 < kInflightSlots && g_asymmetric.load(std::memory_order_relaxed)) {
    const uint32_t n = inflight->load(std::memory_order_relaxed);
    inflight->store(n + 1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (g.state.load(std::memory_order_acquire) != proto::kGateWait) {
      *plain = true;
      return inflight;
    }
    inflight->store(n, std::memory_order_release);
  } else {
    inflight->fetch_add(1, std::memory_order_seq_cst);
    if (g.state.load(std::memory_order_seq_cst) != proto::kGateWait) return inflight;
    inflight->fetch_sub(1, std::memory_order_seq_cst);
  }
  return WaitForGrant(c, device, inflight);
}

std::atomic<uint32_t>* LaunchGate::WaitForGrant(proto::Channel* c, int device, std::atomic<uint32_t>* inflight) {
  proto::Gate& g = c->gates[device];
  const uint64_t start = MonotonicNs();
  g.waiting.fetch_add(1, std::memory_order_relaxed);
  uint64_t asked_at = 0;
  std::atomic<uint32_t>* passed = nullptr;
  for (;;) {
    const uint32_t seq = g.grant_seq.load(std::memory_order_acquire);
    inflight->fetch_add(1, std::memory_order_seq_cst);
    if (g.state.load(std::memory_order_seq_cst) != proto::kGateWait) {
      passed = inflight;
      break;
    }
    inflight->fetch_sub(1, std::memory_order_seq_cst);
    if (channel_.load(std::memory_order_acquire) != c) break;  // detached or a new broker: go on
    const uint64_t now = MonotonicNs();
    if (now - asked_at >= kWantResendNs) {
      asked_at = now;
      proto::Sched want{static_cast<uint32_t>(device), static_cast<uint32_t>(proto::SchedEvent::kWant), 0, 0};
      if (hooks_.send && !hooks_.send(want)) {
        Detach();
        break;
      }
    }
    FutexWait(&g.grant_seq, seq, kWantResendNs);
  }
  g.waiting.fetch_sub(1, std::memory_order_relaxed);
  g.waited_ns.fetch_add(MonotonicNs() - start, std::memory_order_relaxed);
  return passed;
}

void LaunchGate::AddCollectiveTime(int device, uint64_t ns) {
  proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c == nullptr || device < 0 || device >= proto::kMaxDevices) return;
  c->collective_ns[device].fetch_add(ns, std::memory_order_relaxed);
  c->collectives.fetch_add(1, std::memory_order_relaxed);
}

void LaunchGate::Record(int device, proto::RecordKind kind, uint64_t stream, uint16_t name, uint32_t grid,
                        uint32_t block, uint32_t shared_bytes, uint64_t bytes) {
  proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c == nullptr) return;
  if (Tally(c, device, kind, stream, name, bytes)) return;
  uint64_t pos = c->ring_head.load(std::memory_order_relaxed);
  do {
    if (pos - c->ring_tail.load(std::memory_order_acquire) >= proto::kRingRecords) {
      // Full: summarized, not lost silently.
      c->dropped_records.fetch_add(1, std::memory_order_relaxed);
      if (proto::IsCopy(kind)) {
        c->dropped_copies.fetch_add(1, std::memory_order_relaxed);
        c->dropped_bytes.fetch_add(bytes, std::memory_order_relaxed);
      }
      return;
    }
  } while (!c->ring_head.compare_exchange_weak(pos, pos + 1, std::memory_order_acq_rel, std::memory_order_relaxed));
  proto::LaunchRecord& r = c->ring[pos % proto::kRingRecords];
  r.stream = stream;
  r.submit_ns = 0;  // not stamped: the broker times records by its own clock
  r.bytes = bytes;
  r.grid = grid;
  r.block = block;
  r.shared_bytes = shared_bytes;
  r.name = name;
  r.device = static_cast<uint8_t>(device);
  r.kind = static_cast<uint8_t>(kind);
  r.seq.store(pos + 1, std::memory_order_release);
}

bool LaunchGate::Tally(proto::Channel* c, int device, proto::RecordKind kind, uint64_t stream, uint16_t name,
                       uint64_t bytes) {
  ThreadTally& t = t_tally;
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  if (t.channel != c || t.epoch != epoch) {  // first launch of this thread in this channel: claim a slot
    t = ThreadTally{epoch, c, nullptr, nullptr};
    (void)&t_tally_release;  // registers the release at thread exit
    for (proto::TallySlot& slot : c->tallies) {
      uint32_t free = 0;
      if (slot.owner.compare_exchange_strong(free, 1, std::memory_order_acq_rel)) {
        t.slot = &slot;
        break;
      }
    }
  }
  if (t.slot == nullptr || device < 0 || device >= proto::kMaxDevices) return false;
  const uint64_t key = proto::TallyKey(static_cast<uint8_t>(device), kind, name);
  proto::TallyEntry* e = t.last;
  if (e == nullptr || e->key.load(std::memory_order_relaxed) != key ||
      e->stream.load(std::memory_order_relaxed) != stream) {
    e = FindEntry(t.slot, key, stream);
    if (e == nullptr) return false;
    t.last = e;
  }
  // A load and a store each (this thread is the only writer): no locked instruction.
  e->bytes.store(e->bytes.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  e->count.store(e->count.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  return true;
}

uint16_t LaunchGate::NameSlot(uintptr_t function, std::string (*get_name)(uintptr_t function)) {
  if (function == 0) return 0;
  size_t h = (function >> 4) * 0x9E3779B97F4A7C15ull >> 52;  // 12 bits: kFunctionTable
  for (size_t probe = 0; probe < 16; ++probe, h = (h + 1) & (kFunctionTable - 1)) {
    FunctionEntry& e = functions_[h];
    uintptr_t key = e.function.load(std::memory_order_acquire);
    if (key == function) return e.slot.load(std::memory_order_acquire);  // 0 while being named
    if (key != 0) continue;
    if (!e.function.compare_exchange_strong(key, function, std::memory_order_acq_rel)) {
      if (key == function) return e.slot.load(std::memory_order_acquire);
      continue;
    }
    // First sight: name it once.
    const uint32_t index = name_count_.fetch_add(1, std::memory_order_relaxed);
    if (index >= proto::kNameSlots) return 0;  // more kernels than slots: the rest go unnamed
    const std::string name = get_name(function);
    std::strncpy(names_[index], name.c_str(), proto::kNameBytes - 1);
    name_ready_[index].store(1, std::memory_order_release);
    if (proto::Channel* c = channel_.load(std::memory_order_acquire)) {
      std::memcpy(c->names[index].text, names_[index], proto::kNameBytes);
      c->names[index].ready.store(1, std::memory_order_release);
      c->name_count.store(std::min<uint32_t>(name_count_.load(), proto::kNameSlots), std::memory_order_relaxed);
    }
    const uint16_t slot = static_cast<uint16_t>(index + 1);
    e.slot.store(slot, std::memory_order_release);
    return slot;
  }
  return 0;  // the table is crowded here: unnamed
}

void LaunchGate::PublishNames(proto::Channel* c) {
  const uint32_t count = std::min<uint32_t>(name_count_.load(std::memory_order_acquire), proto::kNameSlots);
  for (uint32_t i = 0; i < count; ++i) {
    if (name_ready_[i].load(std::memory_order_acquire) != 1) continue;
    std::memcpy(c->names[i].text, names_[i], proto::kNameBytes);
    c->names[i].ready.store(1, std::memory_order_release);
  }
  c->name_count.store(count, std::memory_order_relaxed);
}

size_t LaunchGate::CuMask(int device, uint32_t* words, size_t max_words) const {
  proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c == nullptr || device < 0 || device >= proto::kMaxDevices) return 0;
  const proto::CuMaskSlot& m = c->cu_masks[device];
  // Sequence lock: an odd or changed seq means the broker wrote meanwhile. It writes
  // rarely (a class change), so a few tries suffice; past them, no mask.
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint32_t before = m.seq.load(std::memory_order_acquire);
    if ((before & 1) != 0) {
      sched_yield();
      continue;
    }
    const size_t count = std::min<size_t>(m.count.load(std::memory_order_relaxed), proto::kCuMaskWords);
    const size_t n = std::min(count, max_words);
    for (size_t i = 0; i < n; ++i) words[i] = m.words[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (m.seq.load(std::memory_order_relaxed) == before) return n;
  }
  return 0;
}

void LaunchGate::StartDrainThread() {
  static std::once_flag fence_once;
  std::call_once(fence_once, [] { g_asymmetric.store(RegisterAsymmetricFence()); });
  std::call_once(thread_once_, [this] {
    // Signals stay with the application's threads.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    drain_thread_ = std::thread([this] { DrainLoop(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  });
}

void LaunchGate::DrainLoop() {
  pthread_setname_np(pthread_self(), "gpushare-drain");
  proto::Channel* seen = nullptr;
  while (!stop_.load()) {
    proto::Channel* c = channel_.load(std::memory_order_acquire);
    if (c != seen) {  // a new broker's grants start afresh
      std::memset(released_, 0, sizeof released_);
      seen = c;
    }
    if (c == nullptr) {
      const uint32_t seq = detach_seq_.load();
      if (hooks_.reconnect) hooks_.reconnect();
      if (channel_.load(std::memory_order_acquire) == nullptr) FutexWait(&detach_seq_, seq, kDrainPollNs * 10);
      continue;
    }
    const uint32_t wake = c->client_wake.load(std::memory_order_acquire);
    for (int d = 0; d < proto::kMaxDevices; ++d) {
      proto::Gate& g = c->gates[d];
      // State and slice as one pair: grant_seq is odd while the broker changes them.
      const uint32_t before = g.grant_seq.load(std::memory_order_seq_cst);
      const uint32_t state = g.state.load(std::memory_order_seq_cst);
      const uint64_t slice = g.slice.load(std::memory_order_seq_cst);
      if ((before & 1) != 0 || g.grant_seq.load(std::memory_order_seq_cst) != before) continue;  // next round
      if (state == proto::kGateWait && slice != 0 && slice != released_[d]) Release(c, d, slice);
    }
    if (hooks_.broker_alive && !hooks_.broker_alive()) {
      Detach();
      continue;
    }
    if (hooks_.tend) hooks_.tend();
    FutexWait(&c->client_wake, wake, kDrainPollNs);
  }
}

void LaunchGate::Release(proto::Channel* c, int device, uint64_t slice) {
  proto::Gate& g = c->gates[device];
  // Launches that passed the gate before the revoke reach the driver first.
  const uint64_t start = MonotonicNs();
  // Launches counted with plain stores become visible (or see the revoke) first.
  if (g_asymmetric.load(std::memory_order_relaxed)) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
  while (Inflight(device) != 0 && MonotonicNs() - start < kInflightWaitNs) sched_yield();
  if (auto drain = drain_.load(std::memory_order_acquire)) drain(device);
  const uint64_t drained = MonotonicNs();
  released_[device] = slice;
  g.drained_ns.store(drained, std::memory_order_relaxed);
  g.released_slice.store(slice, std::memory_order_release);
  proto::Sched done{static_cast<uint32_t>(device), static_cast<uint32_t>(proto::SchedEvent::kReleased), slice, drained};
  if (hooks_.send && !hooks_.send(done)) Detach();
}

}  // namespace gpushare
