// The cluster on a real ZooKeeper ensemble (docs/cluster.md): three servers on loopback
// (tests/cluster/zk_ensemble.sh), brokers on simulated nodes, managers. Inventory comes
// and goes; a tenant's quota of N instances holds across brokers under concurrent
// admission; a dead node's quota is reclaimed; the standby manager leads when the leader
// dies and the cluster bill is the sum of the nodes' bills; one ZooKeeper server down
// changes nothing; the quorum down makes brokers fail static.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <map>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "subprocess.h"
#include "test_broker.h"

namespace {

using json = nlohmann::json;
namespace proto = gpushare::protocol;
using testing_support::Child;
using testing_support::HelloFor;
using testing_support::TestBroker;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kSessionTimeoutMs = 4000;
const char* kNode = R"({"gpus": [{"name": "sim0", "memory": 17179869184}, {"name": "sim1", "memory": 17179869184}],
                      "links": [[0, 1, "pcie"]]})";

// Polls `done` every 100 ms until it holds or `limit` passes; how long it took, or nullopt.
std::optional<double> WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto start = Clock::now();
  while (Clock::now() - start < limit) {
    if (done()) return std::chrono::duration<double>(Clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done() ? std::optional<double>(std::chrono::duration<double>(Clock::now() - start).count()) : std::nullopt;
}

// Three ZooKeeper servers on loopback ports of their own, stopped with the test.
class Ensemble {
 public:
  Ensemble() {
    dir_ = "/tmp/gs-zk-" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
    // Ports below the ephemeral range, apart per test process: base+1..3, +101..103, +201..203.
    const int base = 10000 + (getpid() % 70) * 300;
    connect_ = Run("start " + dir_ + " " + std::to_string(base) + " 3");
  }
  ~Ensemble() {
    Run("stop-all " + dir_);
    std::filesystem::remove_all(dir_);
  }
  const std::string& connect() const { return connect_; }
  void Stop(int id) { Run("stop " + dir_ + " " + std::to_string(id)); }
  void Restart(int id) { Run("restart " + dir_ + " " + std::to_string(id)); }

 private:
  std::string Run(const std::string& args) {
    const std::string command = std::string(ZK_ENSEMBLE) + " " + args;
    FILE* p = popen(command.c_str(), "r");
    std::string out;
    char buf[512];
    while (p != nullptr && fgets(buf, sizeof buf, p) != nullptr) out += buf;
    const int status = p == nullptr ? -1 : pclose(p);
    EXPECT_EQ(status, 0) << command << ": " << out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  std::string dir_, connect_;
};

// A broker's config: a node of `cluster`, with `quota` instances for tenant x (0: none).
std::string BrokerConfig(const Ensemble& zk, const std::string& cluster, const std::string& node, int quota,
                         const std::string& extra = "") {
  std::string c = "[metering]\ninterval = 0.3\n[billing]\nbase_rate = 3600000\n[cluster]\nzookeeper = \"" + zk.connect() +
                  "\"\nname = \"" + cluster + "\"\nnode = \"" + node +
                  "\"\nsession_timeout_ms = " + std::to_string(kSessionTimeoutMs) +
                  "\npublish_interval = 0.2\ngrant_timeout_ms = 3000\n" + extra;
  if (quota > 0) c += "[cluster.tenants.x]\nmax_instances = " + std::to_string(quota) + "\n";
  return c;
}

// A gpushare-manager of the test's cluster.
class TestManager {
 public:
  TestManager(const Ensemble& zk, const std::string& cluster, const std::string& name) {
    const std::string base = "/tmp/gs-manager-" + std::to_string(getpid()) + "-" + name;
    socket_ = base + ".sock";
    config_ = base + ".toml";
    std::ofstream(config_) << "[billing]\nbase_rate = 3600000\n[cluster]\nzookeeper = \"" << zk.connect()
                           << "\"\nname = \"" << cluster << "\"\nsession_timeout_ms = " << kSessionTimeoutMs << "\n";
    child_ = std::make_unique<Child>(
        std::vector<std::string>{MANAGER_PATH, "--config", config_, "--socket", socket_, "--name", name},
        std::map<std::string, std::string>{});
    EXPECT_TRUE(WaitFor(
        [&] {
          std::string error;
          int fd = proto::ConnectUnix(socket_, &error);
          if (fd >= 0) close(fd);
          return fd >= 0;
        },
        std::chrono::seconds(10)))
        << "the manager did not start";
  }
  ~TestManager() {
    child_.reset();
    std::remove(config_.c_str());
    std::remove(socket_.c_str());
  }
  void Kill() {
    child_->Kill(SIGKILL);
    child_->Wait();
  }
  json Ask(proto::Type type, const std::string& text) {
    std::string error;
    int fd = proto::ConnectUnix(socket_, &error);
    if (fd < 0) return {{"error", error}};
    proto::SendAll(fd, proto::EncodeText(type, text));
    std::vector<uint8_t> buffer;
    auto m = proto::Receive(fd, &buffer, 5000, &error);
    close(fd);
    if (!m) return {{"error", error}};
    json j = json::parse(m->payload.begin(), m->payload.end(), nullptr, false);
    return j.is_discarded() ? json{{"error", "not JSON"}} : j;
  }
  json View() { return Ask(proto::Type::kStatus, ""); }
  json Usage(const json& request) { return Ask(proto::Type::kUsage, request.dump()); }

 private:
  std::string socket_, config_;
  std::unique_ptr<Child> child_;
};

std::vector<std::string> NodeNames(const json& view) {
  std::vector<std::string> names;
  if (view.contains("nodes"))
    for (const json& n : view["nodes"]) names.push_back(n["name"].get<std::string>());
  return names;
}

uint64_t TenantInstances(const json& view, const std::string& tenant) {
  if (!view.contains("tenants")) return UINT64_MAX;
  for (const json& t : view["tenants"])
    if (t["tenant"] == tenant) return t["instances"].get<uint64_t>();
  return 0;
}

// A client as the wire sees it: registered while its connection is open.
class Client {
 public:
  Client(const std::string& socket, const std::string& tenant) {
    std::string error;
    fd_ = proto::ConnectUnix(socket, &error);
    if (fd_ < 0) {
      reason_ = error;
      return;
    }
    proto::SendAll(fd_, proto::Encode(proto::Type::kHello, HelloFor(tenant, 1ull << 30, -1)));
    std::vector<uint8_t> buffer;
    auto m = proto::Receive(fd_, &buffer, 10000, &error);
    if (!m || m->type != proto::Type::kWelcome) {
      reason_ = "no welcome: " + error;
      return;
    }
    const auto w = proto::Decode<proto::Welcome>(*m);
    accepted_ = w.accepted == 1;
    reason_ = w.reason;
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  bool accepted() const { return accepted_; }
  const std::string& reason() const { return reason_; }

 private:
  int fd_ = -1;
  bool accepted_ = false;
  std::string reason_;
};

// A bill's quantities per tenant: sessions, wall ns, allotted ns (integers, exact).
using Usage = std::map<std::string, std::array<int64_t, 3>>;
Usage Quantities(const json& bill) {
  Usage out;
  if (!bill.contains("lines")) return out;
  for (const json& l : bill["lines"]) {
    auto& q = out[l["tenant"].get<std::string>()];
    q[0] += l["sessions"].get<int64_t>();
    q[1] += l["wall_ns"].get<int64_t>();
    q[2] += l["allotted_ns"].get<int64_t>();
  }
  return out;
}
Usage operator+(Usage a, const Usage& b) {
  for (const auto& [tenant, q] : b)
    for (size_t i = 0; i < q.size(); ++i) a[tenant][i] += q[i];
  return a;
}

std::string ThisMonth() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m", &utc);
  return text;
}

TEST(Cluster, InventoryAppearsAndADeadNodeLeavesWithinTheSessionTimeout) {
  Ensemble zk;
  TestBroker a(kNode, BrokerConfig(zk, "inv", "node-a", 0));
  TestBroker b(kNode, BrokerConfig(zk, "inv", "node-b", 0));
  TestManager m(zk, "inv", "m1");
  ASSERT_TRUE(WaitFor([&] { return NodeNames(m.View()) == std::vector<std::string>{"node-a", "node-b"}; },
                      std::chrono::seconds(15)))
      << m.View().dump();
  const json view = m.View();
  EXPECT_EQ(view["leader"], "m1");
  EXPECT_EQ(view["totals"]["gpus"], 4);
  EXPECT_EQ(view["nodes"][0]["gpus"][1]["memory_total"], 17179869184ull);
  EXPECT_EQ(view["nodes"][0]["health"], "ok");
  // A client on node-a shows in its record.
  Client c(a.socket(), "y");
  ASSERT_TRUE(c.accepted()) << c.reason();
  EXPECT_TRUE(WaitFor([&] { return m.View()["totals"]["clients"] == 1; }, std::chrono::seconds(10)));
  // SIGKILL: no goodbye; the record goes when its session expires.
  b.Kill();
  auto gone = WaitFor([&] { return NodeNames(m.View()) == std::vector<std::string>{"node-a"}; },
                      std::chrono::milliseconds(kSessionTimeoutMs + 8000));
  ASSERT_TRUE(gone) << m.View().dump();
  std::printf("node-b left the view %.1f s after SIGKILL (session timeout %.1f s)\n", *gone, kSessionTimeoutMs / 1e3);
}

TEST(Cluster, AQuotaOfNInstancesHoldsAcrossThreeBrokersUnderConcurrentAdmission) {
  Ensemble zk;
  constexpr int kQuota = 4;
  std::vector<std::unique_ptr<TestBroker>> brokers;
  for (const char* n : {"node-a", "node-b", "node-c"})
    brokers.push_back(std::make_unique<TestBroker>(kNode, BrokerConfig(zk, "quota", n, kQuota)));
  TestManager m(zk, "quota", "m1");
  ASSERT_TRUE(WaitFor([&] { return NodeNames(m.View()).size() == 3; }, std::chrono::seconds(15)));
  // Four clients per broker ask at once: exactly kQuota are admitted, whichever nodes they are on.
  std::vector<std::unique_ptr<Client>> clients(12);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clients.size(); ++i)
    threads.emplace_back([&, i] { clients[i] = std::make_unique<Client>(brokers[i % 3]->socket(), "x"); });
  for (auto& t : threads) t.join();
  int admitted = 0;
  for (const auto& c : clients) {
    if (c->accepted()) {
      ++admitted;
    } else {
      EXPECT_NE(c->reason().find("cluster quota"), std::string::npos) << c->reason();
    }
  }
  EXPECT_EQ(admitted, kQuota);
  EXPECT_TRUE(WaitFor([&] { return TenantInstances(m.View(), "x") == kQuota; }, std::chrono::seconds(5)))
      << m.View().dump();
  // One more anywhere is refused; once one leaves, one more is admitted (given back at hang-up).
  EXPECT_FALSE(Client(brokers[0]->socket(), "x").accepted());
  for (auto& c : clients)
    if (c->accepted()) {
      c.reset();
      break;
    }
  std::unique_ptr<Client> again;
  EXPECT_TRUE(WaitFor(
      [&] {
        again = std::make_unique<Client>(brokers[1]->socket(), "x");
        return again->accepted();
      },
      std::chrono::seconds(5)));
  EXPECT_FALSE(Client(brokers[2]->socket(), "x").accepted());
  // Another tenant is not bound by x's quota.
  EXPECT_TRUE(Client(brokers[2]->socket(), "y").accepted());
}

TEST(Cluster, ADeadNodesQuotaIsReclaimedByTheManager) {
  Ensemble zk;
  TestBroker a(kNode, BrokerConfig(zk, "reclaim", "node-a", 2));
  TestBroker b(kNode, BrokerConfig(zk, "reclaim", "node-b", 2));
  TestManager m(zk, "reclaim", "m1");
  Client on_a1(a.socket(), "x"), on_a2(a.socket(), "x");
  ASSERT_TRUE(on_a1.accepted() && on_a2.accepted()) << on_a1.reason() << on_a2.reason();
  EXPECT_FALSE(Client(b.socket(), "x").accepted());
  a.Kill();  // its clients' quota is in ZooKeeper, and nobody is left to give it back but the manager
  std::unique_ptr<Client> on_b;
  auto reclaimed = WaitFor(
      [&] {
        on_b = std::make_unique<Client>(b.socket(), "x");
        return on_b->accepted();
      },
      std::chrono::milliseconds(kSessionTimeoutMs + 10000));
  ASSERT_TRUE(reclaimed) << m.View().dump();
  EXPECT_GE(m.View()["reclaimed"].get<int>(), 1);
  std::printf("node-a's quota was reclaimed %.1f s after SIGKILL\n", *reclaimed);
}

TEST(Cluster, TheStandbyLeadsWhenTheLeaderDiesAndTheClusterBillIsTheSumOfNodeBills) {
  Ensemble zk;
  TestBroker a(kNode, BrokerConfig(zk, "bill", "node-a", 0));
  TestBroker b(kNode, BrokerConfig(zk, "bill", "node-b", 0));
  auto m1 = std::make_unique<TestManager>(zk, "bill", "m1");
  ASSERT_TRUE(WaitFor([&] { return m1->View().value("leader", "") == "m1"; }, std::chrono::seconds(10)));
  TestManager m2(zk, "bill", "m2");
  {
    Client a1(a.socket(), "x"), a2(a.socket(), "y"), b1(b.socket(), "x");
    ASSERT_TRUE(a1.accepted() && a2.accepted() && b1.accepted());
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  // Every session has ended (the hang-ups handled): the nodes' bills no longer move.
  ASSERT_TRUE(WaitFor([&] { return a.Status()["clients"].empty() && b.Status()["clients"].empty(); },
                      std::chrono::seconds(10)));
  const json request = {{"what", "bill"}, {"period", ThisMonth()}};
  // What the nodes metered, per tenant, as exact integers (before any rounding).
  const auto node_sum = [&] { return Quantities(a.Usage(request)) + Quantities(b.Usage(request)); };
  const Usage sum = node_sum();
  ASSERT_EQ(sum.size(), 2u);
  ASSERT_EQ(sum.at("x")[0], 2);  // sessions
  ASSERT_GT(sum.at("x")[2], 0);  // allotted ns
  ASSERT_TRUE(WaitFor([&] { return Quantities(m1->Usage(request)) == sum; }, std::chrono::seconds(10)))
      << m1->Usage(request).dump();
  const json bill_before = m1->Usage(request);
  // Amounts: the cluster rounds each tenant's line once over both nodes' rows, the nodes
  // each their own; the two differ by at most one minor unit per node line.
  const int64_t node_minor = a.Usage(request)["total"]["formula_minor"].get<int64_t>() +
                             b.Usage(request)["total"]["formula_minor"].get<int64_t>();
  EXPECT_LE(std::llabs(bill_before["total"]["formula_minor"].get<int64_t>() - node_minor), 3);
  EXPECT_EQ(m2.View().value("error", ""), "manager \"m2\" is a standby; the leader is \"m1\"");
  m1->Kill();
  auto leads = WaitFor([&] { return m2.View().value("leader", "") == "m2"; },
                       std::chrono::milliseconds(kSessionTimeoutMs + 5000));
  ASSERT_TRUE(leads) << m2.View().dump();
  std::printf("the standby led %.1f s after the leader's SIGKILL (session timeout %.1f s)\n", *leads,
              kSessionTimeoutMs / 1e3);
  // The new leader reads the same rows: the same bill, to the unit, each row counted once.
  EXPECT_EQ(m2.Usage(request), bill_before);
  EXPECT_EQ(Quantities(m2.Usage(request)), sum);
  EXPECT_EQ(node_sum(), sum);  // the nodes' bills did not move meanwhile (their sessions ended)
  const json usage = m2.Usage({{"what", "usage"}, {"by", "session"}});
  ASSERT_TRUE(usage.contains("lines")) << usage.dump();
  EXPECT_EQ(usage["lines"].size(), 3u);
}

TEST(Cluster, OneZooKeeperServerDownChangesNothing) {
  Ensemble zk;
  TestBroker a(kNode, BrokerConfig(zk, "one", "node-a", 2));
  TestManager m(zk, "one", "m1");
  ASSERT_TRUE(WaitFor([&] { return NodeNames(m.View()).size() == 1; }, std::chrono::seconds(15)));
  Client first(a.socket(), "x");
  ASSERT_TRUE(first.accepted()) << first.reason();
  zk.Stop(1);
  // Sessions move to the other servers; grants, the view and the quota go on.
  std::unique_ptr<Client> second;
  EXPECT_TRUE(WaitFor(
      [&] {
        second = std::make_unique<Client>(a.socket(), "x");
        return second->accepted();
      },
      std::chrono::seconds(10)));
  EXPECT_FALSE(Client(a.socket(), "x").accepted());  // the quota of 2 still holds
  EXPECT_TRUE(WaitFor([&] { return TenantInstances(m.View(), "x") == 2 && NodeNames(m.View()).size() == 1; },
                      std::chrono::seconds(10)))
      << m.View().dump();
}

TEST(Cluster, BrokersFailStaticWhenTheQuorumIsLost) {
  Ensemble zk;
  TestBroker refuse(kNode, BrokerConfig(zk, "static", "node-a", 3));
  TestBroker allow(kNode, BrokerConfig(zk, "static", "node-b", 3, "unreachable = \"allow\"\n"));
  TestManager m(zk, "static", "m1");
  ASSERT_TRUE(WaitFor([&] { return NodeNames(m.View()).size() == 2; }, std::chrono::seconds(15)));
  Client held(refuse.socket(), "x");
  ASSERT_TRUE(held.accepted()) << held.reason();
  zk.Stop(1);
  zk.Stop(2);
  // No quorum: a new grant is refused (not waited for forever), what is held stays.
  std::string reason;
  auto refused = WaitFor(
      [&] {
        Client c(refuse.socket(), "x");
        reason = c.reason();
        return !c.accepted();
      },
      std::chrono::seconds(15));
  ASSERT_TRUE(refused);
  EXPECT_NE(reason.find("ZooKeeper"), std::string::npos) << reason;
  const json status = refuse.Status();
  ASSERT_EQ(status["clients"].size(), 1u) << status.dump();
  EXPECT_EQ(status["clients"][0]["tenant"], "x");
  EXPECT_TRUE(Client(refuse.socket(), "y").accepted());  // tenants without a cluster quota are served
  // unreachable = "allow": granted locally.
  EXPECT_TRUE(WaitFor([&] { return Client(allow.socket(), "x").accepted(); }, std::chrono::seconds(15)));
  // The quorum back: grants again.
  zk.Restart(1);
  zk.Restart(2);
  EXPECT_TRUE(WaitFor([&] { return Client(refuse.socket(), "x").accepted(); }, std::chrono::seconds(30)));
}

}  // namespace
