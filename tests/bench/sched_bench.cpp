// GPU-time scheduling figures, in one process without a GPU: what a launch pays at the
// gate with the GPU granted (the code Gated in hooks/cuda/cuda_launch.cpp adds around the
// driver call), how many launch records a second the broker consumes, and how long a
// launch waiting at a gate takes to resume once the broker grants the GPU (thread and
// forked process). run_sched_bench.sh runs it and prints the tables.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/core/broker_core.h"
#include "broker/io/meter_store.h"
#include "broker/io/shm_channels.h"
#include "common/base/futex.h"
#include "common/protocol/channel.h"
#include "common/protocol/protocol.h"
#include "launch_gate.h"

namespace {

namespace proto = gpushare::protocol;
namespace broker = gpushare::broker;
using gpushare::LaunchGate;

constexpr uintptr_t kFunction = 0x7f0000001000;  // an opaque CUfunction, never dereferenced
constexpr uint64_t kStream = 0x7f0000002000;
constexpr const char* kNames[] = {
    "simgpu_compute_500us",          "volta_sgemm_128x64_nn",
    "vectorized_elementwise_kernel", "ampere_fp16_s16816gemm_fp16_256x128_ldg8_f2f_stages_64x3_nn",
    "reduce_kernel<512, 1>",         "softmax_warp_forward",
    "cutlass_80_tensorop_s1688gemm", "memcpy_like_copy_kernel",
};
constexpr int kDistinctNames = sizeof kNames / sizeof kNames[0];
constexpr uint32_t kStopFill = UINT32_MAX;

// Functions kFunction + 64 * i are named kNames[i].
std::string NameOf(uintptr_t function) { return kNames[(function - kFunction) / 64 % kDistinctNames]; }

// A zeroed channel: every gate kGateFree, empty ring (a plain heap or shared object
// works as the broker's segment for these figures).
proto::Channel* NewChannel(void* where = nullptr) {
  if (where == nullptr) where = ::operator new(sizeof(proto::Channel));
  std::memset(where, 0, sizeof(proto::Channel));
  auto* c = new (where) proto::Channel();
  c->magic = proto::kChannelMagic;
  c->version = proto::kChannelVersion;
  return c;
}

// A client-side gate attached to `channel` as scheduled. Never destroyed: its drain
// thread (started by Attach) keeps a pointer to it.
LaunchGate* AttachedGate(proto::Channel* channel) {
  auto* gate = new LaunchGate();
  gate->SetHooks({[](const proto::Sched&) { return true; }, [] { return true; }, [] {}, [] {}});
  gate->Attach(channel, true);
  return gate;
}

// Advances the broker's tail to the head (never backwards), as a drain would.
void ConsumeAll(proto::Channel* c) {
  const uint64_t head = c->ring_head.load(std::memory_order_acquire);
  uint64_t tail = c->ring_tail.load(std::memory_order_relaxed);
  while (tail < head && !c->ring_tail.compare_exchange_weak(tail, head, std::memory_order_release)) {
  }
}

// What Gated adds around the driver call for a kernel launch with the GPU granted.
inline void GatedLaunch(LaunchGate& gate) {
  if (!gate.attached()) return;
  LaunchGate::Launch launch(gate, 0, proto::RecordKind::kKernel, kStream, kFunction, NameOf,
                            {{128, 1, 1}, {256, 1, 1}, 0, 0});
  benchmark::ClobberMemory();  // the driver call goes here
  launch.Taken();
}

// Pins the calling thread to one CPU while it lives, then gives it back its CPUs
// (threads it starts meanwhile inherit the pin).
class Pin {
 public:
  explicit Pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ok_ = std::thread::hardware_concurrency() > static_cast<unsigned>(cpu) &&
          pthread_getaffinity_np(pthread_self(), sizeof saved_, &saved_) == 0 &&
          pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
  }
  ~Pin() {
    if (ok_) pthread_setaffinity_np(pthread_self(), sizeof saved_, &saved_);
  }
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;
  bool ok() const { return ok_ && std::thread::hardware_concurrency() >= 2; }

 private:
  cpu_set_t saved_;
  bool ok_ = false;
};

// ---- 0. Calibration: what moving a cache line between two cores costs here ----

// A round trip of one cache line between two threads pinned to cores 0 and 1 (each
// waits for the other's store). Figures below that involve two cores pay this per line.
void BM_CrossCoreRoundTrip(benchmark::State& state) {
  Pin pin(0);
  if (!pin.ok()) {
    state.SkipWithError("needs two cores");
    return;
  }
  alignas(64) static std::atomic<uint64_t> line{0};
  line = 0;
  std::atomic<bool> stop{false};
  std::thread other([&] {
    Pin pin(1);
    uint64_t seen = 0;
    while (!stop.load(std::memory_order_relaxed))
      if ((seen = line.load(std::memory_order_acquire)) % 2 == 1) line.store(seen + 1, std::memory_order_release);
  });
  uint64_t n = 0;
  for (auto _ : state) {
    line.store(n + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != n + 2) {
    }
    n += 2;
  }
  stop = true;
  other.join();
}
BENCHMARK(BM_CrossCoreRoundTrip)->UseRealTime();

// ---- 1. The launch hot path ----

// Not attached (no broker): the launch hook's only added work is this check.
void BM_LaunchPath_Standalone(benchmark::State& state) {
  static LaunchGate* gate = new LaunchGate();  // never attached
  for (auto _ : state) GatedLaunch(*gate);
}
BENCHMARK(BM_LaunchPath_Standalone);

struct HeldSetup {
  proto::Channel* channel = NewChannel();
  LaunchGate* gate = AttachedGate(channel);
  HeldSetup() {
    broker::SetGate(channel, 0, proto::kGateHeld, 1);
    gate->NameSlot(kFunction, NameOf);  // seen before: the lookup is the steady-state one
  }
};

HeldSetup& Held() {
  static HeldSetup* s = new HeldSetup();
  return *s;
}

void ReportDrops(benchmark::State& state, proto::Channel* c, uint64_t dropped_before) {
  state.counters["dropped"] = static_cast<double>(c->dropped_records.load() - dropped_before);
  state.SetItemsProcessed(state.iterations());
}

// Granted; the ring kept from filling by advancing its tail every 1024 launches with
// the timer paused (no consumer touches the channel's cache lines while timed).
void BM_LaunchPath_Held(benchmark::State& state) {
  HeldSetup& h = Held();
  ConsumeAll(h.channel);
  const uint64_t dropped = h.channel->dropped_records.load();
  uint64_t n = 0;
  for (auto _ : state) {
    GatedLaunch(*h.gate);
    if (++n % 1024 == 0) {
      state.PauseTiming();
      ConsumeAll(h.channel);
      state.ResumeTiming();
    }
  }
  ReportDrops(state, h.channel, dropped);
}
BENCHMARK(BM_LaunchPath_Held);

// Its parts one at a time, same granted gate: where the nanoseconds go.
void BM_LaunchPart_NameSlot(benchmark::State& state) {
  HeldSetup& h = Held();
  for (auto _ : state) benchmark::DoNotOptimize(h.gate->NameSlot(kFunction, NameOf));
}
BENCHMARK(BM_LaunchPart_NameSlot);

void BM_LaunchPart_Pass(benchmark::State& state) {
  HeldSetup& h = Held();
  for (auto _ : state) {
    LaunchGate::Pass pass(*h.gate, 0);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_LaunchPart_Pass);

void BM_LaunchPart_Record(benchmark::State& state) {
  HeldSetup& h = Held();
  ConsumeAll(h.channel);
  const uint64_t dropped = h.channel->dropped_records.load();
  uint64_t n = 0;
  for (auto _ : state) {
    h.gate->Record(0, proto::RecordKind::kKernel, kStream, 1, 128, 256, 0, 0);
    if (++n % 1024 == 0) {
      state.PauseTiming();
      ConsumeAll(h.channel);
      state.ResumeTiming();
    }
  }
  ReportDrops(state, h.channel, dropped);
}
BENCHMARK(BM_LaunchPart_Record);

// The submit-time clock Record reads (CLOCK_MONOTONIC_COARSE, through the vDSO).
void BM_LaunchPart_CoarseClock(benchmark::State& state) {
  timespec ts;
  for (auto _ : state) {
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    benchmark::DoNotOptimize(ts);
  }
}
BENCHMARK(BM_LaunchPart_CoarseClock);

// Granted, with a consumer thread on the other core draining the ring (DrainRing):
// non-stop (argument 0), the worst case, where every record slot and the ring indices
// move between the two caches launch by launch; or every N µs (argument N), in batches
// as the daemon drains (it does every 20 ms; a ring's worth of these back-to-back
// launches takes well under that, so the intervals here are shorter).
// `broker_skipped`: records the consumer gave up on as stalled (claimed, unpublished).
void BM_LaunchPath_Held_LiveConsumer(benchmark::State& state) {
  Pin pin(0);
  if (!pin.ok()) {
    state.SkipWithError("needs two cores");
    return;
  }
  HeldSetup& h = Held();
  ConsumeAll(h.channel);
  const uint64_t dropped = h.channel->dropped_records.load();
  const auto interval = std::chrono::microseconds(state.range(0));
  std::atomic<bool> stop{false};
  broker::RingCursor cursor{h.channel->ring_tail.load(), 0, 0};
  std::thread consumer([&] {
    Pin other(1);
    const std::function<void(const proto::RecordData&)> ignore = [](const proto::RecordData&) {};
    while (!stop.load(std::memory_order_relaxed)) {
      broker::DrainRing(h.channel, &cursor, ignore);
      // Spinning on the clock, not sleeping: a sleep's wake-up slack would let the ring fill.
      const auto until = std::chrono::steady_clock::now() + interval;
      while (std::chrono::steady_clock::now() < until) {
      }
    }
  });
  for (auto _ : state) GatedLaunch(*h.gate);
  stop = true;
  consumer.join();
  ConsumeAll(h.channel);
  ReportDrops(state, h.channel, dropped);
  state.counters["broker_skipped"] = static_cast<double>(cursor.dropped);
}
BENCHMARK(BM_LaunchPath_Held_LiveConsumer)->Arg(0)->Arg(10)->Arg(100)->UseRealTime();

// Two application threads launching on the same granted GPU: both increment the gate's
// inflight count and compete for ring_head.
void BM_LaunchPath_Held_MultiThread(benchmark::State& state) {
  HeldSetup& h = Held();
  if (state.thread_index() == 0) ConsumeAll(h.channel);
  const uint64_t dropped = h.channel->dropped_records.load();
  uint64_t n = 0;
  for (auto _ : state) {
    GatedLaunch(*h.gate);
    if (++n % 512 == 0) {
      state.PauseTiming();
      ConsumeAll(h.channel);
      state.ResumeTiming();
    }
  }
  if (state.thread_index() == 0)
    ReportDrops(state, h.channel, dropped);
  else
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LaunchPath_Held_MultiThread)->Threads(2)->UseRealTime();

// ---- 2. Broker consumption ----

// The broker's view of one client whose channel is `channel` (a heap object here).
class BenchChannels : public broker::ChannelHost {
 public:
  explicit BenchChannels(proto::Channel* channel) : channel_(channel) {}
  std::string Create(broker::ClientId, const broker::PeerCredentials&) override { return "bench"; }
  void Publish(broker::ClientId, const broker::Grants&) override {}
  void Destroy(broker::ClientId) override {}
  size_t Drain(broker::ClientId, const std::function<void(const proto::RecordData&)>& on_record) override {
    const size_t n = broker::DrainRing(channel_, &cursor_, on_record);
    drained += n;
    return n;
  }
  std::string KernelName(broker::ClientId, uint16_t name) override { return broker::ReadKernelName(channel_, name); }
  broker::RingCounts Counts(broker::ClientId) override { return {cursor_.dropped, 0, 0, 0}; }
  // Launches counted in tallies (LaunchGate::Record) count as consumed records too.
  void Tallies(broker::ClientId, const std::function<void(const proto::RecordData&, uint64_t)>& on_growth) override {
    drained += broker::ReadTallies(channel_, &tallies_, on_growth);
  }

  uint64_t drained = 0;
  uint64_t lost() const { return cursor_.dropped; }

 private:
  proto::Channel* channel_;
  broker::RingCursor cursor_;
  broker::TallyCursor tallies_;
};

// The client side of the channel as the shim leaves it: named kernels, published
// records (written here directly, as LaunchGate::Record would).
void NameKernels(proto::Channel* c) {
  for (int i = 0; i < kDistinctNames; ++i) {
    std::strncpy(c->names[i].text, kNames[i], proto::kNameBytes - 1);
    c->names[i].ready.store(1, std::memory_order_release);
  }
  c->name_count.store(kDistinctNames);
}

void FillRing(proto::Channel* c, uint32_t records) {
  const uint64_t head = c->ring_head.load(std::memory_order_relaxed);
  for (uint64_t pos = head; pos < head + records; ++pos) {
    proto::LaunchRecord& r = c->ring[pos % proto::kRingRecords];
    r.stream = kStream + (pos & 1) * 64;  // two streams
    r.submit_ns = pos;
    r.bytes = 0;
    r.grid = 128;
    r.block = 256;
    r.shared_bytes = 0;
    r.name = static_cast<uint16_t>(1 + pos % kDistinctNames);
    r.device = 0;
    r.kind = static_cast<uint8_t>(proto::RecordKind::kKernel);
    r.seq.store(pos + 1, std::memory_order_release);
  }
  c->ring_head.store(head + records, std::memory_order_release);
}

// A BrokerCore with one registered, scheduled client on one GPU whose channel is `c`;
// `metered`: its meter writes to a database in a temporary directory.
struct BrokerSetup {
  proto::Channel* channel = NewChannel();
  BenchChannels host{channel};
  broker::BrokerConfig config;  // named: GCC 12 warns of a temporary's strings "maybe uninitialized"
  broker::BrokerCore core{std::move(config), {{0, "g0", 16ull << 30}}, &host};
  std::filesystem::path meter_dir;
  std::unique_ptr<broker::MeterStore> store;
  explicit BrokerSetup(bool metered = false) {
    if (metered) {
      meter_dir = std::filesystem::temp_directory_path() / ("gs-sched-bench-" + std::to_string(getpid()));
      std::string error;
      store = broker::MeterStore::Open((meter_dir / "metering.db").string(), &error);
      if (!store) {
        std::fprintf(stderr, "sched_bench: %s\n", error.c_str());
        std::exit(1);
      }
      core.AttachMeter(store.get(), 1, {}, [] { return static_cast<uint64_t>(time(nullptr)) * 1'000'000'000u; });
    }
    NameKernels(channel);
    core.Open(1, {static_cast<int32_t>(getpid()), getuid(), getgid()});
    proto::Hello hello{};
    proto::SetString(hello.tenant, "bench");
    hello.weight = 1;
    for (int v = 0; v < proto::kMaxDevices; ++v) hello.visible[v] = -1;
    std::vector<uint8_t> in = proto::Encode(proto::Type::kHello, hello), out;
    std::string error;
    if (!core.Input(1, &in, &out, &error) || core.client_count() != 1) {
      std::fprintf(stderr, "sched_bench: the bench client did not register: %s\n", error.c_str());
      std::exit(1);
    }
  }
  ~BrokerSetup() {
    if (!meter_dir.empty()) std::filesystem::remove_all(meter_dir);
  }
};

void ReportConsumed(benchmark::State& state, uint64_t consumed, uint64_t expected, uint64_t lost) {
  state.SetItemsProcessed(static_cast<int64_t>(consumed));
  if (consumed != expected || lost != 0) state.SkipWithError("records were lost or not consumed");
}

// BrokerCore::Poll draining a full ring (4096 records) through the classifier; the ring
// is refilled with the timer paused, so it is in this core's cache (the best case).
void BrokerConsume(benchmark::State& state, bool metered) {
  BrokerSetup s(metered);
  s.core.Poll();
  const uint64_t before = s.host.drained;
  for (auto _ : state) {
    state.PauseTiming();
    FillRing(s.channel, proto::kRingRecords);
    state.ResumeTiming();
    s.core.Poll();
  }
  ReportConsumed(state, s.host.drained - before, state.iterations() * proto::kRingRecords, s.host.lost());
}
void BM_BrokerConsume(benchmark::State& state) { BrokerConsume(state, false); }
BENCHMARK(BM_BrokerConsume);
// The same with the meter attached to a database (it reads no record: the scheduler's and
// the work tracker's counters are read at each flush).
void BM_BrokerConsume_Metered(benchmark::State& state) { BrokerConsume(state, true); }
BENCHMARK(BM_BrokerConsume_Metered);

// DrainRing alone with an empty callback: reading and checking the ring, no classifier.
void BM_DrainRingOnly(benchmark::State& state) {
  proto::Channel* c = NewChannel();
  broker::RingCursor cursor;
  const std::function<void(const proto::RecordData&)> ignore = [](const proto::RecordData&) {};
  uint64_t consumed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    FillRing(c, proto::kRingRecords);
    state.ResumeTiming();
    consumed += broker::DrainRing(c, &cursor, ignore);
  }
  ReportConsumed(state, consumed, state.iterations() * proto::kRingRecords, cursor.dropped);
  ::operator delete(c);
}
BENCHMARK(BM_DrainRingOnly);

// As BM_BrokerConsume, but each ring is filled by a client thread on the other core
// through LaunchGate (the real Record path), so the broker reads record lines another
// core wrote, as it does in the daemon. The fill is outside the timed part.
void BM_BrokerConsume_RemoteFill(benchmark::State& state) {
  Pin pin(0);
  if (!pin.ok()) {
    state.SkipWithError("needs two cores");
    return;
  }
  BrokerSetup s;
  LaunchGate* gate = AttachedGate(s.channel);
  broker::SetGate(s.channel, 0, proto::kGateHeld, 1);
  std::atomic<uint32_t> fill_round{0}, filled_round{0};
  std::thread client([&] {
    Pin pin(1);
    uintptr_t functions[kDistinctNames];
    for (int i = 0; i < kDistinctNames; ++i) functions[i] = kFunction + 64 * i;
    for (uint32_t round = 1;; ++round) {
      uint32_t go;
      while ((go = fill_round.load(std::memory_order_acquire)) < round) std::this_thread::yield();
      if (go == kStopFill) return;
      for (uint32_t i = 0; i < proto::kRingRecords; ++i) {
        const uint16_t name = gate->NameSlot(functions[i % kDistinctNames], NameOf);
        LaunchGate::Pass pass(*gate, 0);
        gate->Record(0, proto::RecordKind::kKernel, kStream + (i & 1) * 64, name, 128, 256, 0, 0);
      }
      filled_round.store(round, std::memory_order_release);
    }
  });
  s.core.Poll();
  const uint64_t before = s.host.drained;
  uint32_t round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    fill_round.store(++round, std::memory_order_release);
    while (filled_round.load(std::memory_order_acquire) < round) std::this_thread::yield();
    state.ResumeTiming();
    s.core.Poll();
  }
  fill_round.store(kStopFill);
  client.join();
  ReportConsumed(state, s.host.drained - before, state.iterations() * proto::kRingRecords,
                 s.host.lost() + s.channel->dropped_records.load());
}
BENCHMARK(BM_BrokerConsume_RemoteFill);

// ---- 3. Wake-up latency: grant -> the waiting launch resumes ----

// Shared between the granting side (the benchmark thread, standing for the broker) and
// the waiting side (a thread, or a forked process standing for the client).
struct WakeControl {
  std::atomic<uint32_t> go;          // futex word: round to start (kExit: quit)
  std::atomic<uint32_t> done;        // futex word: round completed
  std::atomic<int32_t> tid;          // the waiting thread
  std::atomic<uint64_t> resumed_ns;  // when Pass returned in the last round
  proto::Channel channel;
};
constexpr uint32_t kExit = UINT32_MAX;

// The client: each round, one launch that waits at gate 0 until granted (on CPU `cpu`
// if not -1).
void WaitingClient(WakeControl* w, LaunchGate* gate, int cpu) {
  std::optional<Pin> pin;
  if (cpu >= 0) pin.emplace(cpu);
  w->tid.store(static_cast<int32_t>(syscall(SYS_gettid)));
  for (uint32_t round = 1;; ++round) {
    uint32_t go;
    while ((go = w->go.load(std::memory_order_acquire)) < round) gpushare::FutexWait(&w->go, go, 1'000'000'000);
    if (go == kExit) return;
    {
      LaunchGate::Pass pass(*gate, 0);
      w->resumed_ns.store(gpushare::MonotonicNs(), std::memory_order_relaxed);
    }
    w->done.store(round, std::memory_order_release);
    gpushare::FutexWakeAll(&w->done);
  }
}

// Whether thread `tid` is asleep ('S' in /proc/<tid>/stat).
bool Sleeping(int32_t tid) {
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/%d/stat", tid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');  // the name may hold spaces
  return close != nullptr && close[1] == ' ' && close[2] == 'S';
}

// One round: close the gate, let the client launch and fall asleep at the gate, grant,
// and return how long from the grant until its launch went on (ns).
uint64_t WakeRound(WakeControl* w, uint32_t round) {
  broker::SetGate(&w->channel, 0, proto::kGateWait, 0);  // slice 0: no revoke for the drain thread
  w->go.store(round, std::memory_order_release);
  gpushare::FutexWakeAll(&w->go);
  while (w->channel.gates[0].waiting.load() == 0 || w->tid.load() == 0 || !Sleeping(w->tid.load()))
    std::this_thread::yield();
  const uint64_t granted = gpushare::MonotonicNs();
  broker::SetGate(&w->channel, 0, proto::kGateHeld, round);
  uint32_t done;
  while ((done = w->done.load(std::memory_order_acquire)) < round) gpushare::FutexWait(&w->done, done, 1'000'000'000);
  return w->resumed_ns.load(std::memory_order_relaxed) - granted;
}

void ReportLatencies(benchmark::State& state, std::vector<uint64_t> ns) {
  if (ns.empty()) return;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) { return static_cast<double>(ns[static_cast<size_t>(q * (ns.size() - 1))]) / 1000.0; };
  state.counters["p50_us"] = at(0.50);
  state.counters["p90_us"] = at(0.90);
  state.counters["p99_us"] = at(0.99);
  state.counters["max_us"] = at(1.0);
}

// Where the granting and the waiting thread run: argument 0, wherever the kernel puts
// them; 1, both on core 0 (the grant switches to the waiter); 2, granting on core 0 and
// waiting on core 1 (the grant wakes the other core from idle).
constexpr const char* kPlacement[] = {"free", "same core", "two cores"};
int WaiterCpu(const benchmark::State& state) { return state.range(0) == 0 ? -1 : state.range(0) == 1 ? 0 : 1; }

// The waiting launch in another thread of the same process.
void BM_GrantWakeLatency_Thread(benchmark::State& state) {
  std::optional<Pin> pin;
  if (state.range(0) != 0 && !pin.emplace(0).ok()) {
    state.SkipWithError("needs two cores");
    return;
  }
  state.SetLabel(kPlacement[state.range(0)]);
  auto* w = static_cast<WakeControl*>(::operator new(sizeof(WakeControl)));
  std::memset(static_cast<void*>(w), 0, sizeof(WakeControl));
  NewChannel(&w->channel);
  LaunchGate* gate = AttachedGate(&w->channel);
  std::thread client(WaitingClient, w, gate, WaiterCpu(state));
  std::vector<uint64_t> ns;
  ns.reserve(state.max_iterations);
  uint32_t round = 0;
  for (auto _ : state) {
    const uint64_t latency = WakeRound(w, ++round);
    ns.push_back(latency);
    state.SetIterationTime(static_cast<double>(latency) * 1e-9);
  }
  w->go.store(kExit);
  gpushare::FutexWakeAll(&w->go);
  client.join();
  ReportLatencies(state, std::move(ns));
  // `w` stays: the client's gate (and its drain thread) still point into its channel.
}
BENCHMARK(BM_GrantWakeLatency_Thread)->DenseRange(0, 2)->UseManualTime()->Iterations(2000);

// The waiting launch in a forked process sharing the channel (an anonymous shared
// mapping made before fork): the broker process waking a client process.
void BM_GrantWakeLatency_Process(benchmark::State& state) {
  std::optional<Pin> pin;
  if (state.range(0) != 0 && !pin.emplace(0).ok()) {
    state.SkipWithError("needs two cores");
    return;
  }
  state.SetLabel(kPlacement[state.range(0)]);
  void* where = mmap(nullptr, sizeof(WakeControl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (where == MAP_FAILED) {
    state.SkipWithError("mmap failed");
    return;
  }
  auto* w = static_cast<WakeControl*>(where);  // zeroed by the kernel
  NewChannel(&w->channel);
  const pid_t child = fork();
  if (child == 0) {
    WaitingClient(w, AttachedGate(&w->channel), WaiterCpu(state));
    _exit(0);
  }
  std::vector<uint64_t> ns;
  ns.reserve(state.max_iterations);
  uint32_t round = 0;
  for (auto _ : state) {
    const uint64_t latency = WakeRound(w, ++round);
    ns.push_back(latency);
    state.SetIterationTime(static_cast<double>(latency) * 1e-9);
  }
  w->go.store(kExit);
  gpushare::FutexWakeAll(&w->go);
  waitpid(child, nullptr, 0);
  munmap(where, sizeof(WakeControl));
  ReportLatencies(state, std::move(ns));
}
BENCHMARK(BM_GrantWakeLatency_Process)->DenseRange(0, 2)->UseManualTime()->Iterations(2000);

}  // namespace

BENCHMARK_MAIN();
