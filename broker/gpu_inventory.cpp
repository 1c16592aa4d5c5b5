// GPU discovery through NVML, loaded at run time so the broker builds and starts on
// machines without a driver (see gpu_inventory.h).
#include "gpu_inventory.h"

#include <dlfcn.h>

#include "../hooks/nvml_api.h"

namespace gpushare::broker {

std::vector<GpuInfo> DiscoverGpus(std::string* error) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    *error = std::string("cannot load NVML (libnvidia-ml.so.1): ") + dlerror();
    return {};
  }
  auto init = reinterpret_cast<decltype(&nvmlInit_v2)>(dlsym(lib, "nvmlInit_v2"));
  auto count = reinterpret_cast<decltype(&nvmlDeviceGetCount_v2)>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<decltype(&nvmlDeviceGetHandleByIndex_v2)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto name = reinterpret_cast<decltype(&nvmlDeviceGetName)>(dlsym(lib, "nvmlDeviceGetName"));
  auto memory = reinterpret_cast<decltype(&nvmlDeviceGetMemoryInfo)>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  unsigned n = 0;
  if (!init || !count || !handle || !name || !memory || init() != NVML_SUCCESS || count(&n) != NVML_SUCCESS) {
    *error = "NVML is present but does not answer (driver not loaded?)";
    return {};
  }
  std::vector<GpuInfo> gpus;
  for (unsigned i = 0; i < n; ++i) {
    nvmlDevice_t d;
    char buf[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = "";
    nvmlMemory_t mem{};
    if (handle(i, &d) != NVML_SUCCESS) continue;
    name(d, buf, sizeof buf);
    memory(d, &mem);
    gpus.push_back({static_cast<int>(i), buf, mem.total});
  }
  return gpus;
}

}  // namespace gpushare::broker
