// The simulated node's state that all processes share: device memory capacity, which
// processes are attached, the per-GPU time-slice engine, and per-process utilization
// history for NVML. Lives in one POSIX shared-memory segment (Boost.Interprocess),
// laid out as plain atomics so that a process killed at any instant leaves nothing
// locked: dead processes are detected (pid + start time) and their share reclaimed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace simgpu {

inline constexpr int kMaxSlots = 256;
inline constexpr int kUtilSamples = 64;
inline constexpr uint32_t kLayoutVersion = 7;
inline constexpr int kCuWords = kMaxCus / 64;
inline constexpr int kMaxMaskedQueues = 64;            // CU-masked queues per GPU, node-wide
inline constexpr uint32_t kMaskedOwner = 0xffffffffu;  // Engine::owner while masked queues run
inline constexpr int kMaxFaults = 16;                  // SIMGPU_CONTROL_MAX_FAULTS

uint64_t MonotonicNs();

struct UtilSample {
  std::atomic<uint64_t> time_ns{0};
  std::atomic<uint64_t> sm_busy_ns{0};   // cumulative time a kernel of this process ran
  std::atomic<uint64_t> mem_busy_ns{0};  // cumulative time device memory was busy for it
};

struct SlotGpu {
  std::atomic<uint64_t> used_bytes{0};
  std::atomic<uint64_t> sm_busy_ns{0};
  std::atomic<uint64_t> mem_busy_ns{0};
  std::atomic<uint32_t> sample_next{0};  // single writer: the owning process's executor
  UtilSample samples[kUtilSamples];
};

struct Slot {
  std::atomic<int32_t> pid{0};  // 0 free, -1 being claimed or reclaimed
  std::atomic<uint64_t> start_ticks{0};
  SlotGpu gpu[kMaxGpus];
};

// The owner and the end of its slice change together, in one word (EngineState): a
// waiter that judges the owner late and preempts it, and the owner renewing its slice,
// compare-exchange the same word, so exactly one of them wins. With two words, an owner
// could renew between a waiter's check and its exchange and both would run.
struct EngineState {
  static constexpr int kOwnerBits = 10;
  static constexpr uint64_t kOwnerMask = (1u << kOwnerBits) - 1;  // kMaskedOwner packs as all ones
  static uint64_t Pack(uint32_t owner, uint64_t slice_end_ns) {   // the end rounded up to a microsecond
    return ((slice_end_ns + 999) / 1000 << kOwnerBits) | (owner == kMaskedOwner ? kOwnerMask : owner);
  }
  static uint32_t Owner(uint64_t word) {
    const uint32_t o = static_cast<uint32_t>(word & kOwnerMask);
    return o == kOwnerMask ? kMaskedOwner : o;
  }
  static uint64_t SliceEndNs(uint64_t word) { return (word >> kOwnerBits) * 1000; }
};
static_assert(kMaxSlots < EngineState::kOwnerMask, "slot + 1 must fit the owner bits");

struct Engine {
  std::atomic<uint64_t> state{0};     // EngineState: owner (slot + 1, kMaskedOwner, 0 idle) and slice end
  std::atomic<uint32_t> wake_seq{0};  // futex word, bumped on every ownership change
  std::atomic<uint64_t> waiting[kMaxSlots / 64];
  std::atomic<uint64_t> busy_ns{0};             // cumulative, all processes
  std::atomic<uint32_t> last_exclusive{0};      // slot + 1 of the last exclusive owner, for round robin
  std::atomic<uint64_t> masked_turn_end_ns{0};  // masked queues may join until then though others wait
};

// A HIP stream's CU mask as a hardware queue: while the engine is in masked mode,
// queues whose CU sets are disjoint run at the same time, from any process.
struct MaskedQueue {
  std::atomic<int32_t> slot{0};    // owning slot + 1; 0 free
  std::atomic<uint32_t> state{0};  // kIdle, kWaiting, kRunning
  std::atomic<uint64_t> cus[kCuWords] = {};
  static constexpr uint32_t kIdle = 0, kWaiting = 1, kRunning = 2;
};

struct GpuShared {
  std::atomic<uint64_t> used_bytes{0};
  uint64_t capacity_bytes = 0;
  // Bytes copied over the GPU's PCIe link, cumulative: host to device (rx), device to host (tx).
  std::atomic<uint64_t> pcie_rx_bytes{0};
  std::atomic<uint64_t> pcie_tx_bytes{0};
  Engine engine;
  MaskedQueue masked[kMaxMaskedQueues];
};

// What a fault armed through the control interface (control/simgpu_control.h) breaks.
enum class FaultKind : uint32_t {
  kAllocation = 1,  // a device-memory allocation fails as if the device were full
  kCall = 2,        // an entry point returns a given error
  kLookup = 3,      // cuGetProcAddress does not find a name
};

// One armed fault. In the segment, so that a test arms it in its own process and the
// processes under test (a client under the shim) hit it.
struct Fault {
  static constexpr uint32_t kFree = 0, kWriting = 1, kArmed = 2;
  std::atomic<uint32_t> state{kFree};
  FaultKind kind = FaultKind::kCall;
  int32_t pid = 0;                    // 0: any process
  int32_t gpu = -1;                   // kAllocation: -1 any
  int32_t error = 0;                  // kCall: the code the entry point returns
  std::atomic<int32_t> remaining{0};  // firings left; -1 until cleared
  char name[64] = {};
};

struct NodeSegment {
  std::atomic<uint32_t> ready{0};  // set last by the creator
  uint32_t layout_version = 0;
  uint32_t gpu_count = 0;
  uint32_t timeslice_us = 0;
  GpuShared gpus[kMaxGpus];
  Slot slots[kMaxSlots];
  std::atomic<uint32_t> faults_armed{0};  // checked first on every entry point: one relaxed load
  std::atomic<uint64_t> fault_hits{0};
  Fault faults[kMaxFaults];
};

// One process's handle on the shared node. Attaching claims a slot; destruction (or
// the process's death, noticed by others) gives back what the slot held.
class Node {
 public:
  // Opens or creates the segment for `config`. `name` overrides the segment name
  // (SIMGPU_NODE); empty picks one from the uid and the config's fingerprint.
  static std::unique_ptr<Node> Attach(const NodeConfig& config, const std::string& name, bool claim_slot,
                                      std::string* error);
  ~Node();
  void Detach();  // gives back the slot and all it held; idempotent
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& segment_name() const { return name_; }
  int slot() const { return slot_; }
  int gpu_count() const { return static_cast<int>(seg_->gpu_count); }
  uint64_t capacity(int gpu) const { return seg_->gpus[gpu].capacity_bytes; }
  // PCIe traffic (GpuShared::pcie_rx_bytes/pcie_tx_bytes).
  void CountPcie(int gpu, uint64_t rx_bytes, uint64_t tx_bytes) {
    seg_->gpus[gpu].pcie_rx_bytes.fetch_add(rx_bytes, std::memory_order_relaxed);
    seg_->gpus[gpu].pcie_tx_bytes.fetch_add(tx_bytes, std::memory_order_relaxed);
  }
  uint64_t PcieBytes(int gpu, bool rx) const {
    return (rx ? seg_->gpus[gpu].pcie_rx_bytes : seg_->gpus[gpu].pcie_tx_bytes).load(std::memory_order_relaxed);
  }

  // Capacity ledger. TryCharge fails (false) when the device has no room, after first
  // reclaiming what dead processes held.
  bool TryCharge(int gpu, uint64_t bytes);
  void Uncharge(int gpu, uint64_t bytes);
  uint64_t Used(int gpu);  // node-wide, after reclaiming the dead

  struct ProcessUsage {
    int pid;
    uint64_t used_bytes;
  };
  std::vector<ProcessUsage> Processes(int gpu);  // live processes with a context or memory

  struct ProcessCounters {
    int pid;
    uint64_t used_bytes, sm_busy_ns, mem_busy_ns;
  };
  std::vector<ProcessCounters> Attached(int gpu);  // every live process holding a slot

  // Faults armed by tests (control/simgpu_control.h), node-wide. Arm returns false
  // when the table is full; count -1 arms until cleared. TakeFault consumes one
  // firing of the first armed fault that matches this process, `name` (API name or
  // ABI symbol: "cuMemAlloc" matches cuMemAlloc_v2) and `gpu`, and says its error.
  bool ArmFault(FaultKind kind, const std::string& name, int gpu, int error, int count, int pid);
  int ClearFaults();  // returns how many were armed
  uint64_t FaultHits() const { return seg_->fault_hits.load(); }
  bool AnyFaultArmed() const { return seg_->faults_armed.load(std::memory_order_relaxed) != 0; }
  bool TakeFault(FaultKind kind, const char* name, int gpu, int* error);

  // Time-slicing of the compute engine between processes (real GPUs without MPS).
  // Acquire blocks until this process owns `gpu`; returns when its slice ends.
  uint64_t AcquireEngine(int gpu);
  // Called at a slice boundary while owning: hands the engine to a waiting process if
  // there is one (returns false: re-acquire before running more), else extends the
  // slice (returns true, new slice end in *slice_end_ns). An owner that stays a slice
  // past its slice's end (stopped, descheduled, killed) is preempted by a waiter, so
  // false also when the engine was taken from it meanwhile.
  bool ContinueOrYield(int gpu, uint64_t* slice_end_ns);
  // Whether this process still owns `gpu`'s engine (exclusively): false once a waiter
  // preempted it for being late.
  bool OwnsEngine(int gpu) const;
  void ReleaseEngine(int gpu);  // this process has no more work for `gpu`

  // CU-masked queues. The engine alternates, a time slice at a time, between exclusive
  // owners (unmasked work, above) and masked mode, in which queues with disjoint CU
  // sets run side by side and overlapping ones take turns. ClaimMaskedQueue returns a
  // queue index, or -1 when all are taken.
  int ClaimMaskedQueue(int gpu, const uint64_t (&cus)[kCuWords]);
  // An MPS client's queue (docs/simgpu.md): `count` of the GPU's `cus` CUs where no other
  // claimed queue runs, the low CUs first for half the GPU or less and the high ones
  // first for more; where none are free, from the low or the high end anyway (the
  // overlapping queues then take turns, as clients over-subscribing MPS share SMs).
  int ClaimMpsQueue(int gpu, int cus, int count);
  // The queue's work may run on every CU from now on: it overlaps every other queue and
  // takes turns with them (the MPS server is gone: its clients are time-sliced).
  void WidenMaskedQueue(int gpu, int queue);
  uint64_t AcquireMasked(int gpu, int queue, bool after_yield);     // blocks; returns the slice end
  bool ContinueMasked(int gpu, int queue, uint64_t* slice_end_ns);  // false: yielded, acquire again
  void ReleaseMasked(int gpu, int queue);                           // the queue has no more work

  // Accounting of simulated work, for NVML's utilization queries.
  void AddBusy(int gpu, uint64_t sm_ns, uint64_t mem_ns);
  void RecordSample(int gpu);  // a history point now (the executor calls it when going idle)
  struct Utilization {
    int pid;
    uint64_t time_ns;
    unsigned sm_percent;
    unsigned mem_percent;
  };
  // Per-process utilization over (since_ns, now]; processes idle in that window omitted.
  std::vector<Utilization> ProcessUtilization(int gpu, uint64_t since_ns);
  // Device-wide busy percentage over the last `window_ns`.
  unsigned DeviceUtilization(int gpu, uint64_t window_ns, unsigned* mem_percent);

  void ReclaimDead();

 private:
  Node() = default;
  bool ClaimSlot(std::string* error);
  void ReleaseSlot(int slot);
  bool SlotAlive(int slot) const;
  int NextWaiter(int gpu, int after) const;
  void Wake(Engine& e);
  bool AnyMasked(int gpu, uint32_t state, int except, const uint64_t* overlapping) const;
  // Passes the engine from owner `from` to the masked queues if they wait, else to the
  // next exclusive waiter in round robin, else leaves it idle; false if `from` no
  // longer owned it (another hand-off won).
  // `from` is the engine state (EngineState) the caller saw.
  bool HandOn(int gpu, uint64_t from, uint64_t now);
  // A waiter's view: the owner in `state` is a slice past that state's slice end and
  // has not moved; the engine goes on without it, as on a real GPU's time slicing.
  void Preempt(int gpu, uint64_t state, uint64_t now);
  void LeaveMaskedMode(int gpu);  // the last running masked queue stopped: pass the engine on

  std::string name_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  NodeSegment* seg_ = nullptr;
  int slot_ = -1;
  uint64_t last_sample_ns_[kMaxGpus] = {};
};

}  // namespace simgpu
