// Usage reports and bills from meter rows (see billing.h).
#include "billing.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <tuple>

namespace gpushare::broker {
namespace {

uint64_t Pow10(int n) {
  uint64_t p = 1;
  for (int i = 0; i < n; ++i) p *= 10;
  return p;
}

// The integer ns a row's allotted GPU time is billed as (the store keeps it so).
uint64_t AllottedNs(const MeterDay& d) { return static_cast<uint64_t>(std::llround(std::max(0.0, d.allotted_ns))); }

}  // namespace

int64_t BillingConfig::RateMicro(const std::string& tenant, const std::string& profile) const {
  if (auto t = tenant_rate_micro.find(tenant); t != tenant_rate_micro.end()) return t->second;
  if (auto p = profile_rate_micro.find(profile); !profile.empty() && p != profile_rate_micro.end()) return p->second;
  return base_rate_micro;
}

std::optional<int64_t> RateMicro(double rate) {
  if (!std::isfinite(rate) || rate < 0 || rate > 1e9) return std::nullopt;
  return static_cast<int64_t>(std::llround(rate * 1e6));
}

std::string FormatRateMicro(int64_t micro) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%06lld", static_cast<long long>(micro / 1'000'000),
                static_cast<long long>(micro % 1'000'000));
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

std::string FormatMinor(int64_t minor, int minor_digits) {
  const bool negative = minor < 0;
  const uint64_t v = negative ? 0 - static_cast<uint64_t>(minor) : static_cast<uint64_t>(minor);
  const uint64_t unit = Pow10(minor_digits);
  char buf[96];
  if (minor_digits > 0)
    std::snprintf(buf, sizeof buf, "%s%llu.%0*llu", negative ? "-" : "", static_cast<unsigned long long>(v / unit),
                  std::clamp(minor_digits, 1, 4), static_cast<unsigned long long>(v % unit));
  else
    std::snprintf(buf, sizeof buf, "%s%llu", negative ? "-" : "", static_cast<unsigned long long>(v));
  return buf;
}

int64_t AmountMinor(uint64_t quantity_ns, int64_t rate_micro, uint64_t per_ns, int minor_digits) {
  if (rate_micro <= 0 || per_ns == 0) return 0;
  using u128 = unsigned __int128;
  const u128 numerator = static_cast<u128>(quantity_ns) * static_cast<u128>(rate_micro) * Pow10(minor_digits);
  const u128 denominator = static_cast<u128>(per_ns) * 1'000'000u;
  const u128 amount = (numerator + denominator / 2) / denominator;  // half up
  const u128 max = static_cast<u128>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(amount > max ? max : amount);
}

int64_t DaysFromCivil(int year, unsigned month, unsigned day) {
  tm t{};
  t.tm_year = year - 1900;
  t.tm_mon = static_cast<int>(month) - 1;
  t.tm_mday = static_cast<int>(day);
  const time_t s = timegm(&t);
  return static_cast<int64_t>(s >= 0 ? s / 86400 : (s - 86399) / 86400);
}

std::string CivilFromDays(int64_t days) {
  const time_t s = static_cast<time_t>(days) * 86400;
  tm t{};
  gmtime_r(&s, &t);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday);
  return buf;
}

std::optional<int64_t> ParseDate(const std::string& text) {
  int y = 0;
  unsigned m = 0, d = 0;
  char tail = 0;
  if (text.size() != 10 || std::sscanf(text.c_str(), "%4d-%2u-%2u%c", &y, &m, &d, &tail) != 3) return std::nullopt;
  if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
  const int64_t days = DaysFromCivil(y, m, d);
  if (CivilFromDays(days) != text) return std::nullopt;  // 2026-02-30
  return days;
}

std::optional<std::pair<int64_t, int64_t>> ParseMonth(const std::string& text) {
  int y = 0;
  unsigned m = 0;
  char tail = 0;
  if (text.size() != 7 || std::sscanf(text.c_str(), "%4d-%2u%c", &y, &m, &tail) != 2) return std::nullopt;
  if (y < 1970 || m < 1 || m > 12 || text[4] != '-') return std::nullopt;
  return std::make_pair(DaysFromCivil(y, m, 1), m == 12 ? DaysFromCivil(y + 1, 1, 1) : DaysFromCivil(y, m + 1, 1));
}

std::optional<UsageBy> ParseUsageBy(const std::string& text) {
  if (text == "session") return UsageBy::kSession;
  if (text == "tenant") return UsageBy::kTenant;
  if (text == "day") return UsageBy::kDay;
  return std::nullopt;
}

std::vector<UsageLine> Summarize(const std::vector<UsageRow>& rows, UsageBy by) {
  // Ordered keys: session id; tenant; (day, tenant).
  std::map<std::tuple<int64_t, uint64_t, std::string>, UsageLine> lines;
  std::map<std::tuple<int64_t, uint64_t, std::string>, std::set<uint64_t>> ids;
  for (const UsageRow& r : rows) {
    std::tuple<int64_t, uint64_t, std::string> key;
    switch (by) {
      case UsageBy::kSession: key = {0, r.session.id, ""}; break;
      case UsageBy::kTenant: key = {0, 0, r.session.tenant}; break;
      case UsageBy::kDay: key = {r.day.day, 0, r.session.tenant}; break;
    }
    UsageLine& l = lines[key];
    if (l.tenant.empty()) {
      l.tenant = r.session.tenant;
      l.key = by == UsageBy::kSession  ? std::to_string(r.session.id)
              : by == UsageBy::kTenant ? r.session.tenant
                                       : CivilFromDays(r.day.day);
      if (by == UsageBy::kSession) l.session = &r.session;
    }
    ids[key].insert(r.session.id);
    l.wall_ns += r.day.wall_ns;
    l.allotted_ns += r.day.allotted_ns;
    l.gpu_ns += r.day.gpu_ns;
    l.memory_byte_s += r.day.memory_byte_s();
    l.launches += r.day.launches;
    l.copies += r.day.copies;
    l.copy_bytes += r.day.copy_bytes;
  }
  std::vector<UsageLine> out;
  for (auto& [key, l] : lines) {
    l.sessions = ids[key].size();
    out.push_back(std::move(l));
  }
  return out;
}

Bill MakeBill(const std::vector<UsageRow>& rows, const BillingConfig& config) {
  std::map<std::pair<std::string, std::string>, BillLine> lines;
  std::map<std::pair<std::string, std::string>, std::set<uint64_t>> ids;
  for (const UsageRow& r : rows) {
    const auto key = std::make_pair(r.session.tenant, r.session.profile);
    BillLine& l = lines[key];
    l.tenant = r.session.tenant;
    l.profile = r.session.profile;
    ids[key].insert(r.session.id);
    l.wall_ns += r.day.wall_ns;
    l.allotted_ns += AllottedNs(r.day);
    l.gpu_ns += r.day.gpu_ns;
  }
  Bill bill;
  for (auto& [key, l] : lines) {
    l.sessions = ids[key].size();
    l.rate_micro = config.RateMicro(l.tenant, l.profile);
    // Each line rounded once, from its exact sums; totals add the rounded lines.
    l.formula_minor = AmountMinor(l.allotted_ns, l.rate_micro, config.per_ns, config.minor_digits);
    l.measured_minor = AmountMinor(l.gpu_ns, l.rate_micro, config.per_ns, config.minor_digits);
    auto& t = bill.tenant_totals[l.tenant];
    t.first += l.formula_minor;
    t.second += l.measured_minor;
    bill.total_formula_minor += l.formula_minor;
    bill.total_measured_minor += l.measured_minor;
    bill.lines.push_back(std::move(l));
  }
  return bill;
}

}  // namespace gpushare::broker
