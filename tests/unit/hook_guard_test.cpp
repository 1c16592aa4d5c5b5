// The hooks' exception boundary (hooks/common/guard.h): what a hook's body throws
// becomes the API's own error code, the first escape is logged as an error and the
// later ones are not, and a body that does not throw answers as it would alone.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "common/guard.h"

namespace {

enum FakeResult { kSuccess = 0, kNoMemory = 2, kUnknown = 999 };

struct FakeApi {
  using Result = FakeResult;
  static constexpr Result kOutOfMemory = kNoMemory;
  static constexpr Result kInternal = kUnknown;
};

FakeResult Throwing(int what) {
  return GS_GUARDED(FakeApi, {
    if (what == 1) throw std::bad_alloc();
    if (what == 2) throw std::runtime_error("a map lookup that failed");
    if (what == 3) throw 42;
    return kSuccess;
  });
}

TEST(HookGuard, WhatTheBodyThrowsIsTheApisErrorAndNothingEscapes) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(Throwing(0), kSuccess);
  EXPECT_EQ(Throwing(1), kNoMemory);
  EXPECT_EQ(Throwing(2), kUnknown);
  EXPECT_EQ(Throwing(3), kUnknown);
  const std::string log = testing::internal::GetCapturedStderr();
  // Once, naming the hook and the reason; the later escapes are debug-level only.
  EXPECT_NE(log.find("error: Throwing: out of memory inside the shim"), std::string::npos) << log;
  EXPECT_EQ(log.find("a map lookup that failed"), std::string::npos) << log;
}

}  // namespace
