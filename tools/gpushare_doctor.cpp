// gpushare-doctor: checks a node for what keeps gpushare from working, each with a
// verdict and the fix in one line (docs/monitoring.md): the driver against NVML,
// nouveau, MIG and MPS, the broker (reachable, its socket's permissions, its config),
// libgpushare.so preloaded into a probe that must see its cap, programs LD_PRELOAD
// cannot reach, memory promised against what the GPUs have free (and why), and the share
// of NCCL jobs' GPU time in collectives. Reads only.
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "broker/policy/config.h"
#include "common/base/socket_path.h"
#include "common/base/version.h"
#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "common/vendor/nvml_api.h"

namespace {

namespace proto = gpushare::protocol;
using nlohmann::json;

constexpr const char* kUsage =
    "usage: gpushare-doctor [--socket PATH] [--config FILE] [--lib PATH] [--program PATH]... [--json]\n"
    "  --socket PATH   the broker's socket (default: $GPUSHARE_SOCKET, else the default path)\n"
    "  --config FILE   the broker's config, to be checked\n"
    "  --lib PATH      libgpushare.so to preload into a probe (default: ../lib/libgpushare.so\n"
    "                  beside this program)\n"
    "  --program PATH  a program to be run under gpushare: can LD_PRELOAD reach it? (repeatable)\n"
    "  --json          the checks as JSON\n"
    "  -h, --help      this text\n"
    "  --version       the version\n"
    "exit status: 0 no check failed, 1 one or more failed, 2 usage\n";

constexpr uint64_t kProbeCapBytes = 96ull << 20;  // what the probe is given and must see

enum class Verdict { kPass, kWarn, kFail, kSkip };
const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kPass: return "pass";
    case Verdict::kWarn: return "warn";
    case Verdict::kFail: return "fail";
    case Verdict::kSkip: return "skip";
  }
  return "?";
}

struct Check {
  std::string name;
  Verdict verdict;
  std::string detail;
  std::string fix;  // one line; "" when there is nothing to do
};

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::string Gib(uint64_t bytes) {
  char b[32];
  if (bytes < (1ull << 30))
    std::snprintf(b, sizeof b, "%.0f MiB", static_cast<double>(bytes) / (1ull << 20));
  else
    std::snprintf(b, sizeof b, "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  return b;
}

// NVML, loaded at run time (absent on a node without the NVIDIA driver).
struct Nvml {
  void* lib = nullptr;
  bool ready = false;
  template <typename F>
  F Get(const char* name) const {
    return lib == nullptr ? nullptr : reinterpret_cast<F>(dlsym(lib, name));
  }
  Nvml() {
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    auto init = Get<decltype(&nvmlInit_v2)>("nvmlInit_v2");
    ready = init != nullptr && init() == NVML_SUCCESS;
  }
  std::vector<nvmlDevice_t> Devices() const {
    std::vector<nvmlDevice_t> out;
    auto count = Get<decltype(&nvmlDeviceGetCount_v2)>("nvmlDeviceGetCount_v2");
    auto handle = Get<decltype(&nvmlDeviceGetHandleByIndex_v2)>("nvmlDeviceGetHandleByIndex_v2");
    unsigned n = 0;
    if (!ready || !count || !handle || count(&n) != NVML_SUCCESS) return out;
    for (unsigned i = 0; i < n; ++i) {
      nvmlDevice_t d = nullptr;
      out.push_back(handle(i, &d) == NVML_SUCCESS ? d : nullptr);
    }
    return out;
  }
};

// The driver libcuda.so.1 says it is against what NVML says: one driver, or two installs.
Check DriverCheck(const Nvml& nvml) {
  Check c{"driver", Verdict::kPass, "", ""};
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (cuda == nullptr) {
    return {"driver", Verdict::kFail, std::string("libcuda.so.1 cannot be loaded: ") + dlerror(),
            "Install the NVIDIA driver (e.g. apt install nvidia-driver) and reboot."};
  }
  using DriverGetVersion = int (*)(int*);
  auto version = reinterpret_cast<DriverGetVersion>(dlsym(cuda, "cuDriverGetVersion"));
  int cuda_version = 0;
  if (version == nullptr || version(&cuda_version) != 0)
    return {"driver", Verdict::kFail, "libcuda.so.1 does not say its version", "Reinstall the NVIDIA driver."};
  auto nvml_version = nvml.Get<decltype(&nvmlSystemGetCudaDriverVersion)>("nvmlSystemGetCudaDriverVersion");
  int nvml_cuda = 0;
  if (!nvml.ready || nvml_version == nullptr || nvml_version(&nvml_cuda) != NVML_SUCCESS)
    return {"driver", Verdict::kFail, "NVML (libnvidia-ml.so.1) cannot be loaded or initialized",
            "Install the driver's NVML (it ships with the driver) and check that the kernel module is loaded."};
  c.detail = "libcuda " + std::to_string(cuda_version) + ", NVML " + std::to_string(nvml_cuda);
  if (cuda_version != nvml_cuda) {
    c.verdict = Verdict::kFail;
    c.detail += ": two drivers (a user-space library left from another install?)";
    c.fix =
        "Remove the stale libcuda/libnvidia-ml (ldconfig -p | grep -E 'libcuda|nvidia-ml') and reinstall one driver.";
  }
  return c;
}

// nouveau loaded blocks NVIDIA's module; not blacklisted, it may load at the next boot.
Check NouveauCheck() {
  const std::string modules_path = Env("GPUSHARE_DOCTOR_PROC_MODULES", "/proc/modules");
  const std::string modprobe_dir = Env("GPUSHARE_DOCTOR_MODPROBE_DIR", "/etc/modprobe.d");
  std::ifstream modules(modules_path);
  if (!modules) return {"nouveau", Verdict::kSkip, "cannot read " + modules_path, ""};
  bool loaded = false;
  for (std::string line; std::getline(modules, line);) loaded = loaded || line.rfind("nouveau ", 0) == 0;
  bool blacklisted = false;
  if (DIR* d = opendir(modprobe_dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::ifstream conf(modprobe_dir + "/" + e->d_name);
      for (std::string line; std::getline(conf, line);) {
        std::istringstream words(line);
        std::string first, second;
        words >> first >> second;
        blacklisted = blacklisted || (first == "blacklist" && second == "nouveau");
      }
    }
    closedir(d);
  }
  if (loaded)
    return {"nouveau", Verdict::kFail, "the nouveau module is loaded (" + modules_path + "): NVIDIA's cannot bind",
            "echo 'blacklist nouveau' > /etc/modprobe.d/blacklist-nouveau.conf; update-initramfs -u; reboot."};
  if (!blacklisted)
    return {"nouveau", Verdict::kWarn, "nouveau is not loaded but not blacklisted in " + modprobe_dir,
            "echo 'blacklist nouveau' > /etc/modprobe.d/blacklist-nouveau.conf; update-initramfs -u."};
  return {"nouveau", Verdict::kPass, "not loaded, blacklisted", ""};
}

// MIG splits a GPU into devices of its own (gpushare shares whole GPUs); an MPS daemon
// runs clients' kernels concurrently, under the broker's time slices.
Check MigCheck(const Nvml& nvml) {
  auto mig = nvml.Get<decltype(&nvmlDeviceGetMigMode)>("nvmlDeviceGetMigMode");
  if (!nvml.ready) return {"mig", Verdict::kSkip, "NVML not available", ""};
  std::string on;
  const auto devices = nvml.Devices();
  for (size_t i = 0; i < devices.size(); ++i) {
    unsigned current = 0, pending = 0;
    if (mig != nullptr && devices[i] != nullptr && mig(devices[i], &current, &pending) == NVML_SUCCESS && current == 1)
      on += (on.empty() ? "" : ", ") + std::to_string(i);
  }
  if (!on.empty())
    return {"mig", Verdict::kFail, "MIG mode is on for GPU(s) " + on + ": gpushare shares whole GPUs",
            "nvidia-smi -i GPU -mig 0 (then reset the GPU), or leave those GPUs out of gpushare's tenants' gpus."};
  return {"mig", Verdict::kPass, "MIG mode off on " + std::to_string(devices.size()) + " GPU(s)", ""};
}

Check MpsCheck() {
  const std::string proc = Env("GPUSHARE_DOCTOR_PROC", "/proc");
  std::string found;
  if (DIR* d = opendir(proc.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      // comm is cut at 15 characters ("nvidia-cuda-mps"); the command line says which.
      std::ifstream comm(proc + "/" + e->d_name + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name != "nvidia-cuda-mps") continue;
      std::ifstream cmdline(proc + "/" + e->d_name + "/cmdline");
      std::string argv0;
      std::getline(cmdline, argv0, '\0');
      argv0 = argv0.substr(argv0.rfind('/') + 1);
      if (argv0 == "nvidia-cuda-mps-control" || argv0 == "nvidia-cuda-mps-server")
        found += (found.empty() ? "" : ", ") + argv0 + " (pid " + e->d_name + ")";
    }
    closedir(d);
  }
  if (!found.empty())
    return {"mps", Verdict::kFail,
            "an MPS daemon runs: " + found + "; its clients share the GPU at once, past the broker's time slices",
            "echo quit | nvidia-cuda-mps-control (gpushare schedules GPU time itself)."};
  return {"mps", Verdict::kPass, "no MPS daemon", ""};
}

std::optional<std::string> Ask(const std::string& socket, const std::vector<uint8_t>& request, std::string* error) {
  const int fd = proto::ConnectUnix(socket, error);
  if (fd < 0) return std::nullopt;
  std::vector<uint8_t> buffer;
  std::optional<proto::Message> reply;
  if (proto::SendAll(fd, request)) reply = proto::Receive(fd, &buffer, 5000, error);
  close(fd);
  if (!reply) return std::nullopt;
  return std::string(reply->payload.begin(), reply->payload.end());
}

// The broker answers on its socket, and any local user may connect to it.
Check BrokerCheck(const std::string& socket, std::optional<json>* status) {
  std::string error;
  auto reply = Ask(socket, proto::EncodeText(proto::Type::kStatus, ""), &error);
  if (!reply) {
    return {"broker", Verdict::kFail, "no broker answers on " + socket + ": " + error,
            "Start it: systemctl start gpushare-broker (or gpushare-broker --config FILE --socket " + socket + ")."};
  }
  try {
    *status = json::parse(*reply);
  } catch (const std::exception& e) {
    return {"broker", Verdict::kFail, std::string("the broker's status is not JSON: ") + e.what(),
            "Upgrade gpushare-doctor and gpushare-broker together."};
  }
  return {"broker", Verdict::kPass,
          "answers on " + socket + " (" + std::to_string((**status)["clients"].size()) + " client(s))", ""};
}

Check SocketCheck(const std::string& socket) {
  struct stat st {};
  if (stat(socket.c_str(), &st) != 0) return {"socket", Verdict::kSkip, socket + " does not exist", ""};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
  if (!S_ISSOCK(st.st_mode))
    return {"socket", Verdict::kFail, socket + " is not a socket", "Remove it and restart the broker."};
  if ((st.st_mode & 0006) != 0006)
    return {"socket", Verdict::kFail, socket + " has mode " + mode + ": other users' clients cannot connect",
            "chmod 0666 " + socket + " (the broker sets it; who a client is comes from SO_PEERCRED)."};
  // Every directory on the way must be searchable by others.
  for (std::string dir = socket.substr(0, socket.rfind('/')); !dir.empty(); dir = dir.substr(0, dir.rfind('/'))) {
    struct stat ds {};
    if (stat(dir.c_str(), &ds) == 0 && (ds.st_mode & 0001) == 0)
      return {"socket", Verdict::kFail, dir + " is not searchable by others: their clients cannot reach the socket",
              "chmod o+x " + dir + " (or give containers the socket's directory as a mount)."};
    if (dir.find('/') == std::string::npos) break;
  }
  return {"socket", Verdict::kPass, socket + " mode " + mode, ""};
}

Check ConfigCheck(const std::string& path) {
  if (path.empty()) return {"config", Verdict::kSkip, "no --config given", ""};
  std::string error;
  if (!gpushare::broker::LoadBrokerConfig(path, &error))
    return {"config", Verdict::kFail, error, "Fix the line named; the broker refuses to start (or reload) with it."};
  return {"config", Verdict::kPass, path + " is valid", ""};
}

// Runs this program as a probe under the shim, standalone, with a cap it must see.
Check PreloadCheck(const std::string& self, const std::string& lib) {
  if (access(lib.c_str(), R_OK) != 0)
    return {"preload", Verdict::kFail, lib + " cannot be read",
            "Pass --lib PATH to libgpushare.so, or install gpushare."};
  int out[2];
  if (pipe(out) != 0) return {"preload", Verdict::kSkip, "pipe failed", ""};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    setenv("LD_PRELOAD", lib.c_str(), 1);
    setenv("GPUSHARE_MEMORY_LIMIT", std::to_string(kProbeCapBytes).c_str(), 1);
    setenv("GPUSHARE_SOCKET", "/nonexistent/gpushare-doctor-probe.sock", 1);  // standalone: the cap is its own
    execl(self.c_str(), self.c_str(), "--probe", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const size_t at = text.find("probe_total=");
  const uint64_t seen = at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + 12, nullptr, 10);
  if (seen == kProbeCapBytes)
    return {"preload", Verdict::kPass, lib + " preloaded; the probe saw its " + Gib(kProbeCapBytes) + " cap", ""};
  std::string said = text.substr(0, 300);
  for (char& ch : said)
    if (ch == '\n') ch = ' ';
  return {
      "preload", Verdict::kFail,
      "a probe under " + lib + " did not see its cap (" + (seen ? Gib(seen) : std::string("no answer")) + "): " + said,
      "Check that LD_PRELOAD can load it (ldd " + lib + ") and that the driver is reachable."};
}

// What the probe does under the shim: the first GPU's memory as the application sees it.
int Probe() {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW);
  if (cuda == nullptr) {
    std::printf("probe: %s\n", dlerror());
    return 1;
  }
  using Init = int (*)(unsigned);
  using DeviceGet = int (*)(int*, int);
  using TotalMem = int (*)(size_t*, int);
  auto init = reinterpret_cast<Init>(dlsym(cuda, "cuInit"));
  auto get = reinterpret_cast<DeviceGet>(dlsym(cuda, "cuDeviceGet"));
  auto total = reinterpret_cast<TotalMem>(dlsym(cuda, "cuDeviceTotalMem_v2"));
  int dev = 0;
  size_t bytes = 0;
  if (!init || !get || !total || init(0) != 0 || get(&dev, 0) != 0 || total(&bytes, dev) != 0) {
    std::printf("probe: the driver API failed\n");
    return 1;
  }
  std::printf("probe_total=%zu\n", bytes);
  return 0;
}

// A program LD_PRELOAD cannot reach: linked statically (no dynamic loader) or setuid/setgid
// (the loader ignores LD_PRELOAD for it).
Check ProgramCheck(const std::string& path) {
  const std::string name = "program";
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    return {name, Verdict::kFail, path + ": does not exist", "Give the program's path."};
  if (st.st_mode & (S_ISUID | S_ISGID))
    return {name, Verdict::kFail, path + ": setuid/setgid: the loader ignores LD_PRELOAD for it",
            "Run it without the setuid bit (chmod u-s,g-s) or from a wrapper that is not setuid."};
  std::ifstream f(path, std::ios::binary);
  Elf64_Ehdr eh{};
  if (!f.read(reinterpret_cast<char*>(&eh), sizeof eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return {name, Verdict::kWarn, path + ": not an ELF program (a script?): its interpreter is what gets preloaded",
            ""};
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) return {name, Verdict::kWarn, path + ": not a 64-bit ELF program", ""};
  bool interp = false;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    f.seekg(static_cast<std::streamoff>(eh.e_phoff + static_cast<uint64_t>(i) * eh.e_phentsize));
    if (!f.read(reinterpret_cast<char*>(&ph), sizeof ph)) break;
    interp = interp || ph.p_type == PT_INTERP;
  }
  if (!interp)
    return {name, Verdict::kFail, path + ": statically linked: no dynamic loader, so LD_PRELOAD cannot reach it",
            "Link it dynamically (at least against libc and libcuda) to run it under gpushare."};
  return {name, Verdict::kPass, path + ": dynamically linked, not setuid: LD_PRELOAD reaches it", ""};
}

// NVML's compute processes on `device`: pid -> bytes each holds there (contexts included).
std::map<int32_t, uint64_t> NvmlProcesses(const Nvml& nvml, nvmlDevice_t device) {
  std::map<int32_t, uint64_t> out;
  auto get = nvml.Get<decltype(&nvmlDeviceGetComputeRunningProcesses_v3)>("nvmlDeviceGetComputeRunningProcesses_v3");
  if (get == nullptr || device == nullptr) return out;
  std::vector<nvmlProcessInfo_t> infos(64);
  unsigned n = static_cast<unsigned>(infos.size());
  nvmlReturn_t r = get(device, &n, infos.data());
  if (r == NVML_ERROR_INSUFFICIENT_SIZE) {  // processes came between the two calls: once more, with room
    infos.resize(n + 16);
    n = static_cast<unsigned>(infos.size());
    r = get(device, &n, infos.data());
  }
  if (r != NVML_SUCCESS) return out;
  for (unsigned i = 0; i < n && i < infos.size(); ++i)
    if (infos[i].usedGpuMemory != ~0ull) out[static_cast<int32_t>(infos[i].pid)] += infos[i].usedGpuMemory;
  return out;
}

std::string ProcessName(int32_t pid) {
  std::string name;
  std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), name);
  return name.empty() ? "?" : name;
}

// One GPU's memory, explained: what tenants were promised (their caps, or what uncapped
// ones hold) and hold (the broker's ledger), what is held outside the ledger (processes
// not under gpushare, by NVML's per-process usage; gpushare clients' contexts, NVML's
// figure for them past the ledger's; the rest NVML does not attribute), and what that
// leaves a new client: the largest vGPU instance that still fits.
struct GpuMemory {
  int index = 0;
  uint64_t total = 0, ledger = 0, promised = 0, outside = 0;
  size_t tenants = 0;
  std::string line;
  bool over() const { return promised + outside > total; }
};

GpuMemory ExplainGpu(const Nvml& nvml, const json& gpu, const json& status, nvmlDevice_t device) {
  GpuMemory m;
  m.index = gpu["index"].get<int>();
  m.total = gpu["memory_total"].get<uint64_t>();
  m.ledger = gpu["memory_used"].get<uint64_t>();
  std::map<std::string, uint64_t> promised, held;  // per tenant: its cap (shared by its processes), what it holds
  std::map<int32_t, uint64_t> clients;             // gpushare clients' pids: what the ledger says they hold here
  for (const json& c : status["clients"])
    for (const json& d : c["devices"]) {
      if (d["physical"].get<int>() != m.index) continue;
      const std::string tenant = c["tenant"].get<std::string>();
      const uint64_t want =
          d["capped"].get<bool>() ? d["memory_cap"].get<uint64_t>() : d["tenant_memory_used"].get<uint64_t>();
      promised[tenant] = std::max(promised[tenant], want);
      held[tenant] = d["tenant_memory_used"].get<uint64_t>();
      clients[c["pid"].get<int32_t>()] += d["memory_used"].get<uint64_t>();
    }
  m.tenants = promised.size();
  for (const auto& [tenant, bytes] : promised) m.promised += bytes;
  std::string tenants;
  for (const auto& [tenant, bytes] : promised)
    tenants += (tenants.empty() ? "" : ", ") + tenant + " " + Gib(bytes) + " (holds " + Gib(held[tenant]) + ")";
  m.line = "GPU " + std::to_string(m.index) + ": " + Gib(m.total) + ", promised " + Gib(m.promised) + " to " +
           std::to_string(m.tenants) + " tenant(s)" + (tenants.empty() ? "" : " [" + tenants + "]");

  auto memory = nvml.Get<decltype(&nvmlDeviceGetMemoryInfo)>("nvmlDeviceGetMemoryInfo");
  nvmlMemory_t info{};
  if (memory == nullptr || device == nullptr || memory(device, &info) != NVML_SUCCESS) {
    m.line += "; NVML cannot say what is held outside the broker";
  } else {
    m.outside = info.used > m.ledger ? info.used - m.ledger : 0;
    std::string others;
    uint64_t contexts = 0, attributed = 0;
    for (const auto& [pid, bytes] : NvmlProcesses(nvml, device)) {
      attributed += bytes;
      if (auto c = clients.find(pid); c != clients.end())
        contexts += bytes > c->second ? bytes - c->second : 0;
      else
        others += (others.empty() ? "" : ", ") + std::string("pid ") + std::to_string(pid) + " (" + ProcessName(pid) +
                  ") " + Gib(bytes);
    }
    m.line += "; " + Gib(m.outside) + " held outside the broker (contexts, other processes)";
    if (!others.empty()) m.line += ": not under gpushare: " + others;
    if (contexts > 0) m.line += "; gpushare clients' contexts: " + Gib(contexts);
    if (m.outside > 0 && info.used > attributed)
      m.line += "; " + Gib(info.used - attributed) + " NVML names no process for (the driver's, or other containers')";
    m.line += "; " + Gib(info.free) + " free";
  }
  const uint64_t room = m.over() ? 0 : m.total - m.promised - m.outside;
  m.line += "; room for a new client: " + Gib(room);
  // vGPU profiles: the largest whose instance the broker would grant here now and whose memory fits.
  const json& vgpu = status.value("vgpu", json::object());
  std::map<std::string, uint64_t> profile_bytes;
  for (const json& p : vgpu.value("profiles", json::array()))
    profile_bytes[p["name"].get<std::string>()] = p["memory_bytes"].get<uint64_t>();
  if (!profile_bytes.empty()) {
    std::string best, reserved;
    uint64_t best_bytes = 0;
    for (const json& g : vgpu.value("gpus", json::array())) {
      if (g["index"].get<int>() != m.index) continue;
      for (const json& p : g["profiles"]) {
        const std::string name = p["name"].get<std::string>();
        const uint64_t bytes = profile_bytes[name];
        if (p["reserved"].get<int>() > 0)
          reserved += (reserved.empty() ? "" : ", ") + std::to_string(p["reserved"].get<int>()) + " " + name;
        if (p["available"].get<int>() > 0 && bytes <= room && bytes > best_bytes) {
          best = name;
          best_bytes = bytes;
        }
      }
    }
    if (!reserved.empty()) m.line += "; reserved for the system: " + reserved;
    m.line += best.empty() ? "; no instance profile fits"
                           : "; largest instance that fits: " + best + " (" + Gib(best_bytes) + ")";
  }
  return m;
}

// Memory promised to tenants plus what is held outside the broker, against each GPU's
// memory: past it, a client gets "out of memory" before its cap. Each GPU explained.
Check MemoryCheck(const Nvml& nvml, const std::optional<json>& status) {
  if (!status) return {"memory", Verdict::kSkip, "no broker status", ""};
  const auto devices = nvml.Devices();
  std::string detail, over;
  bool outside_processes = false;
  for (const json& g : (*status)["gpus"]) {
    const int index = g["index"].get<int>();
    const GpuMemory m =
        ExplainGpu(nvml, g, *status, index < static_cast<int>(devices.size()) ? devices[index] : nullptr);
    detail += (detail.empty() ? "" : "; ") + m.line;
    if (m.over()) {
      over += (over.empty() ? "" : "; ") + m.line;
      outside_processes = outside_processes || m.line.find("not under gpushare") != std::string::npos;
    }
  }
  if (!over.empty())
    return {"memory", Verdict::kFail, over + ": a client may get out of memory below its cap",
            std::string(outside_processes ? "Stop the processes not under gpushare (or run them under it), " : "") +
                "lower tenants' memory caps, or move a tenant (tenants.X.gpus)."};
  return {"memory", Verdict::kPass, detail.empty() ? "no GPU" : detail, ""};
}

// NCCL, from the NCCL hooks: a job whose GPU time is more than 30 % collectives (the
// article's threshold: communication dominates the step), with how its GPUs reach each
// other; and communicators with ranks sharing a GPU or pairs without P2P (data through
// host memory), which slow every collective.
constexpr double kCollectiveShareLimit = 0.30;

std::string Percent(double ratio) { return std::to_string(static_cast<int>(std::lround(ratio * 100))) + " %"; }

Check NcclCheck(const std::optional<json>& status) {
  if (!status) return {"nccl", Verdict::kSkip, "no broker status", ""};
  std::string flagged, measured;
  for (const json& j : status->value("jobs", json::array())) {
    const std::string name = "job " + j["job"].get<std::string>() + " (tenant " + j["tenant"].get<std::string>() + ")";
    if (j["collective_share"].is_null()) {
      measured += (measured.empty() ? "" : "; ") + name + ": " + std::to_string(j["collectives"].get<uint64_t>()) +
                  " collective(s), no GPU time measured (scheduling off)";
      continue;
    }
    const double share = j["collective_share"].get<double>();
    char seconds[96];
    std::snprintf(seconds, sizeof seconds, "%.2f s of %.2f s GPU time, %llu collective(s)",
                  j["collective_ms"].get<double>() / 1e3, j["gpu_time_ms"].get<double>() / 1e3,
                  static_cast<unsigned long long>(j["collectives"].get<uint64_t>()));
    std::string links;
    for (const json& l : j["links"])
      links += (links.empty() ? "" : ", ") + std::string("GPUs ") + std::to_string(l["gpus"][0].get<int>()) + "-" +
               std::to_string(l["gpus"][1].get<int>()) + " " + l["link"].get<std::string>();
    const std::string line =
        name + ": " + Percent(share) + " in collectives (" + seconds + ")" + (links.empty() ? "" : "; " + links);
    measured += (measured.empty() ? "" : "; ") + line;
    if (share > kCollectiveShareLimit) flagged += (flagged.empty() ? "" : "; ") + line;
  }
  std::string warnings;
  for (const json& c : (*status)["communicators"]) {
    const std::string w = c.value("warning", "");
    if (!w.empty())
      warnings +=
          (warnings.empty() ? "" : "; ") + c["tenant"].get<std::string>() + " " + c["id"].get<std::string>() + ": " + w;
  }
  if (!flagged.empty())
    return {"nccl", Verdict::kWarn,
            flagged + ": above " + Percent(kCollectiveShareLimit) + " of GPU time in NCCL" +
                (warnings.empty() ? "" : "; " + warnings),
            "Run with NCCL_DEBUG=INFO to see the transport NCCL chose (P2P/NVLink, SHM or NET); place the ranks on "
            "P2P/NVLink-connected GPUs and enable GPUDirect P2P (nvidia-smi topo -m); overlap communication with "
            "compute or exchange larger buckets less often."};
  if (!warnings.empty())
    return {"nccl", Verdict::kWarn, warnings,
            "Run with NCCL_DEBUG=INFO to see the transport chosen; enable P2P/GPUDirect (nvidia-smi topo -m) or "
            "place ranks on P2P-connected GPUs."};
  const size_t comms = (*status)["communicators"].size();
  return {"nccl", Verdict::kPass,
          std::to_string(comms) + " communicator(s), every pair of ranks on its own P2P-connected GPUs" +
              (measured.empty() ? "; no collective timed" : "; " + measured),
          ""};
}

std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket, config, lib;
  std::vector<std::string> programs;
  bool as_json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--probe") return Probe();
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--version") {
      gpushare::PrintVersion("gpushare-doctor");
      return 0;
    }
    if (a == "--json") {
      as_json = true;
    } else if ((a == "--socket" || a == "--config" || a == "--lib" || a == "--program") && i + 1 < argc) {
      (a == "--socket" ? socket : a == "--config" ? config : a == "--lib" ? lib : programs.emplace_back()) = argv[++i];
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  if (socket.empty()) socket = gpushare::DefaultClientSocketPath();
  const std::string self = SelfPath();
  if (lib.empty()) lib = self.substr(0, self.rfind('/')) + "/../lib/libgpushare.so";

  Nvml nvml;
  std::vector<Check> checks;
  checks.push_back(DriverCheck(nvml));
  checks.push_back(NouveauCheck());
  checks.push_back(MigCheck(nvml));
  checks.push_back(MpsCheck());
  std::optional<json> status;
  checks.push_back(BrokerCheck(socket, &status));
  checks.push_back(SocketCheck(socket));
  checks.push_back(ConfigCheck(config));
  checks.push_back(PreloadCheck(self, lib));
  for (const std::string& p : programs) checks.push_back(ProgramCheck(p));
  checks.push_back(MemoryCheck(nvml, status));
  checks.push_back(NcclCheck(status));

  bool failed = false;
  for (const Check& c : checks) failed = failed || c.verdict == Verdict::kFail;
  if (as_json) {
    json out = json::array();
    for (const Check& c : checks)
      out.push_back({{"check", c.name}, {"verdict", VerdictName(c.verdict)}, {"detail", c.detail}, {"fix", c.fix}});
    std::printf("%s\n",
                json{{"checks", out}, {"ok", !failed}}.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    for (const Check& c : checks) {
      std::printf("%-5s %-10s %s\n", VerdictName(c.verdict), c.name.c_str(), c.detail.c_str());
      if (!c.fix.empty()) std::printf("      %-10s fix: %s\n", "", c.fix.c_str());
    }
  }
  return failed ? 1 : 0;
}
