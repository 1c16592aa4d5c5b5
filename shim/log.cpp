// The shim's log (see log.h).
#include "log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace gpushare {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(std::memory_order_relaxed); }

void Log(LogLevel level, const char* fmt, ...) {
  if (!LogEnabled(level)) return;
  static const char* const kNames[] = {"error", "warn", "info", "debug"};
  char line[1024];
  int n = std::snprintf(line, sizeof line, "gpushare[%d] %s: ", static_cast<int>(getpid()),
                        kNames[static_cast<int>(level)]);
  va_list args;
  va_start(args, fmt);
  if (n > 0 && n < static_cast<int>(sizeof line)) std::vsnprintf(line + n, sizeof line - n, fmt, args);
  va_end(args);
  std::fprintf(stderr, "%s\n", line);  // one write per line, so lines of threads do not interleave
}

}  // namespace gpushare
