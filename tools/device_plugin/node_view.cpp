// The device plugin's pure part (see node_view.h).
#include "node_view.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace gpushare::k8s {

namespace {

using json = nlohmann::json;

// Readers that take what any broker version sends: a missing key or one of another
// type gives the fallback, never an exception.
uint64_t Unsigned(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  const double d = it->get<double>();
  return d > 0 ? static_cast<uint64_t>(d) : 0;
}
int Int(const json& j, const char* key, int fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int>() : fallback;
}
std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}
const json& Array(const json& j, const char* key) {
  static const json kEmpty = json::array();
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : kEmpty;
}

std::string VgpuId(const std::string& profile, int gpu, int n) {
  return profile + "-" + std::to_string(gpu) + "-" + std::to_string(n);
}
std::string MemoryId(int gpu, int n) { return "mem-" + std::to_string(gpu) + "-" + std::to_string(n); }

// The profile a vGPU device ID names: all before its last two fields.
std::string IdProfile(const std::string& id) {
  const size_t last = id.rfind('-');
  const size_t second = last == std::string::npos || last == 0 ? std::string::npos : id.rfind('-', last - 1);
  return second == std::string::npos ? "" : id.substr(0, second);
}

}  // namespace

const NodeView::Profile* NodeView::FindProfile(const std::string& name) const {
  for (const Profile& p : profiles)
    if (p.name == name) return &p;
  return nullptr;
}

std::optional<NodeView> ParseStatus(const std::string& status_json, std::string* error) {
  const json status = json::parse(status_json, nullptr, false);
  if (status.is_discarded() || !status.is_object() || !status.contains("gpus") || !status["gpus"].is_array()) {
    *error = "the broker's status is not a JSON object with gpus[]";
    return std::nullopt;
  }
  NodeView node;
  for (const json& g : status["gpus"]) {
    if (!g.is_object() || Int(g, "index", -1) < 0) continue;
    node.gpus.push_back({Int(g, "index", -1), Unsigned(g, "memory_total")});
  }
  auto vgpu = status.find("vgpu");
  if (vgpu == status.end() || !vgpu->is_object()) return node;
  for (const json& p : Array(*vgpu, "profiles"))
    if (p.is_object() && !Str(p, "name").empty())
      node.profiles.push_back({Str(p, "name"), Unsigned(p, "memory_bytes")});
  for (const json& g : Array(*vgpu, "gpus")) {
    if (!g.is_object()) continue;
    const int index = Int(g, "index", -1);
    for (const json& row : Array(g, "profiles")) {
      if (!row.is_object() || index < 0) continue;
      const int pods = Int(row, "total", 0) - Int(row, "reserved", 0);
      if (pods > 0) node.instances[{Str(row, "name"), index}] = pods;
    }
  }
  return node;
}

std::vector<Resource> Resources(const NodeView& node, const ResourceOptions& options, std::string* warning) {
  warning->clear();
  std::vector<Resource> out;
  if (options.strategy == Strategy::kMixed) {
    for (const auto& p : node.profiles)
      out.push_back({std::string(kResourcePrefix) + "vgpu-" + p.name, Resource::Kind::kVgpu, p.name});
    if (node.profiles.empty()) *warning = "the broker's config has no vGPU profiles: no vGPU resource";
  } else if (!options.profile.empty()) {
    if (node.FindProfile(options.profile) != nullptr)
      out.push_back({std::string(kResourcePrefix) + "vgpu", Resource::Kind::kVgpu, options.profile});
    else
      *warning = "the broker has no vGPU profile \"" + options.profile + "\": no gpushare.io/vgpu resource";
  } else if (node.profiles.size() == 1) {
    out.push_back({std::string(kResourcePrefix) + "vgpu", Resource::Kind::kVgpu, node.profiles[0].name});
  } else {
    *warning = node.profiles.empty()
                   ? "the broker's config has no vGPU profiles: no gpushare.io/vgpu resource"
                   : "the broker has several vGPU profiles: name one (--profile) or use --strategy mixed";
  }
  out.push_back({std::string(kResourcePrefix) + "vgpu-memory", Resource::Kind::kMemory, ""});
  return out;
}

bool NodeHealth::Gpu(int index) const {
  auto it = gpu_ok.find(index);
  return it == gpu_ok.end() || it->second;
}

std::vector<Device> Devices(const Resource& resource, const NodeView& node, const ResourceOptions& options,
                            const NodeHealth& health) {
  std::vector<Device> out;
  for (const NodeView::Gpu& g : node.gpus) {
    const bool healthy = health.broker_up && health.Gpu(g.index);
    int count = 0;
    if (resource.kind == Resource::Kind::kMemory) {
      count = options.memory_unit_bytes > 0 ? static_cast<int>(g.memory_total / options.memory_unit_bytes) : 0;
    } else if (auto it = node.instances.find({resource.profile, g.index}); it != node.instances.end()) {
      count = it->second;
    }
    for (int n = 0; n < count; ++n)
      out.push_back(
          {resource.kind == Resource::Kind::kMemory ? MemoryId(g.index, n) : VgpuId(resource.profile, g.index, n),
           g.index, healthy});
  }
  return out;
}

std::optional<int> DeviceGpu(const std::string& id) {
  const size_t last = id.rfind('-');
  if (last == std::string::npos || last == 0) return std::nullopt;
  const size_t second = id.rfind('-', last - 1);
  if (second == std::string::npos) return std::nullopt;
  const std::string field = id.substr(second + 1, last - second - 1);
  if (field.empty() || field.size() > 4 || !std::all_of(field.begin(), field.end(), ::isdigit)) return std::nullopt;
  return std::stoi(field);
}

std::string LimitText(uint64_t bytes) {
  if (bytes > 0 && bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes > 0 && bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  return std::to_string(bytes);
}

std::optional<ContainerEdits> EditsFor(const Resource& resource, const NodeView& node, const ResourceOptions& options,
                                       const std::vector<std::string>& ids, const EditOptions& edit,
                                       std::string* error) {
  if (ids.empty()) {
    *error = "no devices granted";
    return std::nullopt;
  }
  // Only IDs this resource advertises (health aside: the kubelet may grant a device
  // that turned unhealthy since).
  std::set<std::string> known;
  for (const Device& d : Devices(resource, node, options, NodeHealth{true, {}})) known.insert(d.id);
  for (const std::string& id : ids)
    if (!known.count(id)) {
      *error = "device \"" + id + "\" is not one of " + resource.name;
      return std::nullopt;
    }
  ContainerEdits edits;
  edits.env["LD_PRELOAD"] = edit.library_container;
  edits.env["GPUSHARE_SOCKET"] = edit.socket_container;
  edits.mounts.push_back({edit.library_container, edit.library_host, true});
  edits.mounts.push_back({edit.socket_container, edit.socket_host, true});
  // NVIDIA's container runtime gives the container the node's GPUs and driver: the
  // broker places the vGPU on any of them, and the shim shows the container only its own.
  if (!edit.nvidia_visible_devices.empty()) edits.env["NVIDIA_VISIBLE_DEVICES"] = edit.nvidia_visible_devices;
  if (resource.kind == Resource::Kind::kMemory) {
    // The units granted, wherever the kubelet counted them, are one cap: placement
    // stays the broker's.
    edits.env["GPUSHARE_MEMORY_LIMIT"] = LimitText(ids.size() * options.memory_unit_bytes);
    return edits;
  }
  const NodeView::Profile* profile = node.FindProfile(resource.profile);
  edits.env["GPUSHARE_PROFILE"] = resource.profile;
  if (profile != nullptr && profile->memory_bytes > 0)
    edits.env["GPUSHARE_MEMORY_LIMIT"] = LimitText(profile->memory_bytes);
  if (edit.cdi) {
    std::set<std::string> names;  // one CDI device per (profile, GPU), as gpushare-cdi names them
    for (const std::string& id : ids)
      names.insert("gpushare.io/vgpu=" + IdProfile(id) + "-" + std::to_string(*DeviceGpu(id)));
    edits.cdi_devices.assign(names.begin(), names.end());
  }
  return edits;
}

}  // namespace gpushare::k8s
