// What the NVML hook family offers the rest of the shim.
#pragma once

#include <cstdint>
#include <optional>

namespace gpushare::nvml {

// Device memory the driver holds for this process on the GPU at `pci_bus_id`
// (NVML's per-process figure), if NVML can tell.
std::optional<uint64_t> ProcessMemory(const char* pci_bus_id);

}  // namespace gpushare::nvml
