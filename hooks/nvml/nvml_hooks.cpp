// NVML hooks: device counts, indices and handles are virtual (the same map as the
// CUDA hooks), and memory queries show the client's cap, so nvidia-smi and NVML-based
// tools inside the client see what the client was given. Physical GPU numbers are
// NVML's indices; CUDA's ordinals agree with them under CUDA_DEVICE_ORDER=PCI_BUS_ID.
#include <dlfcn.h>
#include <unistd.h>

#include <iterator>
#include <mutex>

#include "client.h"
#include "common/family.h"
#include "common/vendor/nvml_api.h"
#include "log.h"
#include "nvml/nvml_hooks.h"

namespace gpushare::nvml {
namespace real {
#define GS_NVML_HOOK(symbol) inline decltype(&::symbol) symbol = nullptr;
#define GS_NVML_REAL GS_NVML_HOOK
#include "nvml/nvml_hooks.def"
#undef GS_NVML_HOOK
#undef GS_NVML_REAL
}  // namespace real

namespace {

// The NVML family as common/family.h sees it.
struct NvmlApi {
  using Result = nvmlReturn_t;
  // What a hook answers when the shim itself fails (guard.h): NVML's "insufficient
  // memory" and its catch-all.
  static constexpr Result kOutOfMemory = NVML_ERROR_MEMORY;
  static constexpr Result kInternal = NVML_ERROR_UNKNOWN;
  static Result NoReal(const char*) { return NVML_ERROR_FUNCTION_NOT_FOUND; }
  static const hooks::HookEntry kEntries[];
  static const size_t kEntryCount;

  static void* OpenRealLibrary() {
    void* handle = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr) Log(LogLevel::kError, "cannot load the real NVML libnvidia-ml.so.1 (%s)", dlerror());
    return handle;
  }
  static bool InitDevices(Client& client);  // the device map from NVML's count, if CUDA has not made it
};
using Nvml = hooks::Family<NvmlApi>;

const hooks::HookEntry NvmlApi::kEntries[] = {
#define GS_NVML_HOOK(symbol) {#symbol, reinterpret_cast<void*>(&::symbol), reinterpret_cast<void**>(&real::symbol)},
#define GS_NVML_REAL(symbol) {#symbol, nullptr, reinterpret_cast<void**>(&real::symbol)},
#include "nvml/nvml_hooks.def"
#undef GS_NVML_HOOK
#undef GS_NVML_REAL
};
const size_t NvmlApi::kEntryCount = std::size(kEntries);

#define GS_NVML_CALL(symbol, ...) GS_FAMILY_CALL(NvmlApi, real, symbol, __VA_ARGS__)

bool NvmlApi::InitDevices(Client& client) {
  unsigned count = 0;
  if (GS_NVML_CALL(nvmlDeviceGetCount_v2, &count) != NVML_SUCCESS) return false;
  client.InitDevices(static_cast<int>(count));
  return true;
}

Client* ReadyClient() { return Nvml::ReadyClient(); }

template <typename F>
nvmlReturn_t Init(F real_init) {
  if (!Nvml::Load()) return NVML_ERROR_LIBRARY_NOT_FOUND;
  nvmlReturn_t r = real_init();
  if (r == NVML_SUCCESS) ReadyClient();
  return r;
}

// Virtual index of a device handle, or -1 when this client does not see it.
int VirtualOf(Client* client, nvmlDevice_t device) {
  unsigned physical = 0;
  if (GS_NVML_CALL(nvmlDeviceGetIndex, device, &physical) != NVML_SUCCESS) return -1;
  return client->devices().Virtual(static_cast<int>(physical));
}

nvmlReturn_t HandleByIndex(unsigned index, nvmlDevice_t* device) {
  Client* client = ReadyClient();
  if (client == nullptr) return NVML_ERROR_UNINITIALIZED;
  const int physical = client->devices().Physical(static_cast<int>(index));
  if (physical < 0 || device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  return GS_NVML_CALL(nvmlDeviceGetHandleByIndex_v2, static_cast<unsigned>(physical), device);
}

// A handle found by UUID or PCI id is refused if it is not one of the client's GPUs.
nvmlReturn_t OnlyVisible(nvmlReturn_t r, nvmlDevice_t* device) {
  if (r != NVML_SUCCESS) return r;
  Client* client = ReadyClient();
  if (client == nullptr) return NVML_ERROR_UNINITIALIZED;
  return VirtualOf(client, *device) < 0 ? NVML_ERROR_NOT_FOUND : NVML_SUCCESS;
}

// Total, free and used as the client's cap shows them (never more free than real).
void CapView(nvmlDevice_t device, unsigned long long* total, unsigned long long* free_b, unsigned long long* used) {
  Client* client = ReadyClient();
  if (client == nullptr) return;
  const int v = VirtualOf(client, device);
  if (v < 0) return;
  const uint64_t cap = client->ledger().Cap(v);
  if (cap == MemoryLedger::kNoCap) return;
  const uint64_t held = std::min(client->Held(v), cap);
  *total = cap;
  *free_b = std::min<uint64_t>(*free_b, cap - held);
  *used = cap - *free_b;
}

}  // namespace

std::optional<uint64_t> ProcessMemory(const char* pci_bus_id) {
  static std::once_flag once;
  static bool ready = false;
  std::call_once(once, [] { ready = Nvml::Load() && GS_NVML_CALL(nvmlInit_v2) == NVML_SUCCESS; });
  nvmlDevice_t device;
  if (!ready || GS_NVML_CALL(nvmlDeviceGetHandleByPciBusId_v2, pci_bus_id, &device) != NVML_SUCCESS)
    return std::nullopt;
  nvmlProcessInfo_t infos[256];
  unsigned count = 256;
  if (GS_NVML_CALL(nvmlDeviceGetComputeRunningProcesses_v3, device, &count, infos) != NVML_SUCCESS) return std::nullopt;
  for (unsigned i = 0; i < count; ++i)
    if (infos[i].pid == static_cast<unsigned>(getpid())) return infos[i].usedGpuMemory;
  return std::nullopt;
}

}  // namespace gpushare::nvml

// dlsym answers every name starting with "nvml" that the family hooks.
GS_DLSYM_ROUTE(nvml, {{"nvml", nullptr}, &gpushare::nvml::Nvml::HookFor});

using namespace gpushare;
using namespace gpushare::nvml;

extern "C" {

nvmlReturn_t nvmlInit_v2() {
  return GS_GUARDED(NvmlApi, { return Init([] { return GS_NVML_CALL(nvmlInit_v2); }); });
}
nvmlReturn_t nvmlInit() {
  return GS_GUARDED(NvmlApi, { return Init([] { return GS_NVML_CALL(nvmlInit); }); });
}
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
  return GS_GUARDED(NvmlApi, { return Init([flags] { return GS_NVML_CALL(nvmlInitWithFlags, flags); }); });
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  return GS_GUARDED(NvmlApi, {
    Client* client = ReadyClient();
    if (client == nullptr) return NVML_ERROR_UNINITIALIZED;
    if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
    *count = static_cast<unsigned>(client->devices().count());
    return NVML_SUCCESS;
  });
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int* count) {
  return GS_GUARDED(NvmlApi, { return nvmlDeviceGetCount_v2(count); });
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  return GS_GUARDED(NvmlApi, { return HandleByIndex(index, device); });
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t* device) {
  return GS_GUARDED(NvmlApi, { return HandleByIndex(index, device); });
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char* uuid, nvmlDevice_t* device) {
  return GS_GUARDED(NvmlApi, { return OnlyVisible(GS_NVML_CALL(nvmlDeviceGetHandleByUUID, uuid, device), device); });
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, nvmlDevice_t* device) {
  return GS_GUARDED(NvmlApi,
                    { return OnlyVisible(GS_NVML_CALL(nvmlDeviceGetHandleByPciBusId_v2, bus_id, device), device); });
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int* index) {
  return GS_GUARDED(NvmlApi, {
    Client* client = ReadyClient();
    if (client == nullptr) return NVML_ERROR_UNINITIALIZED;
    if (index == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
    const int v = VirtualOf(client, device);
    if (v < 0) return NVML_ERROR_NOT_FOUND;
    *index = static_cast<unsigned>(v);
    return NVML_SUCCESS;
  });
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  return GS_GUARDED(NvmlApi, {
    nvmlReturn_t r = GS_NVML_CALL(nvmlDeviceGetMemoryInfo, device, memory);
    if (r == NVML_SUCCESS) CapView(device, &memory->total, &memory->free, &memory->used);
    return r;
  });
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t* memory) {
  return GS_GUARDED(NvmlApi, {
    nvmlReturn_t r = GS_NVML_CALL(nvmlDeviceGetMemoryInfo_v2, device, memory);
    if (r == NVML_SUCCESS) CapView(device, &memory->total, &memory->free, &memory->used);
    return r;
  });
}

}  // extern "C"
