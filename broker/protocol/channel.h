// The shared-memory channel between one client and the broker: a segment the broker
// creates per client (mode 0600, owned by the client's uid), holding what the broker
// grants (caps, the tenant's holdings, weight), what the client reports (usage), and
// the client's launch-record ring. Only atomics, no lock: a client killed at any
// instant leaves nothing for the broker or another client to wait on, and whatever a
// client writes here is read by the broker as untrusted data (see ChannelReader).
#pragma once

#include <atomic>
#include <cstdint>

#include "protocol.h"

namespace gpushare::protocol {

inline constexpr uint32_t kChannelMagic = 0x4e484347;  // "GCHN"
inline constexpr uint32_t kChannelVersion = 1;
inline constexpr uint32_t kRingRecords = 1024;  // a power of two

// One kernel launch as the broker sees it (the scheduling issue fills and reads these).
struct LaunchRecord {
  uint64_t function;    // an opaque id of the kernel
  uint64_t enqueue_ns;  // CLOCK_MONOTONIC
  uint32_t device;      // virtual
  uint32_t blocks;      // grid size
  uint32_t threads;     // per block
  uint32_t flags;
};

struct Channel {
  uint32_t magic;
  uint32_t version;
  // Written by the broker only.
  std::atomic<uint64_t> grant_generation;                // bumped after any grant below changes
  std::atomic<uint64_t> cap_bytes[kMaxDevices];          // per virtual GPU; 0: uncapped
  std::atomic<uint64_t> tenant_held_bytes[kMaxDevices];  // all the tenant's processes
  std::atomic<uint32_t> weight_milli;
  // Written by the client only.
  std::atomic<uint64_t> used_bytes[kMaxDevices];
  std::atomic<uint64_t> ring_head;  // records published
  // Written by the broker only.
  std::atomic<uint64_t> ring_tail;  // records consumed
  LaunchRecord ring[kRingRecords];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the channel needs lock-free 64-bit atomics");

}  // namespace gpushare::protocol
