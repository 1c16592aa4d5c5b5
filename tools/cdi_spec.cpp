// The CDI spec for gpushare's vGPUs (see cdi_spec.h).
#include "cdi_spec.h"

#include <algorithm>
#include <cctype>

#include "common/base/units.h"

namespace gpushare::tools {
namespace {

using nlohmann::json;

json Mount(const std::string& host, const std::string& container, bool read_only) {
  return {{"hostPath", host},
          {"containerPath", container},
          {"options", read_only ? json{"ro", "nosuid", "nodev", "bind"} : json{"nosuid", "nodev", "bind"}}};
}

// What every device of `tenant` puts in the container.
json TenantEdits(const std::string& tenant, const CdiOptions& o) {
  const std::string lib = std::string(kContainerLibDir) + "/libgpushare.so";
  json edits;
  edits["env"] = json::array({"GPUSHARE_SOCKET=" + std::string(kContainerSocket)});
  edits["mounts"] = json::array(
      {Mount(o.library, lib, true), Mount(o.socket_dir + "/tenants/" + tenant + ".sock", kContainerSocket, true)});
  if (o.preload == "file")
    edits["mounts"].push_back(Mount(o.preload_file, "/etc/ld.so.preload", true));
  else
    edits["env"].push_back("LD_PRELOAD=" + lib);
  if (!o.driver_dir.empty()) {
    const std::string dir = std::string(kContainerLibDir) + "/driver";
    for (const std::string& name : o.driver_libs)
      edits["mounts"].push_back(Mount(o.driver_dir + "/" + name, dir + "/" + name, true));
    edits["env"].push_back("LD_LIBRARY_PATH=" + dir);
  }
  return edits;
}

json Device(const std::string& name, json edits) { return {{"name", name}, {"containerEdits", std::move(edits)}}; }

// CDI device names: letters, digits, '_', '.', ':' and '-'.
bool CdiName(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == ':' || ch == '-';
  });
}

}  // namespace

std::optional<json> BuildCdiSpec(const broker::BrokerConfig& config, const CdiOptions& o, std::string* error) {
  std::vector<std::string> tenants = o.tenants;
  if (tenants.empty())
    for (const auto& [name, policy] : config.tenants)
      if (policy.socket) tenants.push_back(name);
  if (tenants.empty()) {
    *error = "no tenant to describe: the config has none with `socket = true` (docs/containers.md)";
    return std::nullopt;
  }
  for (const std::string& cap : o.caps)
    if (!ParseBytes(cap) || !CdiName(cap)) {
      *error = "--cap " + cap + ": expected a size such as 4GiB";
      return std::nullopt;
    }
  // One tenant asked for by name: its devices are named without it ("q8g-0"), as users type them.
  const bool prefixed = o.tenants.size() != 1;
  json devices = json::array();
  for (const std::string& tenant : tenants) {
    auto policy = config.tenants.find(tenant);
    if (policy == config.tenants.end() || !policy->second.socket) {
      *error = "tenant \"" + tenant + "\" has no socket in the config (set [tenants." + tenant + "] socket = true)";
      return std::nullopt;
    }
    const std::string prefix = prefixed ? tenant + "-" : "";
    const json edits = TenantEdits(tenant, o);
    devices.push_back(Device(prefixed ? tenant : "any", edits));  // the tenant's terms, the broker's choice of GPU
    for (const auto& [profile, _] : config.profiles) {
      if (policy->second.profile && *policy->second.profile != profile) continue;  // others would be refused
      for (int gpu = 0; gpu < o.gpu_count; ++gpu) {
        json e = edits;
        e["env"].push_back("GPUSHARE_PROFILE=" + profile);
        e["env"].push_back("GPUSHARE_VISIBLE_DEVICES=" + std::to_string(gpu));
        devices.push_back(Device(prefix + profile + "-" + std::to_string(gpu), std::move(e)));
      }
    }
    for (const std::string& cap : o.caps) {
      json e = edits;
      e["env"].push_back("GPUSHARE_MEMORY_LIMIT=" + cap);
      devices.push_back(Device(prefix + cap, std::move(e)));
    }
  }
  for (const json& d : devices)
    if (!CdiName(d["name"].get<std::string>())) {
      *error = "device name \"" + d["name"].get<std::string>() + "\" is not a CDI name (letters, digits, _ . : -)";
      return std::nullopt;
    }
  return json{{"cdiVersion", "0.5.0"}, {"kind", "gpushare.io/vgpu"}, {"devices", std::move(devices)}};
}

namespace {

void Emit(const json& node, int indent, std::string* out);

// A scalar on the line it belongs to; JSON's quoting is valid YAML for these strings.
std::string Scalar(const json& v) { return v.dump(); }

void EmitItem(const json& value, int indent, std::string* out) {
  if (value.is_object() || value.is_array()) {
    if (value.empty()) {
      *out += value.is_object() ? " {}\n" : " []\n";
      return;
    }
    *out += "\n";
    Emit(value, indent + 2, out);
  } else {
    *out += " " + Scalar(value) + "\n";
  }
}

void Emit(const json& node, int indent, std::string* out) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      *out += pad + key + ":";
      EmitItem(value, indent, out);
    }
    return;
  }
  for (const json& item : node) {
    if (item.is_object() && !item.empty()) {
      // "- key: value" then the item's other keys under it.
      bool first = true;
      for (const auto& [key, value] : item.items()) {
        *out += (first ? pad + "- " : pad + "  ") + key + ":";
        EmitItem(value, indent + 2, out);
        first = false;
      }
    } else {
      *out += pad + "-";
      EmitItem(item, indent, out);
    }
  }
}

}  // namespace

std::string ToYaml(const json& tree) {
  std::string out;
  Emit(tree, 0, &out);
  return out;
}

}  // namespace gpushare::tools
