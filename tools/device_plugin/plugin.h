// gpushare-device-plugin's engine: one kubelet device plugin endpoint (gRPC,
// v1beta1) per resource, registered with the kubelet and registered again when the
// kubelet restarts; devices and their health from the broker's status and NVML, polled;
// Allocate answers with the container's edits and a fresh broker socket that is bound
// to the pod's namespace once the kubelet's pod resources show the pod. It holds no
// policy: what a vGPU is and who may have it stay the broker's (docs/kubernetes.md).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "node_view.h"
#include "nvml_probe.h"
#include "socket_admin.h"

namespace gpushare::k8s {

struct PluginConfig {
  std::string plugin_dir = "/var/lib/kubelet/device-plugins";  // kubelet.sock and ours
  std::string pod_resources_socket = "/var/lib/kubelet/pod-resources/kubelet.sock";
  std::string broker_socket;
  std::string nvml_library = "libnvidia-ml.so.1";  // "": broker health only
  ResourceOptions resources;
  EditOptions edits;  // socket_host is filled per container
  std::chrono::milliseconds poll{2000};
  std::chrono::seconds bind_timeout{120};  // an allocation no pod shows by then loses its socket
  int gone_after = 2;                      // a bound socket goes after this many passes without its pod
};

class Endpoint;

class DevicePlugin {
 public:
  DevicePlugin(PluginConfig config, SocketAdmin& admin);
  ~DevicePlugin();
  DevicePlugin(const DevicePlugin&) = delete;
  DevicePlugin& operator=(const DevicePlugin&) = delete;

  // One pass of the loop: poll the broker and NVML, publish device changes to the
  // ListAndWatch streams, serve and register again if the kubelet restarted or the
  // resources changed, bind new sockets to their pod's namespace, remove stale ones.
  void Step();

  // What the endpoints call (from gRPC's threads).
  struct Snapshot {
    uint64_t version = 0;
    std::vector<Device> devices;
    bool closing = false;
  };
  // Waits up to `timeout` for a version newer than `seen` (or closing) and returns the
  // devices of `resource` as they are then.
  Snapshot WaitDevices(const std::string& resource, uint64_t seen, std::chrono::milliseconds timeout);
  // The edits for one container, with its new socket; false with `error` if not.
  bool AllocateContainer(const Resource& resource, const std::vector<std::string>& ids, ContainerEdits* edits,
                         std::string* error);

 private:
  struct Allocation {
    std::string socket_name;
    std::string resource;
    std::set<std::string> ids;
    std::chrono::steady_clock::time_point made;
    std::string tenant;  // "" until bound
    int absent = 0;      // bound: passes in a row that no pod showed its devices
  };

  void Poll();                             // broker status and NVML -> node_, health_, devices_
  void Adopt(NodeView node);               // a status the broker sent (mu_ held)
  void Publish(const NodeHealth& health);  // new devices, if changed, to the streams
  void ServeIfNeeded();                    // kubelet restart, resources changed, our socket gone
  bool Serve();                            // (re)start every endpoint and register each
  void StopEndpoints();
  void Reconcile();  // pod resources -> bind new sockets, remove those of pods gone
  std::string NewSocketName();

  PluginConfig config_;
  SocketAdmin& admin_;
  NvmlProbe nvml_;

  std::mutex mu_;  // node_, resources_, devices_, version_, closing_
  std::condition_variable changed_;
  NodeView node_;
  bool node_known_ = false;
  bool polled_ = false;
  std::string last_warning_;  // what Resources said last, logged when it changes
  NodeHealth health_;
  std::vector<Resource> resources_;
  std::map<std::string, std::vector<Device>> devices_;
  uint64_t version_ = 1;
  bool closing_ = false;

  std::vector<std::unique_ptr<Endpoint>> endpoints_;  // the loop's thread only
  std::string served_kubelet_;                        // identity of the kubelet.sock registered with
  std::vector<std::string> served_resources_;

  std::mutex alloc_mu_;  // allocations_, next_socket_
  std::vector<Allocation> allocations_;
  uint64_t next_socket_ = 0;
};

}  // namespace gpushare::k8s
