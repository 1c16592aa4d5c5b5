// The shared-memory channel between one client and the broker: a segment the broker
// creates per client (mode 0600, owned by the client's uid), holding what the broker
// grants (caps, the tenant's holdings, weight), what the client reports (usage), and
// the client's launch-record ring, its kernel names and its GPU-time gates. Only atomics, no lock: a client killed at
// any instant leaves nothing for the broker or another client to wait on, and whatever a client writes here is read by
// the broker as untrusted data (see ChannelReader).
#pragma once

#include <atomic>
#include <cstdint>

#include "protocol.h"

namespace gpushare::protocol {

inline constexpr uint32_t kChannelMagic = 0x4e484347;  // "GCHN"
// 3: per-device CU masks (spatial sharing). 4: time in collectives (NCCL/RCCL).
// 5: in-flight launches counted in the client's own memory (per thread), allocation
// leases recalled here, launch tallies.
inline constexpr uint32_t kChannelVersion = 5;
inline constexpr uint32_t kRingRecords = 4096;  // a power of two
inline constexpr uint32_t kNameSlots = 512;
inline constexpr uint32_t kNameBytes = 124;

enum class RecordKind : uint8_t {
  kKernel = 1,
  kCooperative = 2,
  kGraph = 3,
  kCopyHtoD = 4,
  kCopyDtoH = 5,
  kCopyDtoD = 6,  // also peer and 2D/3D copies
  kMemset = 7,
};
inline bool IsCopy(RecordKind k) { return k >= RecordKind::kCopyHtoD; }

// One launch or async copy as the broker sees it: 48 bytes, fixed. `seq` (the ring
// position + 1) is stored last, with release order: a slot whose seq is not the
// position the broker expects is not (or no longer) that record.
struct LaunchRecord {
  std::atomic<uint64_t> seq;
  uint64_t stream;     // an opaque id (the stream handle)
  uint64_t submit_ns;  // CLOCK_MONOTONIC; 0: not stamped (the broker uses its own clock)
  uint64_t bytes;      // copies and memsets
  uint32_t grid;       // blocks in the grid (saturating)
  uint32_t block;      // threads per block
  uint32_t shared_bytes;
  uint16_t name;   // kernels: 1 + the slot of its name in Channel::names; 0: unknown
  uint8_t device;  // virtual
  uint8_t kind;    // RecordKind
};
static_assert(sizeof(LaunchRecord) == 48);

// A record as the broker decodes it (a plain copy, fields checked).
struct RecordData {
  uint64_t stream;
  uint64_t submit_ns;
  uint64_t bytes;
  uint32_t grid;
  uint32_t block;
  uint32_t shared_bytes;
  uint16_t name;
  uint8_t device;
  RecordKind kind;
};

// A kernel name, written once by the client when it first launches the kernel.
struct KernelName {
  std::atomic<uint32_t> ready;  // 1 once `text` is complete
  char text[kNameBytes];        // NUL-terminated (the broker checks)
};

// The GPU-time gate of one virtual GPU (scheduler.h): the broker grants and revokes,
// the client's launches pass while it holds the GPU and wait (futex on grant_seq)
// while it does not.
enum GateState : uint32_t {
  kGateFree = 0,  // not scheduled: launch freely
  kGateHeld = 1,  // granted: launch
  kGateWait = 2,  // not granted (or being revoked): wait for a grant
};
struct Gate {
  // Written by the broker.
  std::atomic<uint32_t> state;      // GateState
  std::atomic<uint32_t> grant_seq;  // futex word; odd while state and slice change, +2 per change
  std::atomic<uint64_t> slice;      // the grant held or being revoked
  // Written by the client.
  std::atomic<uint32_t> waiting;   // threads waiting at the gate
  std::atomic<uint64_t> released_slice;
  std::atomic<uint64_t> drained_ns;  // when its work drained after the last release
  std::atomic<uint64_t> waited_ns;   // total time its threads waited at the gate
};

// The compute units a virtual GPU's new streams are held to (spatial sharing, AMD CU
// masks: docs/scheduling.md), written by the broker: bit i of words[i / 32] is CU i. A
// sequence lock: `seq` is odd while the broker writes, +2 per change (0: never set).
inline constexpr uint32_t kCuMaskWords = 16;  // 512 CUs
struct CuMaskSlot {
  std::atomic<uint32_t> seq;
  std::atomic<uint32_t> count;  // words in use; 0: no mask (every CU)
  std::atomic<uint32_t> words[kCuMaskWords];
};

// Launch tallies: each client thread counts its own launches and copies here, by
// (virtual GPU, kind, kernel name, stream), so no count is lost however fast it
// launches and no line is written by two threads. A thread owns one TallySlot while
// it lives (claimed by compare-and-swap on `owner`); an entry's key and stream are
// written once, before its count first moves; counts and bytes only grow, written by
// the owning thread alone. The broker reads the growth since its last look. A launch
// that finds no slot or no free entry goes to the ring as a record instead.
inline constexpr uint32_t kTallySlots = 64;
inline constexpr uint32_t kTallyEntries = 15;
struct TallyEntry {
  std::atomic<uint64_t> key;  // 0: unused; else TallyKey(...)
  std::atomic<uint64_t> stream;
  std::atomic<uint64_t> count;  // launches or copies
  std::atomic<uint64_t> bytes;  // copies and memsets
};
struct alignas(64) TallySlot {
  std::atomic<uint32_t> owner;  // 1 while a thread owns it
  uint32_t reserved[7];
  TallyEntry entries[kTallyEntries];
};
static_assert(sizeof(TallySlot) == 512);
// Bit 63 marks a key as set; then the GPU, the kind and the name slot (as in a record).
inline uint64_t TallyKey(uint8_t device, RecordKind kind, uint16_t name) {
  return (uint64_t{1} << 63) | (uint64_t{device} << 32) | (uint64_t{static_cast<uint8_t>(kind)} << 16) | name;
}

struct Channel {
  uint32_t magic;
  uint32_t version;
  // Written by the broker only.
  std::atomic<uint64_t> grant_generation;                // bumped after any grant below changes
  std::atomic<uint64_t> cap_bytes[kMaxDevices];          // per virtual GPU; 0: uncapped
  std::atomic<uint64_t> tenant_held_bytes[kMaxDevices];  // all the tenant's processes
  std::atomic<uint32_t> weight_milli;
  std::atomic<uint32_t> client_wake;  // futex word: bumped when the broker revokes a grant or recalls leases
  std::atomic<uint32_t> lease_recall;  // bumped when the broker asks for the client's idle leases back (Give)
  Gate gates[kMaxDevices];
  CuMaskSlot cu_masks[kMaxDevices];
  // Written by the client only.
  std::atomic<uint64_t> used_bytes[kMaxDevices];
  std::atomic<uint64_t> ring_head;  // records published (positions claimed)
  // What did not fit in the ring, summarized: records, of them copies, their bytes.
  std::atomic<uint64_t> dropped_records;
  std::atomic<uint64_t> dropped_copies;
  std::atomic<uint64_t> dropped_bytes;
  // Time the GPU spent in the process's collectives (NCCL), per virtual GPU, measured
  // on its streams by events (hooks/nccl), and how many were timed.
  std::atomic<uint64_t> collective_ns[kMaxDevices];
  std::atomic<uint64_t> collectives;
  std::atomic<uint32_t> name_count;  // name slots claimed
  KernelName names[kNameSlots];
  TallySlot tallies[kTallySlots];
  // Written by the broker only.
  std::atomic<uint64_t> ring_tail;  // records consumed
  LaunchRecord ring[kRingRecords];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the channel needs lock-free 64-bit atomics");
static_assert(sizeof(std::atomic<uint32_t>) == 4, "futex words are 32-bit");

}  // namespace gpushare::protocol
