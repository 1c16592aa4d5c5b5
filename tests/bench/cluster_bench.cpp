// Cluster figures on a real 3-server ZooKeeper ensemble on loopback (docs/cluster.md):
// what a cluster quota adds to a registration (the broker's loop waits for the versioned
// write), how long a SIGKILLed broker stays in the view, and how long the standby
// manager takes to lead after the leader's SIGKILL. Prints a markdown table (results in
// docs/benchmarks.md). Usage: cluster_bench [REGISTRATIONS] [REPETITIONS]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "tests/integration/subprocess.h"

namespace {

namespace proto = gpushare::protocol;
using testing_support::Child;
using testing_support::SimNode;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr uint32_t kSessionTimeoutMs = 4000;
constexpr const char* kNodeJson = R"({"gpus": [{"name": "bench0", "memory": 85899345920}], "links": []})";

std::string Shell(const std::string& command) {
  FILE* p = popen(command.c_str(), "r");
  std::string out;
  char buf[512];
  while (p != nullptr && fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (p == nullptr || pclose(p) != 0) {
    throw std::runtime_error(command + " failed: " + out);
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

bool Connectable(const std::string& socket) {
  std::string error;
  const int fd = proto::ConnectUnix(socket, &error);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

// Registers as a client of `tenant` and hangs up; the seconds Hello to Welcome took.
double Register(const std::string& socket, const std::string& tenant) {
  std::string error;
  const int fd = proto::ConnectUnix(socket, &error);
  proto::Hello h{};
  proto::SetString(h.tenant, tenant);
  h.weight = 1;
  h.rank = -1;
  h.device_count = 1;
  for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = -1;
  h.cap_bytes[0] = 1ull << 20;
  const auto start = Clock::now();
  proto::SendAll(fd, proto::Encode(proto::Type::kHello, h));
  std::vector<uint8_t> buffer;
  auto m = proto::Receive(fd, &buffer, 10000, &error);
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  close(fd);
  if (!m || proto::Decode<proto::Welcome>(*m).accepted != 1) {
    throw std::runtime_error(std::string("registration refused: ") +
                             (m ? proto::Decode<proto::Welcome>(*m).reason : error.c_str()));
  }
  return s;
}

json Ask(const std::string& socket) {
  std::string error;
  const int fd = proto::ConnectUnix(socket, &error);
  if (fd < 0) return json{{"error", error}};
  proto::SendAll(fd, proto::EncodeText(proto::Type::kStatus, ""));
  std::vector<uint8_t> buffer;
  auto m = proto::Receive(fd, &buffer, 5000, &error);
  close(fd);
  if (!m) return json{{"error", error}};
  json j = json::parse(m->payload.begin(), m->payload.end(), nullptr, false);
  return j.is_discarded() ? json{{"error", "not JSON"}} : j;
}

struct Spread {
  double p50 = 0, p99 = 0, max = 0;
};
Spread SpreadOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  return {at(0.5), at(0.99), v.back()};
}

class Bench {
 public:
  Bench() : dir_("/tmp/gs-cluster-bench-" + std::to_string(getpid())), node_(kNodeJson) {
    std::filesystem::create_directories(dir_);
    connect_ = Shell(std::string(ZK_ENSEMBLE) + " start " + dir_ + "/zk 23000 3");
  }
  ~Bench() {
    brokers_.clear();
    managers_.clear();
    Shell(std::string(ZK_ENSEMBLE) + " stop-all " + dir_ + "/zk");
    std::filesystem::remove_all(dir_);
  }

  // A broker on the simulated node; its socket.
  std::string StartBroker(const std::string& name) {
    const std::string config = dir_ + "/" + name + ".toml";
    std::ofstream(config) << "[metering]\nenabled = false\n[cluster]\nzookeeper = \"" << connect_
                          << "\"\nname = \"bench\"\nnode = \"" << name << "\"\nsession_timeout_ms = "
                          << kSessionTimeoutMs << "\npublish_interval = 0.2\n[cluster.tenants.x]\nmax_instances = 1000000\n";
    const std::string socket = dir_ + "/" + name + ".sock";
    // Its log goes nowhere: a pipe nobody reads would stop it once full (it logs each registration).
    brokers_[name] = std::make_unique<Child>(
        std::vector<std::string>{"/bin/sh", "-c", "exec \"$0\" \"$@\" >/dev/null 2>&1", BROKER_PATH, "--config",
                                 config, "--socket", socket},
        node_.Env());
    if (!WaitFor([&] { return Connectable(socket); }, std::chrono::seconds(10)))
      throw std::runtime_error(socket + ": nothing listens");
    return socket;
  }
  std::string StartManager(const std::string& name) {
    const std::string config = dir_ + "/manager.toml";
    std::ofstream(config) << "[cluster]\nzookeeper = \"" << connect_ << "\"\nname = \"bench\"\nsession_timeout_ms = "
                          << kSessionTimeoutMs << "\n";
    const std::string socket = dir_ + "/" + name + ".sock";
    managers_[name] = std::make_unique<Child>(
        std::vector<std::string>{MANAGER_PATH, "--config", config, "--socket", socket, "--name", name},
        std::map<std::string, std::string>{});
    if (!WaitFor([&] { return Connectable(socket); }, std::chrono::seconds(10)))
      throw std::runtime_error(socket + ": nothing listens");
    return socket;
  }
  void Kill(std::map<std::string, std::unique_ptr<Child>>& which, const std::string& name) {
    which[name]->Kill(SIGKILL);
    which[name]->Wait();
    which.erase(name);
  }
  std::map<std::string, std::unique_ptr<Child>> brokers_, managers_;

 private:
  std::string dir_, connect_;
  SimNode node_;
};

void Row(const char* what, const std::vector<double>& seconds, double unit, const char* unit_name) {
  const Spread s = SpreadOf(seconds);
  std::printf("| %s | %zu | %.2f %s | %.2f %s | %.2f %s |\n", what, seconds.size(), s.p50 * unit, unit_name,
              s.p99 * unit, unit_name, s.max * unit, unit_name);
}

int Stop(int line) {
  std::fprintf(stderr, "cluster_bench: a wait at line %d timed out\n", line);
  return 1;
}

}  // namespace

int Run(int registrations, int repetitions) {
  Bench bench;
  const std::string a = bench.StartBroker("node-a");
  const std::string m1 = bench.StartManager("m1");
  if (!WaitFor([&] { return Ask(m1).value("totals", json::object()).value("nodes", 0) == 1; },
               std::chrono::seconds(15)))
    return Stop(__LINE__);
  std::vector<double> plain, quota;
  for (int i = 0; i < registrations; ++i) {  // interleaved: the machine's load falls on both alike
    plain.push_back(Register(a, "y"));
    quota.push_back(Register(a, "x"));
  }
  std::vector<double> node_gone, standby_leads;
  for (int r = 0; r < repetitions; ++r) {
    const std::string name = "node-b" + std::to_string(r);
    bench.StartBroker(name);
    if (!WaitFor([&] { return Ask(m1).value("totals", json::object()).value("nodes", 0) == 2; },
                 std::chrono::seconds(15)))
      return Stop(__LINE__);
    auto start = Clock::now();
    bench.Kill(bench.brokers_, name);
    if (!WaitFor([&] { return Ask(m1).value("totals", json::object()).value("nodes", 0) == 1; },
                 std::chrono::seconds(30)))
      return Stop(__LINE__);
    node_gone.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::string leader = "m1";
  for (int r = 0; r < repetitions; ++r) {
    char standby_name[32];
    std::snprintf(standby_name, sizeof standby_name, "standby-%d", r);
    const std::string name = standby_name;
    const std::string standby = bench.StartManager(name);
    if (!WaitFor([&] { return Ask(standby).contains("leader"); }, std::chrono::seconds(10))) return Stop(__LINE__);
    auto start = Clock::now();
    bench.Kill(bench.managers_, leader);
    if (!WaitFor([&] { return Ask(standby).value("leader", "") == name; }, std::chrono::seconds(30))) {
      std::fprintf(stderr, "%s\n", Ask(standby).dump().c_str());
      return Stop(__LINE__);
    }
    standby_leads.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    leader = name;
  }
  std::printf("| measurement | n | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n");
  Row("registration, tenant without a cluster quota (Hello to Welcome)", plain, 1e3, "ms");
  Row("registration, tenant with a cluster quota (one versioned write)", quota, 1e3, "ms");
  Row("SIGKILLed broker gone from the view", node_gone, 1, "s");
  Row("standby leads after the leader's SIGKILL", standby_leads, 1, "s");
  std::printf("(session timeout %.1f s, ZooKeeper tickTime 200 ms)\n", kSessionTimeoutMs / 1e3);
  return 0;
}

int main(int argc, char** argv) {
  try {  // the ensemble and every process stop on the way out, whatever failed
    return Run(argc > 1 ? std::atoi(argv[1]) : 300, argc > 2 ? std::atoi(argv[2]) : 3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cluster_bench: %s\n", e.what());
    return 1;
  }
}
