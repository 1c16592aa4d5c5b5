// How the HIP family reaches the real runtime and how lookups reach its hooks: the
// real libamdhip64 is loaded and its functions resolved from hip_hooks.def; the dlsym
// hook (cuda_lookup.cpp) asks HookForSymbol for every hip* name. Also the client's
// devices as the HIP runtime numbers them.
#include <dlfcn.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "hip/hip_dlsym.h"
#include "hip/hip_hooks.h"
#include "log.h"
#include "common/real_dlsym.h"

namespace gpushare::hip {
namespace {

struct HookEntry {
  const char* symbol;
  void* hook;  // null for real functions used but not hooked
  void** real;
};

const HookEntry kHooks[] = {
#define GS_HIP_HOOK(name) {#name, reinterpret_cast<void*>(&::name), reinterpret_cast<void**>(&real::name)},
#define GS_HIP_HOOK_C(name, types) \
  {#name, reinterpret_cast<void*>(static_cast<hipError_t(*) types>(&::name)), reinterpret_cast<void**>(&real::name)},
#define GS_HIP_HOOK_CXX(name, symbol) \
  {#symbol, reinterpret_cast<void*>(&::name), reinterpret_cast<void**>(&real::name)},
#define GS_HIP_REAL(name) {#name, nullptr, reinterpret_cast<void**>(&real::name)},
#define GS_HIP_DEVICE_HOOK(name, params, args) GS_HIP_HOOK(name)
#include "hip/hip_hooks.def"
#undef GS_HIP_HOOK
#undef GS_HIP_HOOK_C
#undef GS_HIP_HOOK_CXX
#undef GS_HIP_REAL
#undef GS_HIP_DEVICE_HOOK
};

// The runtime the application uses, which it has loaded already: linked with
// -lamdhip64, or dlopened before its dlsym on that handle reached one of our hooks. A
// handle on it resolves in that library and its dependencies, never in ours. It is
// never loaded here: a HIP name reached while no runtime is loaded is a probe from a
// program that does not use HIP (dlsym(RTLD_DEFAULT, "hipGetDeviceCount") finds our
// export), and loading the runtime into it would start HIP behind its back.
void* OpenRuntime() {
  for (const char* name : {"libamdhip64.so.5", "libamdhip64.so"}) {
    if (void* h = dlopen(name, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) return h;
  }
  return nullptr;
}

std::atomic<bool> g_loaded{false};

// The node-wide index of each GPU the HIP runtime shows, when its masks renumber them:
// ROCR_VISIBLE_DEVICES first (ROCr), then HIP_VISIBLE_DEVICES or, unset, the
// CUDA_VISIBLE_DEVICES HIP also honours. GPU_DEVICE_ORDINAL's place among them is not
// documented: with it set the order is unknown (and the client warns).
std::optional<std::vector<int>> RuntimeNodeIndex(const ClientOptions& options) {
  const auto& set = options.runtime_visible_devices;
  if (set.empty() || set.count("GPU_DEVICE_ORDINAL") != 0) return std::nullopt;
  std::vector<std::string> masks;
  if (auto it = set.find("ROCR_VISIBLE_DEVICES"); it != set.end()) masks.push_back(it->second);
  if (auto it = set.find("HIP_VISIBLE_DEVICES"); it != set.end())
    masks.push_back(it->second);
  else if (auto it = set.find("CUDA_VISIBLE_DEVICES"); it != set.end())
    masks.push_back(it->second);
  return masks.empty() ? std::nullopt : DeviceMap::NodeOrder(masks);
}

}  // namespace

bool LoadRealRuntime() {
  if (g_loaded.load(std::memory_order_acquire)) return true;
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = OpenRuntime();
    if (handle == nullptr) {
      // Info, not error: see OpenRuntime.
      Log(LogLevel::kInfo,
          "a HIP entry point was called but no HIP runtime (libamdhip64.so.5) is loaded in this process; "
          "answering hipErrorNotSupported");
      return;
    }
    for (const HookEntry& e : kHooks) *e.real = RealDlsym()(handle, e.symbol);
    g_loaded.store(true, std::memory_order_release);
  });
  return g_loaded.load(std::memory_order_acquire);
}

void* HookForSymbol(const char* symbol) {
  for (const HookEntry& e : kHooks)
    if (e.hook != nullptr && std::strcmp(e.symbol, symbol) == 0) return e.hook;
  return nullptr;
}

Client* ReadyClient() {
  Client& client = Client::Get();
  if (client.devices_ready()) return &client;
  // hipGetDeviceCount initializes the runtime, whichever call of the application's
  // came first.
  int count = 0;
  if (GS_HIP_REAL_CALL(hipGetDeviceCount, &count) != hipSuccess) return nullptr;
  client.gate().SetDrain(DrainDevice);
  client.InitDevices(count, RuntimeNodeIndex(client.options()));
  return &client;
}

int CurrentDevice(Client* client) {
  int physical = 0;
  if (GS_HIP_REAL_CALL(hipGetDevice, &physical) != hipSuccess) return -1;
  return client->devices().Virtual(physical);
}

int StreamDevice(Client* client, hipStream_t stream) {
  if (stream == nullptr || stream == hipStreamPerThread || real::hipGetStreamDeviceId == nullptr)
    return CurrentDevice(client);
  // A runtime that cannot tell (a stub answering an error code) leaves the current device.
  const int v = client->devices().Virtual(real::hipGetStreamDeviceId(stream));
  return v >= 0 ? v : CurrentDevice(client);
}

void DrainDevice(int device) {
  Client* c = ReadyClient();
  const int physical = c ? c->devices().Physical(device) : -1;
  if (physical < 0) return;
  // The device is per thread in HIP: this is the drain thread's own, so switching it
  // leaves the application's threads alone.
  if (GS_HIP_REAL_CALL(hipSetDevice, physical) == hipSuccess) GS_HIP_REAL_CALL(hipDeviceSynchronize);
}

}  // namespace gpushare::hip

using namespace gpushare::hip;

extern "C" {

hipError_t hipInit(unsigned int flags) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_REAL_CALL(hipInit, flags);
    if (r == hipSuccess) ReadyClient();
    return r;
  });
}

}  // extern "C"
