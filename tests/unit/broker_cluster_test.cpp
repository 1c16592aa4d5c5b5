// The cluster's pure parts (broker/policy/cluster_state.h): [cluster] in the config,
// the quota rule, and the znode values' round trips and refusals of hostile text.
#include <gtest/gtest.h>

#include "broker/core/broker_core.h"
#include "broker/io/cluster_agent.h"
#include "broker/policy/cluster_state.h"
#include "broker/policy/config.h"
#include "core_exchange.h"
#include "config_errors.h"

namespace gpushare::broker {
namespace {

using config_test::ErrorOf;

TEST(ClusterConfig, OffByDefaultAndEveryKeyParsed) {
  std::string error;
  auto off = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(off) << error;
  EXPECT_FALSE(off->cluster.enabled());
  auto c = ParseBrokerConfig(R"(
[cluster]
zookeeper = "127.0.0.1:2181,zk2:2182"
name = "lab"
node = "node-a"
session_timeout_ms = 4000
unreachable = "allow"
grant_timeout_ms = 500
publish_interval = 0.5
[cluster.tenants.x]
max_instances = 12
[cluster.tenants.y]
max_memory = "64GiB"
)",
                             "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->cluster.enabled());
  EXPECT_EQ(c->cluster.zookeeper, "127.0.0.1:2181,zk2:2182");
  EXPECT_EQ(c->cluster.name, "lab");
  EXPECT_EQ(c->cluster.node, "node-a");
  EXPECT_EQ(c->cluster.session_timeout_ms, 4000u);
  EXPECT_TRUE(c->cluster.unreachable_allow);
  EXPECT_EQ(c->cluster.grant_timeout_ms, 500u);
  EXPECT_EQ(c->cluster.publish_interval_ns, 500'000'000u);
  EXPECT_EQ(c->cluster.tenants.at("x").max_instances, 12u);
  EXPECT_FALSE(c->cluster.tenants.at("x").max_memory);
  EXPECT_EQ(c->cluster.tenants.at("y").max_memory, 64ull << 30);
}

TEST(ClusterConfig, ErrorsNameTheFieldAndLine) {
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"nohost\"\n"),
            "broker.toml:2: cluster.zookeeper: expected \"host:port,host:port,...\"");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1,b:99999\"\n"),
            "broker.toml:2: cluster.zookeeper: expected \"host:port,host:port,...\"");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1\"\nunreachable = \"maybe\"\n"),
            "broker.toml:3: cluster.unreachable: expected \"refuse\" or \"allow\"");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1\"\nnode = \"a/b\"\n"),
            "broker.toml:3: cluster.node: expected a name of 1 to 128 letters, digits, '.', '_' or '-'");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1\"\n[cluster.tenants.x]\nmax_instances = -1\n"),
            "broker.toml:4: cluster.tenants.x.max_instances: expected an integer from 0 to 1000000");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1\"\n[cluster.tenants.x]\n"),
            "broker.toml:3: cluster.tenants.x: expected max_instances or max_memory");
  EXPECT_EQ(ErrorOf("[cluster]\n[cluster.tenants.x]\nmax_instances = 1\n"),
            "broker.toml:1: cluster.tenants: cluster quotas need cluster.zookeeper");
  EXPECT_EQ(ErrorOf("[cluster]\nzookeeper = \"a:1\"\nsessions = 3\n"), "broker.toml:3: cluster.sessions: unknown key");
}

TEST(ClusterQuota, AnInstanceQuotaCountsEveryNodesHoldings) {
  QuotaRecord r{{{"a", {2, 0}}, {"b", {1, 0}}}};
  const ClusterTenantQuota limit{4, std::nullopt};
  EXPECT_EQ(r.Total(), (QuotaAmount{3, 0}));
  EXPECT_EQ(QuotaRefusal(r, "a", {3, 0}, limit, "x"), "");  // a: 2 -> 3, b: 1
  EXPECT_EQ(QuotaRefusal(r, "a", {4, 0}, limit, "x"),
            "tenant \"x\" holds 1 instance(s) on other nodes; 4 here would pass its cluster quota of 4");
  EXPECT_EQ(QuotaRefusal(r, "c", {1, 0}, limit, "x"), "");
  EXPECT_NE(QuotaRefusal(r, "c", {2, 0}, limit, "x"), "");
  const ClusterTenantQuota memory{std::nullopt, 100};
  QuotaRecord m{{{"a", {1, 60}}}};
  EXPECT_EQ(QuotaRefusal(m, "b", {1, 40}, memory, "y"), "");
  EXPECT_EQ(QuotaRefusal(m, "b", {1, 41}, memory, "y"),
            "tenant \"y\" would hold 101 bytes across the cluster: its cluster quota is 100");
}

TEST(ClusterCodec, QuotaRoundTripsAndDropsEmptyEntries) {
  QuotaRecord r{{{"a", {2, 5}}, {"b", {0, 0}}}};
  std::string error;
  auto back = DecodeQuota(EncodeQuota(r), &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->held.size(), 1u);
  EXPECT_EQ(back->held.at("a"), (QuotaAmount{2, 5}));
}

TEST(ClusterCodec, NodeRoundTrips) {
  NodeRecord n{"node-a", "0.1.0", "ok", 1234, {{0, "sim0", 100, 10, 50}, {1, "sim1", 200, 0, 0}},
               {{"small", 3}}, 2, {{"x", {2, 1024}}}};
  std::string error;
  auto back = DecodeNode(EncodeNode(n), &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, n);
}

TEST(ClusterCodec, MeterRoundTripsWithItsRows) {
  MeterSession s{};
  s.id = 7;
  s.pid = 42;
  s.uid = 1000;
  s.tenant = "x";
  s.gpus = "0";
  s.start_ns = 10;
  s.last_ns = 20;
  s.fraction = 0.5;
  MeterDay d{};
  d.session_id = 7;
  d.day = 20000;
  d.wall_ns = 10;
  d.allotted_ns = 5;
  d.gpu_ns = 3;
  d.memory_byte_ns = static_cast<unsigned __int128>(9) * 1'000'000'000u;
  d.launches = 4;
  NodeMeter m{"node-a", 19990, {UsageRow{s, d}}};
  std::string error;
  auto back = DecodeMeter(EncodeMeter(m), &error);
  ASSERT_TRUE(back) << error;
  ASSERT_EQ(back->rows.size(), 1u);
  EXPECT_EQ(back->since_day, 19990);
  EXPECT_EQ(back->rows[0].session.tenant, "x");
  EXPECT_EQ(back->rows[0].session.pid, 42);
  EXPECT_EQ(back->rows[0].day.gpu_ns, 3u);
  EXPECT_EQ(back->rows[0].day.memory_byte_s(), 9u);
  EXPECT_EQ(back->rows[0].day.launches, 4u);
}

TEST(ClusterCodec, MeterWithinABoundKeepsTheNewestDays) {
  NodeMeter m{"n", 0, {}};
  for (int64_t day = 100; day < 160; ++day) {
    MeterSession s{};
    s.id = static_cast<uint64_t>(day);
    s.tenant = "x";
    MeterDay d{};
    d.session_id = s.id;
    d.day = day;
    m.rows.push_back({s, d});
  }
  const std::string whole = EncodeMeter(m);
  const std::string text = EncodeMeterWithin(m, whole.size() / 2);
  ASSERT_LE(text.size(), whole.size() / 2);
  std::string error;
  auto back = DecodeMeter(text, &error);
  ASSERT_TRUE(back) << error;
  ASSERT_FALSE(back->rows.empty());
  EXPECT_GT(back->since_day, 100);
  for (const UsageRow& r : back->rows) EXPECT_GE(r.day.day, back->since_day);
  EXPECT_EQ(back->rows.back().day.day, 159);
}

TEST(ClusterCodec, HostileValuesAreRefusedWithTheField) {
  std::string error;
  EXPECT_FALSE(DecodeQuota("", &error));
  EXPECT_EQ(error, "not JSON");
  EXPECT_FALSE(DecodeQuota("[1,2]", &error));
  EXPECT_EQ(error, "quota: expected an object");
  EXPECT_FALSE(DecodeQuota(R"({"held": {"a": {"instances": -1, "memory": 0}}})", &error));
  EXPECT_EQ(error, "instances: expected an integer from 0");
  EXPECT_FALSE(DecodeQuota(R"({"held": {"../x": {"instances": 1, "memory": 0}}})", &error));
  EXPECT_FALSE(DecodeNode(R"({"name": "a"})", &error));
  EXPECT_EQ(error, "version: missing");
  EXPECT_FALSE(DecodeNode(R"({"name":"a","version":"v","health":"ok","updated_unix_ms":1,"gpus":[{"index":1e300}],)"
                          R"("free_instances":{},"clients":0,"quota_held":{}})",
                          &error));
  EXPECT_FALSE(DecodeMeter(R"({"node":"a","since_day":0,"sessions":[],"days":[[1,2,3,4,5,6,7,8,9]]})", &error));
  EXPECT_EQ(error, "days[]: session 1 not listed");
  EXPECT_FALSE(DecodeMeter(R"({"node":"a","since_day":0,"sessions":[],"days":[[1,2]]})", &error));
  EXPECT_FALSE(DecodeMeter(std::string(100000, '['), &error));
}

// The cluster as the core sees it: a quota that grants up to a count, and remembers.
class CountingQuota : public ClusterQuota {
 public:
  std::string Take(const std::string& tenant, const QuotaAmount& amount, bool held) override {
    if (!held && held_[tenant].instances + amount.instances > 2) return "over the test's quota";
    held_[tenant].instances += amount.instances;
    held_[tenant].memory_bytes += amount.memory_bytes;
    return "";
  }
  void Give(const std::string& tenant, const QuotaAmount& amount) override {
    held_[tenant].instances -= amount.instances;
    held_[tenant].memory_bytes -= amount.memory_bytes;
  }
  std::map<std::string, QuotaAmount> held_;
};

class CoreClusterTest : public ::testing::Test {
 protected:
  CoreClusterTest() : core_(Config(), {{0, "g0", 16ull << 30}, {1, "g1", 16ull << 30}}, nullptr) {
    core_.SetClusterQuota(&quota_);
  }
  static BrokerConfig Config() {
    std::string error;
    auto c = ParseBrokerConfig(R"(
[cluster]
zookeeper = "z:2181"
[cluster.tenants.x]
max_instances = 2
[cluster.tenants.m]
max_memory = "8GiB"
)",
                               "broker.toml", &error);
    EXPECT_TRUE(c) << error;
    return *c;
  }
  protocol::Welcome Hello(ClientId id, const std::string& tenant, uint64_t cap) {
    core_.Open(id, {static_cast<int32_t>(100 + id), 1000, 1000});
    protocol::Hello h{};
    protocol::SetString(h.tenant, tenant);
    h.weight = 1;
    h.rank = -1;
    h.device_count = 1;
    for (int v = 0; v < protocol::kMaxDevices; ++v) h.visible[v] = -1;
    h.cap_bytes[0] = cap;
    auto r = core_exchange::Exchange(core_, id, &inbox_[id], protocol::Encode(protocol::Type::kHello, h));
    EXPECT_TRUE(r && r->size() == 1);
    return protocol::As<protocol::Welcome>(r->at(0));
  }
  CountingQuota quota_;
  BrokerCore core_;
  std::map<ClientId, std::vector<uint8_t>> inbox_;
};

TEST_F(CoreClusterTest, RegistrationTakesTheTenantsClusterQuotaAndHangUpGivesItBack) {
  EXPECT_EQ(Hello(1, "x", 1ull << 30).accepted, 1);
  EXPECT_EQ(Hello(2, "x", 1ull << 30).accepted, 1);
  const protocol::Welcome third = Hello(3, "x", 1ull << 30);
  EXPECT_EQ(third.accepted, 0);
  EXPECT_STREQ(third.reason, "cluster quota: over the test's quota");
  EXPECT_EQ(core_.client_count(), 2u);  // the refused one left nothing behind
  EXPECT_EQ(quota_.held_["x"], (QuotaAmount{2, 2ull << 30}));
  EXPECT_EQ(core_.ClusterNode().quota_held.at("x"), (QuotaAmount{2, 2ull << 30}));
  // A tenant without a cluster quota takes none.
  EXPECT_EQ(Hello(4, "y", 0).accepted, 1);
  EXPECT_EQ(quota_.held_.count("y"), 0u);
  core_.Close(1);
  EXPECT_EQ(quota_.held_["x"], (QuotaAmount{1, 1ull << 30}));
  EXPECT_EQ(Hello(5, "x", 1ull << 30).accepted, 1);
  core_.Close(4);  // gave nothing, gives nothing
  EXPECT_EQ(quota_.held_["x"], (QuotaAmount{2, 2ull << 30}));
  const NodeRecord node = core_.ClusterNode();
  EXPECT_EQ(node.clients, 2u);
  ASSERT_EQ(node.gpus.size(), 2u);
  EXPECT_EQ(node.gpus[0].memory_total, 16ull << 30);
}

TEST_F(CoreClusterTest, AClusterMemoryQuotaNeedsACappedClient) {
  const protocol::Welcome w = Hello(1, "m", 0);
  EXPECT_EQ(w.accepted, 0);
  EXPECT_STREQ(w.reason, "tenant \"m\" has a cluster memory quota: its clients need a memory cap");
  EXPECT_EQ(Hello(2, "m", 4ull << 30).accepted, 1);
  EXPECT_EQ(quota_.held_["m"], (QuotaAmount{1, 4ull << 30}));
}

// Fail static without a server: nothing listens on the port, so the agent never connects.
TEST(ClusterAgent, WithoutZooKeeperNewGrantsAreRefusedAtOnceOrGrantedLocallyIfAllowed) {
  ClusterConfig config;
  config.zookeeper = "127.0.0.1:1";
  config.tenants["x"] = ClusterTenantQuota{1, std::nullopt};
  {
    ClusterAgent refuse(config, "node-a");
    EXPECT_FALSE(refuse.connected());
    const std::string why = refuse.Take("x", {1, 0}, false);
    EXPECT_NE(why.find("ZooKeeper is unreachable"), std::string::npos) << why;
    EXPECT_EQ(refuse.Take("x", {1, 0}, true), "");  // a re-registering client keeps what it holds
    refuse.Give("x", {1, 0});
    refuse.PublishNode(NodeRecord{});
  }
  config.unreachable_allow = true;
  ClusterAgent allow(config, "node-b");
  EXPECT_EQ(allow.Take("x", {1, 0}, false), "");
  EXPECT_EQ(allow.Take("x", {1, 0}, false), "");  // no one to ask: the quota is not checked
}

}  // namespace
}  // namespace gpushare::broker
