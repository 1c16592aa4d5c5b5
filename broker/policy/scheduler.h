// Weighted fair queuing of GPU time, per physical GPU, by exclusive slices.
//
// A flow is one client's virtual GPU (placed on a physical GPU). At most one flow per
// GPU holds it at a time: the holder's launches pass its gate, the others' wait
// (without spinning) until granted. A grant lasts a quantum (a heavier flow's up to
// four, in proportion to its weight over the lightest one waiting); when it ends and another
// flow is waiting, the holder is asked to give the GPU back: it stops launching,
// drains what it queued, and reports when the drain completed. The time from the
// grant to that measured drain is the GPU time it used (the GPU was its alone), and
// is charged to its virtual time as used / weight. The waiting flow with the least
// virtual time is granted next (start-time fair queuing over measured service).
// Work-conserving: a flow that waits for nothing is skipped, a holder that launches
// nothing for a few ms after its grant gives way to those waiting, a lone holder keeps the
// GPU without a hand-off, and a flow that comes back from idle (more than a quantum
// without a grant, release or want) starts at the GPU's current virtual time: it
// cannot bank service while idle. One that gave back a slice and wants the GPU again
// soon after is still backlogged and keeps its place.
//
// Ceilings (a vGPU profile's or a tenant's max_compute): a flow with ceiling c gets at
// most c of its GPU's wall time, even alone: not work-conserving, on purpose. A token
// bucket per flow: its budget of GPU time accrues at c per wall ns (up to two quanta),
// and time held (as charged) spends it. A waiting flow is granted only with a quantum of
// budget; a holder is revoked when its budget runs out, whether or not others wait, and
// waits (still backlogged) until the budget is back. Only flows that may be granted
// count as waiting for the GPU, so a throttled flow does not make the holder hand off.
// Below their ceilings, flows share by weight as above; what a ceiling leaves goes to
// the others (never past their own ceilings).
//
// Spatial sharing (spatial.h): a flow may be given a part of its GPU (a CU mask). Flows
// on disjoint masks hold the GPU at the same time, each charged its held time times its
// fraction of the GPU; a flow without a mask needs the whole GPU. A waiting flow that
// is blocked by holders reserves its part: flows behind it in virtual time are granted
// only beside it, never on CUs it waits for, so it cannot be starved. Without masks
// this is exactly the exclusive schedule above.
//
// Pure: no I/O; time is passed in (CLOCK_MONOTONIC ns). The daemon carries out the
// actions through the clients' channels.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "ledger.h"
#include "spatial.h"

namespace gpushare::broker {

// How long a flow waited at its gate, from wanting its GPU to being granted it (the gate
// wait the monitoring histogram shows): counts per bucket of kWaitBoundsNs (the last
// bucket: longer than every bound), their sum and number.
inline constexpr uint64_t kWaitBoundsNs[] = {100'000,     250'000,     500'000,       1'000'000,     2'500'000,
                                             5'000'000,   10'000'000,  25'000'000,    50'000'000,    100'000'000,
                                             250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000, 10'000'000'000};
inline constexpr size_t kWaitBuckets = sizeof kWaitBoundsNs / sizeof kWaitBoundsNs[0] + 1;
struct WaitHistogram {
  uint64_t counts[kWaitBuckets] = {};
  uint64_t sum_ns = 0;
  uint64_t count = 0;
  void Observe(uint64_t wait_ns);
};

struct SchedAction {
  enum class Kind { kGrant, kRevoke };
  Kind kind;
  ClientId client;
  int device;      // the client's virtual GPU
  uint64_t slice;  // the grant's id (a revoke names the grant to give back)
};

class Scheduler {
 public:
  struct Params {
    uint64_t quantum_ns = 20'000'000;
    uint64_t revoke_timeout_ns = 1'000'000'000;   // a holder that does not give back by then loses the GPU
    uint64_t share_half_life_ns = 1'000'000'000;  // smoothing of the measured shares
    uint64_t idle_grace_ns = 5'000'000;           // a granted flow that launches nothing this long gives way
  };
  explicit Scheduler(Params params);
  void SetParams(Params params) { params_ = params; }

  // Flows come and go with their clients. `weight` > 0 (tenant weight x class weight).
  void AddFlow(ClientId client, int device, int gpu, double weight);
  void RemoveClient(ClientId client);
  void SetWeight(ClientId client, int device, double weight);
  // The most of its GPU's time a flow may have, in (0, 1) (nullopt, or 1 and more: no
  // ceiling). Its budget starts at a quantum: its first launches pass at once.
  void SetCeiling(ClientId client, int device, std::optional<double> ceiling, uint64_t now_ns);
  // The part of its GPU a flow runs on (nullopt: all of it) and the fraction of the
  // GPU that is (0, 1]: what it is charged per unit of time held from `now_ns` on.
  void SetMask(ClientId client, int device, std::optional<CuMask> mask, double fraction, uint64_t now_ns);

  // The client has launches waiting at its gate for `device`.
  void Want(ClientId client, int device, uint64_t now_ns);
  // The client launched on `device` (seen in its records) by `now_ns`.
  void Launched(ClientId client, int device, uint64_t now_ns);
  // The client gave back grant `slice`; its work drained at `drained_ns` (client-said:
  // clamped to what the broker's own clock allows). A flow that gave back because its
  // quantum ended is still backlogged: it waits for its next turn without asking.
  void Released(ClientId client, int device, uint64_t slice, uint64_t drained_ns, uint64_t now_ns);

  // Grants and revokes due at `now_ns`. Call after any of the above and by NextDeadline.
  std::vector<SchedAction> Tick(uint64_t now_ns);
  // When Tick next has something to do on its own (a quantum or a revoke timing out);
  // nullopt: nothing until a client speaks.
  std::optional<uint64_t> NextDeadline() const;

  struct FlowStatus {
    int gpu = -1;
    double weight = 0;
    bool holding = false;
    bool waiting = false;
    uint64_t used_ns = 0;       // all GPU time charged so far
    double share = 0;           // of its GPU's charged time, recent (smoothed)
    double busy = 0;            // its GPU time per wall-clock time, recent (smoothed): its demand, 0..1
    bool unresponsive = false;  // ignored a revoke past the timeout
    std::optional<double> ceiling;
    bool throttled = false;  // waiting, but out of budget under its ceiling
    WaitHistogram waits;     // want -> grant, every grant so far
    uint64_t grants = 0;
  };
  std::optional<FlowStatus> Status(ClientId client, int device, uint64_t now_ns) const;
  // Who holds `gpu` (client, device), if anyone (with masks: the first of its holders).
  std::optional<std::pair<ClientId, int>> Holder(int gpu) const;
  // Every flow holding `gpu` (more than one only on disjoint masks).
  std::vector<std::pair<ClientId, int>> Holders(int gpu) const;
  // Grants made on `gpu` so far (hand-offs of the GPU from one flow to the next, or a
  // flow's return to it after it gave it back).
  uint64_t Grants(int gpu) const;

 private:
  using Key = std::pair<ClientId, int>;
  struct Flow {
    int gpu = -1;
    double weight = 1;
    double vtime = 0;
    std::optional<CuMask> mask;  // nullopt: needs the whole GPU
    double fraction = 1;         // of the GPU, charged per unit of time held
    bool waiting = false;
    uint64_t wait_order = 0;  // ties in virtual time go to the flow waiting longest
    uint64_t wait_since = 0;  // when its current wait began
    WaitHistogram waits;
    uint64_t grants = 0;
    uint64_t active_at = 0;   // its last grant, release or want: idle since then
    uint64_t launched_at = 0;
    uint64_t used_ns = 0;
    double recent_ns = 0;  // decayed
    uint64_t recent_at = 0;
    bool unresponsive = false;
    std::optional<double> ceiling;  // of its GPU's wall time, (0, 1)
    double budget_ns = 0;           // GPU time it may still hold, as of budget_at
    uint64_t budget_at = 0;
  };
  // One flow's hold of a GPU.
  struct Hold {
    uint64_t slice = 0;         // the grant id
    uint64_t period_start = 0;  // since when its use is not yet charged
    uint64_t quantum_end = 0;
    uint64_t grant_at = 0;
    bool revoking = false;
    bool idle_revoke = false;  // revoked for launching nothing, not at its quantum's end
    uint64_t revoke_deadline = 0;
  };
  struct Gpu {
    std::map<Key, Hold> holds;  // one, or several on disjoint masks
    double vclock = 0;          // the least virtual time of the flows in service
    double recent_ns = 0;       // decayed, all flows
    uint64_t recent_at = 0;
    uint64_t grants = 0;
  };
  void Charge(Flow& f, Gpu& g, uint64_t held_ns, uint64_t now_ns);
  // Charges the holder `key` of `g` for its time since its period_start; its period restarts now.
  void ChargeHoldUntil(Gpu& g, const Key& key, Hold& h, uint64_t now_ns);
  void UpdateVclock(Gpu& g);
  // Whether another flow waits for CUs `holder` holds (any flow, when either has no mask).
  bool ConflictWaiting(int gpu, const Key& holder, uint64_t now_ns) const;
  // When the first flow waiting for CUs `holder` holds may be granted (0: now); nullopt: none waits.
  std::optional<uint64_t> ConflictGrantableAt(int gpu, const Key& holder) const;
  // Ceilings: the budget a flow not holding has at `now_ns`; whether it may be granted;
  // when it may (a waiting flow short of budget); when a holder's budget runs out.
  double BudgetAt(const Flow& f, uint64_t now_ns) const;
  bool MayBeGranted(const Flow& f, uint64_t now_ns) const;
  uint64_t GrantableAt(const Flow& f) const;
  uint64_t BudgetEndsAt(const Flow& f, const Hold& h) const;
  void Settle(Flow& f, uint64_t now_ns, double spent_ns);
  uint64_t BurstNs() const { return 2 * params_.quantum_ns; }
  bool OverlapsOtherHolder(const Gpu& g, const Key& holder) const;
  uint64_t QuantumFor(const Key& key, int gpu) const;
  double Decayed(double value, uint64_t since, uint64_t now) const;
  void Grant(int gpu, Gpu& g, const Key& key, uint64_t now_ns, std::vector<SchedAction>* actions);
  // The flow starts waiting at `now_ns` (its place among the waiting: last).
  void StartWaiting(Flow& f, uint64_t now_ns);

  Params params_;
  uint64_t next_slice_ = 1;
  uint64_t next_wait_order_ = 1;
  std::map<Key, Flow> flows_;
  std::map<int, Gpu> gpus_;
};

}  // namespace gpushare::broker
