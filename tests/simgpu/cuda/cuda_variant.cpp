// Which driver a libcuda.so.1 of simgpu is: the one translation unit compiled once per
// library (cuda/CMakeLists.txt: the standard driver and each variant), so a variant
// is one define here and an export list, over the same objects as the standard driver.
#include "cuda_front.h"

namespace simgpu::cuda {

#if defined(SIMGPU_VARIANT_NO_GETPROCADDRESS_V2)
const DriverVariant kVariant{"no_getprocaddress_v2", /*mempools=*/true, /*get_proc_address_v2=*/false};
#elif defined(SIMGPU_VARIANT_NO_MEMPOOLS)
const DriverVariant kVariant{"no_mempools", /*mempools=*/false, /*get_proc_address_v2=*/true};
#else
const DriverVariant kVariant{"standard", /*mempools=*/true, /*get_proc_address_v2=*/true};
#endif

}  // namespace simgpu::cuda

// Which variant this is, for tests and for a person reading a log; no real driver has it.
extern "C" const char* simgpuCudaDriverVariant() { return simgpu::cuda::kVariant.name; }
