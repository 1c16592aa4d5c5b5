// gpushare-cdi: writes the CDI spec that hands containers their vGPU (cdi_spec.h,
// docs/containers.md), from the broker's config and the node's GPU count.
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cdi_spec.h"
#include "common/base/socket_path.h"
#include "common/base/version.h"
#include "common/protocol/socket_io.h"

namespace {

using gpushare::tools::CdiOptions;
using nlohmann::json;

const char* kUsage =
    "usage: gpushare-cdi generate [--output FILE] [--config FILE] [--socket PATH] [--gpus N]\n"
    "       gpushare-cdi --version\n"
    "                             [--tenant NAME]... [--cap SIZE]... [--preload file|env]\n"
    "                             [--preload-file PATH] [--library PATH] [--driver-dir DIR]\n"
    "Writes a CDI spec (kind gpushare.io/vgpu) whose devices are vGPUs of the tenants with\n"
    "`socket = true` in the broker's config: NAME (any GPU), NAME-PROFILE-GPU per profile\n"
    "instance and GPU, NAME-SIZE per --cap; with one --tenant the names drop \"NAME-\"\n"
    "(\"any\", \"q8g-0\", \"4GiB\"). Use: podman run --device gpushare.io/vgpu=q8g-0 IMAGE.\n"
    "  --output FILE     where the spec goes (default /etc/cdi/gpushare.yaml; - : stdout)\n"
    "  --config FILE     the broker's config (default /etc/gpushare/broker.toml)\n"
    "  --socket PATH     the broker's main socket; tenants/ is beside it (default as the broker's)\n"
    "  --gpus N          GPUs of the node (default: asked of the broker at --socket)\n"
    "  --preload MODE    file (default): mount an /etc/ld.so.preload naming the shim, which\n"
    "                    images that reset the environment still obey; env: LD_PRELOAD only\n"
    "  --preload-file P  the host file mounted as /etc/ld.so.preload (default: gpushare.ld.so.preload\n"
    "                    beside --output; written by this command)\n"
    "  --library PATH    the shim (default <dir of gpushare-cdi>/../lib/libgpushare.so)\n"
    "  --driver-dir DIR  also mount DIR's lib*.so.* files (a test driver such as simgpu's)\n"
    "  -h, --help        this help; --version: the version\n";

std::string DefaultLibrary() {
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "libgpushare.so";
  return (std::filesystem::path(std::string(exe, static_cast<size_t>(n))).parent_path() / "../lib/libgpushare.so")
      .lexically_normal()
      .string();
}

// How many GPUs the broker at `socket` shares; -1 with the reason if it cannot say.
int GpusOfBroker(const std::string& socket, std::string* error) {
  const int fd = gpushare::protocol::ConnectUnix(socket, error);
  if (fd < 0) return -1;
  std::vector<uint8_t> buffer;
  gpushare::protocol::SendAll(fd, gpushare::protocol::EncodeText(gpushare::protocol::Type::kStatus, ""));
  auto m = gpushare::protocol::Receive(fd, &buffer, 5000, error);
  close(fd);
  if (!m) return -1;
  const json status = json::parse(m->payload.begin(), m->payload.end(), nullptr, false);
  if (!status.is_object() || !status.contains("gpus") || !status["gpus"].is_array()) {
    *error = "the broker's status has no gpus";
    return -1;
  }
  return static_cast<int>(status["gpus"].size());
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "gpushare-cdi: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    gpushare::PrintVersion("gpushare-cdi");
    return 0;
  }
  if (args[0] != "generate") return Fail("unknown command \"" + args[0] + "\"\n" + kUsage);
  std::string output = "/etc/cdi/gpushare.yaml", config_path = "/etc/gpushare/broker.toml";
  std::string socket = gpushare::DefaultClientSocketPath();
  int gpus = -1;
  CdiOptions o;
  o.library = DefaultLibrary();
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= args.size()) return Fail(a + ": expected a value\n" + kUsage);
    const std::string& v = args[++i];
    if (a == "--output") {
      output = v;
    } else if (a == "--config") {
      config_path = v;
    } else if (a == "--socket") {
      socket = v;
    } else if (a == "--gpus") {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0 || n > 1024) return Fail("--gpus: expected 0 to 1024");
      gpus = static_cast<int>(n);
    } else if (a == "--tenant") {
      o.tenants.push_back(v);
    } else if (a == "--cap") {
      o.caps.push_back(v);
    } else if (a == "--preload") {
      if (v != "file" && v != "env") return Fail("--preload: expected file or env");
      o.preload = v;
    } else if (a == "--preload-file") {
      o.preload_file = v;
    } else if (a == "--library") {
      o.library = v;
    } else if (a == "--driver-dir") {
      o.driver_dir = v;
    } else {
      return Fail("unknown option " + a + "\n" + kUsage);
    }
  }
  std::string error;
  auto config = gpushare::broker::LoadBrokerConfig(config_path, &error);
  if (!config) return Fail(error);
  if (gpus < 0 && (gpus = GpusOfBroker(socket, &error)) < 0)
    return Fail("cannot ask the broker at " + socket + " how many GPUs it shares (" + error + "); pass --gpus N");
  o.gpu_count = gpus;
  std::error_code ec;
  o.library = std::filesystem::absolute(o.library, ec).lexically_normal().string();
  if (!std::filesystem::is_regular_file(o.library, ec)) return Fail("no shim at " + o.library + " (--library)");
  o.socket_dir = std::filesystem::absolute(socket, ec).parent_path().lexically_normal().string();
  if (!o.driver_dir.empty()) {
    o.driver_dir = std::filesystem::absolute(o.driver_dir, ec).lexically_normal().string();
    for (const auto& entry : std::filesystem::directory_iterator(o.driver_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && name.rfind("lib", 0) == 0 && name.find(".so.") != std::string::npos)
        o.driver_libs.push_back(name);
    }
    if (o.driver_libs.empty()) return Fail("--driver-dir " + o.driver_dir + ": no lib*.so.* file in it");
    std::sort(o.driver_libs.begin(), o.driver_libs.end());
  }
  if (o.preload == "file" && o.preload_file.empty()) {
    if (output == "-") return Fail("--output -: name the --preload-file to mount, or use --preload env");
    o.preload_file = (std::filesystem::absolute(output, ec).parent_path() / "gpushare.ld.so.preload").string();
  }
  auto spec = gpushare::tools::BuildCdiSpec(*config, o, &error);
  if (!spec) return Fail(error);
  if (o.preload == "file") {
    // The shim's path as the container sees it; the file is world-readable, as ld.so needs.
    std::ofstream(o.preload_file) << gpushare::tools::kContainerLibDir << "/libgpushare.so\n";
    std::filesystem::permissions(o.preload_file, std::filesystem::perms(0644), ec);
    if (ec) return Fail("cannot write " + o.preload_file + ": " + ec.message());
  }
  const std::string yaml = "# Written by gpushare-cdi generate; docs/containers.md.\n" + gpushare::tools::ToYaml(*spec);
  if (output == "-") {
    std::fputs(yaml.c_str(), stdout);
    return 0;
  }
  const std::string tmp = output + ".tmp";
  std::ofstream(tmp) << yaml;
  std::filesystem::permissions(tmp, std::filesystem::perms(0644), ec);
  std::filesystem::rename(tmp, output, ec);  // CDI readers never see half a spec
  if (ec) return Fail("cannot write " + output + ": " + ec.message());
  std::fprintf(stderr, "gpushare-cdi: wrote %s (%zu devices)\n", output.c_str(), (*spec)["devices"].size());
  return 0;
}
