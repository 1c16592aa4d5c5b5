// The registry of registered clients: who each one is (peer, tenant, job, rank), what it
// was granted (GPUs, cap, weight, channel) and why it landed where it did; and the
// questions about tenants and jobs that registration and placement ask of it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/policy/classifier.h"
#include "broker/policy/ledger.h"
#include "broker/policy/profiles.h"

namespace gpushare::broker {

struct ClientRecord {
  PeerCredentials peer;
  std::string tenant;
  std::string job;
  int rank = -1;
  int job_size = 0;  // ranks of its job on this node (0: unknown); with a rank, its GPUs are the job's
  double weight = 1;
  std::vector<int> physical;          // virtual i -> physical GPU
  std::optional<uint64_t> cap_bytes;  // per GPU, the tenant's
  std::string channel;
  bool scheduled = false;                         // its launches pass gates the scheduler opens
  std::optional<double> weight_override;          // set by `gpushare-smi set-weight` until reload
  WorkClass assumed_class = WorkClass::kUnknown;  // what placement judged it by, until it is classified
  std::vector<std::string> placement;             // why it landed where it did (`gpushare-smi --explain`)
  // A vGPU instance granted at registration: its cap, weight and ceiling (profiles.h).
  std::optional<Instance> instance;
  std::optional<double> max_compute;  // the ceiling its flows run under: the instance's or the tenant's
  // MPS (spatial = "mps"): the class its SM share was fixed for before its context was
  // made (unknown: not in MPS), and the program its measured class is remembered for.
  WorkClass mps_class = WorkClass::kUnknown;
  std::string mps_program;
};

// The cap a client holds to per GPU: its instance's memory (within its tenant's cap), else its tenant's.
inline std::optional<uint64_t> ClientCap(const ClientRecord& c) {
  if (!c.instance) return c.cap_bytes;
  return std::min(c.instance->memory_bytes, c.cap_bytes.value_or(c.instance->memory_bytes));
}

class ClientRegistry {
 public:
  using Map = std::map<ClientId, ClientRecord>;

  ClientRecord& Add(ClientId id) { return clients_[id]; }
  void Remove(ClientId id) { clients_.erase(id); }
  bool Has(ClientId id) const { return clients_.count(id) > 0; }
  const ClientRecord* Find(ClientId id) const;
  ClientRecord& at(ClientId id) { return clients_.at(id); }
  const ClientRecord& at(ClientId id) const { return clients_.at(id); }
  size_t size() const { return clients_.size(); }
  // In client id order (what the status report and every node-wide pass rely on).
  Map::iterator begin() { return clients_.begin(); }
  Map::iterator end() { return clients_.end(); }
  Map::const_iterator begin() const { return clients_.begin(); }
  Map::const_iterator end() const { return clients_.end(); }

  // Whether `tenant` has a registered client at all, and one on physical GPU `g`.
  bool TenantLive(const std::string& tenant) const;
  bool TenantOn(const std::string& tenant, int g) const;
  // Whether a rank of `tenant`'s `job` is still registered.
  bool JobLive(const std::string& tenant, const std::string& job) const;
  // What GPU `g` has been promised to capped tenants (other than `except_tenant`) with
  // clients without an instance on it: each one's cap, or what it holds where that is
  // more; and to every instance on it, its memory.
  uint64_t Promised(int g, const std::string& except_tenant, const NodeLedger& ledger) const;
  // What GPU `g` has been promised to clients without an instance (of any tenant).
  uint64_t PromisedOutsideInstances(int g, const NodeLedger& ledger) const;
  // Every granted instance.
  std::vector<Instance> Instances() const;

 private:
  Map clients_;
};

}  // namespace gpushare::broker
