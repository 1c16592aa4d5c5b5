// What this client holds on each virtual GPU, against its caps. Reservation is a
// lock-free compare-and-swap, so threads racing to the cap never overshoot it; the
// table of live allocations (address -> GPU, bytes) is sharded to keep frees cheap.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace gpushare {

enum class AllocKind : uint8_t { kDevice, kPitch, kManaged, kAsync, kVmm, kArray, kContext };

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

  struct Allocation {
    int device;
    uint64_t bytes;
    AllocKind kind;
  };
  // Records a live allocation made after Reserve; Forget returns it (if known) so the
  // caller can Unreserve.
  void Remember(uint64_t key, Allocation a);
  std::optional<Allocation> Forget(uint64_t key);
  std::optional<Allocation> Find(uint64_t key) const;

 private:
  struct Device {
    std::atomic<uint64_t> used{0};
    std::atomic<uint64_t> cap{kNoCap};
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Allocation> live;
  };
  Shard& ShardOf(uint64_t key) const { return shards_[(key >> 9) % shards_.size()]; }

  std::array<Device, kMaxDevices> devices_;
  mutable std::array<Shard, 16> shards_;
};

}  // namespace gpushare
