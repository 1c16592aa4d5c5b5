// Tenant identity by socket, the pure parts: the SocketAdmin request's parsing, the
// config's socket keys, and what a peer of a tenant's socket may see and do.
#include <gtest/gtest.h>

#include "broker/core/channel_host.h"
#include "broker/core/socket_admin.h"
#include "broker/core/visibility.h"
#include "broker/policy/config.h"

namespace {

using namespace gpushare::broker;

TEST(SocketAdminRequest, ParsesCreateBindAndRemove) {
  std::string error;
  auto c =
      ParseSocketAdmin(R"({"op":"create","name":"pod-1.c_0","tenant":null,"uid":1000,"gid":44,"mode":"0640"})", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->op, SocketAdminRequest::Op::kCreate);
  EXPECT_EQ(c->name, "pod-1.c_0");
  EXPECT_FALSE(c->tenant);
  EXPECT_EQ(c->uid, 1000u);
  EXPECT_EQ(c->gid, 44u);
  EXPECT_EQ(c->mode, 0640u);
  auto b = ParseSocketAdmin(R"({"op":"bind","name":"x","tenant":"team"})", &error);
  ASSERT_TRUE(b) << error;
  EXPECT_EQ(b->tenant, "team");
  auto r = ParseSocketAdmin(R"({"op":"remove","name":"x"})", &error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->op, SocketAdminRequest::Op::kRemove);
}

TEST(SocketAdminRequest, RefusesEachBadFieldByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"([1,2])", "malformed request"},
      {R"({"op":"create","name":"../x","uid":0,"gid":0})", "\"name\""},
      {R"({"op":"create","name":"x/y","uid":0,"gid":0})", "\"name\""},
      {R"({"op":"create","name":"","uid":0,"gid":0})", "\"name\""},
      {R"({"op":"create","name":"x","uid":"root","gid":0})", "\"uid\""},
      {R"({"op":"create","name":"x","uid":0,"gid":4294967296})", "\"gid\""},
      {R"({"op":"create","name":"x","uid":0,"gid":0,"mode":"0999"})", "\"mode\""},
      {R"({"op":"create","name":"x","uid":0,"gid":0,"mode":"1777"})", "\"mode\""},
      {R"({"op":"create","name":"x","uid":0,"gid":0,"mode":660})", "\"mode\""},
      {R"({"op":"bind","name":"x"})", "\"tenant\""},
      {R"({"op":"bind","name":"x","tenant":"a b"})", "\"tenant\""},
      {R"({"op":"bind","name":"x","tenant":7})", "\"tenant\""},
      {R"({"op":"delete","name":"x"})", "\"op\""},
  };
  for (const auto& [text, field] : cases) {
    std::string error;
    EXPECT_FALSE(ParseSocketAdmin(text, &error)) << text;
    EXPECT_NE(error.find(field), std::string::npos) << text << " -> " << error;
  }
  EXPECT_TRUE(ValidSocketName(std::string(64, 'a')));
  EXPECT_FALSE(ValidSocketName(std::string(65, 'a')));
}

TEST(SocketConfig, TenantSocketKeysAndTheMainSocketsMode) {
  std::string error;
  auto c = ParseBrokerConfig(
      "[sockets]\nmain_mode = \"0600\"\nmain_group = 0\n"
      "[tenants.alpha]\nsocket = true\nsocket_owner = 0\nsocket_group = \"root\"\nsocket_mode = \"0606\"\n",
      "t.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->sockets.main_mode, 0600u);
  EXPECT_EQ(c->sockets.main_group, 0u);
  const TenantPolicy& p = c->tenants.at("alpha");
  EXPECT_TRUE(p.socket);
  EXPECT_EQ(p.socket_owner, 0u);
  EXPECT_EQ(p.socket_group, 0u);
  EXPECT_EQ(p.socket_mode, 0606u);
}

TEST(SocketConfig, ErrorsNameTheLineAndField) {
  const std::pair<const char*, const char*> cases[] = {
      {"[tenants.\"a b\"]\nsocket = true\n", "t.toml:2: tenants.a b.socket: a tenant with a socket needs a name"},
      {"[tenants.a]\nsocket = \"yes\"\n", "t.toml:2: tenants.a.socket: expected true or false"},
      {"[tenants.a]\nsocket_mode = \"8\"\n", "t.toml:2: tenants.a.socket_mode: expected octal"},
      {"[tenants.a]\nsocket_owner = \"no-such-user-gs\"\n", "t.toml:2: tenants.a.socket_owner: no user"},
      {"[sockets]\nmain_mode = 438\n", "t.toml:2: sockets.main_mode: expected octal"},
      {"[sockets]\nmain_group = -1\n", "t.toml:2: sockets.main_group: expected a group"},
      {"[sockets]\nmode = \"0600\"\n", "t.toml:2: sockets.mode: unknown key"},
  };
  for (const auto& [text, expected] : cases) {
    std::string error;
    EXPECT_FALSE(ParseBrokerConfig(text, "t.toml", &error)) << text;
    EXPECT_EQ(error.rfind(expected, 0), 0u) << error;
  }
}

TEST(SocketIdentity, OnlyTheMainSocketAdministersAndATenantSocketSeesItsTenant) {
  PeerCredentials root_main{1, 0, 0};
  PeerCredentials root_tenant{1, 0, 0, SocketKind::kTenant, "alpha", "tenants/alpha.sock"};
  EXPECT_TRUE(IsAdmin(root_main, 500));
  EXPECT_TRUE(IsAdmin(PeerCredentials{1, 500, 500}, 500));
  EXPECT_FALSE(IsAdmin(root_tenant, 500));
  EXPECT_FALSE(IsAdmin(PeerCredentials{1, 500, 500, SocketKind::kContainer, "", "containers/c.sock"}, 500));
  const Viewer confined{0, 0, true, "alpha"};
  EXPECT_FALSE(SeesEverything(confined, 500));
  TenantMembers alpha, beta, open;
  alpha.name = "alpha";
  beta.name = "beta";
  EXPECT_TRUE(MaySee(confined, 500, alpha));
  EXPECT_FALSE(MaySee(confined, 500, beta));
  EXPECT_FALSE(MaySee(Viewer{0, 0, true, ""}, 500, open));  // an unbound container's socket sees nothing
  // The tenant's uids do not apply to a client that came through its socket.
  std::string error;
  auto c = ParseBrokerConfig("[tenants.alpha]\nsocket = true\nuids = [1000]\n", "t.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_FALSE(ResolveTenant(*c, "alpha", 0, 1, std::nullopt, 0).refusal.empty());
  EXPECT_TRUE(ResolveTenant(*c, "alpha", 0, 1, std::nullopt, 0, true).refusal.empty());
}

}  // namespace
