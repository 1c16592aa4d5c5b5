// The broker socket's default path, the user-facing contract's rule (DESIGN.md),
// decided once in common/base/socket_path.h for the shim, the broker and the tools.
#include <gtest/gtest.h>

#include "common/base/socket_path.h"

namespace {

using gpushare::ResolveSocketPath;

TEST(SocketPath, GpushareSocketComesFirst) {
  EXPECT_EQ(ResolveSocketPath("/tmp/b.sock", "/run/user/1000"), "/tmp/b.sock");
}

TEST(SocketPath, ElseTheRuntimeDirectory) {
  EXPECT_EQ(ResolveSocketPath(std::nullopt, "/run/user/1000"), "/run/user/1000/gpushare/broker.sock");
  EXPECT_EQ(ResolveSocketPath("", "/run/user/1000"), "/run/user/1000/gpushare/broker.sock");  // empty: unset
}

TEST(SocketPath, ElseTheSystemPath) {
  EXPECT_EQ(ResolveSocketPath(std::nullopt, std::nullopt), "/run/gpushare/broker.sock");
  EXPECT_EQ(ResolveSocketPath("", ""), "/run/gpushare/broker.sock");
}

}  // namespace
