// DevicePlugin (see plugin.h) and its gRPC endpoints.
#include "plugin.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "common/protocol/protocol.h"
#include "deviceplugin_v1beta1.grpc.pb.h"
#include "podresources_v1.grpc.pb.h"

namespace gpushare::k8s {

namespace {

constexpr char kApiVersion[] = "v1beta1";
constexpr int kStatusTimeoutMs = 2000;
constexpr auto kRpcDeadline = std::chrono::seconds(5);
constexpr auto kWatchWake = std::chrono::milliseconds(500);  // how often a stream looks for cancellation

void Log(const std::string& line) { std::fprintf(stderr, "gpushare-device-plugin: %s\n", line.c_str()); }

// The kubelet's socket as a file: a restarted kubelet makes a new one (another inode).
std::string FileIdentity(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_ctim.tv_sec) + "." +
         std::to_string(st.st_ctim.tv_nsec);
}

// gpushare.io/vgpu-memory -> gpushare-vgpu-memory.sock
std::string EndpointName(const std::string& resource) {
  std::string name = "gpushare-" + resource.substr(resource.find('/') + 1);
  for (char& c : name)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') c = '_';
  return name + ".sock";
}

// The node as the broker reports it, or nullopt with `error` (no broker, no status).
std::optional<NodeView> AskStatus(const std::string& socket, std::string* error) {
  auto reply = AskBroker(socket, static_cast<unsigned>(protocol::Type::kStatus), "", kStatusTimeoutMs, error);
  if (!reply) return std::nullopt;
  if (reply->type != static_cast<unsigned>(protocol::Type::kStatusReply)) {
    *error = "unexpected reply to a status request";
    return std::nullopt;
  }
  return ParseStatus(reply->text, error);
}

std::unique_ptr<grpc::ClientContext> Deadline() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  return context;
}

}  // namespace

// One resource's DevicePlugin service on its own Unix socket.
class Endpoint final : public v1beta1::DevicePlugin::Service {
 public:
  Endpoint(DevicePlugin& plugin, Resource resource, std::string path)
      : plugin_(plugin), resource_(std::move(resource)), path_(std::move(path)) {}
  ~Endpoint() override { Stop(); }

  bool Start(std::string* error) {
    unlink(path_.c_str());  // a socket left by an earlier run
    grpc::ServerBuilder builder;
    int bound = 0;
    builder.AddListeningPort("unix://" + path_, grpc::InsecureServerCredentials(), &bound);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    if (!server_ || bound == 0) {
      *error = "cannot serve " + resource_.name + " on " + path_;
      server_.reset();
      return false;
    }
    return true;
  }
  void Stop() {
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    server_.reset();
    unlink(path_.c_str());
  }
  const Resource& resource() const { return resource_; }
  const std::string& path() const { return path_; }

  grpc::Status GetDevicePluginOptions(grpc::ServerContext*, const v1beta1::Empty*,
                                      v1beta1::DevicePluginOptions* options) override {
    options->set_pre_start_required(false);
    options->set_get_preferred_allocation_available(false);  // any healthy devices do
    return grpc::Status::OK;
  }

  grpc::Status ListAndWatch(grpc::ServerContext* context, const v1beta1::Empty*,
                            grpc::ServerWriter<v1beta1::ListAndWatchResponse>* writer) override {
    uint64_t seen = 0;
    while (!context->IsCancelled()) {
      const DevicePlugin::Snapshot now = plugin_.WaitDevices(resource_.name, seen, kWatchWake);
      if (now.closing) break;
      if (now.version == seen) continue;
      seen = now.version;
      v1beta1::ListAndWatchResponse response;
      for (const Device& d : now.devices) {
        v1beta1::Device* device = response.add_devices();
        device->set_id(d.id);
        device->set_health(d.healthy ? kHealthy : kUnhealthy);
      }
      if (!writer->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status GetPreferredAllocation(grpc::ServerContext*, const v1beta1::PreferredAllocationRequest*,
                                      v1beta1::PreferredAllocationResponse*) override {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "gpushare-device-plugin has no preferred allocation");
  }

  grpc::Status Allocate(grpc::ServerContext*, const v1beta1::AllocateRequest* request,
                        v1beta1::AllocateResponse* response) override {
    for (const v1beta1::ContainerAllocateRequest& container : request->container_requests()) {
      const std::vector<std::string> ids(container.devices_ids().begin(), container.devices_ids().end());
      ContainerEdits edits;
      std::string error;
      if (!plugin_.AllocateContainer(resource_, ids, &edits, &error)) {
        Log("Allocate of " + resource_.name + " refused: " + error);
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, error);
      }
      v1beta1::ContainerAllocateResponse* out = response->add_container_responses();
      for (const auto& [key, value] : edits.env) (*out->mutable_envs())[key] = value;
      for (const Mount& m : edits.mounts) {
        v1beta1::Mount* mount = out->add_mounts();
        mount->set_container_path(m.container_path);
        mount->set_host_path(m.host_path);
        mount->set_read_only(m.read_only);
      }
      for (const std::string& name : edits.cdi_devices) out->add_cdi_devices()->set_name(name);
    }
    return grpc::Status::OK;
  }

  grpc::Status PreStartContainer(grpc::ServerContext*, const v1beta1::PreStartContainerRequest*,
                                 v1beta1::PreStartContainerResponse*) override {
    return grpc::Status::OK;
  }

 private:
  DevicePlugin& plugin_;
  Resource resource_;
  std::string path_;
  std::unique_ptr<grpc::Server> server_;
};

DevicePlugin::DevicePlugin(PluginConfig config, SocketAdmin& admin)
    : config_(std::move(config)), admin_(admin), nvml_(config_.nvml_library) {}

DevicePlugin::~DevicePlugin() { StopEndpoints(); }

void DevicePlugin::Step() {
  Poll();
  ServeIfNeeded();
  Reconcile();
}

void DevicePlugin::Poll() {
  std::string error;
  std::optional<NodeView> seen = AskStatus(config_.broker_socket, &error);
  std::vector<int> gpus;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!polled_ || seen.has_value() != health_.broker_up)
      Log(seen ? "the broker at " + config_.broker_socket + " answers"
               : "the broker at " + config_.broker_socket + " does not answer (" + error + "): devices unhealthy");
    polled_ = true;
    if (seen) Adopt(std::move(*seen));
    for (const NodeView::Gpu& g : node_.gpus) gpus.push_back(g.index);
  }
  // Outside the lock: NVML may be slow, and ListAndWatch streams wait on it.
  Publish(NodeHealth{seen.has_value(), nvml_.Check(gpus)});
}

void DevicePlugin::Adopt(NodeView node) {
  std::string warning;
  resources_ = Resources(node, config_.resources, &warning);
  if (warning != last_warning_ && !warning.empty()) Log(warning);
  last_warning_ = warning;
  node_ = std::move(node);
  node_known_ = true;
}

void DevicePlugin::Publish(const NodeHealth& health) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [gpu, ok] : health.gpu_ok)
    if (ok != health_.Gpu(gpu))
      Log("GPU " + std::to_string(gpu) + (ok ? " answers NVML again" : " lost in NVML: its devices unhealthy"));
  health_ = health;
  std::map<std::string, std::vector<Device>> devices;
  for (const Resource& r : resources_) devices[r.name] = Devices(r, node_, config_.resources, health_);
  if (devices == devices_) return;
  devices_ = std::move(devices);
  ++version_;
  changed_.notify_all();
}

DevicePlugin::Snapshot DevicePlugin::WaitDevices(const std::string& resource, uint64_t seen,
                                                 std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, timeout, [&] { return closing_ || version_ != seen; });
  auto it = devices_.find(resource);
  return {version_, it != devices_.end() ? it->second : std::vector<Device>{}, closing_};
}

void DevicePlugin::ServeIfNeeded() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!node_known_) return;  // nothing to advertise before the broker answered once
    for (const Resource& r : resources_) names.push_back(r.name);
  }
  const std::string kubelet = FileIdentity(config_.plugin_dir + "/kubelet.sock");
  if (kubelet.empty()) return;  // no kubelet (yet): what is served stays
  bool ours_gone = false;
  for (const auto& e : endpoints_) ours_gone |= FileIdentity(e->path()).empty();
  if (kubelet == served_kubelet_ && names == served_resources_ && !ours_gone) return;
  if (!served_kubelet_.empty())
    Log(kubelet != served_kubelet_ ? "the kubelet restarted: registering again"
        : ours_gone                ? "our socket was removed: serving and registering again"
                                   : "the resources changed: serving and registering again");
  served_kubelet_ = Serve() ? kubelet : "";
  served_resources_ = names;
}

void DevicePlugin::StopEndpoints() {
  if (endpoints_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;  // ends every ListAndWatch stream
    changed_.notify_all();
  }
  endpoints_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  closing_ = false;
}

bool DevicePlugin::Serve() {
  StopEndpoints();
  std::vector<Resource> resources;
  {
    std::lock_guard<std::mutex> lock(mu_);
    resources = resources_;
  }
  for (const Resource& r : resources) {
    auto endpoint = std::make_unique<Endpoint>(*this, r, config_.plugin_dir + "/" + EndpointName(r.name));
    std::string error;
    if (!endpoint->Start(&error)) {
      Log(error);
      StopEndpoints();
      return false;
    }
    endpoints_.push_back(std::move(endpoint));
  }
  auto channel =
      grpc::CreateChannel("unix://" + config_.plugin_dir + "/kubelet.sock", grpc::InsecureChannelCredentials());
  auto registration = v1beta1::Registration::NewStub(channel);
  for (const auto& e : endpoints_) {
    v1beta1::RegisterRequest request;
    request.set_version(kApiVersion);
    request.set_endpoint(EndpointName(e->resource().name));
    request.set_resource_name(e->resource().name);
    request.mutable_options()->set_pre_start_required(false);
    request.mutable_options()->set_get_preferred_allocation_available(false);
    v1beta1::Empty reply;
    const grpc::Status status = registration->Register(Deadline().get(), request, &reply);
    if (!status.ok()) {
      Log("the kubelet refused " + e->resource().name + ": " + status.error_message());
      return false;
    }
    Log("registered " + e->resource().name + " (" + e->path() + ")");
  }
  return true;
}

std::string DevicePlugin::NewSocketName() {
  // Unique across the plugin's restarts too: its start time and a count.
  static const long started = static_cast<long>(time(nullptr));
  return "k8s-" + std::to_string(started) + "-" + std::to_string(next_socket_++);
}

bool DevicePlugin::AllocateContainer(const Resource& resource, const std::vector<std::string>& ids,
                                     ContainerEdits* edits, std::string* error) {
  NodeView node;
  {
    std::lock_guard<std::mutex> lock(mu_);
    node = node_;
  }
  // The IDs first, so that a bad request makes no socket.
  EditOptions given = config_.edits;
  given.socket_host = "-";
  if (!EditsFor(resource, node, config_.resources, ids, given, error)) return false;

  std::string name;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    name = NewSocketName();
  }
  auto host = admin_.Create(name, error);
  if (!host) return false;
  given.socket_host = *host;
  *edits = *EditsFor(resource, node, config_.resources, ids, given, error);

  // Devices the kubelet grants again were freed by the container that had them: its socket goes.
  std::vector<std::string> superseded;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    const std::set<std::string> granted(ids.begin(), ids.end());
    std::erase_if(allocations_, [&](const Allocation& a) {
      const bool overlaps = a.resource == resource.name &&
                            std::any_of(a.ids.begin(), a.ids.end(), [&](auto& id) { return granted.count(id); });
      if (overlaps) superseded.push_back(a.socket_name);
      return overlaps;
    });
    allocations_.push_back({name, resource.name, granted, std::chrono::steady_clock::now(), ""});
  }
  for (const std::string& old : superseded) {
    std::string why;
    if (!admin_.Remove(old, &why)) Log("cannot remove socket " + old + ": " + why);
  }
  Log("allocated " + resource.name + " socket " + name + " (" + *host + "), tenant once the pod shows");
  return true;
}

void DevicePlugin::Reconcile() {
  std::vector<Allocation> mine;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    mine = allocations_;
  }
  if (mine.empty()) return;

  // Which pod holds which devices. The kubelet records a pod's devices after our
  // Allocate answered, so a new socket is bound on a later pass.
  auto channel = grpc::CreateChannel("unix://" + config_.pod_resources_socket, grpc::InsecureChannelCredentials());
  v1::ListPodResourcesResponse list;
  const grpc::Status status =
      v1::PodResourcesLister::NewStub(channel)->List(Deadline().get(), v1::ListPodResourcesRequest(), &list);
  if (!status.ok()) Log("pod resources at " + config_.pod_resources_socket + ": " + status.error_message());
  std::map<std::pair<std::string, std::set<std::string>>, std::string> holder;  // (resource, ids) -> namespace
  for (const v1::PodResources& pod : list.pod_resources())
    for (const v1::ContainerResources& container : pod.containers())
      for (const v1::ContainerDevices& devices : container.devices())
        holder[{devices.resource_name(), {devices.device_ids().begin(), devices.device_ids().end()}}] =
            pod.namespace_();

  const auto now = std::chrono::steady_clock::now();
  for (Allocation& a : mine) {
    auto it = holder.find({a.resource, a.ids});
    std::string error;
    bool remove = false;
    if (a.tenant.empty() && it != holder.end()) {
      if (admin_.Bind(a.socket_name, it->second, &error)) {
        Log("socket " + a.socket_name + " bound to tenant " + it->second);
        a.tenant = it->second;
      } else {
        Log("cannot bind socket " + a.socket_name + " to tenant " + it->second + ": " + error);
      }
    } else if (a.tenant.empty()) {
      remove = now - a.made > config_.bind_timeout;
      if (remove) Log("no pod shows socket " + a.socket_name + "'s devices: removing it");
    } else if (status.ok()) {  // bound: its pod gone (a failed List proves nothing)
      a.absent = it == holder.end() ? a.absent + 1 : 0;
      remove = a.absent >= config_.gone_after;
      if (remove) Log("the pod of socket " + a.socket_name + " (tenant " + a.tenant + ") is gone: removing it");
    }
    if (remove && !admin_.Remove(a.socket_name, &error)) Log("cannot remove socket " + a.socket_name + ": " + error);
    std::lock_guard<std::mutex> lock(alloc_mu_);
    // Allocate may have superseded it meanwhile: then it is gone already.
    auto kept = std::find_if(allocations_.begin(), allocations_.end(),
                             [&](const Allocation& k) { return k.socket_name == a.socket_name; });
    if (kept == allocations_.end()) continue;
    if (remove)
      allocations_.erase(kept);
    else
      *kept = a;
  }
}

}  // namespace gpushare::k8s
