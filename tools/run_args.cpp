// gpushare-run's argument rules (see run_args.h). Values are checked here with the
// same readers the shim uses, so a mistake is refused before the command starts
// rather than reported by the shim inside it.
#include "run_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "common/base/units.h"
#include "common/protocol/protocol.h"

namespace gpushare::tools {
namespace {

std::vector<std::string> Split(const std::string& text, const std::string& separators) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t end = text.find_first_of(separators, start);
    parts.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool ParseIndex(const std::string& raw, int* index) {
  const std::string text = Trim(raw);
  if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  *index = std::atoi(text.c_str());
  return true;
}

// "4GiB" for every GPU, or "0=4GiB,1=2GiB" per virtual GPU, as the shim reads it.
std::string CheckMemory(const std::string& value) {
  const std::string examples = " (examples: 4GiB, 512MiB, 1.5GB, 1073741824, or per GPU 0=4GiB,1=2GiB)";
  if (value.find('=') == std::string::npos)
    return ParseBytes(value) ? "" : "\"" + value + "\" is not a size" + examples;
  std::set<int> seen;
  for (const std::string& item : Split(value, ",")) {
    const size_t eq = item.find('=');
    int index = 0;
    if (eq == std::string::npos || !ParseIndex(item.substr(0, eq), &index) || !ParseBytes(item.substr(eq + 1)))
      return "entry \"" + item + "\" is not GPU=SIZE" + examples;
    if (!seen.insert(index).second) return "GPU " + std::to_string(index) + " is given twice";
  }
  return "";
}

// The shim takes weights from kMinWeight to kMaxWeight (common/protocol/protocol.h).
std::string CheckWeight(const std::string& value) {
  errno = 0;
  char* end = nullptr;
  const double w = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || errno != 0 || !std::isfinite(w) || w < gpushare::protocol::kMinWeight ||
      w > gpushare::protocol::kMaxWeight)
    return "\"" + value + "\" is not a number from 0.001 to 1000";
  return "";
}

std::string CheckDevices(const std::string& value) {
  std::set<int> seen;
  for (const std::string& item : Split(value, ",")) {
    int index = 0;
    if (!ParseIndex(item, &index)) return "\"" + item + "\" is not a GPU index (example: 0,1)";
    if (!seen.insert(index).second) return "GPU " + std::to_string(index) + " is listed twice";
  }
  return "";
}

// The broker keeps names in fixed fields (protocol::Hello); refuse rather than cut.
std::string CheckName(const std::string& value, size_t max_bytes) {
  if (value.size() > max_bytes) return "longer than " + std::to_string(max_bytes) + " bytes";
  return "";
}

struct Option {
  const char* name;
  const char* variable;
  std::string (*check)(const std::string&);
};

const Option kOptions[] = {
    {"--tenant", "GPUSHARE_TENANT", [](const std::string& v) { return CheckName(v, 63); }},
    {"--memory", "GPUSHARE_MEMORY_LIMIT", CheckMemory},
    {"--weight", "GPUSHARE_WEIGHT", CheckWeight},
    {"--profile", "GPUSHARE_PROFILE",
     [](const std::string& v) { return v.empty() ? std::string("is empty") : CheckName(v, 31); }},
    {"--socket", "GPUSHARE_SOCKET", [](const std::string& v) { return v.empty() ? std::string("is empty") : ""; }},
    {"--job", "GPUSHARE_JOB", [](const std::string& v) { return CheckName(v, 127); }},
    {"--devices", "GPUSHARE_VISIBLE_DEVICES", CheckDevices},
};

}  // namespace

RunArgs ParseRunArgs(const std::vector<std::string>& args) {
  RunArgs out;
  auto fail = [&](std::string why) {
    out.env.clear();
    out.command.clear();
    out.error = std::move(why);
    return out;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      out.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      if (out.command.empty()) return fail("no command after --");
      return out;
    }
    if (arg == "-h" || arg == "--help") {
      out.help = true;
      continue;
    }
    if (arg == "--version") {
      out.version = true;
      continue;
    }
    // "--name value" or "--name=value".
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    const Option* option = nullptr;
    for (const Option& o : kOptions)
      if (name == o.name) option = &o;
    if (option == nullptr) {
      if (arg.rfind("-", 0) == 0) return fail("unknown option " + name);
      return fail("expected -- before the command \"" + arg + "\"");
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return fail(name + " needs a value");
    }
    if (std::string why = option->check(value); !why.empty()) return fail(name + ": " + why);
    out.env[option->variable] = value;
  }
  if (out.help || out.version) return out;
  return fail("no command (expected -- CMD [ARGS...])");
}

std::string ComposePreload(const std::string& library, const std::string& existing) {
  const std::string shim_name = "libgpushare.so";
  std::string out = library;
  for (const std::string& entry : Split(existing, " :\t")) {
    if (entry.empty() || entry == library) continue;
    const size_t slash = entry.rfind('/');
    if ((slash == std::string::npos ? entry : entry.substr(slash + 1)) == shim_name) continue;
    out += ":" + entry;
  }
  return out;
}

std::string RunUsage() {
  return "usage: gpushare-run [OPTIONS] -- CMD [ARGS...]\n"
         "Runs CMD with libgpushare.so preloaded and its GPUSHARE_* settings.\n"
         "  --tenant T       GPUSHARE_TENANT: the tenant the broker bills\n"
         "  --memory SIZE    GPUSHARE_MEMORY_LIMIT: cap per virtual GPU (4GiB, 512MiB, 1.5GB,\n"
         "                   bytes), or per GPU 0=4GiB,1=2GiB\n"
         "  --weight W       GPUSHARE_WEIGHT: share of GPU time, a number from 0.001 to 1000\n"
         "  --profile NAME   GPUSHARE_PROFILE: a vGPU instance of the broker's profile NAME\n"
         "  --job J          GPUSHARE_JOB: distributed job name\n"
         "  --devices LIST   GPUSHARE_VISIBLE_DEVICES: physical GPUs that become virtual 0, 1, ...\n"
         "  --socket PATH    GPUSHARE_SOCKET: the broker's socket\n"
         "  -h, --help       this text\n"
         "  --version        the version\n"
         "The shim is <dir of gpushare-run>/../lib/libgpushare.so, or $GPUSHARE_LIBRARY.\n";
}

}  // namespace gpushare::tools
