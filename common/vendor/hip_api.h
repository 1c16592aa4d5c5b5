// The few HIP runtime entry points the broker's discovery loads from libamdhip64.so.5
// on a node without NVML, declared with plain C types so that no HIP header is needed
// outside hooks/: hipError_t is an int-sized enum (0: success), hipDevice_t an int,
// hipDeviceAttribute_t an int-sized enum. tests/unit/vendor_hip_test.cpp checks every
// value and signature here against Debian's HIP 5.2 headers.
#pragma once

#include <cstddef>

namespace gpushare::vendor::hip {

inline constexpr int kSuccess = 0;  // hipSuccess

// hipDeviceAttribute_t values, as ROCm 5.2's hip_runtime_api.h numbers them: the enum
// is part of the runtime's ABI, so a named constant here is the value the library reads.
enum DeviceAttribute : int {
  kDeviceAttributeMultiprocessorCount = 63,  // hipDeviceAttributeMultiprocessorCount: the CU count
};

using GetDeviceCountFn = int (*)(int* count);                                  // hipGetDeviceCount
using DeviceTotalMemFn = int (*)(size_t* bytes, int device);                   // hipDeviceTotalMem
using DeviceGetNameFn = int (*)(char* name, int len, int device);              // hipDeviceGetName
using DeviceGetAttributeFn = int (*)(int* value, int attribute, int device);   // hipDeviceGetAttribute
using DeviceCanAccessPeerFn = int (*)(int* can_access, int device, int peer);  // hipDeviceCanAccessPeer

}  // namespace gpushare::vendor::hip
