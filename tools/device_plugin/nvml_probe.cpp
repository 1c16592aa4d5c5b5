// NvmlProbe (see nvml_probe.h).
#include "nvml_probe.h"

#include <dlfcn.h>

#include <cstdio>

namespace gpushare::k8s {

NvmlProbe::NvmlProbe(std::string library) : library_(std::move(library)) {}

NvmlProbe::~NvmlProbe() {
  if (initialized_) shutdown_();
  if (handle_ != nullptr) dlclose(handle_);
}

bool NvmlProbe::Ready() {
  if (initialized_ || library_.empty()) return initialized_;
  if (handle_ == nullptr) {
    handle_ = dlopen(library_.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ != nullptr) {
      init_ = reinterpret_cast<decltype(init_)>(dlsym(handle_, "nvmlInit_v2"));
      shutdown_ = reinterpret_cast<decltype(shutdown_)>(dlsym(handle_, "nvmlShutdown"));
      handle_by_index_ = reinterpret_cast<decltype(handle_by_index_)>(dlsym(handle_, "nvmlDeviceGetHandleByIndex_v2"));
      memory_info_ = reinterpret_cast<decltype(memory_info_)>(dlsym(handle_, "nvmlDeviceGetMemoryInfo"));
      if (!init_ || !shutdown_ || !handle_by_index_ || !memory_info_) {
        dlclose(handle_);
        handle_ = nullptr;
      }
    }
  }
  if (handle_ != nullptr) initialized_ = init_() == NVML_SUCCESS;
  if (!initialized_ && !warned_) {
    std::fprintf(stderr, "gpushare-device-plugin: NVML (%s) not usable: GPU health comes from the broker alone\n",
                 library_.c_str());
    warned_ = true;
  }
  return initialized_;
}

std::map<int, bool> NvmlProbe::Check(const std::vector<int>& gpus) {
  std::map<int, bool> ok;
  if (!Ready()) return ok;
  for (int g : gpus) {
    nvmlDevice_t device = nullptr;
    nvmlMemory_t memory{};
    ok[g] = handle_by_index_(static_cast<unsigned>(g), &device) == NVML_SUCCESS &&
            memory_info_(device, &memory) == NVML_SUCCESS;
  }
  return ok;
}

}  // namespace gpushare::k8s
