// Shared node state: segment lifecycle, slot registry with dead-process reclaim,
// capacity ledger, engine time-slicing (futex hand-off) and utilization history.
#include "node.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <new>
#include <optional>
#include <thread>

namespace simgpu {
namespace bip = boost::interprocess;

namespace {

uint64_t ClockNs(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t RealtimeNs() { return ClockNs(CLOCK_REALTIME); }

// Start time of a process in clock ticks since boot (/proc/PID/stat field 22), used
// with the pid to tell a live process from a later one that reused its pid. 0: the
// process is gone (or a zombie); nullopt: cannot tell (the file cannot be opened for
// another reason, such as EMFILE in a process out of descriptors), which callers must
// read as "alive": taking a live process for dead frees memory it still holds.
std::optional<uint64_t> ProcessStartTicks(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ESRCH) return 0;
    return std::nullopt;
  }
  char buf[1024];
  ssize_t n;
  do {
    n = read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  const int read_errno = errno;
  close(fd);
  if (n < 0) return read_errno == ESRCH ? std::optional<uint64_t>(0) : std::nullopt;  // ESRCH: exited meanwhile
  buf[n] = '\0';
  const char* close_paren = std::strrchr(buf, ')');  // the command name may contain spaces
  if (close_paren == nullptr || close_paren[1] == '\0') return std::nullopt;
  const char* p = close_paren + 2;
  // A zombie has exited: a real driver has freed what it held when its files closed,
  // before the parent reaps it. 0 here makes it dead to SlotAlive.
  if (*p == 'Z' || *p == 'X') return 0;
  for (int field = 3; field < 22 && *p; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return std::nullopt;
    ++p;
  }
  return std::strtoull(p, nullptr, 10);
}

// Subtracts at most what the counter holds: a counter that would go below zero stays
// at zero instead of wrapping to 16 EiB (a device that looks full forever).
uint64_t SaturatingSub(std::atomic<uint64_t>& counter, uint64_t bytes) {
  uint64_t cur = counter.load();
  while (!counter.compare_exchange_weak(cur, cur - std::min(cur, bytes))) {
  }
  return std::min(cur, bytes);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, uint64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000ull), static_cast<long>(timeout_ns % 1000000000ull)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

std::string DefaultSegmentName(const NodeConfig& config) {
  size_t h = std::hash<std::string>{}(ConfigFingerprint(config));
  char buf[96];
  std::snprintf(buf, sizeof buf, "simgpu-u%u-v%u-%016zx", static_cast<unsigned>(getuid()), kLayoutVersion, h);
  return buf;
}

}  // namespace

uint64_t MonotonicNs() { return ClockNs(CLOCK_MONOTONIC); }

std::unique_ptr<Node> Node::Attach(const NodeConfig& config, const std::string& name, bool claim_slot,
                                   std::string* error) {
  std::unique_ptr<Node> node(new Node());
  node->name_ = name.empty() ? DefaultSegmentName(config) : name;
  const size_t size = sizeof(NodeSegment);
  bool created = false;
  try {
    try {
      bip::shared_memory_object shm(bip::create_only, node->name_.c_str(), bip::read_write);
      shm.truncate(static_cast<bip::offset_t>(size));
      created = true;
    } catch (const bip::interprocess_exception&) {
      // Exists already: another process of this node created it.
    }
    bip::shared_memory_object shm(bip::open_only, node->name_.c_str(), bip::read_write);
    bip::mapped_region region(shm, bip::read_write, 0, size);
    // Keep the mapping beyond the region object's life: move it into a heap holder.
    auto* holder = new bip::mapped_region(std::move(region));
    node->mapping_ = holder;
    node->seg_ = static_cast<NodeSegment*>(holder->get_address());
  } catch (const bip::interprocess_exception& e) {
    *error = "cannot open shared segment /dev/shm/" + node->name_ + ": " + e.what();
    return nullptr;
  }
  NodeSegment* seg = node->seg_;
  if (created) {
    new (seg) NodeSegment();
    seg->layout_version = kLayoutVersion;
    seg->gpu_count = static_cast<uint32_t>(config.gpus.size());
    seg->timeslice_us = config.timeslice_us;
    for (size_t i = 0; i < config.gpus.size(); ++i) seg->gpus[i].capacity_bytes = config.gpus[i].memory_bytes;
    seg->ready.store(1, std::memory_order_release);
  } else {
    for (int i = 0; i < 2000 && seg->ready.load(std::memory_order_acquire) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (seg->ready.load(std::memory_order_acquire) == 0) {
      *error = "shared segment /dev/shm/" + node->name_ + " was never initialized (creator died?); remove it";
      return nullptr;
    }
    bool same = seg->layout_version == kLayoutVersion && seg->gpu_count == config.gpus.size() &&
                seg->timeslice_us == config.timeslice_us;
    for (size_t i = 0; same && i < config.gpus.size(); ++i)
      same = seg->gpus[i].capacity_bytes == config.gpus[i].memory_bytes;
    if (!same) {
      *error = "shared segment /dev/shm/" + node->name_ +
               " belongs to a node with another config or simgpu version; use another SIMGPU_NODE or remove it";
      return nullptr;
    }
  }
  if (claim_slot && !node->ClaimSlot(error)) return nullptr;
  return node;
}

Node::~Node() {
  Detach();
  delete static_cast<bip::mapped_region*>(mapping_);
}

void Node::Detach() {
  if (slot_ < 0) return;
  if (seg_->slots[slot_].pid.load() != getpid()) {  // a forked child: the slot is its parent's
    slot_ = -1;
    return;
  }
  for (int g = 0; g < gpu_count(); ++g) ReleaseEngine(g);
  ReleaseSlot(slot_);
  slot_ = -1;
}

bool Node::SlotAlive(int slot) const {
  const Slot& s = seg_->slots[slot];
  int pid = s.pid.load();
  if (pid <= 0) return pid < 0;  // a claim in progress counts as alive
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  uint64_t ticks = s.start_ticks.load();
  if (ticks == 0) return true;
  std::optional<uint64_t> now = ProcessStartTicks(pid);
  return !now || *now == ticks;  // a check that cannot be made is "alive", never "dead"
}

bool Node::ClaimSlot(std::string* error) {
  ReclaimDead();
  const int pid = getpid();
  for (int i = 0; i < kMaxSlots; ++i) {
    Slot& s = seg_->slots[i];
    int32_t expected = 0;
    if (!s.pid.compare_exchange_strong(expected, -1)) continue;
    s.start_ticks.store(ProcessStartTicks(pid).value_or(0));  // 0: not known, the pid alone is checked
    for (auto& g : s.gpu) {
      g.used_bytes.store(0);
      g.sm_busy_ns.store(0);
      g.mem_busy_ns.store(0);
      g.sample_next.store(0);
      for (auto& smp : g.samples) smp.time_ns.store(0);
    }
    s.pid.store(pid);
    slot_ = i;
    return true;
  }
  *error = "all " + std::to_string(kMaxSlots) + " process slots of the simulated node are in use";
  return false;
}

// Gives back everything the slot held. The caller owns the slot (it is the slot's
// process, or won the CAS that marked a dead slot -1).
void Node::ReleaseSlot(int slot) {
  Slot& s = seg_->slots[slot];
  for (int g = 0; g < gpu_count(); ++g) {
    uint64_t held = s.gpu[g].used_bytes.exchange(0);
    if (held) SaturatingSub(seg_->gpus[g].used_bytes, held);
    Engine& e = seg_->gpus[g].engine;
    e.waiting[slot / 64].fetch_and(~(1ull << (slot % 64)));
    uint64_t state = e.state.load();
    while (EngineState::Owner(state) == static_cast<uint32_t>(slot + 1)) {
      if (e.state.compare_exchange_weak(state, EngineState::Pack(0, MonotonicNs()))) {
        Wake(e);
        break;
      }
    }
    for (MaskedQueue& q : seg_->gpus[g].masked) {
      if (q.slot.load() != slot + 1) continue;
      q.state.store(MaskedQueue::kIdle);
      q.slot.store(0);
    }
    if (EngineState::Owner(e.state.load()) == kMaskedOwner) LeaveMaskedMode(g);
  }
  s.start_ticks.store(0);
  s.pid.store(0);
}

void Node::ReclaimDead() {
  for (int i = 0; i < kMaxSlots; ++i) {
    Slot& s = seg_->slots[i];
    int32_t pid = s.pid.load();
    if (pid <= 0 || i == slot_ || SlotAlive(i)) continue;
    if (s.pid.compare_exchange_strong(pid, -1)) ReleaseSlot(i);
  }
}

bool Node::TryCharge(int gpu, uint64_t bytes) {
  GpuShared& g = seg_->gpus[gpu];
  for (int attempt = 0; attempt < 2; ++attempt) {
    uint64_t used = g.used_bytes.load();
    while (used <= g.capacity_bytes && bytes <= g.capacity_bytes - used) {
      if (g.used_bytes.compare_exchange_weak(used, used + bytes)) {
        if (slot_ >= 0) seg_->slots[slot_].gpu[gpu].used_bytes.fetch_add(bytes);
        return true;
      }
    }
    ReclaimDead();  // the room may be held by processes that died
  }
  return false;
}

void Node::Uncharge(int gpu, uint64_t bytes) {
  // What the slot holds bounds what returns to the GPU: if the slot was reclaimed
  // (its holdings already returned), freeing later returns nothing twice.
  if (slot_ >= 0) {
    if (seg_->slots[slot_].pid.load() != getpid()) return;  // reclaimed, maybe reused by another process
    bytes = SaturatingSub(seg_->slots[slot_].gpu[gpu].used_bytes, bytes);
  }
  SaturatingSub(seg_->gpus[gpu].used_bytes, bytes);
}

uint64_t Node::Used(int gpu) {
  ReclaimDead();
  return seg_->gpus[gpu].used_bytes.load();
}

std::vector<Node::ProcessUsage> Node::Processes(int gpu) {
  ReclaimDead();
  std::vector<ProcessUsage> out;
  for (const Slot& s : seg_->slots) {
    int pid = s.pid.load();
    if (pid <= 0) continue;
    const SlotGpu& g = s.gpu[gpu];
    if (g.used_bytes.load() == 0 && g.sm_busy_ns.load() == 0) continue;
    out.push_back({pid, g.used_bytes.load()});
  }
  return out;
}

std::vector<Node::ProcessCounters> Node::Attached(int gpu) {
  ReclaimDead();
  std::vector<ProcessCounters> out;
  for (const Slot& s : seg_->slots) {
    int pid = s.pid.load();
    if (pid <= 0) continue;
    const SlotGpu& g = s.gpu[gpu];
    out.push_back({pid, g.used_bytes.load(), g.sm_busy_ns.load(), g.mem_busy_ns.load()});
  }
  return out;
}

namespace {

// "cuMemAlloc" names cuMemAlloc and every cuMemAlloc_vN; an ABI symbol names itself.
bool FaultNameMatches(const char* armed, const char* name) {
  const size_t n = std::strlen(armed);
  if (std::strncmp(armed, name, n) != 0) return false;
  const char* rest = name + n;
  if (*rest == '\0') return true;
  if (rest[0] != '_' || rest[1] != 'v' || rest[2] == '\0') return false;
  for (const char* c = rest + 2; *c; ++c)
    if (*c < '0' || *c > '9') return false;
  return true;
}

}  // namespace

bool Node::ArmFault(FaultKind kind, const std::string& name, int gpu, int error, int count, int pid) {
  for (Fault& f : seg_->faults) {
    uint32_t expected = Fault::kFree;
    if (!f.state.compare_exchange_strong(expected, Fault::kWriting)) continue;
    f.kind = kind;
    f.pid = pid;
    f.gpu = gpu;
    f.error = error;
    std::snprintf(f.name, sizeof f.name, "%s", name.c_str());
    f.remaining.store(count);
    f.state.store(Fault::kArmed);
    seg_->faults_armed.fetch_add(1);
    return true;
  }
  return false;
}

int Node::ClearFaults() {
  int cleared = 0;
  for (Fault& f : seg_->faults) {
    uint32_t armed = Fault::kArmed;
    if (f.state.compare_exchange_strong(armed, Fault::kFree)) {
      seg_->faults_armed.fetch_sub(1);
      ++cleared;
    }
  }
  return cleared;
}

bool Node::TakeFault(FaultKind kind, const char* name, int gpu, int* error) {
  const int self = getpid();  // not cached: a forked child is another process
  for (Fault& f : seg_->faults) {
    if (f.state.load() != Fault::kArmed || f.kind != kind) continue;
    if ((f.pid != 0 && f.pid != self) || (f.gpu >= 0 && f.gpu != gpu)) continue;
    if (kind != FaultKind::kAllocation && (name == nullptr || !FaultNameMatches(f.name, name))) continue;
    int32_t left = f.remaining.load();
    while (left > 0 && !f.remaining.compare_exchange_weak(left, left - 1)) {
    }
    if (left == 0) continue;  // spent by another caller
    if (left == 1) {          // that was the last firing
      uint32_t armed = Fault::kArmed;
      if (f.state.compare_exchange_strong(armed, Fault::kFree)) seg_->faults_armed.fetch_sub(1);
    }
    seg_->fault_hits.fetch_add(1);
    *error = f.error;
    return true;
  }
  return false;
}

void Node::Wake(Engine& e) {
  e.wake_seq.fetch_add(1);
  FutexWakeAll(&e.wake_seq);
}

int Node::NextWaiter(int gpu, int after) const {
  const Engine& e = seg_->gpus[gpu].engine;
  for (int k = 1; k <= kMaxSlots; ++k) {
    int i = (after + k) % kMaxSlots;
    if (i != after && (e.waiting[i / 64].load() >> (i % 64) & 1)) return i;
  }
  return -1;
}

uint64_t Node::AcquireEngine(int gpu) {
  Engine& e = seg_->gpus[gpu].engine;
  const uint32_t me = static_cast<uint32_t>(slot_ + 1);
  const uint64_t bit = 1ull << (slot_ % 64);
  const uint64_t slice_ns = uint64_t{seg_->timeslice_us} * 1000;
  const uint64_t since = MonotonicNs();
  uint64_t slice_end = 0;
  e.waiting[slot_ / 64].fetch_or(bit);
  for (;;) {
    uint32_t seq = e.wake_seq.load();
    uint64_t state = e.state.load();
    const uint32_t owner = EngineState::Owner(state);
    uint64_t now = MonotonicNs();
    if (owner == me) {  // handed to us; masked queues still running stop at their next slice end
      if (AnyMasked(gpu, MaskedQueue::kRunning, -1, nullptr)) {
        FutexWait(&e.wake_seq, seq, 200000);
        continue;
      }
      // Our slice starts now, from the state we were handed: a waiter that judged
      // that state late and took it first makes this fail, and we wait again.
      slice_end = now + slice_ns;
      if (e.state.compare_exchange_strong(state, EngineState::Pack(me, slice_end))) break;
      continue;
    }
    if (owner == 0) {
      e.state.compare_exchange_strong(state, EngineState::Pack(me, now + slice_ns));
      continue;  // masked queues that raced in are waited for above
    }
    if (owner == kMaskedOwner) {
      // Masked mode ends when its turn is over (or nobody waits to join it) and no queue
      // runs any more; the engine then goes to an exclusive waiter, which we are.
      const uint64_t turn_end = e.masked_turn_end_ns.load();
      if (!AnyMasked(gpu, MaskedQueue::kRunning, -1, nullptr) &&
          (now >= turn_end || !AnyMasked(gpu, MaskedQueue::kWaiting, -1, nullptr)))
        LeaveMaskedMode(gpu);
      else
        FutexWait(&e.wake_seq, seq, turn_end > now ? std::min(turn_end - now + 100000, slice_ns) : slice_ns);
      if (now - since > 20 * slice_ns) ReclaimDead();  // a killed process may still look like it runs
      continue;
    }
    const uint64_t end = EngineState::SliceEndNs(state);
    // A real GPU time-slices between contexts whatever their processes do: an owner a
    // slice past its slice's end (stopped, descheduled, killed) loses the engine to
    // the next waiter, as its own ContinueOrYield would have handed it on.
    if (now > end + slice_ns) {
      Preempt(gpu, state, now);
      continue;
    }
    uint64_t wait_ns = end > now ? end - now + 200000 : slice_ns;
    FutexWait(&e.wake_seq, seq, std::min<uint64_t>(wait_ns, 50000000));
  }
  e.waiting[slot_ / 64].fetch_and(~bit);
  e.last_exclusive.store(me);
  return slice_end;  // not later than the end in the state: others judge lateness by that one
}

bool Node::HandOn(int gpu, uint64_t from, uint64_t now) {
  Engine& e = seg_->gpus[gpu].engine;
  const uint64_t slice_ns = uint64_t{seg_->timeslice_us} * 1000;
  if (AnyMasked(gpu, MaskedQueue::kWaiting, -1, nullptr)) {  // masked queues' turn
    e.masked_turn_end_ns.store(now + slice_ns);
    const bool moved = e.state.compare_exchange_strong(from, EngineState::Pack(kMaskedOwner, now));
    Wake(e);
    return moved;
  }
  const int next = NextWaiter(gpu, static_cast<int>(EngineState::Owner(from)) - 1);
  // The next owner gets a fresh slice end with the engine: it must not find its
  // predecessor's, long past, and be preempted before it starts.
  const uint64_t to =
      next >= 0 ? EngineState::Pack(static_cast<uint32_t>(next + 1), now + slice_ns) : EngineState::Pack(0, now);
  const bool moved = e.state.compare_exchange_strong(from, to);
  Wake(e);
  return moved;
}

void Node::Preempt(int gpu, uint64_t state, uint64_t now) {
  Engine& e = seg_->gpus[gpu].engine;
  // Only if nothing moved meanwhile (HandOn's exchange checks it again, atomically):
  // the owner may have yielded or renewed its slice.
  if (e.state.load() != state) return;
  HandOn(gpu, state, now);
}

bool Node::ContinueOrYield(int gpu, uint64_t* slice_end_ns) {
  Engine& e = seg_->gpus[gpu].engine;
  const uint32_t me = static_cast<uint32_t>(slot_ + 1);
  const uint64_t now = MonotonicNs();
  const uint64_t slice_ns = uint64_t{seg_->timeslice_us} * 1000;
  uint64_t state = e.state.load();
  if (EngineState::Owner(state) != me) return false;  // preempted while it was late: acquire again
  if (AnyMasked(gpu, MaskedQueue::kWaiting, -1, nullptr) || NextWaiter(gpu, slot_) >= 0) {
    HandOn(gpu, state, now);  // direct hand-off, round robin
    return false;
  }
  // Renewed only if nobody preempted it since the load above: one exchange decides.
  if (!e.state.compare_exchange_strong(state, EngineState::Pack(me, now + slice_ns))) return false;
  *slice_end_ns = now + slice_ns;
  return true;
}

bool Node::OwnsEngine(int gpu) const {
  return EngineState::Owner(seg_->gpus[gpu].engine.state.load()) == static_cast<uint32_t>(slot_ + 1);
}

void Node::ReleaseEngine(int gpu) {
  Engine& e = seg_->gpus[gpu].engine;
  const uint64_t state = e.state.load();
  if (EngineState::Owner(state) != static_cast<uint32_t>(slot_ + 1)) return;
  HandOn(gpu, state, MonotonicNs());
}

// ---- CU-masked queues ----

bool Node::AnyMasked(int gpu, uint32_t state, int except, const uint64_t* overlapping) const {
  for (int i = 0; i < kMaxMaskedQueues; ++i) {
    const MaskedQueue& q = seg_->gpus[gpu].masked[i];
    if (i == except || q.slot.load() == 0 || q.state.load() != state) continue;
    if (overlapping == nullptr) return true;
    for (int w = 0; w < kCuWords; ++w)
      if (q.cus[w].load() & overlapping[w]) return true;
  }
  return false;
}

int Node::ClaimMaskedQueue(int gpu, const uint64_t (&cus)[kCuWords]) {
  ReclaimDead();
  for (int i = 0; i < kMaxMaskedQueues; ++i) {
    MaskedQueue& q = seg_->gpus[gpu].masked[i];
    int32_t expected = 0;
    if (!q.slot.compare_exchange_strong(expected, -1)) continue;  // -1: being set up, not yet matched
    q.state.store(MaskedQueue::kIdle);
    for (int w = 0; w < kCuWords; ++w) q.cus[w].store(cus[w]);
    q.slot.store(slot_ + 1);
    return i;
  }
  return -1;
}

int Node::ClaimMpsQueue(int gpu, int cus, int count) {
  cus = std::clamp(cus, 1, kMaxCus);
  count = std::clamp(count, 1, cus);
  ReclaimDead();
  uint64_t taken[kCuWords] = {};
  for (const MaskedQueue& q : seg_->gpus[gpu].masked)
    if (q.slot.load() != 0)
      for (int w = 0; w < kCuWords; ++w) taken[w] |= q.cus[w].load();
  const auto free_from = [&](int first) {
    for (int cu = first; cu < first + count; ++cu)
      if (taken[cu / 64] >> (cu % 64) & 1) return false;
    return true;
  };
  const bool low = 2 * count <= cus;
  int first = low ? 0 : cus - count;
  for (int i = 0; i + count <= cus; ++i) {
    const int f = low ? i : cus - count - i;
    if (free_from(f)) {
      first = f;
      break;
    }
  }
  uint64_t mask[kCuWords] = {};
  for (int cu = first; cu < first + count; ++cu) mask[cu / 64] |= 1ull << (cu % 64);
  return ClaimMaskedQueue(gpu, mask);
}

void Node::WidenMaskedQueue(int gpu, int queue) {
  for (int w = 0; w < kCuWords; ++w) seg_->gpus[gpu].masked[queue].cus[w].store(~0ull);
  Wake(seg_->gpus[gpu].engine);
}

void Node::LeaveMaskedMode(int gpu) {
  Engine& e = seg_->gpus[gpu].engine;
  if (AnyMasked(gpu, MaskedQueue::kRunning, -1, nullptr)) return;
  uint64_t state = e.state.load();
  const int after = static_cast<int>(e.last_exclusive.load()) - 1;  // round robin among exclusive waiters
  const int next = NextWaiter(gpu, after);
  const uint64_t now = MonotonicNs();
  if (EngineState::Owner(state) != kMaskedOwner) {
    // Another caller ended masked mode first.
  } else if (next >= 0 || (after >= 0 && (e.waiting[after / 64].load() >> (after % 64) & 1))) {
    const int to = next >= 0 ? next : after;
    e.state.compare_exchange_strong(
        state, EngineState::Pack(static_cast<uint32_t>(to + 1), now + uint64_t{seg_->timeslice_us} * 1000));
  } else if (!AnyMasked(gpu, MaskedQueue::kWaiting, -1, nullptr)) {
    e.state.compare_exchange_strong(state, EngineState::Pack(0, now));
  }
  Wake(e);
}

uint64_t Node::AcquireMasked(int gpu, int index, bool after_yield) {
  Engine& e = seg_->gpus[gpu].engine;
  MaskedQueue& q = seg_->gpus[gpu].masked[index];
  const uint64_t slice_ns = uint64_t{seg_->timeslice_us} * 1000;
  uint64_t cus[kCuWords];
  for (int w = 0; w < kCuWords; ++w) cus[w] = q.cus[w].load();
  // Spreads retries of queues that collided, so one of them gets in next time.
  thread_local uint64_t rng = static_cast<uint64_t>(getpid()) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index);
  auto backoff_ns = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return 50000 + rng % 200000;
  };
  q.state.store(MaskedQueue::kWaiting);
  const uint64_t since = MonotonicNs();
  if (after_yield) {  // let the queue we yielded to get in first
    uint32_t seq = e.wake_seq.load();
    FutexWait(&e.wake_seq, seq, slice_ns);
  }
  for (;;) {
    uint32_t seq = e.wake_seq.load();
    uint64_t state = e.state.load();
    const uint32_t owner = EngineState::Owner(state);
    const uint64_t now = MonotonicNs();
    // Exclusive waiters keep new queues out, except during the turn masked mode was given.
    const bool may_join = NextWaiter(gpu, -1) < 0 || now < e.masked_turn_end_ns.load();
    if (owner == 0 && may_join) {
      e.masked_turn_end_ns.store(now + slice_ns);
      e.state.compare_exchange_strong(state, EngineState::Pack(kMaskedOwner, now));
      continue;
    }
    if (owner == kMaskedOwner && !may_join && !AnyMasked(gpu, MaskedQueue::kRunning, -1, nullptr)) {
      LeaveMaskedMode(gpu);  // nobody runs and exclusive work waits: its turn
      continue;
    }
    if (owner == kMaskedOwner && may_join) {
      // Publish, then look: of two queues that overlap and try at once, at least one sees the other.
      q.state.store(MaskedQueue::kRunning);
      if (EngineState::Owner(e.state.load()) == kMaskedOwner && !AnyMasked(gpu, MaskedQueue::kRunning, index, cus)) {
        Wake(e);  // a queue that yielded to us may stop waiting
        return MonotonicNs() + slice_ns;
      }
      q.state.store(MaskedQueue::kWaiting);
      FutexWait(&e.wake_seq, seq, backoff_ns());
    } else {
      FutexWait(&e.wake_seq, seq, slice_ns);
    }
    if (MonotonicNs() - since > 20 * slice_ns) ReclaimDead();
  }
}

bool Node::ContinueMasked(int gpu, int index, uint64_t* slice_end_ns) {
  Engine& e = seg_->gpus[gpu].engine;
  MaskedQueue& q = seg_->gpus[gpu].masked[index];
  uint64_t cus[kCuWords];
  for (int w = 0; w < kCuWords; ++w) cus[w] = q.cus[w].load();
  const bool exclusive_waits = NextWaiter(gpu, -1) >= 0;
  if (EngineState::Owner(e.state.load()) == kMaskedOwner && !exclusive_waits &&
      !AnyMasked(gpu, MaskedQueue::kWaiting, index, cus)) {
    *slice_end_ns = MonotonicNs() + uint64_t{seg_->timeslice_us} * 1000;
    return true;
  }
  // An exclusive process or an overlapping queue waits (or took the engine): stop here.
  q.state.store(MaskedQueue::kWaiting);
  if (EngineState::Owner(e.state.load()) == kMaskedOwner && exclusive_waits) LeaveMaskedMode(gpu);
  Wake(e);
  return false;
}

void Node::ReleaseMasked(int gpu, int index) {
  seg_->gpus[gpu].masked[index].state.store(MaskedQueue::kIdle);
  Engine& e = seg_->gpus[gpu].engine;
  if (EngineState::Owner(e.state.load()) == kMaskedOwner)
    LeaveMaskedMode(gpu);
  else
    Wake(e);
}

void Node::AddBusy(int gpu, uint64_t sm_ns, uint64_t mem_ns) {
  if (slot_ < 0) return;
  SlotGpu& g = seg_->slots[slot_].gpu[gpu];
  g.sm_busy_ns.fetch_add(sm_ns);
  g.mem_busy_ns.fetch_add(mem_ns);
  seg_->gpus[gpu].engine.busy_ns.fetch_add(sm_ns);
  if (RealtimeNs() - last_sample_ns_[gpu] >= 10000000) RecordSample(gpu);  // one per 10 ms of activity
}

void Node::RecordSample(int gpu) {
  if (slot_ < 0) return;
  SlotGpu& g = seg_->slots[slot_].gpu[gpu];
  const uint64_t now = RealtimeNs();
  last_sample_ns_[gpu] = now;
  uint32_t i = g.sample_next.load() % kUtilSamples;
  g.samples[i].time_ns.store(0);  // readers skip a sample being rewritten
  g.samples[i].sm_busy_ns.store(g.sm_busy_ns.load());
  g.samples[i].mem_busy_ns.store(g.mem_busy_ns.load());
  g.samples[i].time_ns.store(now);
  g.sample_next.fetch_add(1);
}

std::vector<Node::Utilization> Node::ProcessUtilization(int gpu, uint64_t since_ns) {
  ReclaimDead();
  std::vector<Utilization> out;
  const uint64_t now = RealtimeNs();
  for (const Slot& s : seg_->slots) {
    int pid = s.pid.load();
    if (pid <= 0) continue;
    const SlotGpu& g = s.gpu[gpu];
    // Baseline: the newest sample at or before `since`, else the oldest one we have.
    uint64_t base_t = 0, base_sm = 0, base_mem = 0, oldest_t = UINT64_MAX;
    uint64_t oldest_sm = 0, oldest_mem = 0;
    for (const UtilSample& smp : g.samples) {
      uint64_t t = smp.time_ns.load();
      if (t == 0) continue;
      if (t <= since_ns && t > base_t) {
        base_t = t;
        base_sm = smp.sm_busy_ns.load();
        base_mem = smp.mem_busy_ns.load();
      }
      if (t < oldest_t) {
        oldest_t = t;
        oldest_sm = smp.sm_busy_ns.load();
        oldest_mem = smp.mem_busy_ns.load();
      }
    }
    if (base_t == 0) {
      if (oldest_t == UINT64_MAX) continue;  // never ran anything
      base_t = oldest_t;
      base_sm = oldest_sm;
      base_mem = oldest_mem;
    }
    uint64_t sm = g.sm_busy_ns.load() - base_sm, mem = g.mem_busy_ns.load() - base_mem;
    if (sm == 0 && mem == 0) continue;
    // Samples are taken while busy and when going idle, so the counter did not move
    // between the baseline and `since`: measure from `since` when it is later.
    uint64_t span = std::max<uint64_t>(now - std::max(base_t, since_ns), 1);
    out.push_back({pid, now, static_cast<unsigned>(std::min<uint64_t>(100, sm * 100 / span)),
                   static_cast<unsigned>(std::min<uint64_t>(100, mem * 100 / span))});
  }
  return out;
}

unsigned Node::DeviceUtilization(int gpu, uint64_t window_ns, unsigned* mem_percent) {
  unsigned sm = 0, mem = 0;
  for (const Utilization& u : ProcessUtilization(gpu, RealtimeNs() - window_ns)) {
    sm += u.sm_percent;
    mem += u.mem_percent;
  }
  if (mem_percent) *mem_percent = std::min(mem, 100u);
  return std::min(sm, 100u);
}

}  // namespace simgpu
