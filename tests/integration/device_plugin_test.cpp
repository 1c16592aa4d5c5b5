// gpushare-device-plugin against a fake kubelet: a real gRPC Registration server and a
// PodResources server on Unix sockets in a temporary directory, and a client that calls
// ListAndWatch and Allocate on the plugin's socket; a broker on simgpu behind it.
//
// Most tests reach the broker through AdminProxy, which records each SocketAdmin
// request (what the plugin asked, not only what came of it) and forwards every request
// to the real broker. RealBrokerSocket goes without it: a shim client comes through
// the container's socket the broker made.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <grpcpp/grpcpp.h>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "deviceplugin_v1beta1.grpc.pb.h"
#include "podresources_v1.grpc.pb.h"
#include "simgpu_control.h"
#include "test_broker.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing_support::Child;
using testing_support::TestBroker;
namespace proto = gpushare::protocol;

constexpr char kNode[] =
    R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}]})";
constexpr char kConfig[] = "[profiles.q8g]\nmemory = \"8GiB\"\ncompute = 0.5\n";
// Health is polled every 200 ms; a change must reach ListAndWatch well within this.
constexpr auto kBound = 15s;
constexpr int kNvmlErrorGpuIsLost = 15;

// Polls `done` until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

// A listening Unix socket served by a thread, one request per connection.
class AdminProxy {
 public:
  AdminProxy(std::string path, std::string broker) : path_(std::move(path)), broker_(std::move(broker)) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    unlink(path_.c_str());
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd_, 16) != 0) std::abort();
    thread_ = std::thread([this] { Serve(); });
  }
  ~AdminProxy() {
    stop_ = true;
    thread_.join();
    close(fd_);
    unlink(path_.c_str());
  }
  std::vector<json> Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // The requests of `op` so far.
  std::vector<json> Ops(const std::string& op) {
    std::vector<json> out;
    for (const json& r : Requests())
      if (r.value("op", "") == op) out.push_back(r);
    return out;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      std::vector<uint8_t> buffer;
      std::string error;
      if (auto m = proto::Receive(client, &buffer, 2000, &error)) {
        const std::string text(m->payload.begin(), m->payload.end());
        if (m->type == proto::Type::kSocketAdmin) Record(text);
        if (auto reply = Forward(m->type, text)) proto::SendAll(client, *reply);
      }
      close(client);
    }
  }
  void Record(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(json::parse(text, nullptr, false));
  }
  // The broker's reply, or nothing when it is not there (the connection just closes).
  std::optional<std::vector<uint8_t>> Forward(proto::Type type, const std::string& text) {
    std::string error;
    const int fd = proto::ConnectUnix(broker_, &error);
    if (fd < 0) return std::nullopt;
    std::vector<uint8_t> buffer;
    std::optional<proto::Message> reply;
    if (proto::SendAll(fd, proto::EncodeText(type, text))) reply = proto::Receive(fd, &buffer, 2000, &error);
    close(fd);
    if (!reply) return std::nullopt;
    return proto::EncodeText(reply->type, std::string(reply->payload.begin(), reply->payload.end()));
  }

  std::string path_, broker_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<json> requests_;
};

// The kubelet's side: Registration on <dir>/kubelet.sock and PodResourcesLister.
class FakeKubelet final : public v1beta1::Registration::Service, public v1::PodResourcesLister::Service {
 public:
  FakeKubelet(std::string plugin_dir, std::string pod_resources)
      : plugin_dir_(std::move(plugin_dir)), pod_resources_(std::move(pod_resources)) {
    Start();
  }
  ~FakeKubelet() override { Stop(); }

  void Start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix://" + plugin_dir_ + "/kubelet.sock", grpc::InsecureServerCredentials());
    builder.AddListeningPort("unix://" + pod_resources_, grpc::InsecureServerCredentials());
    builder.RegisterService(static_cast<v1beta1::Registration::Service*>(this));
    builder.RegisterService(static_cast<v1::PodResourcesLister::Service*>(this));
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_);
  }
  // As a kubelet restarting does: its socket and the plugins' sockets go.
  void Restart() {
    Stop();
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(plugin_dir_, ec))
      std::filesystem::remove(entry.path(), ec);
    Start();
  }
  void Stop() {
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
    server_->Wait();
    server_.reset();
  }

  grpc::Status Register(grpc::ServerContext*, const v1beta1::RegisterRequest* request, v1beta1::Empty*) override {
    std::lock_guard<std::mutex> lock(mu_);
    registered_.push_back(*request);
    return grpc::Status::OK;
  }
  grpc::Status List(grpc::ServerContext*, const v1::ListPodResourcesRequest*,
                    v1::ListPodResourcesResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    *response = pods_;
    return grpc::Status::OK;
  }

  void ClearPods() {
    std::lock_guard<std::mutex> lock(mu_);
    pods_.Clear();
  }
  std::vector<v1beta1::RegisterRequest> Registered() {
    std::lock_guard<std::mutex> lock(mu_);
    return registered_;
  }
  // A pod of `ns` whose container holds `ids` of `resource`.
  void AddPod(const std::string& ns, const std::string& name, const std::string& resource,
              const std::vector<std::string>& ids) {
    std::lock_guard<std::mutex> lock(mu_);
    v1::PodResources* pod = pods_.add_pod_resources();
    pod->set_name(name);
    pod->set_namespace_(ns);
    v1::ContainerResources* container = pod->add_containers();
    container->set_name("main");
    v1::ContainerDevices* devices = container->add_devices();
    devices->set_resource_name(resource);
    for (const std::string& id : ids) devices->add_device_ids(id);
  }

 private:
  std::string plugin_dir_, pod_resources_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::vector<v1beta1::RegisterRequest> registered_;
  v1::ListPodResourcesResponse pods_;
};

// A ListAndWatch stream read by a thread; the latest list is kept.
class Watch {
 public:
  explicit Watch(const std::string& endpoint)
      : stub_(v1beta1::DevicePlugin::NewStub(
            grpc::CreateChannel("unix://" + endpoint, grpc::InsecureChannelCredentials()))) {
    reader_ = stub_->ListAndWatch(&context_, v1beta1::Empty());
    thread_ = std::thread([this] {
      v1beta1::ListAndWatchResponse response;
      while (reader_->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        latest_ = response;
        ++lists_;
      }
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
    });
  }
  ~Watch() {
    context_.TryCancel();
    thread_.join();
    reader_->Finish();
  }
  // id -> health of the latest list.
  std::map<std::string, std::string> Devices() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, std::string> out;
    for (const auto& d : latest_.devices()) out[d.id()] = d.health();
    return out;
  }
  // Every device listed and of `health` (and at least one listed).
  bool All(const std::string& health) {
    auto devices = Devices();
    return !devices.empty() &&
           std::all_of(devices.begin(), devices.end(), [&](const auto& d) { return d.second == health; });
  }
  bool ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }

 private:
  std::unique_ptr<v1beta1::DevicePlugin::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1beta1::ListAndWatchResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  v1beta1::ListAndWatchResponse latest_;
  int lists_ = 0;
  bool ended_ = false;
};

class DevicePluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/gs-dp-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    std::filesystem::create_directories(plugin_dir());
    std::filesystem::create_directories(dir_ + "/sockets");
    broker_ = std::make_unique<TestBroker>(kNode, kConfig, dir_ + "/sockets");
    proxy_ = std::make_unique<AdminProxy>(dir_ + "/proxy.sock", broker_->socket());
    kubelet_ = std::make_unique<FakeKubelet>(plugin_dir(), dir_ + "/pod-resources.sock");
  }
  void TearDown() override {
    if (plugin_) {
      plugin_->Kill(SIGTERM);
      const int status = plugin_->Wait();
      const std::string out = plugin_->ReadAll();
      if (HasFailure()) std::fprintf(stderr, "gpushare-device-plugin said:\n%s\n", out.c_str());
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the plugin did not stop cleanly on SIGTERM";
    }
    plugin_.reset();
    kubelet_.reset();
    proxy_.reset();
    broker_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // The plugin, on the proxy's socket or (`direct`) on the broker's own.
  void StartPlugin(std::vector<std::string> extra = {}, bool direct = false) {
    std::vector<std::string> argv = {PLUGIN_PATH,
                                     "--socket",
                                     direct ? broker_->socket() : dir_ + "/proxy.sock",
                                     "--plugin-dir",
                                     plugin_dir(),
                                     "--pod-resources",
                                     dir_ + "/pod-resources.sock",
                                     "--library",
                                     GPUSHARE_LIB,
                                     "--nvml",
                                     std::string(SIMGPU_DIR) + "/libnvidia-ml.so.1",
                                     "--poll-ms",
                                     "200",
                                     // The broker may give its sockets only our own ids unless we are root.
                                     "--socket-owner",
                                     std::to_string(geteuid()) + ":" + std::to_string(getegid())};
    argv.insert(argv.end(), extra.begin(), extra.end());
    plugin_ = std::make_unique<Child>(argv, broker_->node().Env());
  }
  // Registration of both resources, seen by the kubelet.
  bool Registered(size_t count = 2) {
    return Eventually([&] { return kubelet_->Registered().size() >= count; }, kBound);
  }
  std::string plugin_dir() const { return dir_ + "/plugins"; }
  std::string endpoint(const std::string& name) const { return plugin_dir() + "/" + name; }
  std::string container_socket(const std::string& name) const {
    return dir_ + "/sockets/containers/" + name + ".sock";
  }

  std::string dir_;
  std::unique_ptr<TestBroker> broker_;
  std::unique_ptr<AdminProxy> proxy_;
  std::unique_ptr<FakeKubelet> kubelet_;
  std::unique_ptr<Child> plugin_;
};

TEST_F(DevicePluginTest, RegistersEachResourceAndListsItsDevicesHealthy) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  std::map<std::string, std::string> endpoints;
  for (const auto& r : kubelet_->Registered()) {
    EXPECT_EQ(r.version(), "v1beta1");
    EXPECT_FALSE(r.options().get_preferred_allocation_available());
    endpoints[r.resource_name()] = r.endpoint();
  }
  EXPECT_EQ(endpoints, (std::map<std::string, std::string>{{"gpushare.io/vgpu", "gpushare-vgpu.sock"},
                                                           {"gpushare.io/vgpu-memory", "gpushare-vgpu-memory.sock"}}));

  // Two 16 GiB GPUs: two q8g instances on each, sixteen 1 GiB units on each.
  Watch vgpu(endpoint("gpushare-vgpu.sock"));
  ASSERT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound));
  EXPECT_EQ(vgpu.Devices(),
            (std::map<std::string, std::string>{
                {"q8g-0-0", "Healthy"}, {"q8g-0-1", "Healthy"}, {"q8g-1-0", "Healthy"}, {"q8g-1-1", "Healthy"}}));
  Watch memory(endpoint("gpushare-vgpu-memory.sock"));
  ASSERT_TRUE(Eventually([&] { return memory.All("Healthy"); }, kBound));
  EXPECT_EQ(memory.Devices().size(), 32u);
  EXPECT_EQ(memory.Devices().count("mem-1-15"), 1u);

  auto stub = v1beta1::DevicePlugin::NewStub(
      grpc::CreateChannel("unix://" + endpoint("gpushare-vgpu.sock"), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1beta1::DevicePluginOptions options;
  ASSERT_TRUE(stub->GetDevicePluginOptions(&context, v1beta1::Empty(), &options).ok());
  EXPECT_FALSE(options.get_preferred_allocation_available());
  EXPECT_FALSE(options.pre_start_required());
}

TEST_F(DevicePluginTest, BrokerKilledMakesDevicesUnhealthyAndRestartedHealthyAgain) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  Watch vgpu(endpoint("gpushare-vgpu.sock"));
  ASSERT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound));

  broker_->Kill();
  EXPECT_TRUE(Eventually([&] { return vgpu.All("Unhealthy"); }, kBound)) << "still healthy with no broker";
  EXPECT_EQ(vgpu.Devices().size(), 4u);  // still listed: the kubelet keeps counting them, none schedulable

  broker_->Start();
  EXPECT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound)) << "not healthy again after the restart";
}

TEST_F(DevicePluginTest, GpuLostInNvmlMakesItsDevicesUnhealthy) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  Watch vgpu(endpoint("gpushare-vgpu.sock"));
  ASSERT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound));

  // NVML answers "GPU is lost" to the plugin's memory queries, for every GPU.
  ASSERT_EQ(simgpuControlOpen(broker_->node().config_path().c_str(), broker_->node().name().c_str()), 0);
  ASSERT_EQ(simgpuControlFailCall("nvmlDeviceGetMemoryInfo", kNvmlErrorGpuIsLost, SIMGPU_CONTROL_UNTIL_CLEARED,
                                  plugin_->pid()),
            0);
  EXPECT_TRUE(Eventually([&] { return vgpu.All("Unhealthy"); }, kBound));
  EXPECT_GT(simgpuControlFaultHits(), 0);

  simgpuControlClearFaults();
  EXPECT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound));
}

TEST_F(DevicePluginTest, RegistersAgainWhenTheKubeletRestarts) {
  StartPlugin();
  ASSERT_TRUE(Registered(2));
  kubelet_->Restart();
  ASSERT_TRUE(Registered(4)) << "not registered again after the kubelet restarted";
  // The new endpoints serve.
  Watch vgpu(endpoint("gpushare-vgpu.sock"));
  EXPECT_TRUE(Eventually([&] { return vgpu.All("Healthy"); }, kBound));
}

TEST_F(DevicePluginTest, MixedStrategyRegistersEachProfileAndANewOneAfterAReload) {
  StartPlugin({"--strategy", "mixed"});
  ASSERT_TRUE(Registered(2));
  std::set<std::string> names;
  for (const auto& r : kubelet_->Registered()) names.insert(r.resource_name());
  EXPECT_EQ(names, (std::set<std::string>{"gpushare.io/vgpu-q8g", "gpushare.io/vgpu-memory"}));

  // The broker's config gains a profile (SIGHUP reload): its resource is served too.
  broker_->WriteConfig(std::string(kConfig) + "[profiles.q4g]\nmemory = \"4GiB\"\ncompute = 0.25\n");
  broker_->process().Kill(SIGHUP);
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& r : kubelet_->Registered())
          if (r.resource_name() == "gpushare.io/vgpu-q4g") return true;
        return false;
      },
      kBound));
  Watch q4g(endpoint("gpushare-vgpu-q4g.sock"));
  ASSERT_TRUE(Eventually([&] { return q4g.All("Healthy"); }, kBound));
  EXPECT_EQ(q4g.Devices().size(), 8u);  // four 4 GiB, quarter-GPU instances on each of two GPUs
}

v1beta1::AllocateResponse Allocate(const std::string& endpoint, const std::vector<std::string>& ids,
                                   grpc::Status* status) {
  auto stub =
      v1beta1::DevicePlugin::NewStub(grpc::CreateChannel("unix://" + endpoint, grpc::InsecureChannelCredentials()));
  v1beta1::AllocateRequest request;
  auto* container = request.add_container_requests();
  for (const std::string& id : ids) container->add_devices_ids(id);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  v1beta1::AllocateResponse response;
  *status = stub->Allocate(&context, request, &response);
  return response;
}

TEST_F(DevicePluginTest, AllocateHandsTheLibrarySocketAndRequestThenBindsTheTenantFromTheNamespace) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the broker gives the socket to uid 1000 (CI runs as root)";
  StartPlugin({"--cdi", "--socket-owner", "1000:2000", "--socket-mode", "0660"});
  ASSERT_TRUE(Registered());
  grpc::Status status;
  const auto response = Allocate(endpoint("gpushare-vgpu.sock"), {"q8g-1-0"}, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.container_responses_size(), 1);
  const auto& c = response.container_responses(0);

  // A fresh socket, made unbound: the kubelet has not said which pod this is.
  const std::vector<json> creates = proxy_->Ops("create");
  ASSERT_EQ(creates.size(), 1u);
  EXPECT_TRUE(creates[0]["tenant"].is_null());
  EXPECT_EQ(creates[0]["uid"], 1000);
  EXPECT_EQ(creates[0]["gid"], 2000);
  EXPECT_EQ(creates[0]["mode"], "0660");
  const std::string name = creates[0]["name"];
  const std::string host_socket = container_socket(name);
  struct stat st {};
  ASSERT_EQ(stat(host_socket.c_str(), &st), 0) << host_socket;
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 2000u);
  EXPECT_EQ(st.st_mode & 07777, 0660u);

  const std::map<std::string, std::string> env(c.envs().begin(), c.envs().end());
  EXPECT_EQ(env, (std::map<std::string, std::string>{{"LD_PRELOAD", "/usr/lib/gpushare/libgpushare.so"},
                                                     {"GPUSHARE_SOCKET", "/run/gpushare/broker.sock"},
                                                     {"GPUSHARE_PROFILE", "q8g"},
                                                     {"GPUSHARE_MEMORY_LIMIT", "8GiB"},
                                                     {"NVIDIA_VISIBLE_DEVICES", "all"}}));
  std::map<std::string, std::pair<std::string, bool>> mounts;
  for (const auto& m : c.mounts()) mounts[m.container_path()] = {m.host_path(), m.read_only()};
  EXPECT_EQ(mounts, (std::map<std::string, std::pair<std::string, bool>>{
                        {"/usr/lib/gpushare/libgpushare.so", {GPUSHARE_LIB, true}},
                        {"/run/gpushare/broker.sock", {host_socket, true}}}));
  ASSERT_EQ(c.cdi_devices_size(), 1);
  EXPECT_EQ(c.cdi_devices(0).name(), "gpushare.io/vgpu=q8g-1");

  // The kubelet records the pod's devices: the socket is bound to its namespace.
  kubelet_->AddPod("team-a", "trainer-0", "gpushare.io/vgpu", {"q8g-1-0"});
  ASSERT_TRUE(Eventually([&] { return !proxy_->Ops("bind").empty(); }, kBound));
  const std::vector<json> binds = proxy_->Ops("bind");
  ASSERT_EQ(binds.size(), 1u);
  EXPECT_EQ(binds[0], (json{{"op", "bind"}, {"name", name}, {"tenant", "team-a"}}));
  EXPECT_TRUE(proxy_->Ops("remove").empty());
}

TEST_F(DevicePluginTest, ASocketGoesWhenItsPodIsGoneOrItsDevicesAreGrantedAgain) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  grpc::Status status;
  auto allocate = [&] {
    Allocate(endpoint("gpushare-vgpu.sock"), {"q8g-0-1"}, &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return proxy_->Ops("create").back()["name"].get<std::string>();
  };
  // Bound, then its pod ends: the socket is removed.
  const std::string first = allocate();
  kubelet_->AddPod("team-a", "job-1", "gpushare.io/vgpu", {"q8g-0-1"});
  ASSERT_TRUE(Eventually([&] { return proxy_->Ops("bind").size() == 1; }, kBound));
  kubelet_->ClearPods();
  ASSERT_TRUE(Eventually([&] { return proxy_->Ops("remove").size() == 1; }, kBound));
  EXPECT_EQ(proxy_->Ops("remove")[0]["name"], first);

  // The device goes to a pod of another namespace: that tenant, through a new socket.
  const std::string second = allocate();
  EXPECT_NE(second, first);
  kubelet_->AddPod("team-b", "job-2", "gpushare.io/vgpu", {"q8g-0-1"});
  ASSERT_TRUE(Eventually([&] { return proxy_->Ops("bind").size() == 2; }, kBound));
  EXPECT_EQ(proxy_->Ops("bind")[1], (json{{"op", "bind"}, {"name", second}, {"tenant", "team-b"}}));

  // Granted again before the plugin saw the pod go: the old socket goes at once.
  allocate();
  const std::vector<json> removes = proxy_->Ops("remove");
  ASSERT_EQ(removes.size(), 2u);
  EXPECT_EQ(removes[1]["name"], second);
}

TEST_F(DevicePluginTest, MemoryUnitsBecomeTheCap) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  grpc::Status status;
  const auto response = Allocate(endpoint("gpushare-vgpu-memory.sock"), {"mem-0-3", "mem-0-4", "mem-1-0"}, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.container_responses_size(), 1);
  EXPECT_EQ(response.container_responses(0).envs().at("GPUSHARE_MEMORY_LIMIT"), "3GiB");
  EXPECT_EQ(response.container_responses(0).envs().count("GPUSHARE_PROFILE"), 0u);
  EXPECT_EQ(response.container_responses(0).cdi_devices_size(), 0);
}

TEST_F(DevicePluginTest, AllocateRefusesDevicesItDoesNotHaveAndMakesNoSocket) {
  StartPlugin();
  ASSERT_TRUE(Registered());
  grpc::Status status;
  Allocate(endpoint("gpushare-vgpu.sock"), {"q8g-7-0"}, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("q8g-7-0"), std::string::npos) << status.error_message();
  EXPECT_TRUE(proxy_->Ops("create").empty());
}

TEST_F(DevicePluginTest, ASocketNoPodShowsIsRemovedAfterTheBindTimeout) {
  StartPlugin({"--bind-timeout-s", "1"});
  ASSERT_TRUE(Registered());
  grpc::Status status;
  Allocate(endpoint("gpushare-vgpu.sock"), {"q8g-0-1"}, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(proxy_->Ops("create").size(), 1u);
  ASSERT_TRUE(Eventually([&] { return !proxy_->Ops("remove").empty(); }, kBound));
  EXPECT_EQ(proxy_->Ops("remove")[0]["name"], proxy_->Ops("create")[0]["name"]);
  EXPECT_TRUE(proxy_->Ops("bind").empty());
}

// A shim client run with the container's environment, on `socket` (the host side of its mount).
std::unique_ptr<Child> ContainerClient(const TestBroker& broker, const v1beta1::ContainerAllocateResponse& c,
                                       const std::string& socket, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env = broker.ClientEnv(extra);
  for (const auto& [k, v] : c.envs())
    if (k != "LD_PRELOAD" && k != "GPUSHARE_SOCKET") env[k] = v;  // container paths; the host's are set
  env["GPUSHARE_SOCKET"] = socket;
  return std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, env);
}

std::string Ask(Child& c, const std::string& command) {
  c.Send(command + "\n");
  for (;;) {  // the shim may log before the answer: skip its lines
    std::string line = c.ReadLine();
    if (line.rfind("gpushare", 0) != 0) return line;
  }
}

TEST_F(DevicePluginTest, RealBrokerSocketTakesThePodsNamespaceAsTenantAndGoesWithThePod) {
  StartPlugin({}, /*direct=*/true);
  ASSERT_TRUE(Registered());
  grpc::Status status;
  const auto response = Allocate(endpoint("gpushare-vgpu.sock"), {"q8g-1-0"}, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.container_responses_size(), 1);
  const auto& c = response.container_responses(0);
  std::string host_socket;
  for (const auto& m : c.mounts())
    if (m.container_path() == "/run/gpushare/broker.sock") host_socket = m.host_path();
  // The broker made it in its containers/ folder and said where.
  ASSERT_EQ(std::filesystem::path(host_socket).parent_path(), dir_ + "/sockets/containers");
  struct stat st {};
  ASSERT_EQ(stat(host_socket.c_str(), &st), 0) << host_socket;
  ASSERT_TRUE(S_ISSOCK(st.st_mode));

  // Not bound yet: a client through it is refused (it sees no GPU).
  auto early = ContainerClient(*broker_, c, host_socket, {});
  EXPECT_EQ(Ask(*early, "init"), "devices=0 init=CUDA_SUCCESS");

  kubelet_->AddPod("team-a", "trainer-0", "gpushare.io/vgpu", {"q8g-1-0"});
  std::unique_ptr<Child> client;
  const nlohmann::json* seen = nullptr;
  nlohmann::json broker_status;
  // Bound once the plugin polls the pod resources: then a client is tenant team-a without asking.
  ASSERT_TRUE(Eventually(
      [&] {
        client = ContainerClient(*broker_, c, host_socket, {});
        if (Ask(*client, "init") != "devices=1 init=CUDA_SUCCESS") return false;
        broker_status = broker_->Status();
        seen = testing_support::ClientWithPid(broker_status, client->pid());
        return seen != nullptr;
      },
      kBound))
      << broker_->Status().dump();
  EXPECT_EQ((*seen)["tenant"], "team-a");
  EXPECT_EQ((*seen)["devices"][0]["memory_cap"], 8ull << 30);  // its profile, q8g

  // A workload that names another tenant through its socket is refused.
  auto forged = ContainerClient(*broker_, c, host_socket, {{"GPUSHARE_TENANT", "other"}});
  EXPECT_EQ(Ask(*forged, "init"), "devices=0 init=CUDA_SUCCESS");
  EXPECT_EQ(testing_support::ClientWithPid(broker_->Status(), forged->pid()), nullptr);

  // The pod ends: the plugin removes the socket and the broker its file; the client stays.
  kubelet_->ClearPods();
  EXPECT_TRUE(Eventually([&] { return !std::filesystem::exists(host_socket); }, kBound)) << host_socket;
  EXPECT_NE(testing_support::ClientWithPid(broker_->Status(), client->pid()), nullptr);
}

}  // namespace
