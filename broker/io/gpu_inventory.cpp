// GPU discovery through NVML, else the HIP runtime, both loaded at run time so the
// broker builds and starts on machines without a driver (see gpu_inventory.h).
#include "gpu_inventory.h"

#include <dlfcn.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "common/vendor/hip_api.h"
#include "common/vendor/nvml_api.h"

namespace gpushare::broker {

namespace hip = gpushare::vendor::hip;

std::vector<GpuInfo> DiscoverGpus(std::string* error) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const std::string nvml = std::string("cannot load NVML (libnvidia-ml.so.1): ") + dlerror();
    std::string hip_error;
    std::vector<GpuInfo> gpus = DiscoverGpusHip(&hip_error);
    if (gpus.empty()) *error = nvml + "; " + hip_error;
    return gpus;
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

std::vector<GpuInfo> DiscoverGpusHip(std::string* error) {
  void* lib = dlopen("libamdhip64.so.5", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    *error = std::string("cannot load HIP (libamdhip64.so.5): ") + dlerror();
    return {};
  }
  auto count = reinterpret_cast<hip::GetDeviceCountFn>(dlsym(lib, "hipGetDeviceCount"));
  auto memory = reinterpret_cast<hip::DeviceTotalMemFn>(dlsym(lib, "hipDeviceTotalMem"));
  auto name = reinterpret_cast<hip::DeviceGetNameFn>(dlsym(lib, "hipDeviceGetName"));
  auto attribute = reinterpret_cast<hip::DeviceGetAttributeFn>(dlsym(lib, "hipDeviceGetAttribute"));
  int n = 0;
  if (!count || !memory || !name || !attribute || count(&n) != hip::kSuccess) {
    *error = "HIP is present but reports no GPU (driver not loaded?)";
    return {};
  }
  std::vector<GpuInfo> gpus;
  for (int i = 0; i < n; ++i) {
    char buf[256] = "";
    size_t bytes = 0;
    int cus = 0;
    if (memory(&bytes, i) != hip::kSuccess) continue;
    if (name(buf, sizeof buf, i) != hip::kSuccess) buf[0] = '\0';
    buf[sizeof buf - 1] = '\0';
    if (attribute(&cus, hip::kDeviceAttributeMultiprocessorCount, i) != hip::kSuccess || cus < 0) cus = 0;
    gpus.push_back({i, buf, bytes, static_cast<unsigned>(cus)});
  }
  return gpus;
}

NvmlDevices OpenNvmlDevices() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);  // loaded already: DiscoverGpus
  if (lib == nullptr) return {};
  auto count = reinterpret_cast<decltype(&nvmlDeviceGetCount_v2)>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<decltype(&nvmlDeviceGetHandleByIndex_v2)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  unsigned n = 0;
  if (!count || !handle || count(&n) != NVML_SUCCESS) return {};
  NvmlDevices nvml{lib, {}};
  for (unsigned i = 0; i < n; ++i) {
    nvmlDevice_t d;
    nvml.handles.push_back(handle(i, &d) == NVML_SUCCESS ? d : nullptr);
  }
  return nvml;
}

UtilizationSampler::UtilizationSampler() {
  NvmlDevices nvml = OpenNvmlDevices();
  if (nvml.lib == nullptr || (get_ = dlsym(nvml.lib, "nvmlDeviceGetProcessUtilization")) == nullptr) return;
  devices_ = std::move(nvml.handles);
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

ProcessMemoryReader::ProcessMemoryReader() {
  NvmlDevices nvml = OpenNvmlDevices();
  if (nvml.lib == nullptr || (get_ = dlsym(nvml.lib, "nvmlDeviceGetComputeRunningProcesses_v3")) == nullptr) return;
  devices_ = std::move(nvml.handles);
}

std::optional<uint64_t> ProcessMemoryReader::Held(int32_t pid, int gpu) const {
  if (get_ == nullptr || gpu < 0 || gpu >= static_cast<int>(devices_.size()) || devices_[gpu] == nullptr)
    return std::nullopt;
  auto get = reinterpret_cast<decltype(&nvmlDeviceGetComputeRunningProcesses_v3)>(get_);
  std::vector<nvmlProcessInfo_t> infos(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    unsigned n = static_cast<unsigned>(infos.size());
    nvmlReturn_t rc = get(static_cast<nvmlDevice_t>(devices_[gpu]), &n, infos.data());
    if (rc == NVML_ERROR_INSUFFICIENT_SIZE && n > infos.size() && n <= 65536) {
      infos.resize(n + 16);  // processes come and go between the two calls
      continue;
    }
    if (rc != NVML_SUCCESS) return std::nullopt;
    uint64_t held = 0;
    for (unsigned i = 0; i < n && i < infos.size(); ++i) {
      // NVML's pids are the host's. One this broker cannot see means it runs in another
      // pid namespace (or the process just exited): NVML cannot speak for our pids.
      if (kill(static_cast<pid_t>(infos[i].pid), 0) != 0 && errno == ESRCH) return std::nullopt;
      if (static_cast<int32_t>(infos[i].pid) != pid) continue;
      if (infos[i].usedGpuMemory == ~0ull) return std::nullopt;  // NVML_VALUE_NOT_AVAILABLE
      held += infos[i].usedGpuMemory;
    }
    return held;
  }
  return std::nullopt;
}

}  // namespace gpushare::broker
