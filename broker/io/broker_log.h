// The broker's log: one line per event on stderr, "gpushare-broker: LEVEL: what".
#pragma once

#include <cstdarg>
#include <cstdio>

namespace gpushare::broker {

enum class LogLevel { kError, kWarn, kInfo };

// The program named at the start of each line (gpushare-manager shares this log).
inline const char*& LogProgram() {
  static const char* name = "gpushare-broker";
  return name;
}

inline void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void Log(LogLevel level, const char* fmt, ...) {
  static const char* const kNames[] = {"error", "warning", "info"};
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s: %s: %s\n", LogProgram(), kNames[static_cast<int>(level)], line);
}

}  // namespace gpushare::broker
