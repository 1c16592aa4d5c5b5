// WFQ of GPU time by exclusive slices, or shared ones on disjoint CU masks (see scheduler.h).
#include "scheduler.h"

#include <algorithm>
#include <cmath>

namespace gpushare::broker {

Scheduler::Scheduler(Params params) : params_(params) {}

void Scheduler::AddFlow(ClientId client, int device, int gpu, double weight) {
  Flow f;
  f.gpu = gpu;
  f.weight = weight > 0 ? weight : 1;
  f.vtime = gpus_[gpu].vclock;  // a newcomer starts level with the flow in service
  flows_[{client, device}] = f;
}

void Scheduler::RemoveClient(ClientId client) {
  for (auto it = flows_.begin(); it != flows_.end();) {
    if (it->first.first != client) {
      ++it;
      continue;
    }
    // A GPU it held goes to the next waiter at the next Tick; a dead client's time is not charged.
    gpus_[it->second.gpu].holds.erase(it->first);
    it = flows_.erase(it);
  }
}

void Scheduler::SetWeight(ClientId client, int device, double weight) {
  auto it = flows_.find({client, device});
  if (it != flows_.end() && weight > 0) it->second.weight = weight;
}

void Scheduler::SetCeiling(ClientId client, int device, std::optional<double> ceiling, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return;
  if (ceiling && !(*ceiling > 0)) return;
  if (ceiling && *ceiling >= 1) ceiling.reset();
  Flow& f = it->second;
  if (f.ceiling == ceiling) return;
  Gpu& g = gpus_[f.gpu];
  if (auto h = g.holds.find(it->first); h != g.holds.end() && !h->second.revoking)
    ChargeHoldUntil(g, it->first, h->second, now_ns);
  // A throttled flow fell behind in virtual time by its own ceiling: it is owed nothing.
  if (f.ceiling && !ceiling) f.vtime = std::max(f.vtime, g.vclock);
  f.ceiling = ceiling;
  f.budget_ns = static_cast<double>(params_.quantum_ns);
  f.budget_at = now_ns;
}

std::optional<uint64_t> Scheduler::ConflictGrantableAt(int gpu, const Key& holder) const {
  const Flow& h = flows_.at(holder);
  std::optional<uint64_t> first;
  for (const auto& [key, f] : flows_) {
    if (f.gpu != gpu || !f.waiting || key == holder || SpatialPolicy::MayCoHold(h.mask, f.mask)) continue;
    const uint64_t at = f.ceiling ? GrantableAt(f) : 0;
    if (!first || at < *first) first = at;
  }
  return first;
}

double Scheduler::BudgetAt(const Flow& f, uint64_t now_ns) const {
  if (!f.ceiling) return 0;
  return std::min(static_cast<double>(BurstNs()),
                  f.budget_ns + *f.ceiling * static_cast<double>(now_ns - std::min(now_ns, f.budget_at)));
}

bool Scheduler::MayBeGranted(const Flow& f, uint64_t now_ns) const {
  return !f.ceiling || BudgetAt(f, now_ns) >= static_cast<double>(params_.quantum_ns);
}

namespace {

// `base` plus `ns` (> 0) rounded up, saturating: a tiny ceiling must not overflow a time.
uint64_t NsAfter(uint64_t base, double ns) {
  const double limit = static_cast<double>(UINT64_MAX - base) / 2;
  return ns >= limit ? base + static_cast<uint64_t>(limit) : base + static_cast<uint64_t>(std::ceil(ns));
}

}  // namespace

uint64_t Scheduler::GrantableAt(const Flow& f) const {
  const double short_ns = static_cast<double>(params_.quantum_ns) - f.budget_ns;
  if (!f.ceiling || short_ns <= 0) return f.budget_at;
  return NsAfter(f.budget_at, short_ns / *f.ceiling);
}

uint64_t Scheduler::BudgetEndsAt(const Flow& f, const Hold& h) const {
  // The budget as of the hold's uncharged period, then spent at (fraction - ceiling) per ns.
  const double at_start =
      f.budget_ns + *f.ceiling * (static_cast<double>(h.period_start) - static_cast<double>(f.budget_at));
  const double rate = f.fraction - *f.ceiling;
  if (at_start <= 0) return h.period_start;
  if (rate <= 0) return UINT64_MAX;
  return NsAfter(h.period_start, at_start / rate);
}

void Scheduler::Settle(Flow& f, uint64_t now_ns, double spent_ns) {
  if (!f.ceiling) return;
  const double accrued = *f.ceiling * (static_cast<double>(now_ns) - static_cast<double>(f.budget_at));
  f.budget_ns = std::min(static_cast<double>(BurstNs()), f.budget_ns + accrued - spent_ns);
  f.budget_at = now_ns;
}

void Scheduler::SetMask(ClientId client, int device, std::optional<CuMask> mask, double fraction, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end() || !(fraction > 0) || fraction > 1) return;
  Flow& f = it->second;
  Gpu& g = gpus_[f.gpu];
  // Time held so far is charged at the fraction it was held with.
  if (auto h = g.holds.find(it->first); h != g.holds.end() && !h->second.revoking)
    ChargeHoldUntil(g, it->first, h->second, now_ns);
  f.mask = std::move(mask);
  f.fraction = fraction;
}

double Scheduler::Decayed(double value, uint64_t since, uint64_t now) const {
  if (now <= since || params_.share_half_life_ns == 0) return value;
  return value * std::exp2(-static_cast<double>(now - since) / static_cast<double>(params_.share_half_life_ns));
}

void Scheduler::Charge(Flow& f, Gpu& g, uint64_t held_ns, uint64_t now_ns) {
  // A flow on part of the GPU pays for that part: held time x its fraction of the CUs.
  const uint64_t used_ns =
      f.fraction >= 1 ? held_ns : static_cast<uint64_t>(std::llround(static_cast<double>(held_ns) * f.fraction));
  f.used_ns += used_ns;
  f.vtime += static_cast<double>(used_ns) / f.weight;
  Settle(f, now_ns, static_cast<double>(used_ns));
  f.recent_ns = Decayed(f.recent_ns, f.recent_at, now_ns) + static_cast<double>(used_ns);
  f.recent_at = now_ns;
  g.recent_ns = Decayed(g.recent_ns, g.recent_at, now_ns) + static_cast<double>(used_ns);
  g.recent_at = now_ns;
}

void Scheduler::ChargeHoldUntil(Gpu& g, const Key& key, Hold& h, uint64_t now_ns) {
  Charge(flows_.at(key), g, now_ns - std::min(now_ns, h.period_start), now_ns);
  h.period_start = now_ns;
  UpdateVclock(g);
}

void Scheduler::UpdateVclock(Gpu& g) {
  if (g.holds.empty()) return;
  double least = flows_.at(g.holds.begin()->first).vtime;
  for (const auto& [key, h] : g.holds) least = std::min(least, flows_.at(key).vtime);
  g.vclock = least;
}

void Scheduler::Want(ClientId client, int device, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return;
  Flow& f = it->second;
  Gpu& g = gpus_[f.gpu];
  if (auto own = g.holds.find(it->first); own != g.holds.end()) {
    // Its gate was closed by a revoke: it wants the GPU again once it has given it back.
    if (own->second.revoking && !f.waiting) {
      StartWaiting(f, now_ns);
    }
    return;
  }
  if (f.waiting) return;
  const bool was_idle = now_ns - std::min(now_ns, f.active_at) > params_.quantum_ns;
  f.active_at = now_ns;
  // Bring the holders' accounts up to now, so the newcomer starts level with what they
  // have really had, not with where they stood at their grants.
  for (auto& [key, h] : g.holds)
    if (!h.revoking) ChargeHoldUntil(g, key, h, now_ns);
  if (was_idle) f.vtime = std::max(f.vtime, g.vclock);
  StartWaiting(f, now_ns);
}

void Scheduler::Launched(ClientId client, int device, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it != flows_.end()) it->second.launched_at = now_ns;
}

bool Scheduler::ConflictWaiting(int gpu, const Key& holder, uint64_t now_ns) const {
  const Flow& h = flows_.at(holder);
  return std::any_of(flows_.begin(), flows_.end(), [&](const auto& kv) {
    return kv.second.gpu == gpu && kv.second.waiting && kv.first != holder &&
           !SpatialPolicy::MayCoHold(h.mask, kv.second.mask) && MayBeGranted(kv.second, now_ns);
  });
}

bool Scheduler::OverlapsOtherHolder(const Gpu& g, const Key& holder) const {
  const Flow& h = flows_.at(holder);
  return std::any_of(g.holds.begin(), g.holds.end(), [&](const auto& kv) {
    return kv.first != holder && !SpatialPolicy::MayCoHold(h.mask, flows_.at(kv.first).mask);
  });
}

void Scheduler::Released(ClientId client, int device, uint64_t slice, uint64_t drained_ns, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return;
  Gpu& g = gpus_[it->second.gpu];
  auto own = g.holds.find(it->first);
  if (own == g.holds.end() || own->second.slice != slice) return;  // stale or forged: nothing to charge
  Hold& h = own->second;
  const uint64_t end = std::clamp(drained_ns, h.period_start, std::max(now_ns, h.period_start));
  Charge(it->second, g, end - h.period_start, now_ns);
  Flow& f = it->second;
  f.active_at = now_ns;
  if (h.revoking && !h.idle_revoke && !f.waiting) {  // its quantum ended mid-work: still backlogged
    StartWaiting(f, now_ns);
  }
  g.holds.erase(own);
}

void WaitHistogram::Observe(uint64_t wait_ns) {
  size_t b = 0;
  while (b < kWaitBuckets - 1 && wait_ns > kWaitBoundsNs[b]) ++b;
  ++counts[b];
  sum_ns += wait_ns;
  ++count;
}

void Scheduler::StartWaiting(Flow& f, uint64_t now_ns) {
  f.waiting = true;
  f.wait_order = next_wait_order_++;
  f.wait_since = now_ns;
}

uint64_t Scheduler::Grants(int gpu) const {
  auto g = gpus_.find(gpu);
  return g == gpus_.end() ? 0 : g->second.grants;
}

void Scheduler::Grant(int gpu, Gpu& g, const Key& key, uint64_t now_ns, std::vector<SchedAction>* actions) {
  Flow& f = flows_.at(key);
  if (f.waiting) f.waits.Observe(now_ns - std::min(now_ns, f.wait_since));
  ++f.grants;
  ++g.grants;
  Settle(f, now_ns, 0);  // from here the budget is spent by what the hold is charged
  f.waiting = false;
  f.unresponsive = false;
  f.active_at = now_ns;
  Hold h;
  h.slice = next_slice_++;
  h.grant_at = now_ns;
  h.period_start = now_ns;
  h.quantum_end = now_ns + QuantumFor(key, gpu);
  g.holds[key] = h;
  UpdateVclock(g);
  actions->push_back({SchedAction::Kind::kGrant, key.first, key.second, h.slice});
}

std::vector<SchedAction> Scheduler::Tick(uint64_t now_ns) {
  std::vector<SchedAction> actions;
  for (auto& [gpu, g] : gpus_) {
    for (auto it = g.holds.begin(); it != g.holds.end();) {
      const Key key = it->first;
      Hold& h = it->second;
      Flow& f = flows_.at(key);
      if (h.revoking && now_ns >= h.revoke_deadline) {
        // It did not give back in time: charge it all, move on.
        Charge(f, g, now_ns - std::min(now_ns, h.period_start), now_ns);
        f.unresponsive = true;
        it = g.holds.erase(it);
        continue;
      }
      if (!h.revoking && ConflictWaiting(gpu, key, now_ns) && f.launched_at < h.grant_at &&
          now_ns >= h.grant_at + params_.idle_grace_ns) {
        h.revoking = true;  // granted, launched nothing: it was not backlogged after all
        h.idle_revoke = true;
        h.revoke_deadline = now_ns + params_.revoke_timeout_ns;
        actions.push_back({SchedAction::Kind::kRevoke, key.first, key.second, h.slice});
      }
      if (!h.revoking && f.ceiling && now_ns >= BudgetEndsAt(f, h)) {
        h.revoking = true;  // its ceiling: it gives the GPU back even alone, backlogged if it launched
        h.idle_revoke = f.launched_at < h.grant_at;
        h.revoke_deadline = now_ns + params_.revoke_timeout_ns;
        actions.push_back({SchedAction::Kind::kRevoke, key.first, key.second, h.slice});
      }
      if (!h.revoking && now_ns >= h.quantum_end) {
        // A mask changed under a holder can make it overlap another: it gives way too.
        if (ConflictWaiting(gpu, key, now_ns) || OverlapsOtherHolder(g, key)) {
          h.revoking = true;
          h.idle_revoke = false;
          h.revoke_deadline = now_ns + params_.revoke_timeout_ns;
          actions.push_back({SchedAction::Kind::kRevoke, key.first, key.second, h.slice});
        } else {  // nobody waits for its CUs: it keeps them; its account is brought up to date
          ChargeHoldUntil(g, key, h, now_ns);
          h.quantum_end = now_ns + params_.quantum_ns;
        }
      }
      ++it;
    }
    // Waiting flows in virtual-time order; each is granted if its part of the GPU is
    // free and not reserved by a flow ahead of it that is blocked.
    std::vector<const Key*> waiting;
    for (auto& [key, f] : flows_) {
      if (f.gpu != gpu || !f.waiting) continue;
      waiting.push_back(&key);
      // Grantable by its budget again: settled, so that NextDeadline no longer waits for its refill.
      if (f.ceiling && g.holds.count(key) == 0 && MayBeGranted(f, now_ns)) Settle(f, now_ns, 0);
    }
    std::stable_sort(waiting.begin(), waiting.end(), [&](const Key* a, const Key* b) {
      const Flow& fa = flows_.at(*a);
      const Flow& fb = flows_.at(*b);
      return fa.vtime < fb.vtime || (fa.vtime == fb.vtime && fa.wait_order < fb.wait_order);
    });
    bool reserved_all = false;
    CuMask reserved;
    for (const Key* key : waiting) {
      if (reserved_all) break;
      const Flow& f = flows_.at(*key);
      if (!MayBeGranted(f, now_ns)) continue;  // out of budget: neither granted nor in the way
      bool free = !f.mask || !f.mask->Overlaps(reserved);
      for (const auto& [holder, h] : g.holds) free = free && SpatialPolicy::MayCoHold(flows_.at(holder).mask, f.mask);
      if (free) {
        Grant(gpu, g, *key, now_ns, &actions);
      } else if (f.mask) {
        reserved |= *f.mask;
      } else {
        reserved_all = true;
      }
    }
  }
  return actions;
}

uint64_t Scheduler::QuantumFor(const Key& key, int gpu) const {
  // A heavier flow gets a longer slice (up to 4 quanta) rather than more of them: the
  // same shares with fewer hand-offs, each of which leaves the GPU idle for a moment.
  // Only flows waiting for its CUs count: the others do not wait for it.
  const Flow& self = flows_.at(key);
  double lightest = self.weight;
  for (const auto& [k, f] : flows_)
    if (f.gpu == gpu && f.waiting && !SpatialPolicy::MayCoHold(self.mask, f.mask))
      lightest = std::min(lightest, f.weight);
  const double scale = std::clamp(self.weight / lightest, 1.0, 4.0);
  return static_cast<uint64_t>(static_cast<double>(params_.quantum_ns) * scale);
}

std::optional<uint64_t> Scheduler::NextDeadline() const {
  std::optional<uint64_t> next;
  for (const auto& [gpu, g] : gpus_) {
    for (const auto& [key, h] : g.holds) {
      const Flow& f = flows_.at(key);
      uint64_t at = h.revoking ? h.revoke_deadline : h.quantum_end;
      // Launched nothing since its grant: it gives way at the idle grace to a waiter that
      // may be granted by then (a waiter short of budget: once it has it).
      if (!h.revoking && f.launched_at < h.grant_at)
        if (auto waiter = ConflictGrantableAt(gpu, key))
          at = std::min(at, std::max(h.grant_at + params_.idle_grace_ns, *waiter));
      if (!h.revoking && f.ceiling) at = std::min(at, BudgetEndsAt(f, h));
      if (!next || at < *next) next = at;
    }
  }
  // A waiting flow short of budget is granted (or makes the holder give way) once it has it.
  for (const auto& [key, f] : flows_)
    if (f.waiting && f.ceiling && f.budget_ns < static_cast<double>(params_.quantum_ns) &&
        gpus_.at(f.gpu).holds.count(key) == 0) {  // a holder still giving back is not grantable yet
      const uint64_t at = GrantableAt(f);
      if (!next || at < *next) next = at;
    }
  return next;
}

std::optional<Scheduler::FlowStatus> Scheduler::Status(ClientId client, int device, uint64_t now_ns) const {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return std::nullopt;
  const Flow& f = it->second;
  FlowStatus s;
  s.gpu = f.gpu;
  s.weight = f.weight;
  s.waiting = f.waiting;
  s.used_ns = f.used_ns;
  s.unresponsive = f.unresponsive;
  s.ceiling = f.ceiling;
  s.throttled = f.waiting && !MayBeGranted(f, now_ns);
  s.waits = f.waits;
  s.grants = f.grants;
  auto g = gpus_.find(f.gpu);
  if (g != gpus_.end()) {
    s.holding = g->second.holds.count(it->first) > 0;
    const double total = Decayed(g->second.recent_ns, g->second.recent_at, now_ns);
    if (total > 0) s.share = Decayed(f.recent_ns, f.recent_at, now_ns) / total;
    // Demand: a flow busy a fraction u of the time settles at recent_ns = u * half_life
    // / ln 2. A holder's time since its period began is not charged yet (a lone holder
    // may hold for long): it counts too.
    if (params_.share_half_life_ns > 0) {
      double recent = Decayed(f.recent_ns, f.recent_at, now_ns);
      if (auto h = g->second.holds.find(it->first); h != g->second.holds.end() && now_ns > h->second.period_start)
        recent += static_cast<double>(now_ns - h->second.period_start);
      s.busy = std::clamp(recent * std::log(2.0) / static_cast<double>(params_.share_half_life_ns), 0.0, 1.0);
    }
  }
  return s;
}

std::optional<std::pair<ClientId, int>> Scheduler::Holder(int gpu) const {
  auto g = gpus_.find(gpu);
  if (g == gpus_.end() || g->second.holds.empty()) return std::nullopt;
  return g->second.holds.begin()->first;
}

std::vector<std::pair<ClientId, int>> Scheduler::Holders(int gpu) const {
  std::vector<std::pair<ClientId, int>> out;
  if (auto g = gpus_.find(gpu); g != gpus_.end())
    for (const auto& [key, h] : g->second.holds) out.push_back(key);
  return out;
}

}  // namespace gpushare::broker
