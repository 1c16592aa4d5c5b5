// Client options: every GPUSHARE_* environment variable the shim reads, parsed in
// this one place. Parsing is pure (the environment is passed in) so that each rule
// is unit-tested; a malformed value yields an error naming the variable and the
// safest reading (a cap is never lifted by a typo).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/base/units.h"
#include "common/protocol/protocol.h"

namespace gpushare {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

struct MemoryLimits {
  std::optional<uint64_t> all;         // one cap for every virtual GPU
  std::map<int, uint64_t> per_device;  // "0=4GiB,1=2GiB": virtual index -> cap
  // The cap of virtual GPU `v`, or nullopt when none was asked for.
  std::optional<uint64_t> CapFor(int v) const;
  // Once the number of virtual GPUs is known: a per-device cap for an index past them
  // is a mistake (a cap meant for a GPU would silently go nowhere), so every GPU is
  // capped at 0 and the error is returned; nullopt when all indices are in range.
  std::optional<std::string> FailClosedOnIndicesPast(int virtual_count);
};

struct ClientOptions {
  MemoryLimits memory;
  std::optional<std::vector<int>> visible_devices;  // physical ordinals, in virtual order
  // The GPU runtimes' own masks that are set (HIP_VISIBLE_DEVICES -> "1,0"): a runtime
  // renumbers GPUs before the shim sees them; the API family says which apply to it.
  std::map<std::string, std::string> runtime_visible_devices;
  std::string socket_path;
  std::string tenant;
  std::string profile;  // vGPU profile asked of the broker (GPUSHARE_PROFILE); "": none
  double weight = 1.0;
  // What the process says it is (GPUSHARE_CLASS: compute|memory), for the SM share the
  // broker gives it under MPS before its class can be measured; kNone: not said.
  protocol::MpsClass work_class = protocol::MpsClass::kNone;
  std::string job;
  int rank = -1;
  int job_size = 0;  // ranks of the job on this node (torchrun's LOCAL_WORLD_SIZE); 0: unknown
  LogLevel log_level = LogLevel::kWarn;
  bool oom_backtrace = false;
  std::vector<std::string> errors;  // one line per malformed variable
};

using EnvLookup = std::function<const char*(const char*)>;

// Reads every option from `env` (getenv in production).
// `exists` asks whether a socket file is there (the default: none is, keeping the
// parse pure for tests); see ResolveClientSocketPath.
using PathExists = std::function<bool(const std::string&)>;
ClientOptions ParseClientOptions(const EnvLookup& env, const PathExists& exists = [](const std::string&) {
  return false;
});

}  // namespace gpushare
