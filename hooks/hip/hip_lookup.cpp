// How the HIP family reaches the real runtime and how lookups reach its hooks: its
// table and description for the common plumbing (common/family.h resolves
// hip_hooks.def in the runtime the process has loaded) and its dlsym route. Also the
// client's devices as the HIP runtime numbers them.
#include <dlfcn.h>

#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "common/dlsym.h"
#include "hip/hip_hooks.h"
#include "log.h"

namespace gpushare::hip {

const hooks::HookEntry HipApi::kEntries[] = {
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
const size_t HipApi::kEntryCount = std::size(kEntries);

namespace {

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

void* HipApi::OpenRealLibrary() {
  void* handle = OpenRuntime();
  if (handle == nullptr) {
    // Info, not error: see OpenRuntime.
    Log(LogLevel::kInfo,
        "a HIP entry point was called but no HIP runtime (libamdhip64.so.5) is loaded in this process; "
        "answering hipErrorNotSupported");
  }
  return handle;
}

bool HipApi::InitDevices(Client& client) {
  // hipGetDeviceCount initializes the runtime, whichever call of the application's
  // came first.
  int count = 0;
  if (GS_HIP_CALL(hipGetDeviceCount, &count) != hipSuccess) return false;
  client.gate().SetDrain(DrainDevice);
  client.InitDevices(count, RuntimeNodeIndex(client.options()));
  return true;
}

int CurrentDevice(Client* client) {
  int physical = 0;
  if (GS_HIP_CALL(hipGetDevice, &physical) != hipSuccess) return -1;
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
  if (GS_HIP_CALL(hipSetDevice, physical) == hipSuccess) GS_HIP_CALL(hipDeviceSynchronize);
}

}  // namespace gpushare::hip

// dlsym answers every hip* name (and the mangled C++ ones) that the family hooks.
GS_DLSYM_ROUTE(hip, {{"hip", "_Z24hip"}, &gpushare::hip::Hip::HookFor});

using namespace gpushare::hip;

extern "C" {

hipError_t hipInit(unsigned int flags) {
  return GS_GUARDED(HipApi, {
    hipError_t r = GS_HIP_CALL(hipInit, flags);
    if (r == hipSuccess) ReadyClient();
    return r;
  });
}

}  // extern "C"
