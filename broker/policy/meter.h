// The meter: per client session (pid, tenant, job, profile, GPUs, start, end), what it
// held and used, split by UTC day so that a day or a month is summed exactly. Wall time,
// allotted GPU time (its fraction of a GPU integrated over time) and memory held (bytes
// integrated over time) are exact integrals of piecewise-constant levels between the
// changes the broker reports; measured GPU time (what WFQ charged), launches and copied
// bytes are counter deltas, booked on the day they are read. Pure: time is passed in
// (unix ns, UTC); the broker writes what Take returns to the store (broker/io/meter_store).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ledger.h"

namespace gpushare::broker {

inline constexpr uint64_t kNsPerDay = 86'400'000'000'000ull;

// Days since 1970-01-01 (UTC) of a unix time in ns.
inline int64_t DayOf(uint64_t unix_ns) { return static_cast<int64_t>(unix_ns / kNsPerDay); }

// A session's identity and its terms at `last_ns` (what the store keeps in `sessions`).
struct MeterSession {
  uint64_t id = 0;
  int32_t pid = 0;
  uint32_t uid = 0;
  std::string tenant;
  std::string job;
  std::string profile;  // "" : none (the fraction is the weight-derived share)
  std::string gpus;     // physical GPUs, "0,1"
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;      // 0 : open
  uint64_t last_ns = 0;     // integrated up to here
  uint64_t held_bytes = 0;  // memory held at last_ns (all its GPUs)
  double fraction = 0;      // of a GPU allotted at last_ns (summed over its GPUs)
};

// One session's usage on one UTC day (what the store keeps in `usage`).
struct MeterDay {
  uint64_t session_id = 0;
  int64_t day = 0;
  uint64_t wall_ns = 0;
  double allotted_ns = 0;  // ∫ fraction dt: GPU-ns allotted
  uint64_t gpu_ns = 0;     // measured: what the scheduler charged
  unsigned __int128 memory_byte_ns = 0;
  uint64_t launches = 0;
  uint64_t copies = 0;
  uint64_t copy_bytes = 0;

  uint64_t memory_byte_s() const { return static_cast<uint64_t>(memory_byte_ns / 1'000'000'000u); }
};

// What a client has done since it registered (this broker's counts; they start at 0).
struct MeterCounters {
  uint64_t gpu_ns = 0;
  uint64_t launches = 0;
  uint64_t copies = 0;
  uint64_t copy_bytes = 0;
};

// What changed since the last Take: the sessions' rows and their days' rows, whole
// (the store replaces rows by key, so writing one twice counts it once).
struct MeterFlush {
  std::vector<MeterSession> sessions;
  std::vector<MeterDay> days;
};

// A session the store left open (the broker stopped while its client lived): its row and
// its row for the day of its last_ns, if any.
struct MeterSnapshot {
  MeterSession session;
  std::optional<MeterDay> last_day;
};

class Meter {
 public:
  // Session ids are first_id, first_id + 1, ... (the daemon draws first_id at random so
  // that two brokers writing one database do not collide).
  explicit Meter(uint64_t first_id) : next_id_(first_id) {}

  // A client's session begins at `now`; `identity` gives pid, uid, tenant, job, profile,
  // gpus and fraction. An orphan with the same pid is closed (that process is gone).
  uint64_t Begin(ClientId client, MeterSession identity, uint64_t now);
  // After a restart: sessions the store has open, waiting for their clients.
  void Adopt(std::vector<MeterSnapshot> open);
  // A client re-registering after a restart continues the orphan of its pid and tenant,
  // if there is one: the time since its last_ns is counted at the terms it had then
  // (the client held them all along), its counters continue from the stored day.
  // Returns the session id, or nullopt (then call Begin).
  std::optional<uint64_t> Continue(ClientId client, int32_t pid, const std::string& tenant, uint64_t now);
  // Orphans whose last_ns is older than `before` end at their last_ns: their clients did
  // not come back (they died while no broker listened).
  void CloseOrphans(uint64_t before);

  void SetHeld(ClientId client, uint64_t held_bytes, uint64_t now);
  void SetFraction(ClientId client, double fraction, uint64_t now);
  // The profile a session is billed by (one per session: the last one set).
  void SetProfile(ClientId client, const std::string& profile);
  // The client's totals since it registered; the increase is booked on now's day.
  void SetCounters(ClientId client, const MeterCounters& totals, uint64_t now);
  void End(ClientId client, uint64_t now);

  // Every live session integrated up to `now`, with what changed since the last Take;
  // ended sessions are forgotten once taken.
  MeterFlush Take(uint64_t now);
  // Only the sessions ended (and orphans closed) since the last take: what a hang-up
  // writes at once, without the cost of every live session.
  MeterFlush TakeEnded();

  bool Has(ClientId client) const { return live_.count(client) > 0; }
  std::optional<uint64_t> SessionOf(ClientId client) const;
  size_t live_count() const { return live_.size(); }
  size_t orphan_count() const { return orphans_.size(); }

 private:
  struct Live {
    MeterSession session;
    std::map<int64_t, MeterDay> days;  // the current day and days not yet taken
    MeterCounters seen;                // totals already booked
    bool ended = false;
  };
  void Advance(Live& s, uint64_t now);
  MeterDay& Day(Live& s, int64_t day);

  uint64_t next_id_;
  std::map<ClientId, Live> live_;
  std::vector<MeterSnapshot> orphans_;
  std::vector<MeterSession> closed_orphans_;  // to write at the next Take
};

}  // namespace gpushare::broker
