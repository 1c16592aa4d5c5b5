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

using launch_detail::t_launch;

// Own in-flight slots in use (bit i: slot i), over every gate: a thread claims one at
// its first launch and frees it when it ends (its counts are zero then: a thread ends
// outside any launch), so only the threads beyond kOwnSlots alive at once share.
constexpr uint64_t kAllOwnSlots = (uint64_t{1} << LaunchGate::kOwnSlots) - 1;
std::atomic<uint64_t> g_inflight_used{0};

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

// Every Attach starts an epoch: a thread's tally slot belongs to the channel of one.
std::atomic<uint64_t> g_attach_epoch{0};
// The channel attached last (null once its gate detached or went): a thread that ends
// frees its tally slot only there, never in a channel that may be gone.
std::atomic<proto::Channel*> g_tally_channel{nullptr};

// Gives the thread's tally slot and in-flight slot up when the thread ends (armed,
// by touching it, only when it claims one).
struct ThreadExit {
  ~ThreadExit() {
    launch_detail::ThreadLaunch& t = t_launch;
    if (t.slot != nullptr && t.channel == g_tally_channel.load(std::memory_order_acquire))
      t.slot->owner.store(0, std::memory_order_release);
    if (t.inflight_slot < LaunchGate::kOwnSlots)
      g_inflight_used.fetch_and(~(uint64_t{1} << t.inflight_slot), std::memory_order_release);
  }
};
thread_local ThreadExit t_exit;
void ArmThreadExit() { (void)&t_exit; }

// The calling thread's in-flight slot: its own if it has one or one is free, else the
// shared one (asked again at the thread's next slow pass).
uint32_t ClaimInflightSlot() {
  launch_detail::ThreadLaunch& t = t_launch;
  if (t.inflight_slot < LaunchGate::kOwnSlots) return t.inflight_slot;
  uint64_t used = g_inflight_used.load(std::memory_order_relaxed);
  while (used != kAllOwnSlots) {
    const auto bit = static_cast<uint32_t>(__builtin_ctzll(~used));
    if (g_inflight_used.compare_exchange_weak(used, used | (uint64_t{1} << bit), std::memory_order_acq_rel)) {
      ArmThreadExit();
      t.inflight_slot = bit;
      return bit;
    }
  }
  t.inflight_slot = LaunchGate::kOwnSlots;
  return LaunchGate::kOwnSlots;
}

// The entry for `key` and `stream` in the thread's own slot, claimed if new; null if the
// slot is full. Probing starts where the pair hashes (entries are never emptied, so
// the first empty one ends the search). Only the owning thread writes a slot.
proto::TallyEntry* FindEntry(proto::TallySlot* slot, uint64_t key, uint64_t stream) {
  uint32_t i = static_cast<uint32_t>(((key ^ stream) * 0x9E3779B97F4A7C15ull) >> 32) % proto::kTallyEntries;
  for (uint32_t n = 0; n < proto::kTallyEntries; ++n, i = i + 1 == proto::kTallyEntries ? 0 : i + 1) {
    proto::TallyEntry& e = slot->entries[i];
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
  // A forked child has only the forking thread: the parent's other threads' in-flight
  // slots are free here.
  const uint32_t own = t_launch.inflight_slot;
  g_inflight_used.store(own < kOwnSlots ? uint64_t{1} << own : 0, std::memory_order_relaxed);
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

uint32_t LaunchGate::OwnSlotsInUse() {
  return static_cast<uint32_t>(__builtin_popcountll(g_inflight_used.load(std::memory_order_acquire)));
}

uint32_t LaunchGate::Inflight(int device) const {
  uint32_t total = 0;
  for (const InflightSlot& s : inflight_) total += s.count[device].load(std::memory_order_seq_cst);
  return total;
}

std::atomic<uint32_t>* LaunchGate::EnterSlow(proto::Channel* c, int device) {
  // The thread's first launch, a shared slot, a gate closed or no asymmetric fence:
  // sequentially consistent both (a thread's own slot takes locked instructions here
  // too, harmlessly: it is still the only writer).
  std::atomic<uint32_t>* inflight = &inflight_[ClaimInflightSlot()].count[device];
  inflight->fetch_add(1, std::memory_order_seq_cst);
  if (c->gates[device].state.load(std::memory_order_seq_cst) != proto::kGateWait) return inflight;
  inflight->fetch_sub(1, std::memory_order_seq_cst);
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
  if (proto::TallyEntry* e = ThreadEntry(c, device, kind, stream, name))
    launch_detail::Count(e, bytes);
  else
    RecordRing(c, device, kind, stream, name, grid, block, shared_bytes, bytes);
}

proto::TallySlot* LaunchGate::ThreadTally(proto::Channel* c) {
  launch_detail::ThreadLaunch& t = t_launch;
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  if (t.channel == c && t.epoch == epoch) return t.slot;
  // The thread's first count in this channel: claim a slot; nothing cached holds.
  t.epoch = epoch;
  t.channel = c;
  t.slot = nullptr;
  t.function = 0;
  t.site = UINT32_MAX;
  t.entry = nullptr;
  ArmThreadExit();
  for (proto::TallySlot& slot : c->tallies) {
    uint32_t free = 0;
    if (slot.owner.compare_exchange_strong(free, 1, std::memory_order_acq_rel)) {
      t.slot = &slot;
      break;
    }
  }
  return t.slot;
}

proto::TallyEntry* LaunchGate::ThreadEntry(proto::Channel* c, int device, proto::RecordKind kind, uint64_t stream,
                                           uint16_t name) {
  proto::TallySlot* slot = ThreadTally(c);
  if (slot == nullptr || device < 0 || device >= proto::kMaxDevices) return nullptr;
  return FindEntry(slot, proto::TallyKey(static_cast<uint8_t>(device), kind, name), stream);
}

proto::TallyEntry* LaunchGate::FindTally(proto::Channel* c, int device, proto::RecordKind kind, uint64_t stream,
                                         uintptr_t function, KernelNameFn get_name) {
  const uint16_t name = NameSlot(function, get_name);
  proto::TallyEntry* e = ThreadEntry(c, device, kind, stream, name);
  // Cached for the next launch, unless the name may still change (being named by
  // another thread, or unnamed): those look again each time.
  launch_detail::ThreadLaunch& t = t_launch;
  const bool settled = function == 0 || name != 0;
  t.function = function;
  t.stream = stream;
  t.site = launch_detail::Site(device, kind);
  t.name = name;
  t.entry = settled ? e : nullptr;
  return e;
}

void LaunchGate::RecordRing(proto::Channel* c, int device, proto::RecordKind kind, uint64_t stream, uint16_t name,
                            uint32_t grid, uint32_t block, uint32_t shared_bytes, uint64_t bytes) {
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

uint16_t LaunchGate::NameSlot(uintptr_t function, KernelNameFn get_name) {
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
  std::call_once(fence_once, [] { asymmetric_.store(RegisterAsymmetricFence()); });
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
  if (asymmetric_.load(std::memory_order_relaxed)) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
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
