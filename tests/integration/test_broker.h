// A gpushare-broker for integration tests: a private simulated node and socket, a
// config file it can reload, and the requests tests make of it. The test target
// defines BROKER_PATH and GPUSHARE_LIB.
#pragma once

#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "subprocess.h"

namespace testing_support {

class TestBroker {
 public:
  // `socket_dir`: a folder of its own for the main socket (broker.sock) and the
  // tenants' and containers' sockets the broker makes beside it; "" : one in /tmp.
  TestBroker(const std::string& node_json, const std::string& config_toml, const std::string& socket_dir = "")
      : node_(node_json) {
    static int counter = 0;
    const std::string base = "/tmp/gs-broker-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    socket_ = socket_dir.empty() ? base + ".sock" : socket_dir + "/broker.sock";
    config_ = base + ".toml";
    state_ = base + ".state";  // its meter's database (metering.db), across restarts
    WriteConfig(config_toml);
    Start();
  }
  ~TestBroker() {
    broker_.reset();
    std::remove(config_.c_str());
    std::remove(socket_.c_str());
    std::error_code ec;
    std::filesystem::remove_all(state_, ec);
  }

  void Start() {
    auto env = node_.Env();
    env["STATE_DIRECTORY"] = state_;
    broker_ =
        std::make_unique<Child>(std::vector<std::string>{BROKER_PATH, "--config", config_, "--socket", socket_}, env);
    for (int i = 0; i < 500; ++i) {
      std::string error;
      int fd = gpushare::protocol::ConnectUnix(socket_, &error);
      if (fd >= 0) {
        close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "the broker did not start: " << broker_->ReadAll();
  }
  void Kill() {
    broker_->Kill(SIGKILL);
    broker_->Wait();
  }
  void WriteConfig(const std::string& toml) { std::ofstream(config_) << toml; }
  pid_t pid() const { return broker_->pid(); }
  bool Alive() { return kill(broker_->pid(), 0) == 0 && waitpid(broker_->pid(), nullptr, WNOHANG) == 0; }
  Child& process() { return *broker_; }
  const std::string& socket() const { return socket_; }
  const std::string& config_path() const { return config_; }
  std::string database() const { return state_ + "/metering.db"; }
  const SimNode& node() const { return node_; }

  // The environment of a client: simgpu, the shim preloaded, this broker, and `extra`.
  std::map<std::string, std::string> ClientEnv(const std::map<std::string, std::string>& extra = {}) const {
    auto env = node_.Env();
    env["LD_PRELOAD"] = GPUSHARE_LIB;
    env["GPUSHARE_SOCKET"] = socket_;
    for (const auto& [k, v] : extra) env[k] = v;
    return env;
  }

  // One request on a fresh connection; the reply's payload, or the error.
  std::optional<std::string> Ask(const std::vector<uint8_t>& request, std::string* error) {
    return AskAt(socket_, request, error);
  }
  // …on the socket at `path` (a tenant's or a container's).
  static std::optional<std::string> AskAt(const std::string& path, const std::vector<uint8_t>& request,
                                          std::string* error) {
    int fd = gpushare::protocol::ConnectUnix(path, error);
    if (fd < 0) return std::nullopt;
    std::vector<uint8_t> buffer;
    gpushare::protocol::SendAll(fd, request);
    auto m = gpushare::protocol::Receive(fd, &buffer, 5000, error);
    close(fd);
    if (!m) return std::nullopt;
    return std::string(m->payload.begin(), m->payload.end());
  }

  nlohmann::json Status() {
    std::string error;
    auto reply = Ask(gpushare::protocol::EncodeText(gpushare::protocol::Type::kStatus, ""), &error);
    return reply ? nlohmann::json::parse(*reply) : nlohmann::json{{"error", error}};
  }

  // A usage or bill request (docs/metering.md) and the broker's JSON answer.
  nlohmann::json Usage(const nlohmann::json& request) {
    std::string error;
    auto reply = Ask(gpushare::protocol::EncodeText(gpushare::protocol::Type::kUsage, request.dump()), &error);
    return reply ? nlohmann::json::parse(*reply) : nlohmann::json{{"error", error}};
  }

  // The broker's answer ("ok: ..." or why not) to a run-time weight for process `pid`.
  std::string SetWeight(pid_t pid, double weight) {
    gpushare::protocol::SetWeight request{};
    request.pid = pid;
    request.weight = weight;
    std::string error;
    return Ask(gpushare::protocol::Encode(gpushare::protocol::Type::kSetWeight, request), &error)
        .value_or("no answer: " + error);
  }

 private:
  SimNode node_;
  std::string socket_, config_, state_;
  std::unique_ptr<Child> broker_;
};

// The status entry of the client with process id `pid`, or null.
inline const nlohmann::json* ClientWithPid(const nlohmann::json& status, pid_t pid) {
  for (const nlohmann::json& c : status["clients"])
    if (c["pid"] == pid) return &c;
  return nullptr;
}

// A one-GPU registration of `tenant` asking `cap` bytes on physical `gpu` (-1: any),
// weight 1: what raw-protocol tests send as a client's Hello.
inline gpushare::protocol::Hello HelloFor(const std::string& tenant, uint64_t cap, int gpu) {
  namespace proto = gpushare::protocol;
  proto::Hello h{};
  proto::SetString(h.tenant, tenant);
  h.weight = 1;
  h.rank = -1;
  h.device_count = 1;
  for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = -1;
  h.visible[0] = gpu;
  h.cap_bytes[0] = cap;
  return h;
}

// Runs `work` in a child that has dropped to `uid` (and gid); its exit status. Only
// root can; the caller skips otherwise.
inline int AsUid(uint32_t uid, const std::function<int()>& work) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(90);
    _exit(work());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace testing_support
