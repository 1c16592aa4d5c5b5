// The client's memory ledger (see memory_ledger.h).
#include "memory_ledger.h"

namespace gpushare {

bool MemoryLedger::Reserve(int device, uint64_t bytes) {
  Device& d = devices_[device];
  const uint64_t cap = d.cap.load();
  uint64_t used = d.used.load();
  do {
    if (bytes > cap || used > cap - bytes) return false;
  } while (!d.used.compare_exchange_weak(used, used + bytes));
  return true;
}

void MemoryLedger::Unreserve(int device, uint64_t bytes) { devices_[device].used.fetch_sub(bytes); }

void MemoryLedger::Remember(AllocSpace space, uint64_t key, Allocation a) {
  Shard& s = ShardOf(space, key);
  std::lock_guard<std::mutex> lock(s.mu);
  s.live[key] = a;
}

std::optional<MemoryLedger::Allocation> MemoryLedger::Forget(AllocSpace space, uint64_t key) {
  Shard& s = ShardOf(space, key);
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.live.find(key);
  if (it == s.live.end()) return std::nullopt;
  Allocation a = it->second;
  s.live.erase(it);
  return a;
}

std::optional<MemoryLedger::Allocation> MemoryLedger::Find(AllocSpace space, uint64_t key) const {
  Shard& s = ShardOf(space, key);
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.live.find(key);
  if (it == s.live.end()) return std::nullopt;
  return it->second;
}

}  // namespace gpushare
