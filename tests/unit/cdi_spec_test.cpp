// The CDI spec gpushare-cdi writes (tools/cdi_spec.h): its shape as the CDI
// specification defines it, the devices per tenant, profile instance, GPU and cap,
// and the YAML it is written as.
#include "cdi_spec.h"

#include <gtest/gtest.h>

#include <set>

namespace {

using gpushare::broker::BrokerConfig;
using gpushare::tools::BuildCdiSpec;
using gpushare::tools::CdiOptions;
using gpushare::tools::ToYaml;
using nlohmann::json;

BrokerConfig Config(const std::string& toml) {
  std::string error;
  auto c = gpushare::broker::ParseBrokerConfig(toml, "test.toml", &error);
  EXPECT_TRUE(c) << error;
  return c.value_or(BrokerConfig{});
}

CdiOptions Options() {
  CdiOptions o;
  o.library = "/usr/lib/libgpushare.so";
  o.socket_dir = "/run/gpushare";
  o.gpu_count = 2;
  o.preload_file = "/etc/cdi/gpushare.ld.so.preload";
  return o;
}

const char* kTwoTenants = R"(
[profiles.q8g]
memory = "8GiB"
compute = 0.5
[profiles.q4g]
memory = "4GiB"
compute = 0.25
[tenants.alpha]
socket = true
[tenants.beta]
socket = true
profile = "q4g"
[tenants.closed]
weight = 2
)";

const json* DeviceNamed(const json& spec, const std::string& name) {
  for (const json& d : spec["devices"])
    if (d["name"] == name) return &d;
  return nullptr;
}

std::set<std::string> Env(const json& device) {
  std::set<std::string> env;
  for (const json& e : device["containerEdits"]["env"]) env.insert(e.get<std::string>());
  return env;
}

const json* MountAt(const json& device, const std::string& container_path) {
  for (const json& m : device["containerEdits"]["mounts"])
    if (m["containerPath"] == container_path) return &m;
  return nullptr;
}

// What the CDI specification requires of a spec and its devices and mounts.
void ExpectCdiShape(const json& spec) {
  EXPECT_TRUE(spec["cdiVersion"] == "0.5.0" || spec["cdiVersion"] == "0.6.0");
  EXPECT_EQ(spec["kind"], "gpushare.io/vgpu");
  ASSERT_TRUE(spec["devices"].is_array());
  ASSERT_FALSE(spec["devices"].empty());
  std::set<std::string> names;
  for (const json& d : spec["devices"]) {
    const std::string name = d["name"].get<std::string>();
    EXPECT_TRUE(names.insert(name).second) << "two devices named " << name;
    EXPECT_EQ(name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"),
              std::string::npos);
    ASSERT_TRUE(d["containerEdits"].is_object());
    for (const json& e : d["containerEdits"]["env"]) EXPECT_NE(e.get<std::string>().find('='), std::string::npos);
    for (const json& m : d["containerEdits"]["mounts"]) {
      EXPECT_EQ(m["hostPath"].get<std::string>().front(), '/');
      EXPECT_EQ(m["containerPath"].get<std::string>().front(), '/');
      EXPECT_TRUE(m["options"].is_array());
    }
  }
}

TEST(CdiSpec, OneDevicePerSocketTenantProfileInstanceAndGpu) {
  std::string error;
  auto spec = BuildCdiSpec(Config(kTwoTenants), Options(), &error);
  ASSERT_TRUE(spec) << error;
  ExpectCdiShape(*spec);
  std::set<std::string> names;
  for (const json& d : (*spec)["devices"]) names.insert(d["name"].get<std::string>());
  // alpha may use any profile; beta only its own (another would be refused); closed has no socket.
  EXPECT_EQ(names, (std::set<std::string>{"alpha", "alpha-q4g-0", "alpha-q4g-1", "alpha-q8g-0", "alpha-q8g-1", "beta",
                                          "beta-q4g-0", "beta-q4g-1"}));
  const json& q8g1 = *DeviceNamed(*spec, "alpha-q8g-1");
  EXPECT_EQ(Env(q8g1), (std::set<std::string>{"GPUSHARE_SOCKET=/run/gpushare/broker.sock", "GPUSHARE_PROFILE=q8g",
                                              "GPUSHARE_VISIBLE_DEVICES=1"}));
  const json* socket = MountAt(q8g1, "/run/gpushare/broker.sock");
  ASSERT_NE(socket, nullptr);
  EXPECT_EQ((*socket)["hostPath"], "/run/gpushare/tenants/alpha.sock");
  EXPECT_NE(std::find((*socket)["options"].begin(), (*socket)["options"].end(), "ro"), (*socket)["options"].end());
  EXPECT_EQ((*DeviceNamed(*spec, "beta"))["containerEdits"]["mounts"][1]["hostPath"],
            "/run/gpushare/tenants/beta.sock");
  const json* preload = MountAt(q8g1, "/etc/ld.so.preload");
  ASSERT_NE(preload, nullptr);
  EXPECT_EQ((*preload)["hostPath"], "/etc/cdi/gpushare.ld.so.preload");
  EXPECT_EQ((*MountAt(q8g1, "/usr/lib/gpushare/libgpushare.so"))["hostPath"], "/usr/lib/libgpushare.so");
}

TEST(CdiSpec, OneTenantByNameDropsItFromTheNamesAndCapsAddDevices) {
  CdiOptions o = Options();
  o.tenants = {"alpha"};
  o.caps = {"4GiB", "512MiB"};
  o.preload = "env";
  std::string error;
  auto spec = BuildCdiSpec(Config(kTwoTenants), o, &error);
  ASSERT_TRUE(spec) << error;
  ExpectCdiShape(*spec);
  ASSERT_NE(DeviceNamed(*spec, "q8g-0"), nullptr);
  ASSERT_NE(DeviceNamed(*spec, "any"), nullptr);
  const json* cap = DeviceNamed(*spec, "512MiB");
  ASSERT_NE(cap, nullptr);
  EXPECT_TRUE(Env(*cap).count("GPUSHARE_MEMORY_LIMIT=512MiB"));
  EXPECT_TRUE(Env(*cap).count("LD_PRELOAD=/usr/lib/gpushare/libgpushare.so"));
  EXPECT_EQ(MountAt(*cap, "/etc/ld.so.preload"), nullptr);
}

TEST(CdiSpec, DriverLibrariesAreMountedAndOnTheLibraryPath) {
  CdiOptions o = Options();
  o.driver_dir = "/opt/simgpu";
  o.driver_libs = {"libcuda.so.1", "libnvidia-ml.so.1"};
  std::string error;
  auto spec = BuildCdiSpec(Config(kTwoTenants), o, &error);
  ASSERT_TRUE(spec) << error;
  const json& d = *DeviceNamed(*spec, "alpha");
  EXPECT_EQ((*MountAt(d, "/usr/lib/gpushare/driver/libcuda.so.1"))["hostPath"], "/opt/simgpu/libcuda.so.1");
  EXPECT_TRUE(Env(d).count("LD_LIBRARY_PATH=/usr/lib/gpushare/driver"));
}

TEST(CdiSpec, RefusesATenantWithoutASocketABadCapAndAConfigWithNoSocketTenant) {
  CdiOptions o = Options();
  std::string error;
  o.tenants = {"closed"};
  EXPECT_FALSE(BuildCdiSpec(Config(kTwoTenants), o, &error));
  EXPECT_NE(error.find("[tenants.closed] socket = true"), std::string::npos) << error;
  o.tenants = {};
  o.caps = {"lots"};
  EXPECT_FALSE(BuildCdiSpec(Config(kTwoTenants), o, &error));
  EXPECT_NE(error.find("--cap lots"), std::string::npos) << error;
  EXPECT_FALSE(BuildCdiSpec(Config("[tenants.a]\nweight = 1\n"), Options(), &error));
  EXPECT_NE(error.find("socket = true"), std::string::npos) << error;
}

TEST(CdiSpec, YamlIsBlockStyleWithQuotedStrings) {
  const json tree = {{"kind", "gpushare.io/vgpu"},
                     {"devices", json::array({{{"name", "a"}, {"containerEdits", {{"env", {"X=1", "Y=\"q\""}}}}}})},
                     {"empty", json::array()}};
  EXPECT_EQ(ToYaml(tree),
            "devices:\n"
            "  - containerEdits:\n"
            "      env:\n"
            "        - \"X=1\"\n"
            "        - \"Y=\\\"q\\\"\"\n"
            "    name: \"a\"\n"
            "empty: []\n"
            "kind: \"gpushare.io/vgpu\"\n");
}

}  // namespace
