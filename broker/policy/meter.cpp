// The meter's integrals and day split (see meter.h).
#include "meter.h"

#include <algorithm>
#include <cmath>

namespace gpushare::broker {

uint64_t Meter::Begin(ClientId client, MeterSession identity, uint64_t now) {
  // A pid registering afresh is a new process: an orphan of that pid died with the old broker.
  for (auto it = orphans_.begin(); it != orphans_.end();) {
    if (it->session.pid == identity.pid) {
      it->session.end_ns = it->session.last_ns;
      closed_orphans_.push_back(it->session);
      it = orphans_.erase(it);
    } else {
      ++it;
    }
  }
  Live& s = live_[client];
  s = Live{};
  s.session = std::move(identity);
  s.session.id = next_id_++;
  s.session.start_ns = now;
  s.session.end_ns = 0;
  s.session.last_ns = now;
  Day(s, DayOf(now));
  return s.session.id;
}

void Meter::Adopt(std::vector<MeterSnapshot> open) {
  for (MeterSnapshot& o : open) orphans_.push_back(std::move(o));
}

std::optional<uint64_t> Meter::Continue(ClientId client, int32_t pid, const std::string& tenant, uint64_t now) {
  auto best = orphans_.end();
  for (auto it = orphans_.begin(); it != orphans_.end(); ++it)
    if (it->session.pid == pid && it->session.tenant == tenant &&
        (best == orphans_.end() || it->session.start_ns > best->session.start_ns))
      best = it;
  if (best == orphans_.end()) return std::nullopt;
  Live& s = live_[client];
  s = Live{};
  s.session = best->session;
  if (best->last_day && best->last_day->day == DayOf(s.session.last_ns)) s.days[best->last_day->day] = *best->last_day;
  orphans_.erase(best);
  Advance(s, now);  // the broker's downtime, at the terms the client held
  return s.session.id;
}

void Meter::CloseOrphans(uint64_t before) {
  for (auto it = orphans_.begin(); it != orphans_.end();) {
    if (it->session.last_ns < before) {
      it->session.end_ns = it->session.last_ns;
      closed_orphans_.push_back(it->session);
      it = orphans_.erase(it);
    } else {
      ++it;
    }
  }
}

MeterDay& Meter::Day(Live& s, int64_t day) {
  auto [it, fresh] = s.days.try_emplace(day);
  if (fresh) {
    it->second.session_id = s.session.id;
    it->second.day = day;
  }
  return it->second;
}

// Integrates the levels held since last_ns up to `now`, cut at each UTC midnight.
void Meter::Advance(Live& s, uint64_t now) {
  MeterSession& m = s.session;
  while (m.last_ns < now) {
    const int64_t day = DayOf(m.last_ns);
    const uint64_t until = std::min(now, static_cast<uint64_t>(day + 1) * kNsPerDay);
    const uint64_t dt = until - m.last_ns;
    MeterDay& d = Day(s, day);
    d.wall_ns += dt;
    d.allotted_ns += m.fraction * static_cast<double>(dt);
    d.memory_byte_ns += static_cast<unsigned __int128>(m.held_bytes) * dt;
    m.last_ns = until;
  }
}

void Meter::SetHeld(ClientId client, uint64_t held_bytes, uint64_t now) {
  auto it = live_.find(client);
  if (it == live_.end() || it->second.ended) return;
  Advance(it->second, now);
  it->second.session.held_bytes = held_bytes;
}

void Meter::SetFraction(ClientId client, double fraction, uint64_t now) {
  auto it = live_.find(client);
  if (it == live_.end() || it->second.ended || !std::isfinite(fraction) || fraction < 0) return;
  Advance(it->second, now);
  it->second.session.fraction = fraction;
}

void Meter::SetProfile(ClientId client, const std::string& profile) {
  auto it = live_.find(client);
  if (it != live_.end() && !it->second.ended) it->second.session.profile = profile;
}

void Meter::SetCounters(ClientId client, const MeterCounters& totals, uint64_t now) {
  auto it = live_.find(client);
  if (it == live_.end() || it->second.ended) return;
  Live& s = it->second;
  Advance(s, now);
  MeterDay& d = Day(s, DayOf(std::max(now, s.session.last_ns)));
  // Totals never go down; a smaller one (a counter restarted) books nothing until it passes.
  const auto book = [](uint64_t total, uint64_t* seen, uint64_t* into) {
    if (total > *seen) {
      *into += total - *seen;
      *seen = total;
    }
  };
  book(totals.gpu_ns, &s.seen.gpu_ns, &d.gpu_ns);
  book(totals.launches, &s.seen.launches, &d.launches);
  book(totals.copies, &s.seen.copies, &d.copies);
  book(totals.copy_bytes, &s.seen.copy_bytes, &d.copy_bytes);
}

void Meter::End(ClientId client, uint64_t now) {
  auto it = live_.find(client);
  if (it == live_.end() || it->second.ended) return;
  Advance(it->second, now);
  it->second.session.end_ns = std::max(now, it->second.session.start_ns);
  it->second.ended = true;
}

std::optional<uint64_t> Meter::SessionOf(ClientId client) const {
  auto it = live_.find(client);
  if (it == live_.end()) return std::nullopt;
  return it->second.session.id;
}

MeterFlush Meter::Take(uint64_t now) {
  MeterFlush f;
  for (MeterSession& s : closed_orphans_) f.sessions.push_back(std::move(s));
  closed_orphans_.clear();
  for (auto it = live_.begin(); it != live_.end();) {
    Live& s = it->second;
    if (!s.ended) Advance(s, now);
    f.sessions.push_back(s.session);
    for (const auto& [day, d] : s.days) f.days.push_back(d);
    if (s.ended) {
      it = live_.erase(it);
      continue;
    }
    // Past days are complete: only the current one can still grow.
    s.days.erase(s.days.begin(), s.days.lower_bound(DayOf(s.session.last_ns)));
    ++it;
  }
  return f;
}

MeterFlush Meter::TakeEnded() {
  MeterFlush f;
  for (MeterSession& s : closed_orphans_) f.sessions.push_back(std::move(s));
  closed_orphans_.clear();
  for (auto it = live_.begin(); it != live_.end();) {
    if (!it->second.ended) {
      ++it;
      continue;
    }
    f.sessions.push_back(it->second.session);
    for (const auto& [day, d] : it->second.days) f.days.push_back(d);
    it = live_.erase(it);
  }
  return f;
}

}  // namespace gpushare::broker
