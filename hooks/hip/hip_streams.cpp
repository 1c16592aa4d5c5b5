// Stream creation hooks of the HIP family: where spatial sharing gives each new stream
// the CU mask the broker published for its virtual GPU (docs/scheduling.md), by
// creating it with hipExtStreamCreateWithCUMask. Without a mask (standalone, spatial
// off, or a class or GPU that gets none) they pass through unchanged.
#include <atomic>
#include <cstring>

#include "hip/hip_hooks.h"
#include "log.h"

using namespace gpushare;
using namespace gpushare::hip;

namespace {

constexpr uint32_t kMaxWords = protocol::kCuMaskWords;

// The broker's mask for the calling thread's current device, intersected with the
// application's own (`asked`, `asked_words` words; null: every CU), into `out`.
// Returns its words; 0: no mask from the broker (create the stream as asked).
uint32_t MaskFor(const uint32_t* asked, uint32_t asked_words, uint32_t* out) {
  Client* c = ReadyClient();
  if (c == nullptr || !c->gate().attached()) return 0;
  const int device = CurrentDevice(c);
  if (device < 0) return 0;
  const auto words = static_cast<uint32_t>(c->gate().CuMask(device, out, kMaxWords));
  if (words == 0 || asked == nullptr) return words;
  uint32_t both[kMaxWords] = {};
  bool any = false;
  for (uint32_t i = 0; i < words; ++i) {
    both[i] = out[i] & (i < asked_words ? asked[i] : 0u);
    any = any || both[i] != 0;
  }
  if (!any) {
    // No CU of the application's mask is in its share: its share it gets, whole.
    static std::atomic<bool> said{false};
    if (!said.exchange(true))
      Log(LogLevel::kWarn, "a CU mask asked for lies outside this process's share of GPU %d: the share is used",
          device);
    return words;
  }
  std::memcpy(out, both, sizeof both);
  return words;
}

// Creates `stream` on `words` words of `mask`; if this runtime cannot, as `fallback` does.
template <typename Fallback>
hipError_t CreateMasked(hipStream_t* stream, const uint32_t* mask, uint32_t words, Fallback fallback) {
  const hipError_t e = GS_HIP_CALL(hipExtStreamCreateWithCUMask, stream, words, mask);
  if (e != hipErrorNotSupported) return e;
  static std::atomic<bool> said{false};
  if (!said.exchange(true))
    Log(LogLevel::kWarn, "this HIP runtime has no hipExtStreamCreateWithCUMask: streams are not held to CU masks");
  return fallback();
}

}  // namespace

extern "C" {

hipError_t hipStreamCreate(hipStream_t* stream) {
  return GS_GUARDED(HipApi, {
    uint32_t mask[kMaxWords];
    if (const uint32_t words = MaskFor(nullptr, 0, mask))
      return CreateMasked(stream, mask, words, [&] { return GS_HIP_CALL(hipStreamCreate, stream); });
    return GS_HIP_CALL(hipStreamCreate, stream);
  });
}

// With a mask the flags are dropped (hipExtStreamCreateWithCUMask takes none): a
// non-blocking stream becomes a blocking one, which orders more, never less.
hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int flags) {
  return GS_GUARDED(HipApi, {
    uint32_t mask[kMaxWords];
    if (const uint32_t words = MaskFor(nullptr, 0, mask))
      return CreateMasked(stream, mask, words, [&] { return GS_HIP_CALL(hipStreamCreateWithFlags, stream, flags); });
    return GS_HIP_CALL(hipStreamCreateWithFlags, stream, flags);
  });
}

// Likewise the priority: within its share a stream runs at the default priority.
hipError_t hipStreamCreateWithPriority(hipStream_t* stream, unsigned int flags, int priority) {
  return GS_GUARDED(HipApi, {
    uint32_t mask[kMaxWords];
    if (const uint32_t words = MaskFor(nullptr, 0, mask))
      return CreateMasked(stream, mask, words,
                          [&] { return GS_HIP_CALL(hipStreamCreateWithPriority, stream, flags, priority); });
    return GS_HIP_CALL(hipStreamCreateWithPriority, stream, flags, priority);
  });
}

// The application's own mask, held within its share.
hipError_t hipExtStreamCreateWithCUMask(hipStream_t* stream, uint32_t cu_mask_size, const uint32_t* cu_mask) {
  return GS_GUARDED(HipApi, {
    uint32_t mask[kMaxWords];
    if (cu_mask != nullptr && cu_mask_size > 0)
      if (const uint32_t words = MaskFor(cu_mask, cu_mask_size, mask))
        return GS_HIP_CALL(hipExtStreamCreateWithCUMask, stream, words, mask);
    return GS_HIP_CALL(hipExtStreamCreateWithCUMask, stream, cu_mask_size, cu_mask);
  });
}

}  // extern "C"
