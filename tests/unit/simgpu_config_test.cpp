// simgpu's config parser: defaults, every field, and errors that name the field.
#include <gtest/gtest.h>

#include "config.h"

namespace simgpu {
namespace {

std::string ErrorOf(const std::string& json) {
  std::string error;
  EXPECT_FALSE(ParseConfig(json, "node.json", &error).has_value()) << json;
  return error;
}

TEST(SimgpuConfig, DefaultIsTwoSixteenGibGpusWithP2p) {
  NodeConfig c = DefaultConfig();
  ASSERT_EQ(c.gpus.size(), 2u);
  EXPECT_EQ(c.gpus[0].memory_bytes, 16ull << 30);
  EXPECT_EQ(c.gpus[1].memory_bytes, 16ull << 30);
  EXPECT_NE(c.link(0, 1), LinkKind::kNone);
  EXPECT_NE(c.gpus[0].uuid, c.gpus[1].uuid);
}

TEST(SimgpuConfig, ParsesEveryField) {
  std::string error;
  auto c = ParseConfig(R"({
    "gpus": [{"name": "sim0", "memory": 1024, "sms": 10, "pci_bus_id": "0000:81:00.0",
              "uuid": "GPU-12345678-1234-1234-1234-123456789abc", "compute_capability": [8, 9],
              "memory_bandwidth_gbps": 500, "context_memory": 4096},
             {"name": "sim1", "memory": 2048}, {"name": "sim2", "memory": 2048}],
    "links": [[0, 1, "nvlink"], [2, 1, "pcie"]],
    "timeslice_us": 500, "default_kernel_us": 3.5, "pcie_bandwidth_gbps": 12,
    "nvlink_bandwidth_gbps": 100, "driver_version": 12040, "nvml_p2p": false,
    "kernels": {"gemm": {"us": 40, "class": "compute"}, "copy": {"us": 7, "class": "memory"}}})",
                       "node.json", &error);
  ASSERT_TRUE(c.has_value()) << error;
  EXPECT_EQ(c->gpus[0].name, "sim0");
  EXPECT_EQ(c->gpus[0].sms, 10);
  EXPECT_EQ(c->gpus[0].cc_minor, 9);
  EXPECT_EQ(c->gpus[0].context_memory_bytes, 4096u);
  EXPECT_EQ(c->gpus[1].sms, 132);  // default
  EXPECT_EQ(c->link(1, 0), LinkKind::kNvlink);
  EXPECT_EQ(c->link(1, 2), LinkKind::kPcie);
  EXPECT_EQ(c->link(0, 2), LinkKind::kNone);
  EXPECT_EQ(c->timeslice_us, 500u);
  EXPECT_DOUBLE_EQ(c->default_kernel_us, 3.5);
  EXPECT_EQ(c->driver_version, 12040);
  EXPECT_FALSE(c->nvml_p2p);
  EXPECT_EQ(c->kernels.at("copy").work_class, WorkClass::kMemory);
  EXPECT_DOUBLE_EQ(c->kernels.at("gemm").us, 40);
}

TEST(SimgpuConfig, ErrorsNameTheField) {
  EXPECT_EQ(ErrorOf(R"({"gpus": []})"), "node.json: gpus: expected a non-empty list");
  EXPECT_EQ(ErrorOf(R"({})"), "node.json: gpus: missing (a list of GPUs is required)");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}, {"name": "b", "memory": 0}]})"),
            "node.json: gpus[1].memory: expected a positive integer");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a"}]})"), "node.json: gpus[0].memory: missing");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": "lots"}]})"),
            "node.json: gpus[0].memory: expected a positive integer");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1, "colour": 1}]})"),
            "node.json: gpus[0].colour: unknown key");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1, "pci_bus_id": "1:2"}]})"),
            "node.json: gpus[0].pci_bus_id: expected \"dddd:bb:dd.f\" in hex, got \"1:2\"");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}], "links": [[0, 1, "pcie"]]})"),
            "node.json: links[0][1]: no GPU with index 1");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}, {"name": "b", "memory": 1}], "links": [[0, 1, "wifi"]]})"),
            "node.json: links[0][2]: expected \"nvlink\" or \"pcie\", got \"wifi\"");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}], "nvml_p2p": "no"})"),
            "node.json: nvml_p2p: expected true or false");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}], "timeslice_us": 5})"),
            "node.json: timeslice_us: expected 100 to 1000000");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1}], "kernels": {"k": {"us": 1, "class": "io"}}})"),
            "node.json: kernels.k.class: expected \"compute\" or \"memory\", got \"io\"");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1, "uuid": "GPU-x"}, {"name": "b", "memory": 1}]})"),
            "node.json: gpus[0].uuid: expected \"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\", got \"GPU-x\"");
}

TEST(SimgpuConfig, ComputeUnitsForTheHipFront) {
  std::string error;
  auto c = ParseConfig(R"({"gpus": [{"name": "a", "memory": 1, "sms": 110, "cus": 104, "memory_saturation_cus": 20,
                                     "gcn_arch": "gfx942"},
                                    {"name": "b", "memory": 1, "sms": 30}]})",
                       "node.json", &error);
  ASSERT_TRUE(c.has_value()) << error;
  EXPECT_EQ(c->gpus[0].cus, 104);
  EXPECT_EQ(c->gpus[0].memory_saturation_cus, 20);
  EXPECT_EQ(c->gpus[0].gcn_arch, "gfx942");
  EXPECT_EQ(c->gpus[1].cus, 30);                   // default: sms
  EXPECT_EQ(c->gpus[1].memory_saturation_cus, 7);  // default: a quarter of the CUs
  EXPECT_EQ(c->gpus[1].gcn_arch, "gfx90a");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1, "cus": 300}]})"),
            "node.json: gpus[0].cus: at most 256 compute units are supported");
  EXPECT_EQ(ErrorOf(R"({"gpus": [{"name": "a", "memory": 1, "cus": 8, "memory_saturation_cus": 9}]})"),
            "node.json: gpus[0].memory_saturation_cus: expected at most gpus[].cus");
}

TEST(SimgpuConfig, InvalidJsonNamesTheLine) {
  std::string error = ErrorOf("{\n  \"gpus\": [\n    {\"name\": \"a\",, }\n  ]\n}");
  EXPECT_EQ(error.rfind("node.json:3: invalid JSON", 0), 0u) << error;
}

TEST(SimgpuConfig, FingerprintDiffersWhenTheNodeDiffers) {
  NodeConfig a = DefaultConfig(), b = DefaultConfig();
  EXPECT_EQ(ConfigFingerprint(a), ConfigFingerprint(b));
  b.gpus[1].memory_bytes += 1;
  EXPECT_NE(ConfigFingerprint(a), ConfigFingerprint(b));
}

}  // namespace
}  // namespace simgpu
