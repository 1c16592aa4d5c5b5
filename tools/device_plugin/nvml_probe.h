// Whether NVML still answers for each GPU: the device plugin's second health signal
// (the first is the broker answering). NVML is loaded at run time, so a node without
// it (AMD, or no driver yet) runs the plugin with the broker's signal alone.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/vendor/nvml_api.h"

namespace gpushare::k8s {

class NvmlProbe {
 public:
  explicit NvmlProbe(std::string library);  // "": never look
  ~NvmlProbe();
  NvmlProbe(const NvmlProbe&) = delete;
  NvmlProbe& operator=(const NvmlProbe&) = delete;

  // Per GPU index: NVML's memory query for it succeeded (a lost GPU answers
  // NVML_ERROR_GPU_IS_LOST). Empty while NVML cannot be loaded or initialized.
  std::map<int, bool> Check(const std::vector<int>& gpus);

 private:
  bool Ready();  // loads and initializes NVML once it can
  std::string library_;
  void* handle_ = nullptr;
  bool initialized_ = false;
  bool warned_ = false;
  decltype(&nvmlInit_v2) init_ = nullptr;
  decltype(&nvmlShutdown) shutdown_ = nullptr;
  decltype(&nvmlDeviceGetHandleByIndex_v2) handle_by_index_ = nullptr;
  decltype(&nvmlDeviceGetMemoryInfo) memory_info_ = nullptr;
};

}  // namespace gpushare::k8s
