// Parsing of the client's GPUSHARE_* environment (see options.h and
// docs/configuration.md, which lists each variable with its default).
#include "options.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "common/base/socket_path.h"
#include "common/base/text.h"
#include "common/protocol/protocol.h"

namespace gpushare {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(Trim(item));
  return out;
}

std::optional<int> ParseIndex(const std::string& s) {
  if (s.empty() || s.size() > 4) return std::nullopt;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  return std::stoi(s);
}

std::optional<double> ParsePositive(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v <= 0) return std::nullopt;
  return v;
}

}  // namespace

std::optional<uint64_t> MemoryLimits::CapFor(int v) const {
  if (auto it = per_device.find(v); it != per_device.end()) return it->second;
  return all;
}

std::optional<std::string> MemoryLimits::FailClosedOnIndicesPast(int virtual_count) {
  if (per_device.empty() || per_device.rbegin()->first < virtual_count) return std::nullopt;
  const int index = per_device.rbegin()->first;
  per_device.clear();
  all = 0;
  return "GPUSHARE_MEMORY_LIMIT names virtual GPU " + std::to_string(index) + " but this process has " +
         std::to_string(virtual_count) + " (indices 0 to " + std::to_string(virtual_count - 1) +
         "); capping every GPU at 0 bytes";
}

ClientOptions ParseClientOptions(const EnvLookup& env, const PathExists& exists) {
  ClientOptions o;
  auto get = [&](const char* name) -> std::optional<std::string> {
    const char* v = env(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
  auto error = [&](const char* name, const std::string& value, const std::string& what) {
    o.errors.push_back(std::string(name) + "=\"" + value + "\": " + what);
  };

  if (auto v = get("GPUSHARE_MEMORY_LIMIT"); v && !Trim(*v).empty()) {
    if (v->find('=') == std::string::npos) {
      if (auto bytes = ParseBytes(*v)) {
        o.memory.all = *bytes;
      } else {
        error("GPUSHARE_MEMORY_LIMIT", *v,
              "not a size (examples: 4GiB, 512MiB, 1.5GB, 1073741824); capping every GPU at 0 bytes");
        o.memory.all = 0;
      }
    } else {
      for (const std::string& item : Split(*v, ',')) {
        size_t eq = item.find('=');
        auto index = eq == std::string::npos ? std::nullopt : ParseIndex(Trim(item.substr(0, eq)));
        auto bytes = eq == std::string::npos ? std::nullopt : ParseBytes(item.substr(eq + 1));
        const bool twice = index && o.memory.per_device.count(*index) > 0;
        if (!index || !bytes || twice) {
          error("GPUSHARE_MEMORY_LIMIT", *v,
                twice ? "GPU " + std::to_string(*index) + " is given two caps; capping every GPU at 0 bytes"
                      : "entry \"" + item +
                            "\" is not DEVICE=SIZE (example: 0=4GiB,1=2GiB); capping every GPU at 0 bytes");
          o.memory.per_device.clear();
          o.memory.all = 0;
          break;
        }
        o.memory.per_device[*index] = *bytes;
      }
    }
  }

  if (auto v = get("GPUSHARE_VISIBLE_DEVICES")) {
    std::vector<int> devices;
    bool ok = true;
    if (!Trim(*v).empty()) {
      for (const std::string& item : Split(*v, ',')) {
        auto index = ParseIndex(item);
        bool dup = index && std::find(devices.begin(), devices.end(), *index) != devices.end();
        if (!index || dup) {
          error("GPUSHARE_VISIBLE_DEVICES", *v,
                dup ? "GPU " + item + " is listed twice; no GPU will be visible"
                    : "\"" + item + "\" is not a GPU index (example: 1,0); no GPU will be visible");
          ok = false;
          break;
        }
        devices.push_back(*index);
      }
    }
    o.visible_devices = ok ? devices : std::vector<int>{};
  }

  for (const char* name : {"HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "CUDA_VISIBLE_DEVICES"})
    if (auto v = get(name)) o.runtime_visible_devices[name] = *v;

  o.socket_path = ResolveClientSocketPath(get("GPUSHARE_SOCKET"), get("XDG_RUNTIME_DIR"), exists);

  o.tenant = get("GPUSHARE_TENANT").value_or("");
  if (auto v = get("GPUSHARE_PROFILE"); v && !Trim(*v).empty()) {
    // A profile name the broker's Hello can carry whole (31 bytes): a cut name would ask
    // for another profile, so a longer one asks for an instance no broker has.
    if (Trim(*v).size() <= 31)
      o.profile = Trim(*v);
    else {
      error("GPUSHARE_PROFILE", *v,
            "longer than 31 bytes; asking for no profile would lift its caps, so the broker "
            "will refuse this process");
      o.profile = "(invalid)";
    }
  }
  if (auto v = get("GPUSHARE_WEIGHT"); v && !v->empty()) {
    auto w = ParsePositive(*v);
    if (w && *w >= protocol::kMinWeight && *w <= protocol::kMaxWeight) {
      o.weight = *w;
    } else if (w && *w < protocol::kMinWeight) {
      o.weight = protocol::kMinWeight;  // what was asked is a weight, only too small to be served
      error("GPUSHARE_WEIGHT", *v, "below the floor of 0.001; using 0.001");
    } else {
      error("GPUSHARE_WEIGHT", *v, "expected a number from 0.001 to 1000; using 1");
    }
  }

  if (auto v = get("GPUSHARE_CLASS"); v && !Trim(*v).empty()) {
    if (Trim(*v) == "compute")
      o.work_class = protocol::MpsClass::kCompute;
    else if (Trim(*v) == "memory")
      o.work_class = protocol::MpsClass::kMemory;
    else
      error("GPUSHARE_CLASS", *v, "expected compute or memory; the broker will judge by what it measures");
  }

  // A distributed job: GPUSHARE_JOB/RANK, else what torchrun exports.
  if (auto v = get("GPUSHARE_JOB"); v && !v->empty()) {
    o.job = *v;
  } else if (auto id = get("TORCHELASTIC_RUN_ID"); id && !id->empty()) {
    o.job = "torchrun:" + *id;
  } else if (auto addr = get("MASTER_ADDR"), port = get("MASTER_PORT"); addr && port) {
    o.job = "torchrun:" + *addr + ":" + *port;
  }
  for (const char* name : {"GPUSHARE_RANK", "LOCAL_RANK", "RANK"}) {
    auto v = get(name);
    if (!v || v->empty()) continue;
    if (auto r = ParseIndex(*v))
      o.rank = *r;
    else
      error(name, *v, "expected a non-negative integer; rank unknown");
    break;
  }
  if (auto v = get("LOCAL_WORLD_SIZE"); v && !v->empty()) {
    if (auto n = ParseIndex(*v); n && *n > 0)
      o.job_size = *n;
    else
      error("LOCAL_WORLD_SIZE", *v, "expected a positive integer; job size unknown");
  }

  if (auto v = get("GPUSHARE_LOG"); v && !v->empty()) {
    static const std::map<std::string, LogLevel> kLevels = {
        {"error", LogLevel::kError}, {"warn", LogLevel::kWarn}, {"info", LogLevel::kInfo}, {"debug", LogLevel::kDebug}};
    auto it = kLevels.find(Lower(Trim(*v)));
    if (it != kLevels.end())
      o.log_level = it->second;
    else
      error("GPUSHARE_LOG", *v, "expected error, warn, info or debug; using warn");
  }
  if (auto v = get("GPUSHARE_OOM_BACKTRACE"); v && !v->empty()) {
    if (*v == "1" || Lower(*v) == "true")
      o.oom_backtrace = true;
    else if (*v != "0" && Lower(*v) != "false")
      error("GPUSHARE_OOM_BACKTRACE", *v, "expected 1 or 0; using 0");
  }
  return o;
}

}  // namespace gpushare
