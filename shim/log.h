// The shim's log: one line per event on stderr, prefixed "gpushare[pid]: ", filtered
// by GPUSHARE_LOG. Never called on a hot path; never throws.
#pragma once

#include <cstdarg>

#include "options.h"

namespace gpushare {

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace gpushare
