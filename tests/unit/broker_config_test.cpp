// The broker's TOML config: every key, errors that name file:line, and how a tenant's
// policy and a client's request combine into the terms the client gets.
#include <gtest/gtest.h>

#include "broker/policy/config.h"
#include "config_errors.h"

namespace gpushare::broker {
namespace {

using config_test::ErrorOf;

TEST(BrokerConfig, EmptyFileIsValid) {
  std::string error;
  auto c = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->admission, Admission::kRefuse);
  EXPECT_DOUBLE_EQ(c->compute_weight, 0.7);
  EXPECT_DOUBLE_EQ(c->memory_weight, 0.3);
  EXPECT_TRUE(c->tenants.empty());
}

TEST(BrokerConfig, ParsesEveryKey) {
  std::string error;
  auto c = ParseBrokerConfig(R"(
[node]
admission = "oversubscribe"
placement = "least-loaded"

[class_weights]
compute = 0.6
memory = 0.4

[tenants.research]
weight = 2
memory = "8GiB"
gpus = [0, 1]
uids = [1000, 1001]

[tenants.batch]
max_weight = 4.5
max_memory = 1073741824
)",
                             "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->admission, Admission::kOversubscribe);
  EXPECT_DOUBLE_EQ(c->compute_weight, 0.6);
  const TenantPolicy& r = c->tenants.at("research");
  EXPECT_EQ(r.weight, 2.0);
  EXPECT_EQ(r.memory, 8ull << 30);
  EXPECT_EQ(r.gpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(r.uids, (std::vector<uint32_t>{1000, 1001}));
  const TenantPolicy& b = c->tenants.at("batch");
  EXPECT_EQ(b.max_weight, 4.5);
  EXPECT_EQ(b.max_memory, 1ull << 30);
  EXPECT_FALSE(b.weight.has_value());
}

TEST(BrokerConfig, ErrorsNameFileAndLine) {
  EXPECT_EQ(ErrorOf("[node]\nadmission = \"maybe\"\n"),
            "broker.toml:2: node.admission: expected \"refuse\" or \"oversubscribe\"");
  EXPECT_EQ(ErrorOf("[tenants.a]\nweight = 1\nmemroy = \"1GiB\"\n"), "broker.toml:3: tenants.a.memroy: unknown key");
  EXPECT_EQ(ErrorOf("[tenants.a]\n\nmemory = \"lots\"\n"),
            "broker.toml:3: tenants.a.memory: expected a size such as \"8GiB\" or a byte count");
  EXPECT_EQ(ErrorOf("[tenants.a]\ngpus = [0, -1]\n"),
            "broker.toml:2: tenants.a.gpus: expected integers from 0 to 1023");
  EXPECT_EQ(ErrorOf("[class_weights]\ncompute = 0\n"),
            "broker.toml:2: class_weights.compute: expected a positive number");
  EXPECT_EQ(ErrorOf("colour = 1\n"), "broker.toml:1: colour: unknown key");
  std::string syntax = ErrorOf("[tenants.a\nweight = 1\n");
  EXPECT_EQ(syntax.rfind("broker.toml:1: ", 0), 0u) << syntax;
}

TEST(BrokerConfig, SpatialSharingIsOffByDefaultAndItsKeysAreChecked) {
  std::string error;
  auto off = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(off) << error;
  EXPECT_EQ(off->spatial, SpatialMode::kOff);
  EXPECT_EQ(off->memory_cu_percent, 25u);
  auto on = ParseBrokerConfig("[scheduler]\nspatial = \"cu_mask\"\nmemory_cu_percent = 30\n", "broker.toml", &error);
  ASSERT_TRUE(on) << error;
  EXPECT_EQ(on->spatial, SpatialMode::kCuMask);
  EXPECT_EQ(on->memory_cu_percent, 30u);
  EXPECT_EQ(ErrorOf("[scheduler]\nspatial = \"sm\"\n"),
            "broker.toml:2: scheduler.spatial: expected \"off\", \"cu_mask\" or \"mps\"");
  EXPECT_EQ(ErrorOf("[scheduler]\nspatial = true\n"),
            "broker.toml:2: scheduler.spatial: expected \"off\", \"cu_mask\" or \"mps\"");
  for (const char* bad : {"0", "100", "25.5", "\"25\""})
    EXPECT_EQ(ErrorOf(std::string("[scheduler]\n\nmemory_cu_percent = ") + bad + "\n"),
              "broker.toml:3: scheduler.memory_cu_percent: expected 1 to 99")
        << bad;
}

TEST(ResolveTenant, UnknownTenantsTakeWhatTheyAsk) {
  BrokerConfig c;
  TenantTerms t = ResolveTenant(c, "new", 1000, 3.0, 2ull << 30);
  EXPECT_TRUE(t.refusal.empty());
  EXPECT_EQ(t.weight, 3.0);
  EXPECT_EQ(t.memory_cap, 2ull << 30);
  EXPECT_FALSE(t.gpus.has_value());
}

TEST(ResolveTenant, FixedValuesWinAndBoundsClamp) {
  BrokerConfig c;
  c.tenants["fixed"] = TenantPolicy{2.0, std::nullopt, 8ull << 30, std::nullopt, std::vector<int>{1}, std::nullopt};
  c.tenants["bounded"] = TenantPolicy{std::nullopt, 4.0, std::nullopt, 1ull << 30, std::nullopt, std::nullopt};
  TenantTerms f = ResolveTenant(c, "fixed", 0, 9.0, 1ull << 20);
  EXPECT_EQ(f.weight, 2.0);
  EXPECT_EQ(f.memory_cap, 8ull << 30);
  EXPECT_EQ(f.gpus, std::vector<int>{1});
  TenantTerms b = ResolveTenant(c, "bounded", 0, 9.0, 4ull << 30);
  EXPECT_EQ(b.weight, 4.0);
  EXPECT_EQ(b.memory_cap, 1ull << 30);
  TenantTerms low = ResolveTenant(c, "bounded", 0, 0.5, 256ull << 20);
  EXPECT_EQ(low.weight, 0.5);
  EXPECT_EQ(low.memory_cap, 256ull << 20);
  TenantTerms uncapped_ask = ResolveTenant(c, "bounded", 0, 1.0, std::nullopt);  // never more than the bound
  EXPECT_EQ(uncapped_ask.memory_cap, 1ull << 30);
}

TEST(ResolveTenant, UidBindingRefusesOthers) {
  BrokerConfig c;
  c.tenants["private"] =
      TenantPolicy{std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::vector<uint32_t>{1000}};
  EXPECT_TRUE(ResolveTenant(c, "private", 1000, 1, std::nullopt).refusal.empty());
  EXPECT_EQ(ResolveTenant(c, "private", 1001, 1, std::nullopt).refusal, "uid 1001 may not use tenant \"private\"");
}

}  // namespace
}  // namespace gpushare::broker

namespace gpushare::broker {
namespace {

TEST(BrokerConfig, MetricsAreOffByDefaultAndABadListenAddressNamesFileAndLine) {
  std::string error;
  auto empty = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->metrics.listen, "");
  EXPECT_EQ(empty->metrics.refresh_ns, 1'000'000'000u);
  auto on = ParseBrokerConfig("[metrics]\nlisten = \"127.0.0.1:9400\"\nrefresh = 0.25\n", "broker.toml", &error);
  ASSERT_TRUE(on) << error;
  EXPECT_EQ(on->metrics.listen, "127.0.0.1:9400");
  EXPECT_EQ(on->metrics.refresh_ns, 250'000'000u);
  for (const char* bad : {"9400", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:94x0", "256.0.0.1:9400",
                          "1.2.3:9400", "example.com:9400", "[zz::1]:9400", ":9400"}) {
    auto c = ParseBrokerConfig(std::string("[metrics]\n\nlisten = \"") + bad + "\"\n", "broker.toml", &error);
    EXPECT_FALSE(c) << bad;
    EXPECT_EQ(error.rfind("broker.toml:3: metrics.listen: expected \"HOST:PORT\"", 0), 0u) << bad << ": " << error;
  }
  for (const char* good : {"0.0.0.0:9400", "localhost:1", "[::1]:9400", "10.1.2.3:65535"}) {
    std::string host;
    uint16_t port = 0;
    EXPECT_TRUE(ParseListenAddress(good, &host, &port)) << good;
  }
  EXPECT_FALSE(ParseBrokerConfig("[metrics]\nrefresh = 0\n", "broker.toml", &error));
  EXPECT_EQ(error, "broker.toml:2: metrics.refresh: expected seconds, from 0.05 to 60");
  EXPECT_FALSE(ParseBrokerConfig("[metrics]\nport = 1\n", "broker.toml", &error));
  EXPECT_EQ(error, "broker.toml:2: metrics.port: unknown key");
}

}  // namespace
}  // namespace gpushare::broker
