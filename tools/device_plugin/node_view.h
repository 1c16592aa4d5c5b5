// What the device plugin advertises and hands out, as pure functions of the broker's
// status JSON (broker/core/status_report.cpp): the resources, their devices with
// health, and the container edits (env, mounts, CDI names) for granted devices. No
// gRPC and no I/O here, so all of it is unit-tested (tests/unit/device_plugin_test.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gpushare::k8s {

inline constexpr char kHealthy[] = "Healthy";
inline constexpr char kUnhealthy[] = "Unhealthy";
inline constexpr char kResourcePrefix[] = "gpushare.io/";

// The node as the broker reports it, reduced to what the kubelet is told.
struct NodeView {
  struct Gpu {
    int index = 0;
    uint64_t memory_total = 0;
  };
  struct Profile {
    std::string name;
    uint64_t memory_bytes = 0;
  };
  std::vector<Gpu> gpus;
  std::vector<Profile> profiles;
  // Instances of (profile, GPU) that pods may take: the broker's total less those
  // reserved for the system (the [reserved] section of its config).
  std::map<std::pair<std::string, int>, int> instances;

  const Profile* FindProfile(const std::string& name) const;
};

// Parses the broker's status reply; nullopt with `error` on a reply that is not a
// status (not JSON, no gpus[]). A broker without vGPU profiles gives no profiles.
std::optional<NodeView> ParseStatus(const std::string& status_json, std::string* error);

// How the vGPU instances become resources. kSingle: one resource `gpushare.io/vgpu`
// for one profile (the node's only one, or `profile`); kMixed: one resource per
// profile, `gpushare.io/vgpu-<profile>` (as NVIDIA's plugin does for MIG), because a
// pod asks for a count of one resource and cannot say which profile it wants.
enum class Strategy { kSingle, kMixed };

struct ResourceOptions {
  Strategy strategy = Strategy::kSingle;
  std::string profile;                      // kSingle: the profile; "": the node's only one
  uint64_t memory_unit_bytes = 1ull << 30;  // one gpushare.io/vgpu-memory device
};

struct Resource {
  enum class Kind { kVgpu, kMemory };
  std::string name;  // gpushare.io/vgpu, gpushare.io/vgpu-memory, ...
  Kind kind = Kind::kVgpu;
  std::string profile;  // kVgpu: whose instances
};

// The resources to serve for `node`: the vGPU one(s) and gpushare.io/vgpu-memory.
// `warning` says why no vGPU resource is served (no profile, an ambiguous one).
std::vector<Resource> Resources(const NodeView& node, const ResourceOptions& options, std::string* warning);

struct Device {
  std::string id;
  int gpu = 0;
  bool healthy = true;
  bool operator==(const Device&) const = default;
};

// Health of what the devices stand on: the broker answering, and per GPU index what
// NVML says (a GPU missing from `gpu_ok` is taken as fine: no NVML on this node).
struct NodeHealth {
  bool broker_up = false;
  std::map<int, bool> gpu_ok;
  bool Gpu(int index) const;
};

// The devices of `resource`: vGPU instances `<profile>-<gpu>-<n>`, memory units
// `mem-<gpu>-<n>`; healthy when the broker is up and their GPU is fine.
std::vector<Device> Devices(const Resource& resource, const NodeView& node, const ResourceOptions& options,
                            const NodeHealth& health);

// The GPU a device ID names (its second-to-last dash-separated field), or nullopt.
std::optional<int> DeviceGpu(const std::string& id);

// What a container is given: where the library and its socket come from on the host
// and where they appear in it, and how it reaches the GPUs.
struct EditOptions {
  std::string library_host;
  std::string library_container = "/usr/lib/gpushare/libgpushare.so";
  std::string socket_host;  // the per-container socket the broker made
  std::string socket_container = "/run/gpushare/broker.sock";
  std::string nvidia_visible_devices = "all";  // NVIDIA_VISIBLE_DEVICES; "": not set
  bool cdi = false;  // also name the CDI devices (gpushare.io/vgpu=<profile>-<gpu>) of gpushare-cdi's spec
};

struct Mount {
  std::string container_path, host_path;
  bool read_only = true;
  bool operator==(const Mount&) const = default;
};

struct ContainerEdits {
  std::map<std::string, std::string> env;
  std::vector<Mount> mounts;
  std::vector<std::string> cdi_devices;
};

// The edits for one container granted `ids` of `resource`; nullopt with `error` for
// an ID this resource does not have (a request the kubelet should not make).
std::optional<ContainerEdits> EditsFor(const Resource& resource, const NodeView& node, const ResourceOptions& options,
                                       const std::vector<std::string>& ids, const EditOptions& edit,
                                       std::string* error);

// A byte count as GPUSHARE_MEMORY_LIMIT reads it, in the largest binary unit that
// divides it: "8GiB", "512MiB", "1000".
std::string LimitText(uint64_t bytes);

}  // namespace gpushare::k8s
