// Parsing and validation of the simgpu node config (JSON). Every error names its field.
#include "config.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace simgpu {
namespace {

using nlohmann::json;

struct ParseError {
  std::string message;
};

[[noreturn]] void Fail(const std::string& field, const std::string& what) { throw ParseError{field + ": " + what}; }

uint64_t PositiveInteger(const json& v, const std::string& field) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > 0) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() > 0) return static_cast<uint64_t>(v.get<int64_t>());
  Fail(field, "expected a positive integer");
}

uint64_t NonNegativeInteger(const json& v, const std::string& field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  Fail(field, "expected a non-negative integer");
}

double PositiveNumber(const json& v, const std::string& field) {
  if (v.is_number() && v.get<double>() > 0) return v.get<double>();
  Fail(field, "expected a positive number");
}

std::string String(const json& v, const std::string& field) {
  if (!v.is_string()) Fail(field, "expected a string");
  return v.get<std::string>();
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Accepts "dddd:bb:dd.f" (domain, bus, device, function in hex).
bool ValidPciBusId(const std::string& s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11})
    if (!IsHex(s[i])) return false;
  return true;
}

// Accepts "GPU-" followed by a 8-4-4-4-12 hex UUID.
bool ValidUuid(const std::string& s) {
  if (s.size() != 40 || s.rfind("GPU-", 0) != 0) return false;
  for (size_t i = 4; i < s.size(); ++i) {
    size_t k = i - 4;
    bool dash = k == 8 || k == 13 || k == 18 || k == 23;
    if (dash ? s[i] != '-' : !IsHex(s[i])) return false;
  }
  return true;
}

std::string DefaultPciBusId(int index) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0000:%02x:00.0", 0x17 + index);
  return buf;
}

std::string DefaultUuid(int index) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "GPU-5e3a0000-0000-4000-8000-%012x", index);
  return buf;
}

WorkClass ParseClass(const json& v, const std::string& field) {
  std::string s = String(v, field);
  if (s == "compute") return WorkClass::kCompute;
  if (s == "memory") return WorkClass::kMemory;
  Fail(field, "expected \"compute\" or \"memory\", got \"" + s + "\"");
}

void CheckKeys(const json& obj, const std::string& field, std::initializer_list<const char*> known) {
  for (const auto& [key, _] : obj.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) Fail(field.empty() ? key : field + "." + key, "unknown key");
  }
}

NodeConfig ParseDocument(const json& doc) {
  if (!doc.is_object()) Fail("<top>", "expected a JSON object");
  CheckKeys(doc, "",
            {"gpus", "links", "timeslice_us", "default_kernel_us", "pcie_bandwidth_gbps", "nvlink_bandwidth_gbps",
             "driver_version", "kernels", "nvml_p2p", "nvml_driver_version"});
  NodeConfig cfg;
  if (!doc.contains("gpus")) Fail("gpus", "missing (a list of GPUs is required)");
  const json& gpus = doc["gpus"];
  if (!gpus.is_array() || gpus.empty()) Fail("gpus", "expected a non-empty list");
  if (gpus.size() > static_cast<size_t>(kMaxGpus))
    Fail("gpus", "at most " + std::to_string(kMaxGpus) + " GPUs are supported");
  for (size_t i = 0; i < gpus.size(); ++i) {
    const std::string f = "gpus[" + std::to_string(i) + "]";
    const json& g = gpus[i];
    if (!g.is_object()) Fail(f, "expected an object");
    CheckKeys(g, f,
              {"name", "memory", "sms", "pci_bus_id", "uuid", "compute_capability", "memory_bandwidth_gbps",
               "context_memory", "cus", "memory_saturation_cus", "gcn_arch", "pcie_generation", "pcie_width", "mig"});
    GpuConfig gpu;
    if (!g.contains("name")) Fail(f + ".name", "missing");
    gpu.name = String(g["name"], f + ".name");
    if (gpu.name.empty() || gpu.name.size() > 95) Fail(f + ".name", "expected 1 to 95 characters");
    if (!g.contains("memory")) Fail(f + ".memory", "missing");
    gpu.memory_bytes = PositiveInteger(g["memory"], f + ".memory");
    gpu.sms = g.contains("sms") ? static_cast<int>(PositiveInteger(g["sms"], f + ".sms")) : 132;
    gpu.pci_bus_id =
        g.contains("pci_bus_id") ? String(g["pci_bus_id"], f + ".pci_bus_id") : DefaultPciBusId(static_cast<int>(i));
    if (!ValidPciBusId(gpu.pci_bus_id))
      Fail(f + ".pci_bus_id", "expected \"dddd:bb:dd.f\" in hex, got \"" + gpu.pci_bus_id + "\"");
    gpu.uuid = g.contains("uuid") ? String(g["uuid"], f + ".uuid") : DefaultUuid(static_cast<int>(i));
    if (!ValidUuid(gpu.uuid))
      Fail(f + ".uuid", "expected \"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\", got \"" + gpu.uuid + "\"");
    if (g.contains("compute_capability")) {
      const json& cc = g["compute_capability"];
      if (!cc.is_array() || cc.size() != 2) Fail(f + ".compute_capability", "expected [major, minor]");
      gpu.cc_major = static_cast<int>(PositiveInteger(cc[0], f + ".compute_capability[0]"));
      gpu.cc_minor = static_cast<int>(NonNegativeInteger(cc[1], f + ".compute_capability[1]"));
    }
    if (g.contains("memory_bandwidth_gbps"))
      gpu.memory_bandwidth_gbps = PositiveNumber(g["memory_bandwidth_gbps"], f + ".memory_bandwidth_gbps");
    if (g.contains("context_memory"))
      gpu.context_memory_bytes = NonNegativeInteger(g["context_memory"], f + ".context_memory");
    gpu.cus = g.contains("cus") ? static_cast<int>(PositiveInteger(g["cus"], f + ".cus")) : gpu.sms;
    if (gpu.cus > kMaxCus) Fail(f + ".cus", "at most " + std::to_string(kMaxCus) + " compute units are supported");
    gpu.memory_saturation_cus =
        g.contains("memory_saturation_cus")
            ? static_cast<int>(PositiveInteger(g["memory_saturation_cus"], f + ".memory_saturation_cus"))
            : std::max(1, gpu.cus / 4);
    if (gpu.memory_saturation_cus > gpu.cus) Fail(f + ".memory_saturation_cus", "expected at most gpus[].cus");
    if (g.contains("gcn_arch")) gpu.gcn_arch = String(g["gcn_arch"], f + ".gcn_arch");
    if (gpu.gcn_arch.empty() || gpu.gcn_arch.size() > 255) Fail(f + ".gcn_arch", "expected 1 to 255 characters");
    if (g.contains("mig")) {
      if (!g["mig"].is_boolean()) Fail(f + ".mig", "expected true or false");
      gpu.mig = g["mig"].get<bool>();
    }
    if (g.contains("pcie_generation"))
      gpu.pcie_generation = static_cast<int>(PositiveInteger(g["pcie_generation"], f + ".pcie_generation"));
    if (g.contains("pcie_width"))
      gpu.pcie_width = static_cast<int>(PositiveInteger(g["pcie_width"], f + ".pcie_width"));
    for (const auto& other : cfg.gpus) {
      if (other.uuid == gpu.uuid) Fail(f + ".uuid", "duplicate of another GPU's uuid");
      if (other.pci_bus_id == gpu.pci_bus_id) Fail(f + ".pci_bus_id", "duplicate of another GPU's");
    }
    cfg.gpus.push_back(gpu);
  }
  if (doc.contains("links")) {
    const json& links = doc["links"];
    if (!links.is_array()) Fail("links", "expected a list of [a, b, \"nvlink\"|\"pcie\"]");
    for (size_t i = 0; i < links.size(); ++i) {
      const std::string f = "links[" + std::to_string(i) + "]";
      const json& l = links[i];
      if (!l.is_array() || l.size() != 3) Fail(f, "expected [a, b, \"nvlink\"|\"pcie\"]");
      uint64_t a = NonNegativeInteger(l[0], f + "[0]");
      uint64_t b = NonNegativeInteger(l[1], f + "[1]");
      if (a >= cfg.gpus.size()) Fail(f + "[0]", "no GPU with index " + std::to_string(a));
      if (b >= cfg.gpus.size()) Fail(f + "[1]", "no GPU with index " + std::to_string(b));
      if (a == b) Fail(f, "a GPU cannot link to itself");
      std::string kind = String(l[2], f + "[2]");
      LinkKind k;
      if (kind == "nvlink")
        k = LinkKind::kNvlink;
      else if (kind == "pcie")
        k = LinkKind::kPcie;
      else
        Fail(f + "[2]", "expected \"nvlink\" or \"pcie\", got \"" + kind + "\"");
      cfg.links[a][b] = cfg.links[b][a] = k;
    }
  }
  if (doc.contains("timeslice_us")) {
    uint64_t t = PositiveInteger(doc["timeslice_us"], "timeslice_us");
    if (t < 100 || t > 1000000) Fail("timeslice_us", "expected 100 to 1000000");
    cfg.timeslice_us = static_cast<uint32_t>(t);
  }
  if (doc.contains("default_kernel_us"))
    cfg.default_kernel_us = PositiveNumber(doc["default_kernel_us"], "default_kernel_us");
  if (doc.contains("pcie_bandwidth_gbps"))
    cfg.pcie_bandwidth_gbps = PositiveNumber(doc["pcie_bandwidth_gbps"], "pcie_bandwidth_gbps");
  if (doc.contains("nvlink_bandwidth_gbps"))
    cfg.nvlink_bandwidth_gbps = PositiveNumber(doc["nvlink_bandwidth_gbps"], "nvlink_bandwidth_gbps");
  if (doc.contains("driver_version"))
    cfg.driver_version = static_cast<int>(PositiveInteger(doc["driver_version"], "driver_version"));
  if (doc.contains("nvml_driver_version"))
    cfg.nvml_driver_version = static_cast<int>(PositiveInteger(doc["nvml_driver_version"], "nvml_driver_version"));
  if (doc.contains("nvml_p2p")) {
    if (!doc["nvml_p2p"].is_boolean()) Fail("nvml_p2p", "expected true or false");
    cfg.nvml_p2p = doc["nvml_p2p"].get<bool>();
  }
  if (doc.contains("kernels")) {
    const json& ks = doc["kernels"];
    if (!ks.is_object()) Fail("kernels", "expected an object of name: {\"us\": N, \"class\": ...}");
    for (const auto& [name, k] : ks.items()) {
      const std::string f = "kernels." + name;
      if (!k.is_object()) Fail(f, "expected {\"us\": N, \"class\": \"compute\"|\"memory\"}");
      CheckKeys(k, f, {"us", "class"});
      KernelCost cost;
      if (!k.contains("us")) Fail(f + ".us", "missing");
      cost.us = PositiveNumber(k["us"], f + ".us");
      if (k.contains("class")) cost.work_class = ParseClass(k["class"], f + ".class");
      cfg.kernels[name] = cost;
    }
  }
  return cfg;
}

// nlohmann reports byte offsets; people want lines.
std::string LineOf(const std::string& text, size_t byte) {
  size_t line = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) line += text[i] == '\n';
  return std::to_string(line);
}

}  // namespace

std::optional<NodeConfig> ParseConfig(const std::string& json_text, const std::string& source, std::string* error) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    *error = source + ":" + LineOf(json_text, e.byte) + ": invalid JSON: " + e.what();
    return std::nullopt;
  }
  try {
    NodeConfig cfg = ParseDocument(doc);
    cfg.source = source;
    return cfg;
  } catch (const ParseError& e) {
    *error = source + ": " + e.message;
  } catch (const json::exception& e) {
    *error = source + ": " + e.what();
  }
  return std::nullopt;
}

NodeConfig DefaultConfig() {
  std::string error;
  auto cfg = ParseConfig(
      R"({"gpus": [{"name": "simgpu H100 0", "memory": 17179869184},
                   {"name": "simgpu H100 1", "memory": 17179869184}],
          "links": [[0, 1, "pcie"]]})",
      "<default>", &error);
  return *cfg;
}

std::optional<NodeConfig> LoadConfigFromEnv(std::string* error) {
  return LoadConfig(std::getenv("SIMGPU_CONFIG"), error);
}

std::optional<NodeConfig> LoadConfig(const char* path, std::string* error) {
  if (path == nullptr || *path == '\0') return DefaultConfig();
  std::ifstream in(path);
  if (!in) {
    *error = std::string(path) + ": cannot read SIMGPU_CONFIG file";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path, error);
}

std::string ConfigFingerprint(const NodeConfig& c) {
  std::ostringstream os;
  for (const auto& g : c.gpus)
    os << g.name << '|' << g.memory_bytes << '|' << g.sms << '|' << g.pci_bus_id << '|' << g.uuid << '|'
       << g.context_memory_bytes << '|' << g.cus << ';';
  for (size_t a = 0; a < c.gpus.size(); ++a)
    for (size_t b = 0; b < c.gpus.size(); ++b) os << static_cast<int>(c.links[a][b]);
  os << '|' << c.timeslice_us;
  return os.str();
}

}  // namespace simgpu
