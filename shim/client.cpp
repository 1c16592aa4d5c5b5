// The client runtime (see client.h).
#include "client.h"

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <cstdlib>
#include <string>

#include "log.h"

namespace gpushare {
namespace {

void LogBacktrace() {
  unw_context_t context;
  unw_cursor_t cursor;
  if (unw_getcontext(&context) != 0 || unw_init_local(&cursor, &context) != 0) return;
  for (int depth = 0; depth < 32 && unw_step(&cursor) > 0; ++depth) {
    unw_word_t pc = 0, offset = 0;
    unw_get_reg(&cursor, UNW_REG_IP, &pc);
    char name[256] = "?";
    unw_get_proc_name(&cursor, name, sizeof name, &offset);
    Log(LogLevel::kError, "  #%d 0x%lx %s+0x%lx", depth, static_cast<unsigned long>(pc), name,
        static_cast<unsigned long>(offset));
  }
}

}  // namespace

Client& Client::Get() {
  static Client* client = new Client();
  return *client;
}

Client::Client() {
  options_ = ParseClientOptions([](const char* name) { return std::getenv(name); });
  SetLogLevel(options_.log_level);
  for (const std::string& e : options_.errors) Log(LogLevel::kError, "%s", e.c_str());
}

void Client::InitDevices(int physical_count) {
  std::call_once(devices_once_, [&] {
    std::vector<std::string> errors;
    devices_ = DeviceMap::Build(physical_count, options_.visible_devices, &errors);
    for (const std::string& e : errors) Log(LogLevel::kError, "%s", e.c_str());
    for (int v = 0; v < devices_.count() && v < MemoryLedger::kMaxDevices; ++v)
      if (auto cap = options_.memory.CapFor(v)) ledger_.SetCap(v, *cap);
    Log(LogLevel::kInfo, "standalone: %d virtual GPU(s) of %d physical", devices_.count(), physical_count);
    devices_ready_.store(true, std::memory_order_release);
  });
}

bool Client::Reserve(int device, uint64_t bytes, const char* call) {
  if (ledger_.Reserve(device, bytes)) return true;
  Log(LogLevel::kError,
      "%s: out of memory on virtual GPU %d (physical %d): asked for %s, tenant \"%s\" holds %s of its %s cap", call,
      device, devices_.Physical(device), FormatBytes(bytes).c_str(), options_.tenant.c_str(),
      FormatBytes(ledger_.Used(device)).c_str(), FormatBytes(ledger_.Cap(device)).c_str());
  if (options_.oom_backtrace) LogBacktrace();
  return false;
}

void Client::ChargeOverhead(int device, uint64_t bytes, const char* what) {
  ledger_.ForceReserve(device, bytes);
  Log(LogLevel::kInfo, "virtual GPU %d: %s holds %s, charged to the cap", device, what, FormatBytes(bytes).c_str());
  if (ledger_.Used(device) > ledger_.Cap(device))
    Log(LogLevel::kWarn, "virtual GPU %d: the %s alone (%s) is past the %s cap; allocations will be refused", device,
        what, FormatBytes(bytes).c_str(), FormatBytes(ledger_.Cap(device)).c_str());
}

bool Client::MarkContextCharged(int device) {
  if (device < 0 || device >= MemoryLedger::kMaxDevices) return false;
  return !context_charged_[device].exchange(true);
}

}  // namespace gpushare
