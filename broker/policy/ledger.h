// The node-wide memory ledger: what every client, and so every tenant, holds on each
// physical GPU. A grant is checked against the tenant's cap (across all of its
// processes) and the GPU's capacity; a client can only give back what it holds, so
// nothing one tenant reports changes another's ledger; a client's hang-up returns
// all it held. Pure: no I/O, no clock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gpushare::broker {

using ClientId = uint64_t;

class NodeLedger {
 public:
  explicit NodeLedger(std::vector<uint64_t> gpu_capacity_bytes);

  int gpu_count() const { return static_cast<int>(capacity_.size()); }
  uint64_t capacity(int gpu) const { return capacity_[gpu]; }
  const std::vector<uint64_t>& capacities() const { return capacity_; }

  // A tenant's cap per GPU; the first setting holds until SetTenantCap changes it.
  void SetTenantCap(const std::string& tenant, std::optional<uint64_t> cap_per_gpu);
  std::optional<uint64_t> TenantCap(const std::string& tenant) const;

  bool AddClient(ClientId id, const std::string& tenant);  // false if the id is taken
  bool HasClient(ClientId id) const { return clients_.count(id) > 0; }

  // A client's own cap per GPU (a vGPU instance's memory), checked besides its tenant's.
  void SetClientCap(ClientId id, std::optional<uint64_t> cap_per_gpu);

  enum class Grant { kGranted, kTenantCap, kClientCap, kDeviceFull, kBadRequest };
  Grant Take(ClientId id, int gpu, uint64_t bytes);
  // What the client could still take on `gpu`: the smallest of its tenant's room under
  // the cap, its own room under its cap (an instance's memory) and the GPU's free capacity. 0 for an unknown client or GPU.
  uint64_t Room(ClientId id, int gpu) const;
  // Records memory the client says it already holds (a context's, a forced Take; what
  // a re-registering client held before a broker restart): as much of `bytes` as Room
  // allows, never more, so a client cannot book past its tenant's cap or the device
  // by calling memory "already held" (nor past its own cap). Returns what it recorded.
  uint64_t Record(ClientId id, int gpu, uint64_t bytes);
  // Gives back up to `bytes` of what the client holds on `gpu`; returns what it gave.
  uint64_t Give(ClientId id, int gpu, uint64_t bytes);
  // The client is gone: everything it held returns. Returns the bytes freed.
  uint64_t RemoveClient(ClientId id);

  uint64_t Held(ClientId id, int gpu) const;
  uint64_t TenantHeld(const std::string& tenant, int gpu) const;
  uint64_t GpuHeld(int gpu) const { return gpu_held_[gpu]; }

 private:
  struct Client {
    std::string tenant;
    std::vector<uint64_t> held;
    std::optional<uint64_t> cap;
  };
  struct Tenant {
    std::optional<uint64_t> cap;
    std::vector<uint64_t> held;
  };
  Tenant& TenantOf(const std::string& name);

  std::vector<uint64_t> capacity_;
  std::vector<uint64_t> gpu_held_;
  std::map<ClientId, Client> clients_;
  std::map<std::string, Tenant> tenants_;
};

}  // namespace gpushare::broker
