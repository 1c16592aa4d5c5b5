// Small text helpers for the parsers of what people type (sizes, lists, levels): one
// copy for the shim's options and the base's units.
#pragma once

#include <cctype>
#include <string>

namespace gpushare {

inline std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Without leading and trailing spaces and tabs.
inline std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace gpushare
