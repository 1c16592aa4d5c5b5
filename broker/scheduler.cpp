// WFQ of GPU time by exclusive slices (see scheduler.h).
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
    Gpu& g = gpus_[it->second.gpu];
    if (g.holder == it->first) {
      g.holder.reset();  // the GPU is free at the next Tick; a dead client's time is not charged
      g.revoking = false;
    }
    it = flows_.erase(it);
  }
}

void Scheduler::SetWeight(ClientId client, int device, double weight) {
  auto it = flows_.find({client, device});
  if (it != flows_.end() && weight > 0) it->second.weight = weight;
}

double Scheduler::Decayed(double value, uint64_t since, uint64_t now) const {
  if (now <= since || params_.share_half_life_ns == 0) return value;
  return value * std::exp2(-static_cast<double>(now - since) / static_cast<double>(params_.share_half_life_ns));
}

void Scheduler::Charge(Flow& f, Gpu& g, uint64_t used_ns, uint64_t now_ns) {
  f.used_ns += used_ns;
  f.vtime += static_cast<double>(used_ns) / f.weight;
  f.recent_ns = Decayed(f.recent_ns, f.recent_at, now_ns) + static_cast<double>(used_ns);
  f.recent_at = now_ns;
  g.recent_ns = Decayed(g.recent_ns, g.recent_at, now_ns) + static_cast<double>(used_ns);
  g.recent_at = now_ns;
}

void Scheduler::ChargeHolderUntil(Gpu& g, uint64_t now_ns) {
  Flow& h = flows_.at(*g.holder);
  Charge(h, g, now_ns - std::min(now_ns, g.period_start), now_ns);
  g.period_start = now_ns;
  g.vclock = h.vtime;
}

void Scheduler::Want(ClientId client, int device, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return;
  Flow& f = it->second;
  Gpu& g = gpus_[f.gpu];
  if (g.holder == it->first) {
    // Its gate was closed by a revoke: it wants the GPU again once it has given it back.
    if (g.revoking && !f.waiting) {
      f.waiting = true;
      f.wait_order = next_wait_order_++;
    }
    return;
  }
  if (f.waiting) return;
  const bool was_idle = now_ns - std::min(now_ns, f.active_at) > params_.quantum_ns;
  f.active_at = now_ns;
  // Bring the holder's account up to now, so the newcomer starts level with what the
  // holder has really had, not with where it stood at its grant.
  if (g.holder && !g.revoking) ChargeHolderUntil(g, now_ns);
  if (was_idle) f.vtime = std::max(f.vtime, g.vclock);
  f.waiting = true;
  f.wait_order = next_wait_order_++;
}

void Scheduler::Launched(ClientId client, int device, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it != flows_.end()) it->second.launched_at = now_ns;
}

bool Scheduler::OthersWaiting(int gpu, const Key& holder) const {
  return std::any_of(flows_.begin(), flows_.end(),
                     [&](const auto& kv) { return kv.second.gpu == gpu && kv.second.waiting && kv.first != holder; });
}

void Scheduler::Released(ClientId client, int device, uint64_t slice, uint64_t drained_ns, uint64_t now_ns) {
  auto it = flows_.find({client, device});
  if (it == flows_.end()) return;
  Gpu& g = gpus_[it->second.gpu];
  if (g.holder != it->first || g.slice != slice) return;  // stale or forged: nothing to charge
  const uint64_t end = std::clamp(drained_ns, g.period_start, std::max(now_ns, g.period_start));
  Charge(it->second, g, end - g.period_start, now_ns);
  Flow& f = it->second;
  f.active_at = now_ns;
  if (g.revoking && !g.idle_revoke && !f.waiting) {  // its quantum ended mid-work: still backlogged
    f.waiting = true;
    f.wait_order = next_wait_order_++;
  }
  g.holder.reset();
  g.revoking = false;
}

std::vector<SchedAction> Scheduler::Tick(uint64_t now_ns) {
  std::vector<SchedAction> actions;
  for (auto& [gpu, g] : gpus_) {
    if (g.holder && g.revoking && now_ns >= g.revoke_deadline) {
      Flow& h = flows_.at(*g.holder);  // it did not give back in time: charge it all, move on
      Charge(h, g, now_ns - std::min(now_ns, g.period_start), now_ns);
      h.unresponsive = true;
      g.holder.reset();
      g.revoking = false;
    }
    if (g.holder && !g.revoking && OthersWaiting(gpu, *g.holder) && flows_.at(*g.holder).launched_at < g.grant_at &&
        now_ns >= g.grant_at + params_.idle_grace_ns) {
      g.revoking = true;  // granted, launched nothing: it was not backlogged after all
      g.idle_revoke = true;
      g.revoke_deadline = now_ns + params_.revoke_timeout_ns;
      actions.push_back({SchedAction::Kind::kRevoke, g.holder->first, g.holder->second, g.slice});
    }
    if (g.holder && !g.revoking && now_ns >= g.quantum_end) {
      const Key holder = *g.holder;
      if (OthersWaiting(gpu, holder)) {
        g.revoking = true;
        g.idle_revoke = false;
        g.revoke_deadline = now_ns + params_.revoke_timeout_ns;
        actions.push_back({SchedAction::Kind::kRevoke, holder.first, holder.second, g.slice});
      } else {  // alone: keeps the GPU; its account is brought up to date
        ChargeHolderUntil(g, now_ns);
        g.quantum_end = now_ns + params_.quantum_ns;
      }
    }
    if (!g.holder) {
      const Key* best = nullptr;
      for (const auto& [key, f] : flows_) {
        if (f.gpu != gpu || !f.waiting) continue;
        if (best == nullptr) {
          best = &key;
          continue;
        }
        const Flow& b = flows_.at(*best);
        if (f.vtime < b.vtime || (f.vtime == b.vtime && f.wait_order < b.wait_order)) best = &key;
      }
      if (best != nullptr) {
        Flow& f = flows_.at(*best);
        f.waiting = false;
        f.unresponsive = false;
        f.active_at = now_ns;
        g.holder = *best;
        g.slice = next_slice_++;
        g.grant_at = now_ns;
        g.period_start = now_ns;
        g.quantum_end = now_ns + QuantumFor(*best, gpu);
        g.vclock = f.vtime;
        actions.push_back({SchedAction::Kind::kGrant, best->first, best->second, g.slice});
      }
    }
  }
  return actions;
}

uint64_t Scheduler::QuantumFor(const Key& key, int gpu) const {
  // A heavier flow gets a longer slice (up to 4 quanta) rather than more of them: the
  // same shares with fewer hand-offs, each of which leaves the GPU idle for a moment.
  const double weight = flows_.at(key).weight;
  double lightest = weight;
  for (const auto& [k, f] : flows_)
    if (f.gpu == gpu && f.waiting) lightest = std::min(lightest, f.weight);
  const double scale = std::clamp(weight / lightest, 1.0, 4.0);
  return static_cast<uint64_t>(static_cast<double>(params_.quantum_ns) * scale);
}

std::optional<uint64_t> Scheduler::NextDeadline() const {
  std::optional<uint64_t> next;
  for (const auto& [gpu, g] : gpus_) {
    if (!g.holder) continue;
    uint64_t at = g.revoking ? g.revoke_deadline : g.quantum_end;
    if (!g.revoking && flows_.at(*g.holder).launched_at < g.grant_at && OthersWaiting(gpu, *g.holder))
      at = std::min(at, g.grant_at + params_.idle_grace_ns);
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
  auto g = gpus_.find(f.gpu);
  if (g != gpus_.end()) {
    s.holding = g->second.holder == it->first;
    const double total = Decayed(g->second.recent_ns, g->second.recent_at, now_ns);
    if (total > 0) s.share = Decayed(f.recent_ns, f.recent_at, now_ns) / total;
  }
  return s;
}

std::optional<std::pair<ClientId, int>> Scheduler::Holder(int gpu) const {
  auto g = gpus_.find(gpu);
  if (g == gpus_.end()) return std::nullopt;
  return g->second.holder;
}

}  // namespace gpushare::broker
