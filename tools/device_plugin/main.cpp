// gpushare-device-plugin: the Kubernetes device plugin of a gpushare node (runs as a
// DaemonSet, deploy/kubernetes/). Options here; the work is DevicePlugin's (plugin.h).
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/base/socket_path.h"
#include "common/base/version.h"
#include "common/base/units.h"
#include "plugin.h"

namespace {

const char kUsage[] =
    "usage: gpushare-device-plugin [options]\n"
    "Advertises the node's gpushare vGPUs to the kubelet (gpushare.io/vgpu, or one resource per\n"
    "profile, and gpushare.io/vgpu-memory), keeps their health, and hands each container the\n"
    "library, its own broker socket (tenant: the pod's namespace) and its request.\n"
    "  --socket PATH               the broker's socket (default: $GPUSHARE_SOCKET, else\n"
    "                              /run/gpushare/broker.sock)\n"
    "  --plugin-dir DIR            the kubelet's device plugin directory (default\n"
    "                              /var/lib/kubelet/device-plugins)\n"
    "  --pod-resources PATH        the kubelet's pod resources socket (default\n"
    "                              /var/lib/kubelet/pod-resources/kubelet.sock)\n"
    "  --strategy single|mixed     single (default): gpushare.io/vgpu for one profile;\n"
    "                              mixed: gpushare.io/vgpu-<profile> for each\n"
    "  --profile NAME              single: the profile (default: the broker's only one)\n"
    "  --memory-unit SIZE          one gpushare.io/vgpu-memory device (default 1GiB)\n"
    "  --library PATH              libgpushare.so on the host (default: ../lib/libgpushare.so\n"
    "                              from this program's directory)\n"
    "  --library-in-container PATH where it appears (default /usr/lib/gpushare/libgpushare.so)\n"
    "  --socket-in-container PATH  where the container's socket appears (default\n"
    "                              /run/gpushare/broker.sock)\n"
    "  --socket-owner UID:GID      owner of the containers' sockets (default 0:0)\n"
    "  --socket-mode MODE          their mode (default 0666: reachable where mounted only)\n"
    "  --nvidia-visible-devices V  NVIDIA_VISIBLE_DEVICES for the containers (default all:\n"
    "                              NVIDIA's runtime gives them the GPUs; none: not set)\n"
    "  --cdi                       also name the CDI devices of gpushare-cdi's spec\n"
    "  --nvml PATH|none            NVML for GPU health (default libnvidia-ml.so.1)\n"
    "  --poll-ms N                 how often health is polled (default 2000)\n"
    "  --bind-timeout-s N          drop a container's socket no pod shows by then (default 120)\n"
    "  --version, -h/--help\n";

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

std::string DefaultLibrary() {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "/usr/lib/libgpushare.so";
  self[n] = '\0';
  return (std::filesystem::path(self).parent_path().parent_path() / "lib" / "libgpushare.so").string();
}

bool PositiveInt(const char* text, long max, long* out) {
  char* end = nullptr;
  *out = std::strtol(text, &end, 10);
  return *text != '\0' && *end == '\0' && *out > 0 && *out <= max;
}

int Bad(const std::string& why) {
  std::fprintf(stderr, "gpushare-device-plugin: %s\n%s", why.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpushare::k8s;
  PluginConfig config;
  BrokerSocketAdmin::Owner owner;
  config.edits.library_host = DefaultLibrary();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--version") {
      gpushare::PrintVersion("gpushare-device-plugin");
      return 0;
    }
    if (arg == "--cdi") {
      config.edits.cdi = true;
      continue;
    }
    if (i + 1 >= argc) return Bad(arg.rfind("--", 0) == 0 ? arg + " needs a value" : "unknown argument " + arg);
    const std::string value = argv[++i];
    long n = 0;
    if (arg == "--socket") {
      config.broker_socket = value;
    } else if (arg == "--plugin-dir") {
      config.plugin_dir = value;
    } else if (arg == "--pod-resources") {
      config.pod_resources_socket = value;
    } else if (arg == "--strategy") {
      if (value != "single" && value != "mixed") return Bad("--strategy is single or mixed, not \"" + value + "\"");
      config.resources.strategy = value == "mixed" ? Strategy::kMixed : Strategy::kSingle;
    } else if (arg == "--profile") {
      config.resources.profile = value;
    } else if (arg == "--memory-unit") {
      auto bytes = gpushare::ParseBytes(value);
      if (!bytes || *bytes == 0) return Bad("--memory-unit needs a size such as 1GiB, not \"" + value + "\"");
      config.resources.memory_unit_bytes = *bytes;
    } else if (arg == "--library") {
      config.edits.library_host = value;
    } else if (arg == "--library-in-container") {
      config.edits.library_container = value;
    } else if (arg == "--socket-in-container") {
      config.edits.socket_container = value;
    } else if (arg == "--nvidia-visible-devices") {
      config.edits.nvidia_visible_devices = value == "none" ? "" : value;
    } else if (arg == "--socket-owner") {
      unsigned uid = 0, gid = 0;
      char rest = 0;
      if (std::sscanf(value.c_str(), "%u:%u%c", &uid, &gid, &rest) != 2) return Bad("--socket-owner is UID:GID");
      owner.uid = uid;
      owner.gid = gid;
    } else if (arg == "--socket-mode") {
      if (value.size() != 4 || value.find_first_not_of("01234567") != std::string::npos)
        return Bad("--socket-mode is four octal digits such as 0660, not \"" + value + "\"");
      owner.mode = value;
    } else if (arg == "--nvml") {
      config.nvml_library = value == "none" ? "" : value;
    } else if (arg == "--poll-ms") {
      if (!PositiveInt(value.c_str(), 600000, &n)) return Bad("--poll-ms needs milliseconds, not \"" + value + "\"");
      config.poll = std::chrono::milliseconds(n);
    } else if (arg == "--bind-timeout-s") {
      if (!PositiveInt(value.c_str(), 86400, &n)) return Bad("--bind-timeout-s needs seconds, not \"" + value + "\"");
      config.bind_timeout = std::chrono::seconds(n);
    } else {
      return Bad("unknown argument " + arg);
    }
  }
  if (config.broker_socket.empty()) config.broker_socket = gpushare::DefaultClientSocketPath();
  if (access(config.edits.library_host.c_str(), R_OK) != 0)
    std::fprintf(stderr, "gpushare-device-plugin: warning: %s is not readable: containers will not find the library\n",
                 config.edits.library_host.c_str());

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  BrokerSocketAdmin admin(config.broker_socket, owner);
  const auto poll = config.poll;
  DevicePlugin plugin(std::move(config), admin);
  std::fprintf(stderr, "gpushare-device-plugin: started\n");
  while (!g_stop) {
    plugin.Step();
    // Sleeps in short steps so that a signal ends it promptly.
    for (auto slept = std::chrono::milliseconds(0); slept < poll && !g_stop; slept += std::chrono::milliseconds(50))
      usleep(50 * 1000);
  }
  std::fprintf(stderr, "gpushare-device-plugin: stopping\n");
  return 0;
}
