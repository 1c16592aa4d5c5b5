// Where the hooks' exception boundary (guard.h) reports what it stopped: the first
// escape of the process as an error, the rest at debug level.
#include "common/guard.h"

#include <atomic>

#include "log.h"

namespace gpushare::hooks {

void ReportEscape(const char* hook, const char* what) noexcept {
  static std::atomic<bool> said{false};
  const LogLevel level = said.exchange(true, std::memory_order_relaxed) ? LogLevel::kDebug : LogLevel::kError;
  // Log formats into a stack buffer and never throws; `what` may be null from a
  // misbehaving exception type.
  Log(level, "%s: %s; the call answers the API's error (later ones are logged at debug level)", hook,
      what != nullptr ? what : "?");
}

}  // namespace gpushare::hooks
