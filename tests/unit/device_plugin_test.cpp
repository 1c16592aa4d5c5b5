// The device plugin's pure part (tools/device_plugin/node_view.h): what a broker's
// status becomes as kubelet resources, devices with health, and container edits.
#include "node_view.h"

#include <gtest/gtest.h>

namespace {

using namespace gpushare::k8s;

// Two 16 GiB GPUs; profiles q4g (4 instances per GPU, 1 reserved on GPU 0) and q8g.
const char kStatus[] = R"({
  "gpus": [{"index": 0, "name": "sim0", "memory_total": 17179869184, "memory_used": 0},
           {"index": 1, "name": "sim1", "memory_total": 17179869184, "memory_used": 0}],
  "clients": [],
  "vgpu": {
    "profiles": [{"name": "q4g", "memory_bytes": 4294967296, "compute": 0.25},
                 {"name": "q8g", "memory_bytes": 8589934592, "compute": 0.5}],
    "gpus": [{"index": 0, "profiles": [{"name": "q4g", "total": 4, "reserved": 1, "allocated": 0, "available": 3},
                                       {"name": "q8g", "total": 2, "reserved": 0, "allocated": 0, "available": 2}]},
             {"index": 1, "profiles": [{"name": "q4g", "total": 4, "reserved": 0, "allocated": 0, "available": 4},
                                       {"name": "q8g", "total": 2, "reserved": 0, "allocated": 1, "available": 1}]}],
    "pool": []
  }
})";

NodeView Node() {
  std::string error;
  auto node = ParseStatus(kStatus, &error);
  EXPECT_TRUE(node) << error;
  return node.value_or(NodeView{});
}

std::vector<std::string> Ids(const std::vector<Device>& devices) {
  std::vector<std::string> ids;
  for (const Device& d : devices) ids.push_back(d.id);
  return ids;
}

TEST(DevicePluginNode, ParsesGpusProfilesAndInstancesLessReserved) {
  const NodeView node = Node();
  ASSERT_EQ(node.gpus.size(), 2u);
  EXPECT_EQ(node.gpus[1].memory_total, 17179869184ull);
  ASSERT_EQ(node.profiles.size(), 2u);
  EXPECT_EQ(node.profiles[1].memory_bytes, 8589934592ull);
  EXPECT_EQ(node.instances.at({"q4g", 0}), 3);  // 4 less the one reserved
  EXPECT_EQ(node.instances.at({"q4g", 1}), 4);
  EXPECT_EQ(node.instances.at({"q8g", 1}), 2);  // allocated ones stay devices: the kubelet counts them
}

TEST(DevicePluginNode, RejectsWhatIsNotAStatus) {
  std::string error;
  EXPECT_FALSE(ParseStatus("not json", &error));
  EXPECT_FALSE(ParseStatus(R"({"clients": []})", &error));
  EXPECT_NE(error.find("gpus"), std::string::npos);
  // A broker without profiles still gives its GPUs (vgpu-memory only).
  auto plain = ParseStatus(R"({"gpus": [{"index": 0, "memory_total": 1073741824}]})", &error);
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->profiles.empty());
}

TEST(DevicePluginNode, SingleStrategyNeedsOneProfileOrANamedOne) {
  const NodeView node = Node();
  std::string warning;
  auto none = Resources(node, {}, &warning);  // two profiles, none named
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].name, "gpushare.io/vgpu-memory");
  EXPECT_NE(warning.find("several"), std::string::npos);

  auto named = Resources(node, {Strategy::kSingle, "q8g"}, &warning);
  ASSERT_EQ(named.size(), 2u);
  EXPECT_EQ(named[0].name, "gpushare.io/vgpu");
  EXPECT_EQ(named[0].profile, "q8g");
  EXPECT_TRUE(warning.empty());

  Resources(node, {Strategy::kSingle, "nope"}, &warning);
  EXPECT_NE(warning.find("nope"), std::string::npos);
}

TEST(DevicePluginNode, MixedStrategyServesOneResourcePerProfile) {
  std::string warning;
  auto resources = Resources(Node(), {Strategy::kMixed, ""}, &warning);
  ASSERT_EQ(resources.size(), 3u);
  EXPECT_EQ(resources[0].name, "gpushare.io/vgpu-q4g");
  EXPECT_EQ(resources[1].name, "gpushare.io/vgpu-q8g");
  EXPECT_EQ(resources[2].kind, Resource::Kind::kMemory);
}

TEST(DevicePluginNode, DevicesAreInstancesAndMemoryUnitsPerGpu) {
  const NodeView node = Node();
  const ResourceOptions options{Strategy::kSingle, "q4g", 4ull << 30};
  const NodeHealth up{true, {}};
  EXPECT_EQ(Ids(Devices({"gpushare.io/vgpu", Resource::Kind::kVgpu, "q4g"}, node, options, up)),
            (std::vector<std::string>{"q4g-0-0", "q4g-0-1", "q4g-0-2", "q4g-1-0", "q4g-1-1", "q4g-1-2", "q4g-1-3"}));
  EXPECT_EQ(Ids(Devices({"gpushare.io/vgpu-memory", Resource::Kind::kMemory, ""}, node, options, up)),
            (std::vector<std::string>{"mem-0-0", "mem-0-1", "mem-0-2", "mem-0-3", "mem-1-0", "mem-1-1", "mem-1-2",
                                      "mem-1-3"}));
}

TEST(DevicePluginNode, HealthFollowsTheBrokerAndEachGpu) {
  const NodeView node = Node();
  const ResourceOptions options{Strategy::kSingle, "q8g", 1ull << 30};
  const Resource vgpu{"gpushare.io/vgpu", Resource::Kind::kVgpu, "q8g"};
  for (const Device& d : Devices(vgpu, node, options, {false, {}})) EXPECT_FALSE(d.healthy) << d.id;
  for (const Device& d : Devices(vgpu, node, options, {true, {{0, true}, {1, false}}}))
    EXPECT_EQ(d.healthy, d.gpu == 0) << d.id;
  for (const Device& d : Devices(vgpu, node, options, {true, {}})) EXPECT_TRUE(d.healthy) << d.id;
}

TEST(DevicePluginNode, DeviceGpuReadsTheIdsItMakes) {
  EXPECT_EQ(DeviceGpu("q4g-1-3"), 1);
  EXPECT_EQ(DeviceGpu("a-b-12-0"), 12);  // a profile name with dashes
  EXPECT_EQ(DeviceGpu("mem-0-7"), 0);
  EXPECT_FALSE(DeviceGpu("q4g"));
  EXPECT_FALSE(DeviceGpu("q4g-x-1"));
  EXPECT_FALSE(DeviceGpu("-1"));
}

TEST(DevicePluginNode, LimitTextUsesTheLargestExactUnit) {
  EXPECT_EQ(LimitText(8ull << 30), "8GiB");
  EXPECT_EQ(LimitText(1536ull << 20), "1536MiB");
  EXPECT_EQ(LimitText(1000), "1000");
}

EditOptions Paths(bool cdi) {
  EditOptions p;
  p.library_host = "/opt/gs/lib/libgpushare.so";
  p.socket_host = "/run/gpushare/sockets/k8s-1.sock";
  p.cdi = cdi;
  return p;
}

TEST(DevicePluginNode, VgpuEditsPreloadTheLibraryMountTheSocketAndAskTheProfile) {
  const NodeView node = Node();
  const ResourceOptions options{Strategy::kSingle, "q8g", 1ull << 30};
  std::string error;
  auto edits =
      EditsFor({"gpushare.io/vgpu", Resource::Kind::kVgpu, "q8g"}, node, options, {"q8g-1-0"}, Paths(true), &error);
  ASSERT_TRUE(edits) << error;
  EXPECT_EQ(edits->env, (std::map<std::string, std::string>{{"GPUSHARE_MEMORY_LIMIT", "8GiB"},
                                                            {"GPUSHARE_PROFILE", "q8g"},
                                                            {"GPUSHARE_SOCKET", "/run/gpushare/broker.sock"},
                                                            {"LD_PRELOAD", "/usr/lib/gpushare/libgpushare.so"},
                                                            {"NVIDIA_VISIBLE_DEVICES", "all"}}));
  EXPECT_EQ(edits->mounts,
            (std::vector<Mount>{{"/usr/lib/gpushare/libgpushare.so", "/opt/gs/lib/libgpushare.so", true},
                                {"/run/gpushare/broker.sock", "/run/gpushare/sockets/k8s-1.sock", true}}));
  EXPECT_EQ(edits->cdi_devices, std::vector<std::string>{"gpushare.io/vgpu=q8g-1"});
  auto no_cdi =
      EditsFor({"gpushare.io/vgpu", Resource::Kind::kVgpu, "q8g"}, node, options, {"q8g-1-0"}, Paths(false), &error);
  ASSERT_TRUE(no_cdi);
  EXPECT_TRUE(no_cdi->cdi_devices.empty());
}

TEST(DevicePluginNode, MemoryEditsCapTheUnitsGranted) {
  const ResourceOptions options{Strategy::kSingle, "", 1ull << 30};
  std::string error;
  auto edits = EditsFor({"gpushare.io/vgpu-memory", Resource::Kind::kMemory, ""}, Node(), options,
                        {"mem-0-0", "mem-0-1", "mem-0-2"}, Paths(false), &error);
  ASSERT_TRUE(edits) << error;
  EXPECT_EQ(edits->env.at("GPUSHARE_MEMORY_LIMIT"), "3GiB");
  EXPECT_EQ(edits->env.count("GPUSHARE_PROFILE"), 0u);
  EditOptions no_nvidia = Paths(false);
  no_nvidia.nvidia_visible_devices = "";
  auto bare = EditsFor({"gpushare.io/vgpu-memory", Resource::Kind::kMemory, ""}, Node(), options, {"mem-1-0"},
                       no_nvidia, &error);
  ASSERT_TRUE(bare) << error;
  EXPECT_EQ(bare->env.count("NVIDIA_VISIBLE_DEVICES"), 0u);
}

TEST(DevicePluginNode, EditsRefuseDevicesTheResourceDoesNotHave) {
  const ResourceOptions options{Strategy::kSingle, "q8g", 1ull << 30};
  const Resource vgpu{"gpushare.io/vgpu", Resource::Kind::kVgpu, "q8g"};
  std::string error;
  EXPECT_FALSE(EditsFor(vgpu, Node(), options, {"q8g-0-0", "q4g-0-0"}, Paths(false), &error));
  EXPECT_NE(error.find("q4g-0-0"), std::string::npos);
  EXPECT_FALSE(EditsFor(vgpu, Node(), options, {"q8g-5-0"}, Paths(false), &error));  // no GPU 5
  EXPECT_FALSE(EditsFor(vgpu, Node(), options, {}, Paths(false), &error));
}

}  // namespace
