// Stream creation hooks of the HIP family: where spatial sharing will give each new
// stream its CU mask. For now they pass through to the real runtime unchanged
// (declared hooked in hip_hooks.def, so the routes into them already exist).
#include "hip_hooks.h"

using namespace gpushare::hip;

extern "C" {

hipError_t hipStreamCreate(hipStream_t* stream) { return GS_HIP_REAL_CALL(hipStreamCreate, stream); }

hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int flags) {
  return GS_HIP_REAL_CALL(hipStreamCreateWithFlags, stream, flags);
}

hipError_t hipStreamCreateWithPriority(hipStream_t* stream, unsigned int flags, int priority) {
  return GS_HIP_REAL_CALL(hipStreamCreateWithPriority, stream, flags, priority);
}

hipError_t hipExtStreamCreateWithCUMask(hipStream_t* stream, uint32_t cu_mask_size, const uint32_t* cu_mask) {
  return GS_HIP_REAL_CALL(hipExtStreamCreateWithCUMask, stream, cu_mask_size, cu_mask);
}

}  // extern "C"
