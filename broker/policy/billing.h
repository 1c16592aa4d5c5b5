// Usage reports and bills: pure functions of meter rows (meter.h) and rates. Money is
// integer minor units (cents): a rate is held as millionths of the currency's major
// unit per `per`, and each bill line is rounded once, half up, from an exact integer
// product (docs/metering.md).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "meter.h"

namespace gpushare::broker {

struct BillingConfig {
  std::string currency = "USD";
  int minor_digits = 2;                               // cents: 2; yen: 0
  std::string per = "hour";                           // the unit a rate is for: second, minute, hour or day
  uint64_t per_ns = 3'600'000'000'000ull;             // ... in ns
  int64_t base_rate_micro = 0;                        // per GPU (fraction 1) per `per`, in millionths of the major unit
  std::map<std::string, int64_t> tenant_rate_micro;   // a tenant's rate (first choice)
  std::map<std::string, int64_t> profile_rate_micro;  // a profile's rate (second choice)

  // The rate of a session: its tenant's, else its profile's, else the base rate.
  int64_t RateMicro(const std::string& tenant, const std::string& profile) const;
};

// A rate as the config writes it (a number of major units): millionths of the major
// unit, rounded to the nearest (so exact for up to 6 decimals). nullopt: not a rate from
// 0 to 10^9.
std::optional<int64_t> RateMicro(double rate);
// "2.500000" -> "2.5": the decimal text of a rate.
std::string FormatRateMicro(int64_t micro);
// Money in minor units as text: 1234 with 2 digits -> "12.34".
std::string FormatMinor(int64_t minor, int minor_digits);

// round_half_up(quantity_ns x rate_micro x 10^minor_digits / (per_ns x 10^6)), exact.
int64_t AmountMinor(uint64_t quantity_ns, int64_t rate_micro, uint64_t per_ns, int minor_digits);

// Civil dates (UTC) <-> days since 1970-01-01.
int64_t DaysFromCivil(int year, unsigned month, unsigned day);
std::string CivilFromDays(int64_t days);  // "2026-12-01"
// "2026-12-01" -> days; nullopt if malformed.
std::optional<int64_t> ParseDate(const std::string& text);
// "2026-12" -> [first day, first day of the next month); nullopt if malformed.
std::optional<std::pair<int64_t, int64_t>> ParseMonth(const std::string& text);

// A meter row as the store reads it back: a day of a session, with the session.
struct UsageRow {
  MeterSession session;
  MeterDay day;
};

enum class UsageBy { kSession, kTenant, kDay };
std::optional<UsageBy> ParseUsageBy(const std::string& text);

// One line of a usage report: the sum of its rows.
struct UsageLine {
  std::string key;  // the session id, the tenant or the day ("2026-12-01")
  std::string tenant;
  const MeterSession* session = nullptr;  // by session: its row
  size_t sessions = 0;                    // distinct sessions summed
  uint64_t wall_ns = 0;
  double allotted_ns = 0;
  uint64_t gpu_ns = 0;
  uint64_t memory_byte_s = 0;
  uint64_t launches = 0;
  uint64_t copies = 0;
  uint64_t copy_bytes = 0;
};
// Lines in key order (sessions by id, days by date; by day, one line per tenant and day).
std::vector<UsageLine> Summarize(const std::vector<UsageRow>& rows, UsageBy by);

// One line of a bill: a tenant's sessions billed at one rate.
struct BillLine {
  std::string tenant;
  std::string profile;  // "" : none
  int64_t rate_micro = 0;
  size_t sessions = 0;
  uint64_t wall_ns = 0;        // duration held
  uint64_t allotted_ns = 0;    // ∑ fraction x duration (GPU-ns allotted)
  uint64_t gpu_ns = 0;         // measured GPU time
  int64_t formula_minor = 0;   // rate x fraction x duration
  int64_t measured_minor = 0;  // rate x measured GPU time
  double fraction() const { return wall_ns == 0 ? 0 : static_cast<double>(allotted_ns) / static_cast<double>(wall_ns); }
};
struct Bill {
  std::vector<BillLine> lines;                                       // by tenant, then profile
  std::map<std::string, std::pair<int64_t, int64_t>> tenant_totals;  // formula, measured
  int64_t total_formula_minor = 0;
  int64_t total_measured_minor = 0;
};
Bill MakeBill(const std::vector<UsageRow>& rows, const BillingConfig& config);

}  // namespace gpushare::broker
