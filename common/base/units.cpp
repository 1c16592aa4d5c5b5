// Quantities as people write them (see units.h).
#include "units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "text.h"

namespace gpushare {

std::optional<uint64_t> ParseBytes(const std::string& raw) {
  const std::string text = Trim(raw);
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  const std::string number = text.substr(0, i), unit = Lower(Trim(text.substr(i)));
  if (number.empty() || number == "." || number.find('.') != number.rfind('.')) return std::nullopt;
  static const std::map<std::string, double> kUnits = {
      {"", 1.0},   {"b", 1.0},    {"k", 0x1p10},   {"kib", 0x1p10}, {"kb", 1e3},   {"m", 0x1p20},   {"mib", 0x1p20},
      {"mb", 1e6}, {"g", 0x1p30}, {"gib", 0x1p30}, {"gb", 1e9},     {"t", 0x1p40}, {"tib", 0x1p40}, {"tb", 1e12},
  };
  auto it = kUnits.find(unit);
  if (it == kUnits.end()) return std::nullopt;
  const double bytes = std::strtod(number.c_str(), nullptr) * it->second;
  if (!std::isfinite(bytes) || bytes >= 0x1p63) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

std::string FormatBytes(uint64_t n) {
  char buf[64];
  if (n >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", n / double(1ull << 30));
  else if (n >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", n / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  return buf;
}

}  // namespace gpushare
