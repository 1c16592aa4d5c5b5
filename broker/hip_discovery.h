// The few HIP runtime entry points the broker's discovery (gpu_inventory.cpp,
// topology.cpp) loads from libamdhip64.so.5 on a node without NVML, declared with plain
// C types so that broker/ includes no HIP header: hipError_t is an int-sized enum
// (0: success), hipDevice_t an int, hipDeviceAttribute_t an int-sized enum.
#pragma once

#include <cstddef>

namespace gpushare::broker::hip {

inline constexpr int kSuccess = 0;
// hipDeviceAttributeMultiprocessorCount (the CU count) as ROCm 5.2's hip_runtime_api.h
// numbers it (checked against Debian's headers); the enum is part of the runtime's ABI.
inline constexpr int kAttributeMultiprocessorCount = 63;

using GetDeviceCountFn = int (*)(int* count);
using DeviceTotalMemFn = int (*)(size_t* bytes, int device);
using DeviceGetNameFn = int (*)(char* name, int len, int device);
using DeviceGetAttributeFn = int (*)(int* value, int attribute, int device);
using DeviceCanAccessPeerFn = int (*)(int* can_access, int device, int peer);

}  // namespace gpushare::broker::hip
