// What this client holds on each virtual GPU, against its caps. Reservation is a
// lock-free compare-and-swap, so threads racing to the cap never overshoot it; the
// table of live allocations (address -> GPU, bytes) is sharded to keep frees cheap.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace gpushare {

enum class AllocKind : uint8_t { kDevice, kPitch, kManaged, kAsync, kVmm, kArray, kContext };

// What a live allocation is known by: a device address, a physical-memory handle
// (VMM), or an array handle. Each has its own table, so their values never collide.
enum class AllocSpace : uint8_t { kAddress = 0, kHandle = 1, kArray = 2 };

// An API's address or handle (a pointer, an integer) as a ledger key.
template <typename Key>
uint64_t LedgerKey(Key k) {
  if constexpr (std::is_pointer_v<Key>)
    return reinterpret_cast<uint64_t>(k);
  else
    return static_cast<uint64_t>(k);
}

class MemoryLedger {
 public:
  static constexpr int kMaxDevices = 64;
  static constexpr uint64_t kNoCap = UINT64_MAX;

  void SetCap(int device, uint64_t cap_bytes) { devices_[device].cap.store(cap_bytes); }
  uint64_t Cap(int device) const { return devices_[device].cap.load(); }
  uint64_t Used(int device) const { return devices_[device].used.load(); }

  // Takes `bytes` on `device` unless that would pass its cap.
  bool Reserve(int device, uint64_t bytes);
  void Unreserve(int device, uint64_t bytes);
  void ForceReserve(int device, uint64_t bytes) { devices_[device].used.fetch_add(bytes); }  // may pass the cap

  struct Allocation {
    int device;
    uint64_t bytes;
    AllocKind kind;
  };
  // Records a live allocation made after Reserve; Forget returns it (if known) so the
  // caller can Unreserve.
  void Remember(AllocSpace space, uint64_t key, Allocation a);
  std::optional<Allocation> Forget(AllocSpace space, uint64_t key);
  std::optional<Allocation> Find(AllocSpace space, uint64_t key) const;

 private:
  struct Device {
    std::atomic<uint64_t> used{0};
    std::atomic<uint64_t> cap{kNoCap};
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Allocation> live;
  };
  static constexpr size_t kShards = 16;
  Shard& ShardOf(AllocSpace space, uint64_t key) const {
    return shards_[static_cast<size_t>(space) * kShards + (key >> 9) % kShards];
  }

  std::array<Device, kMaxDevices> devices_;
  mutable std::array<Shard, 3 * kShards> shards_;
};

}  // namespace gpushare
