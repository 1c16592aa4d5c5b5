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

// A login session has $XDG_RUNTIME_DIR; the system service listens at /run/gpushare.
TEST(SocketPath, AClientFindsTheSystemBrokerWhenNoneListensInItsRuntimeDirectory) {
  using gpushare::ResolveClientSocketPath;
  const auto only = [](std::string there) { return [there](const std::string& p) { return p == there; }; };
  const std::string mine = "/run/user/1000/gpushare/broker.sock";
  EXPECT_EQ(ResolveClientSocketPath(std::nullopt, "/run/user/1000", only("/run/gpushare/broker.sock")),
            "/run/gpushare/broker.sock");
  // A user's own broker wins, and with neither socket there the rule's path stays.
  EXPECT_EQ(ResolveClientSocketPath(std::nullopt, "/run/user/1000", [](const std::string&) { return true; }), mine);
  EXPECT_EQ(ResolveClientSocketPath(std::nullopt, "/run/user/1000", only("")), mine);
  // A socket named by $GPUSHARE_SOCKET is never replaced.
  EXPECT_EQ(ResolveClientSocketPath("/tmp/b.sock", "/run/user/1000", only("/run/gpushare/broker.sock")), "/tmp/b.sock");
}

}  // namespace
