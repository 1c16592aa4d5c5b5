// Tenant identity by the socket a client reached (docs/threat-model.md), with a real
// broker on simgpu: a tenant's own socket from the config, containers' sockets made,
// bound and removed by SocketAdmin, GPUSHARE_TENANT only as a request that must match,
// and administration refused to whoever comes through a tenant's or container's socket.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/protocol/channel.h"
#include "test_broker.h"

namespace {

using nlohmann::json;
using testing_support::AsUid;
using testing_support::Child;
using testing_support::ClientWithPid;
using testing_support::HelloFor;
namespace proto = gpushare::protocol;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";
constexpr uint32_t kNobody = 65534;

// A folder of its own for the broker's sockets, removed after.
class SocketDir {
 public:
  SocketDir() {
    static int counter = 0;
    path_ = "/tmp/gs-identity-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    std::filesystem::create_directories(path_);
  }
  ~SocketDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Broker : public testing_support::TestBroker {
 public:
  Broker(const std::string& config, const SocketDir& dir)
      : TestBroker(kOneGpu, "[metering]\nenabled = false\n" + config, dir.path()), dir_(dir.path()) {}

  std::string Admin(const json& request, const std::string& via = "") {
    std::string error;
    return AskAt(via.empty() ? socket() : via, proto::EncodeText(proto::Type::kSocketAdmin, request.dump()), &error)
        .value_or("no answer: " + error);
  }
  json StatusAt(const std::string& path) {
    std::string error;
    auto reply = AskAt(path, proto::EncodeText(proto::Type::kStatus, ""), &error);
    return reply ? json::parse(*reply) : json{{"error", error}};
  }
  // A client with the shim that talks to the broker on `socket`.
  std::unique_ptr<Child> Client(const std::string& socket, const std::map<std::string, std::string>& extra = {}) {
    auto env = ClientEnv(extra);
    env["GPUSHARE_SOCKET"] = socket;
    return std::make_unique<Child>(std::vector<std::string>{CLIENT_PATH}, env);
  }
  std::string TenantSocket(const std::string& tenant) const { return dir_ + "/tenants/" + tenant + ".sock"; }
  std::string ContainerSocket(const std::string& name) const { return dir_ + "/containers/" + name + ".sock"; }
  // Reads the broker's log until a line containing `text` (or 10 s); returns it.
  std::string LogLine(const std::string& text) {
    std::string line;
    while ((line = process().ReadLine(10000)) != "" && line.find(text) == std::string::npos) {
    }
    return line;
  }

 private:
  std::string dir_;
};

std::string Ask(Child& c, const std::string& command) {
  c.Send(command + "\n");
  for (;;) {  // the shim may log before the answer: skip its lines
    std::string line = c.ReadLine();
    if (line.rfind("gpushare", 0) != 0) return line;
  }
}

// A raw registration on `socket` asking for `tenant`: the broker's Welcome.
proto::Welcome HelloAt(const std::string& socket, const std::string& tenant, int* fd_out = nullptr) {
  std::string error;
  int fd = proto::ConnectUnix(socket, &error);
  EXPECT_GE(fd, 0) << error;
  if (fd < 0) return proto::Welcome{};
  proto::SendAll(fd, proto::Encode(proto::Type::kHello, HelloFor(tenant, 0, 0)));
  std::vector<uint8_t> buffer;
  auto m = proto::Receive(fd, &buffer, 5000, &error);
  EXPECT_TRUE(m && m->type == proto::Type::kWelcome) << error;
  if (fd_out != nullptr)
    *fd_out = fd;
  else
    close(fd);
  return m ? proto::Decode<proto::Welcome>(*m) : proto::Welcome{};
}

struct stat StatOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st;
}

TEST(TenantSocket, AClientThatReachesATenantsSocketIsThatTenantWithoutAsking) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\nsocket_mode = \"0606\"\nmemory = \"2GiB\"\n", dir);
  const std::string path = broker.TenantSocket("alpha");
  ASSERT_TRUE(S_ISSOCK(StatOf(path).st_mode));
  EXPECT_EQ(StatOf(path).st_mode & 07777, 0606u);
  auto client = broker.Client(path);
  ASSERT_EQ(Ask(*client, "init"), "devices=1 init=CUDA_SUCCESS");
  const json status = broker.Status();
  const json* c = ClientWithPid(status, client->pid());
  ASSERT_NE(c, nullptr) << status.dump();
  EXPECT_EQ((*c)["tenant"], "alpha");
  EXPECT_EQ((*c)["devices"][0]["memory_cap"], 2ull << 30);
}

TEST(TenantSocket, AForgedTenantOnATenantsSocketIsRefusedWithTheReasonAndLogged) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\n[tenants.beta]\nweight = 5\n", dir);
  const proto::Welcome w = HelloAt(broker.TenantSocket("alpha"), "beta");
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("the socket decides the tenant"), std::string::npos) << w.reason;
  EXPECT_NE(broker.LogLine("registration refused").find("GPUSHARE_TENANT=\"beta\""), std::string::npos);
  // The same name as the socket's is only a request repeated: accepted.
  EXPECT_EQ(HelloAt(broker.TenantSocket("alpha"), "alpha").accepted, 1);
  // Through the shim: the process is refused and sees no GPU, nothing is booked to beta.
  auto forged = broker.Client(broker.TenantSocket("alpha"), {{"GPUSHARE_TENANT", "beta"}});
  EXPECT_EQ(Ask(*forged, "init"), "devices=0 init=CUDA_SUCCESS");
  EXPECT_EQ(ClientWithPid(broker.Status(), forged->pid()), nullptr);
}

TEST(TenantSocket, ATenantServedOnItsSocketIsNotJoinedThroughTheMainSocketByOthers) {
  SocketDir dir;
  Broker broker(
      "[tenants.alpha]\nsocket = true\n[tenants.gamma]\nsocket = true\nuids = [" + std::to_string(kNobody) + "]\n",
      dir);
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another uid (CI runs as root)";
  const std::string main = broker.socket();
  // nobody: not alpha (no uids: its socket is the only door), but gamma, which lists it.
  EXPECT_EQ(AsUid(kNobody, [&] { return HelloAt(main, "alpha").accepted == 0 ? 0 : 1; }), 0);
  EXPECT_EQ(AsUid(kNobody, [&] { return HelloAt(main, "gamma").accepted == 1 ? 0 : 1; }), 0);
  EXPECT_EQ(HelloAt(main, "alpha").accepted, 1);  // root administers the node
}

TEST(TenantSocket, AReloadMakesAndClosesTenantsSocketsAndTheirClientsStay) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\n", dir);
  auto client = broker.Client(broker.TenantSocket("alpha"));
  ASSERT_EQ(Ask(*client, "init"), "devices=1 init=CUDA_SUCCESS");
  broker.WriteConfig("[metering]\nenabled = false\n[tenants.beta]\nsocket = true\nsocket_mode = \"0600\"\n");
  kill(broker.pid(), SIGHUP);
  ASSERT_NE(broker.LogLine("reloaded"), "");
  EXPECT_FALSE(std::filesystem::exists(broker.TenantSocket("alpha")));
  EXPECT_EQ(StatOf(broker.TenantSocket("beta")).st_mode & 07777, 0600u);
  const json status = broker.Status();
  const json* c = ClientWithPid(status, client->pid());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["tenant"], "alpha");
}

TEST(MainSocket, ItsModeAndGroupComeFromTheConfig) {
  SocketDir dir;
  Broker broker("[sockets]\nmain_mode = \"0660\"\nmain_group = 0\n", dir);
  const struct stat st = StatOf(broker.socket());
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, 0u);
}

TEST(SocketAdmin, CreateBindRemoveAContainersSocket) {
  SocketDir dir;
  Broker broker("[tenants.team]\nmemory = \"3GiB\"\n", dir);
  const std::string path = broker.ContainerSocket("pod-1.c_0");
  const json create = {{"op", "create"}, {"name", "pod-1.c_0"}, {"tenant", nullptr}, {"uid", 0},
                       {"gid", 0},       {"mode", "0640"}};
  EXPECT_EQ(broker.Admin(create), "ok " + path);
  EXPECT_EQ(broker.Admin(create), "ok " + path);  // idempotent
  EXPECT_EQ(StatOf(path).st_mode & 07777, 0640u);
  // Unbound: refused with the reason, whatever tenant it asks for.
  proto::Welcome w = HelloAt(path, "team");
  EXPECT_EQ(w.accepted, 0);
  EXPECT_NE(std::string(w.reason).find("not bound to a tenant"), std::string::npos) << w.reason;
  // A client that connected before the bind and registers after it is the bound tenant.
  std::string error;
  const int early = proto::ConnectUnix(path, &error);
  ASSERT_GE(early, 0) << error;
  EXPECT_EQ(broker.Admin({{"op", "bind"}, {"name", "pod-1.c_0"}, {"tenant", "team"}}), "ok " + path);
  EXPECT_EQ(broker.Admin({{"op", "bind"}, {"name", "pod-1.c_0"}, {"tenant", "other"}}).rfind("refused: ", 0), 0u);
  close(early);
  auto client = broker.Client(path);
  ASSERT_EQ(Ask(*client, "init"), "devices=1 init=CUDA_SUCCESS");
  const json status = broker.Status();
  const json* c = ClientWithPid(status, client->pid());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["tenant"], "team");
  EXPECT_EQ((*c)["devices"][0]["memory_cap"], 3ull << 30);
  // Removed: the file goes, the client stays.
  EXPECT_EQ(broker.Admin({{"op", "remove"}, {"name", "pod-1.c_0"}}), "ok " + path);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_NE(ClientWithPid(broker.Status(), client->pid()), nullptr);
  EXPECT_EQ(Ask(*client, "alloc 0 1048576"), "alloc=ok");
  EXPECT_EQ(broker.Admin({{"op", "remove"}, {"name", "pod-1.c_0"}}).rfind("refused: no container socket", 0), 0u);
}

TEST(SocketAdmin, BadNamesAndMalformedRequestsAreRefusedWithTheField) {
  SocketDir dir;
  Broker broker("", dir);
  const auto create = [](const std::string& name) {
    return json{{"op", "create"}, {"name", name}, {"tenant", "t"}, {"uid", 0}, {"gid", 0}};
  };
  for (const std::string& name :
       std::vector<std::string>{"../escape", "a/b", "", std::string(65, 'a'), "sp ace", "nul\x01"})
    EXPECT_EQ(broker.Admin(create(name)).rfind("refused: \"name\"", 0), 0u) << name;
  EXPECT_EQ(broker.Admin({{"op", "create"}, {"name", "x"}, {"uid", -1}, {"gid", 0}}).rfind("refused: \"uid\"", 0), 0u);
  EXPECT_EQ(broker.Admin({{"op", "create"}, {"name", "x"}, {"uid", 0}, {"gid", 0}, {"mode", "4777"}})
                .rfind("refused: \"mode\"", 0),
            0u);
  EXPECT_EQ(broker.Admin({{"op", "explode"}, {"name", "x"}}).rfind("refused: \"op\"", 0), 0u);
  std::string error;
  EXPECT_EQ(broker.AskAt(broker.socket(), proto::EncodeText(proto::Type::kSocketAdmin, "{not json"), &error),
            "refused: malformed request: expected a JSON object");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/containers/x.sock"));
  EXPECT_TRUE(broker.Alive());
}

TEST(SocketAdmin, IsRefusedThroughATenantsSocketEvenToRootAndToOtherUids) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\nsocket_mode = \"0666\"\n", dir);
  const json create = {{"op", "create"}, {"name", "evil"}, {"tenant", "alpha"}, {"uid", 0}, {"gid", 0}};
  EXPECT_EQ(broker.Admin(create, broker.TenantSocket("alpha")).rfind("refused: only root", 0), 0u);
  EXPECT_FALSE(std::filesystem::exists(broker.ContainerSocket("evil")));
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another uid (CI runs as root)";
  EXPECT_EQ(AsUid(kNobody, [&] { return broker.Admin(create).rfind("refused: only root", 0) == 0 ? 0 : 1; }), 0);
  EXPECT_FALSE(std::filesystem::exists(broker.ContainerSocket("evil")));
}

TEST(ChannelHandOver, TheWelcomeCarriesTheChannelsDescriptorAndARefusalNone) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\n", dir);
  const auto hello = [&](const std::string& tenant, int* passed) {
    std::string error;
    int fd = proto::ConnectUnix(broker.TenantSocket("alpha"), &error);
    EXPECT_GE(fd, 0) << error;
    proto::Hello h{};
    proto::SetString(h.tenant, tenant);
    h.weight = 1;
    h.rank = -1;
    for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = -1;
    proto::SendAll(fd, proto::Encode(proto::Type::kHello, h));
    std::vector<uint8_t> buffer;
    auto m = proto::Receive(fd, &buffer, 5000, &error, passed);
    EXPECT_TRUE(m) << error;
    proto::Welcome w = m ? proto::Decode<proto::Welcome>(*m) : proto::Welcome{};
    close(fd);
    return w;
  };
  int passed = -1;
  const proto::Welcome w = hello("", &passed);
  ASSERT_EQ(w.accepted, 1) << w.reason;
  ASSERT_GE(passed, 0);
  // The same segment the Welcome names, mappable from the descriptor alone.
  struct stat st {};
  ASSERT_EQ(fstat(passed, &st), 0);
  EXPECT_GE(static_cast<size_t>(st.st_size), sizeof(proto::Channel));
  void* mapped = mmap(nullptr, sizeof(proto::Channel), PROT_READ, MAP_SHARED, passed, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  EXPECT_EQ(static_cast<const proto::Channel*>(mapped)->magic, proto::kChannelMagic);
  munmap(mapped, sizeof(proto::Channel));
  close(passed);
  int none = -1;
  EXPECT_EQ(hello("beta", &none).accepted, 0);
  EXPECT_EQ(none, -1);
}

TEST(TenantSocket, StatusThroughATenantsSocketShowsOnlyThatTenantEvenToRoot) {
  SocketDir dir;
  Broker broker("[tenants.alpha]\nsocket = true\n[tenants.beta]\nsocket = true\n", dir);
  auto a = broker.Client(broker.TenantSocket("alpha"));
  auto b = broker.Client(broker.TenantSocket("beta"));
  ASSERT_EQ(Ask(*a, "init"), "devices=1 init=CUDA_SUCCESS");
  ASSERT_EQ(Ask(*b, "init"), "devices=1 init=CUDA_SUCCESS");
  const json seen = broker.StatusAt(broker.TenantSocket("alpha"));
  EXPECT_NE(ClientWithPid(seen, a->pid()), nullptr) << seen.dump();
  EXPECT_EQ(ClientWithPid(seen, b->pid()), nullptr) << seen.dump();
  EXPECT_NE(ClientWithPid(broker.Status(), b->pid()), nullptr);  // the main socket, as root: all
}

}  // namespace
