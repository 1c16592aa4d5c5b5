// common/vendor/hip_api.h against Debian's HIP headers: the broker declares the few HIP
// entry points it loads with plain C types, so every constant and parameter list there
// must be what the real runtime's ABI says. Checked at compile time; the test only runs.
#include <gtest/gtest.h>
#include <hip/hip_runtime_api.h>

#include <tuple>
#include <type_traits>

#include "common/vendor/hip_api.h"

namespace {

namespace hip = gpushare::vendor::hip;

// A parameter as the plain declaration spells it: HIP's int-sized enums and typedefs
// (hipDeviceAttribute_t, hipDevice_t) are passed as int.
template <typename T>
using Plain = std::conditional_t<std::is_enum_v<T> && sizeof(T) == sizeof(int), int, T>;

template <typename F>
struct Params;
template <typename R, typename... A>
struct Params<R (*)(A...)> {
  using Plain = std::tuple<::Plain<A>...>;
  static constexpr bool kIntSizedResult = sizeof(R) == sizeof(int);
};

template <typename Real, typename Ours>
constexpr bool kSameAbi =
    std::is_same_v<typename Params<Real>::Plain, typename Params<Ours>::Plain>&& Params<Real>::kIntSizedResult;

static_assert(hip::kSuccess == hipSuccess);
static_assert(hip::kDeviceAttributeMultiprocessorCount == static_cast<int>(hipDeviceAttributeMultiprocessorCount));
static_assert(kSameAbi<decltype(&hipGetDeviceCount), hip::GetDeviceCountFn>);
static_assert(kSameAbi<decltype(&hipDeviceTotalMem), hip::DeviceTotalMemFn>);
static_assert(kSameAbi<decltype(&hipDeviceGetName), hip::DeviceGetNameFn>);
static_assert(kSameAbi<decltype(&hipDeviceGetAttribute), hip::DeviceGetAttributeFn>);
static_assert(kSameAbi<decltype(&hipDeviceCanAccessPeer), hip::DeviceCanAccessPeerFn>);

TEST(VendorHip, PlainDeclarationsMatchTheHipHeaders) { SUCCEED(); }

}  // namespace
