// The client runtime: one per process, API-neutral. It owns the options, the virtual
// device map and the memory ledger, and reports out-of-memory refusals. The API hooks
// (hooks/) translate driver calls into calls on it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>

#include "broker_link.h"
#include "device_map.h"
#include "launch_gate.h"
#include "memory_ledger.h"
#include "options.h"

namespace gpushare {

class Client {
 public:
  // Constructed on first use (thread-safe), never destroyed: hooks may run during exit.
  // Inline: every hook asks.
  static Client& Get() {
    static Client* client = new Client();
    return *client;
  }

  const ClientOptions& options() const { return options_; }
  MemoryLedger& ledger() { return ledger_; }
  // Launch records and GPU-time gates (used by the launch hooks on their hot path).
  LaunchGate& gate() { return gate_; }

  // Called by a hook once the real driver is initialized; builds the device map and
  // the caps. Later calls return at once. `node_index`: the node-wide index of each GPU
  // the runtime shows, when its own visible-devices masks renumber them (the broker
  // places by node-wide index); nullopt: no mask, or its order unknown.
  // The MPS share the broker gives this process (asked once, before the driver starts);
  // percent 0: it stays out of MPS. nullopt: no broker answers.
  const std::optional<protocol::MpsTerms>& MpsTerms();
  void InitDevices(int physical_count, const std::optional<std::vector<int>>& node_index = std::nullopt);
  bool devices_ready() const { return devices_ready_.load(std::memory_order_acquire); }
  const DeviceMap& devices() const { return devices_; }

  // Takes `bytes` on virtual GPU `device` for `call` (against this process's cap and,
  // with a broker, the tenant's across its processes), or logs why not (once per
  // refusal: what is held, the cap, optionally the call stack) and returns false.
  bool Reserve(int device, uint64_t bytes, const char* call);
  // Returns `bytes` taken by Reserve (or ChargeOverhead): a free. With a broker they
  // stay this process's as lease, for its next allocations, until it is idle or the
  // broker recalls them (TendLeases).
  void Release(int device, uint64_t bytes);
  // Returns `bytes` taken by Reserve that the driver then refused: straight back to the
  // broker, as if never asked for.
  void Unreserve(int device, uint64_t bytes);
  // Gives the broker back the leases not in use, when the broker recalled them or
  // nothing was allocated or freed for a while (the gate's drain thread calls it).
  void TendLeases();
  // What counts as used on `device` in the cap view (cuMemGetInfo, NVML): this
  // process's holdings, or its tenant's across processes when a broker says more.
  uint64_t Held(int device);
  // The cap view over what the driver says of `device` (free, total): (cap - held,
  // cap), never more free than the device has; left alone when it is uncapped.
  void CapView(int device, uint64_t* free_bytes, uint64_t* total_bytes);
  // A live allocation (recorded in the ledger under `key` after Reserve) was freed:
  // its bytes go back. Unknown keys (allocations made before the shim saw them) are ignored.
  void Uncharge(AllocSpace space, uint64_t key);
  // Which virtual GPU a memory pool the application has used belongs to (its
  // stream-ordered allocations are charged there); -1 if the hooks never saw it.
  void NotePool(uint64_t pool, int device);
  int PoolDevice(uint64_t pool);

  // Charges memory the driver holds for the process itself (a context's), which may
  // pass the cap: later allocations are refused instead. `what` names it in the log.
  void ChargeOverhead(int device, uint64_t bytes, const char* what);
  // A collective communicator (NCCL/RCCL) this process joined or left, told to the
  // broker: its warning about the communicator ("" if none, or standalone).
  std::string ReportCommunicator(const CommunicatorEvent& event) { return broker_.SendComm(event).value_or(""); }

  // True the first time it is called for `device` (the context overhead is charged once).
  bool MarkContextCharged(int device);

 private:
  Client();
  std::vector<uint64_t> HeldPerDevice() const;
  // Takes `bytes` of `device`'s lease (lock-free); false if it holds less.
  bool TakeFromLease(int device, uint64_t bytes);
  // The slow path: asks the broker for lease until `bytes` can be taken from it.
  BrokerLink::Answer GrowLease(int device, uint64_t bytes, std::string* why);
  void ReturnLeases();
  // GPUSHARE_MEMORY_LIMIT naming a virtual GPU past the map: every cap becomes 0.
  void CheckCapIndices(std::vector<std::string>* errors);
  void ApplyBrokerCaps(const std::vector<uint64_t>& caps);

  ClientOptions options_;
  std::once_flag devices_once_;
  std::once_flag mps_once_;
  std::optional<protocol::MpsTerms> mps_terms_;
  std::atomic<bool> devices_ready_{false};
  DeviceMap devices_;
  MemoryLedger ledger_;
  LaunchGate gate_;  // before broker_: the link reports its channels to it
  BrokerLink broker_;
  uint64_t asked_caps_[MemoryLedger::kMaxDevices] = {};  // per virtual GPU, kNoCap: none
  std::atomic<bool> context_charged_[MemoryLedger::kMaxDevices] = {};
  // Allocation leases (with a broker): capacity the broker granted this process beyond
  // what it has allocated, per virtual GPU.
  std::atomic<uint64_t> lease_free_[MemoryLedger::kMaxDevices] = {};
  std::atomic<uint32_t> lease_requests_[MemoryLedger::kMaxDevices] = {};
  std::mutex lease_mu_;                        // one lease request at a time
  std::atomic<uint64_t> lease_activity_{0};    // allocations and frees made with a broker
  uint64_t seen_activity_ = 0;                 // TendLeases only
  uint64_t activity_changed_ns_ = 0;           // TendLeases only
  uint32_t seen_recall_ = 0;                   // TendLeases only
  std::mutex pools_mu_;
  std::map<uint64_t, int> pools_;  // pool handle -> virtual GPU
};

}  // namespace gpushare
