// Broker figures on simgpu: registration latency (one at a time and 64 at once), broker
// CPU with 64 idle and 64 busy clients, and how long a SIGKILLed client's memory takes
// to return. Starts its own broker on a private socket and simulated node; prints a
// markdown table (run_broker_bench.sh; results in docs/benchmarks.md).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"

namespace {

namespace proto = gpushare::protocol;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr int kReplyTimeoutMs = 10000;
constexpr int kSequentialRegistrations = 1000;
constexpr int kClients = 64;
constexpr int kBurstRounds = 10;  // 64-at-once registration is repeated so that p99 is not just the max
constexpr auto kWindow = std::chrono::seconds(3);
constexpr int kReclaimRepetitions = 20;
// One simulated GPU, large enough that no Take here is refused for room.
constexpr const char* kNodeJson = R"({"gpus": [{"name": "bench0", "memory": 85899345920}], "links": []})";

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// Nearest-rank percentiles of a set of samples.
struct Spread {
  size_t n = 0;
  double p50 = 0, p99 = 0, max = 0;
};

Spread SpreadOf(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  s.n = v.size();
  s.p50 = at(0.5);
  s.p99 = at(0.99);
  s.max = v.back();
  return s;
}

// Stops the benchmark; main's handler stops the broker and cleans up first.
[[noreturn]] void Fail(const std::string& what) { throw std::runtime_error(what); }

// One client connection: registers, then takes and gives memory on virtual GPU 0.
class Client {
 public:
  Client() = default;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() { Close(); }

  // Connects and says Hello; true once an accepting Welcome came back.
  bool Register(const std::string& socket, const std::string& tenant, std::string* error) {
    fd_ = proto::ConnectUnix(socket, error);
    if (fd_ < 0) return false;
    proto::Hello hello{};
    proto::SetString(hello.tenant, tenant);
    proto::SetString(hello.job, "broker_bench");
    hello.rank = 0;
    hello.weight = 1;
    hello.device_count = 1;
    for (int& v : hello.visible) v = -1;
    if (!proto::SendAll(fd_, proto::Encode(proto::Type::kHello, hello))) {
      *error = "cannot send Hello";
      return false;
    }
    auto m = Expect(proto::Type::kWelcome, error);
    if (!m) return false;
    const proto::Welcome w = proto::Sanitized(proto::As<proto::Welcome>(*m));
    if (w.accepted != 1) *error = std::string("refused: ") + w.reason;
    return w.accepted == 1;
  }

  // Sends a Take and waits for its reply; nullopt on an I/O error.
  std::optional<bool> Take(uint64_t bytes, std::string* error) {
    proto::Take t{};
    t.device = 0;
    t.bytes = bytes;
    if (!proto::SendAll(fd_, proto::Encode(proto::Type::kTake, t))) {
      *error = "cannot send Take";
      return std::nullopt;
    }
    auto m = Expect(proto::Type::kTakeReply, error);
    if (!m) return std::nullopt;
    const proto::TakeReply r = proto::Sanitized(proto::As<proto::TakeReply>(*m));
    if (r.granted != 1) *error = r.reason;
    return r.granted == 1;
  }

  bool Give(uint64_t bytes) {
    proto::Give g{};
    g.device = 0;
    g.bytes = bytes;
    return proto::SendAll(fd_, proto::Encode(proto::Type::kGive, g));
  }

  // The broker's Status JSON (any connection may ask, registered or not).
  std::optional<nlohmann::json> Status(std::string* error) {
    if (!proto::SendAll(fd_, proto::EncodeText(proto::Type::kStatus, ""))) {
      *error = "cannot send Status";
      return std::nullopt;
    }
    auto m = Expect(proto::Type::kStatusReply, error);
    if (!m) return std::nullopt;
    return nlohmann::json::parse(std::string(m->payload.begin(), m->payload.end()), nullptr, false);
  }

  bool Connect(const std::string& socket, std::string* error) {
    fd_ = proto::ConnectUnix(socket, error);
    return fd_ >= 0;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    in_.clear();
  }

 private:
  std::optional<proto::Message> Expect(proto::Type type, std::string* error) {
    auto m = proto::Receive(fd_, &in_, kReplyTimeoutMs, error);
    if (m && m->type != type) {
      *error = "unexpected message type " + std::to_string(static_cast<int>(m->type));
      return std::nullopt;
    }
    return m;
  }

  int fd_ = -1;
  std::vector<uint8_t> in_;
};

// Seconds of CPU the broker has used (utime + stime from /proc/<pid>/stat) and how
// often it has been switched out (voluntary: waiting in poll; involuntary: preempted).
struct CpuSample {
  double cpu_s = 0;
  uint64_t switches = 0;
  Clock::time_point at;
};

CpuSample SampleCpu(pid_t pid) {
  CpuSample s;
  s.at = Clock::now();
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // the command name may hold spaces
  std::vector<std::string> f;
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 13) Fail("cannot read /proc/" + std::to_string(pid) + "/stat");
  // After the name: f[0] is field 3 (state), so utime (14) and stime (15) are f[11], f[12].
  s.cpu_s = static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
      s.switches += std::stoull(line.substr(line.find(':') + 1));
  return s;
}

struct CpuUse {
  double percent = 0;  // of one core
  double wakeups_per_s = 0;
};

CpuUse Between(const CpuSample& a, const CpuSample& b) {
  const double wall = std::chrono::duration<double>(b.at - a.at).count();
  return {100 * (b.cpu_s - a.cpu_s) / wall, static_cast<double>(b.switches - a.switches) / wall};
}

// The broker under test: a child process on a private socket and simulated node.
class BrokerProcess {
 public:
  BrokerProcess() {
    char dir_template[] = "/tmp/gs-broker-bench-XXXXXX";
    if (mkdtemp(dir_template) == nullptr) Fail("mkdtemp failed");
    dir_ = dir_template;
    socket_ = dir_ + "/broker.sock";
    log_ = dir_ + "/broker.log";
    node_ = "gpushare-broker-bench-" + std::to_string(getpid());
  }

  // Starts the broker and waits until it accepts connections.
  // `config`: the broker's --config, or "" for none (the empty config).
  void Start(const std::string& broker_path, const std::string& simgpu_dir, const std::string& config = "") {
    const std::string node_config = dir_ + "/node.json";
    std::ofstream(node_config) << kNodeJson;
    pid_ = fork();
    if (pid_ < 0) Fail("fork failed");
    if (pid_ == 0) {
      setenv("LD_LIBRARY_PATH", simgpu_dir.c_str(), 1);
      setenv("SIMGPU_NODE", node_.c_str(), 1);
      setenv("SIMGPU_CONFIG", node_config.c_str(), 1);
      setenv("STATE_DIRECTORY", dir_.c_str(), 1);  // its meter's database, beside its socket
      FILE* log = std::fopen(log_.c_str(), "w");
      if (log != nullptr) {
        dup2(fileno(log), 1);
        dup2(fileno(log), 2);
      }
      if (config.empty())
        execl(broker_path.c_str(), broker_path.c_str(), "--socket", socket_.c_str(), static_cast<char*>(nullptr));
      else
        execl(broker_path.c_str(), broker_path.c_str(), "--socket", socket_.c_str(), "--config", config.c_str(),
              static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 1000; ++i) {
      std::string error;
      Client probe;
      if (probe.Connect(socket_, &error)) return;
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        Fail("the broker exited at start:\n" + Log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Fail("the broker did not listen within 10 s:\n" + Log());
  }

  // SIGTERM, then waits; returns the exit status text ("" for a clean exit 0).
  std::string Stop() {
    if (pid_ <= 0) return "";
    kill(pid_, SIGTERM);
    int status = 0;
    pid_t reaped = 0;
    for (int i = 0; i < 500 && (reaped = waitpid(pid_, &status, WNOHANG)) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::string outcome;
    if (reaped == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      outcome = "did not stop within 5 s of SIGTERM";
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      outcome = WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                                  : "killed by signal " + std::to_string(WTERMSIG(status));
    }
    pid_ = -1;
    return outcome;
  }

  ~BrokerProcess() {
    Stop();
    shm_unlink(("/" + node_).c_str());
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Log() const {
    std::ifstream in(log_);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }

 private:
  std::string dir_, socket_, log_, node_;
  pid_t pid_ = -1;
};

// Registers `clients` (one per thread, all released at once); returns each latency in µs.
std::vector<double> RegisterAtOnce(const std::string& socket, std::vector<Client>* clients) {
  std::vector<double> us(clients->size());
  std::latch start(static_cast<std::ptrdiff_t>(clients->size()));
  std::vector<std::thread> threads;
  std::mutex error_mu;
  std::string first_error;
  for (size_t i = 0; i < clients->size(); ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      std::string error;
      const auto t0 = Clock::now();
      if (!(*clients)[i].Register(socket, "bench-" + std::to_string(i), &error)) {
        std::lock_guard<std::mutex> lock(error_mu);
        first_error = error;
      }
      us[i] = Micros(Clock::now() - t0);
    });
  }
  for (auto& t : threads) t.join();
  if (!first_error.empty()) Fail("registration: " + first_error);
  return us;
}

uint64_t MemoryUsed(Client* status) {
  std::string error;
  auto json = status->Status(&error);
  if (!json || json->is_discarded()) Fail("Status: " + (error.empty() ? "not JSON" : error));
  uint64_t used = 0;
  for (const auto& g : (*json)["gpus"]) used += g["memory_used"].get<uint64_t>();
  return used;
}

// Waits (up to 2 s) until the broker has no registered client.
void AwaitNoClients(Client* status) {
  for (int i = 0; i < 2000; ++i) {
    std::string error;
    auto json = status->Status(&error);
    if (!json || json->is_discarded()) Fail("Status: " + (error.empty() ? "not JSON" : error));
    if ((*json)["clients"].empty()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Fail("clients that hung up are still registered after 2 s");
}

// Waits (up to 2 s) until the node ledger shows `bytes` in use; false if it never does.
bool AwaitMemoryUsed(Client* status, uint64_t bytes) {
  for (int i = 0; i < 2000; ++i) {
    if (MemoryUsed(status) == bytes) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct Row {
  std::string what;
  std::string samples, p50, p99, max;
  std::string cpu, wakeups;
};

// A latency row; `unit` is "µs" (whole numbers) or "ms" (two decimals).
Row LatencyRow(const std::string& what, const Spread& s, const std::string& unit) {
  const int digits = unit == "ms" ? 2 : 0;
  return {what,
          std::to_string(s.n),
          Fixed(s.p50, digits) + " " + unit,
          Fixed(s.p99, digits) + " " + unit,
          Fixed(s.max, digits) + " " + unit,
          "",
          ""};
}

// How busy the cores were over one second before the run, as a percentage of all of
// them (/proc/stat): other work on these cores skews every figure here.
double BusyBeforeStart() {
  auto sample = [] {
    std::ifstream in("/proc/stat");
    std::string cpu;
    in >> cpu;
    uint64_t total = 0, idle = 0;
    for (int i = 0; i < 8; ++i) {
      uint64_t v = 0;
      in >> v;
      total += v;
      if (i == 3 || i == 4) idle += v;  // idle, iowait
    }
    return std::pair<uint64_t, uint64_t>(total, idle);
  };
  const auto [total0, idle0] = sample();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto [total1, idle1] = sample();
  if (total1 <= total0) return 0;
  return 100.0 * static_cast<double>((total1 - total0) - (idle1 - idle0)) / static_cast<double>(total1 - total0);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// A forked process that registers, takes 1 GiB, says so on `ready`, and waits to be killed.
pid_t SpawnVictim(const std::string& socket, int ready) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  std::string error;
  Client c;
  char ok = 0;
  if (c.Register(socket, "bench-victim", &error) && c.Take(kGiB, &error).value_or(false)) ok = 1;
  if (write(ready, &ok, 1) != 1) _exit(1);
  for (;;) pause();
}

// a. Connect + Hello -> Welcome, one at a time (each connection closed after).
Row SequentialRegistration(const std::string& socket) {
  std::vector<double> us;
  std::string error;
  for (int i = 0; i < kSequentialRegistrations; ++i) {
    Client c;
    const auto t0 = Clock::now();
    if (!c.Register(socket, "bench-seq", &error)) Fail("registration: " + error);
    us.push_back(Micros(Clock::now() - t0));
  }
  return LatencyRow("registration, one at a time (connect + Hello → Welcome)", SpreadOf(us), "µs");
}

// a. 64 registrations at once, in rounds; the last round's clients stay registered.
Row BurstRegistration(const std::string& socket, std::vector<Client>* clients) {
  std::vector<double> us;
  std::string error;
  Client status;
  if (!status.Connect(socket, &error)) Fail(error);
  for (int round = 0; round < kBurstRounds; ++round) {
    for (Client& c : *clients) c.Close();
    AwaitNoClients(&status);  // so that one round's hang-ups do not overlap the next one's Hellos
    std::vector<double> round_us = RegisterAtOnce(socket, clients);
    us.insert(us.end(), round_us.begin(), round_us.end());
  }
  return LatencyRow("registration, 64 at once (64 threads, " + std::to_string(kBurstRounds) + " rounds)", SpreadOf(us),
                    "µs");
}

// b. Registered clients that send nothing: what the broker costs while it waits.
Row IdleCpu(pid_t broker, size_t clients) {
  const CpuSample before = SampleCpu(broker);
  std::this_thread::sleep_for(kWindow);
  const CpuUse use = Between(before, SampleCpu(broker));
  return {std::to_string(clients) + " idle clients, 3 s",
          "",
          "",
          "",
          "",
          Fixed(use.percent, 1) + " %",
          Fixed(use.wakeups_per_s, 0)};
}

// c. Each client loops Take(1 MiB) (waiting for the reply) + Give(1 MiB) for 3 s.
Row BusyClients(const std::string& socket, pid_t broker, std::vector<Client>* clients) {
  const size_t n = clients->size();
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::vector<double>> take_us(n);
  std::vector<std::string> errors(n);
  std::latch ready(static_cast<std::ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      Client& c = (*clients)[i];
      take_us[i].reserve(1 << 16);
      ready.count_down();
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (!stop.load(std::memory_order_relaxed)) {
        const auto t0 = Clock::now();
        std::optional<bool> granted = c.Take(kMiB, &errors[i]);
        if (!granted || !*granted) return;  // the reason is in errors[i]
        take_us[i].push_back(Micros(Clock::now() - t0));
        if (!c.Give(kMiB)) {
          errors[i] = "cannot send Give";
          return;
        }
      }
    });
  }
  ready.wait();
  const CpuSample before = SampleCpu(broker);
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(kWindow);
  const CpuSample after = SampleCpu(broker);
  stop.store(true);
  for (auto& t : threads) t.join();
  std::vector<double> us;
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i].empty()) Fail("busy client " + std::to_string(i) + ": " + errors[i]);
    us.insert(us.end(), take_us[i].begin(), take_us[i].end());
  }
  const double wall = std::chrono::duration<double>(after.at - before.at).count();
  const CpuUse use = Between(before, after);
  const double pairs_per_s = static_cast<double>(us.size()) / wall;
  // Broker CPU per pair depends less than pairs/s on other work sharing the cores.
  Row row = LatencyRow(std::to_string(n) + " busy clients, 3 s: Take round trip; " + Fixed(pairs_per_s / 1000, 1) +
                           " k Take+Give pairs/s in all, " + Fixed(use.percent / 100 * 1e6 / pairs_per_s, 1) +
                           " µs of broker CPU per pair",
                       SpreadOf(us), "µs");
  row.cpu = Fixed(use.percent, 1) + " %";
  row.wakeups = Fixed(use.wakeups_per_s, 0);
  // Every Take was given back, so the ledger must come back to zero.
  std::string error;
  Client status;
  if (!status.Connect(socket, &error)) Fail(error);
  if (!AwaitMemoryUsed(&status, 0))
    Fail("the busy clients gave back all they took, yet Status shows " + std::to_string(MemoryUsed(&status)) +
         " bytes in use");
  return row;
}

// d. A process holding 1 GiB is SIGKILLed: time until Status shows the GPU empty.
Row Reclaim(const std::string& socket) {
  std::string error;
  Client status;
  if (!status.Connect(socket, &error)) Fail(error);
  if (!AwaitMemoryUsed(&status, 0)) Fail("memory is still in use before the reclaim runs");
  std::vector<double> ms;
  for (int rep = 0; rep < kReclaimRepetitions; ++rep) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) Fail("pipe2 failed");
    const pid_t victim = SpawnVictim(socket, ready[1]);
    close(ready[1]);
    char ok = 0;
    if (read(ready[0], &ok, 1) != 1) ok = 0;
    close(ready[0]);
    const bool holds = ok == 1 && MemoryUsed(&status) == kGiB;
    const auto t0 = Clock::now();
    kill(victim, SIGKILL);
    if (!holds) {
      waitpid(victim, nullptr, 0);
      Fail("the victim could not register and take 1 GiB, or Status does not show it");
    }
    bool reclaimed = false;
    for (int i = 0; i < 5000 && !reclaimed; ++i) {
      reclaimed = MemoryUsed(&status) == 0;
      if (!reclaimed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ms.push_back(Micros(Clock::now() - t0) / 1000);
    waitpid(victim, nullptr, 0);
    if (!reclaimed) Fail("a SIGKILLed client's 1 GiB was not returned within 5 s");
  }
  Row row = LatencyRow("reclaim: SIGKILL of a client holding 1 GiB → Status shows 0 used (polled every 1 ms)",
                       SpreadOf(ms), "ms");
  row.p99 = "";  // 20 samples: p99 is the max
  return row;
}

std::vector<Row> RunAll(BrokerProcess* broker) {
  std::vector<Row> rows;
  rows.push_back(SequentialRegistration(broker->socket()));
  std::vector<Client> clients(kClients);
  rows.push_back(BurstRegistration(broker->socket(), &clients));
  rows.push_back(IdleCpu(broker->pid(), clients.size()));
  rows.push_back(BusyClients(broker->socket(), broker->pid(), &clients));
  for (Client& c : clients) c.Close();
  rows.push_back(Reclaim(broker->socket()));
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::string broker_path = BROKER_PATH, simgpu_dir = SIMGPU_DIR, broker_config;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--broker" && i + 1 < argc) {
      broker_path = argv[++i];
    } else if (arg == "--simgpu" && i + 1 < argc) {
      simgpu_dir = argv[++i];
    } else if (arg == "--broker-config" && i + 1 < argc) {
      broker_config = argv[++i];  // e.g. one with [metering] enabled = false, to compare
    } else {
      std::fprintf(stderr, "usage: broker_bench [--broker PATH] [--simgpu DIR] [--broker-config FILE]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  std::vector<Row> rows;
  std::string log;
  const double busy_before = BusyBeforeStart();
  try {
    BrokerProcess broker;
    broker.Start(broker_path, simgpu_dir, broker_config);
    rows = RunAll(&broker);
    const std::string stopped = broker.Stop();
    log = broker.Log();
    if (!stopped.empty()) Fail("the broker " + stopped + " on SIGTERM:\n" + log);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "broker_bench: %s\n", e.what());
    return 1;
  }
  std::istringstream lines(log);
  int complaints = 0;
  for (std::string line; std::getline(lines, line);)
    if (line.find(": warning: ") != std::string::npos || line.find(": error: ") != std::string::npos)
      if (complaints++ < 5) std::fprintf(stderr, "broker log: %s\n", line.c_str());
  if (complaints > 0) std::fprintf(stderr, "broker_bench: the broker logged %d warnings or errors\n", complaints);

  std::printf(
      "broker_bench: %u cores (%s), %.0f %% busy in the second before the run; one simulated GPU; broker and "
      "clients share the cores\n\n",
      std::thread::hardware_concurrency(), CpuModel().c_str(), busy_before);
  std::printf(
      "| measurement | samples | p50 | p99 | max | broker CPU (%% of one core) | broker context switches/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows)
    std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", r.what.c_str(), r.samples.c_str(), r.p50.c_str(),
                r.p99.c_str(), r.max.c_str(), r.cpu.c_str(), r.wakeups.c_str());
  return complaints > 0 ? 1 : 0;
}
