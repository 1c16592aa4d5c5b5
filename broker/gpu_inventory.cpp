// GPU discovery through NVML, loaded at run time so the broker builds and starts on
// machines without a driver (see gpu_inventory.h).
#include "gpu_inventory.h"

#include <dlfcn.h>

#include <algorithm>

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

UtilizationSampler::UtilizationSampler() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);  // loaded already: DiscoverGpus
  if (lib == nullptr) return;
  auto count = reinterpret_cast<decltype(&nvmlDeviceGetCount_v2)>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<decltype(&nvmlDeviceGetHandleByIndex_v2)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  get_ = dlsym(lib, "nvmlDeviceGetProcessUtilization");
  unsigned n = 0;
  if (!count || !handle || !get_ || count(&n) != NVML_SUCCESS) {
    get_ = nullptr;
    return;
  }
  for (unsigned i = 0; i < n; ++i) {
    nvmlDevice_t d;
    devices_.push_back(handle(i, &d) == NVML_SUCCESS ? d : nullptr);
  }
}

std::vector<ProcessUtilization> UtilizationSampler::Sample() {
  std::vector<ProcessUtilization> out;
  if (get_ == nullptr) return out;
  auto get = reinterpret_cast<decltype(&nvmlDeviceGetProcessUtilization)>(get_);
  unsigned long long newest = last_us_;
  for (size_t g = 0; g < devices_.size(); ++g) {
    if (devices_[g] == nullptr) continue;
    nvmlProcessUtilizationSample_t samples[256];
    unsigned n = 256;
    if (get(static_cast<nvmlDevice_t>(devices_[g]), samples, &n, last_us_) != NVML_SUCCESS) continue;
    for (unsigned i = 0; i < n && i < 256; ++i) {
      out.push_back({static_cast<int>(g), static_cast<int32_t>(samples[i].pid), samples[i].smUtil, samples[i].memUtil});
      newest = std::max(newest, samples[i].timeStamp);
    }
  }
  last_us_ = newest;
  return out;
}

}  // namespace gpushare::broker
