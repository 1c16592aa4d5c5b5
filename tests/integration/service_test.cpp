// The broker under a service manager (deploy/systemd/gpushare-broker.service.in is
// Type=notify): it says READY=1 once its socket accepts connections, RELOADING=1 with
// MONOTONIC_USEC and then READY=1 around every SIGHUP (a refused reload too), and
// STOPPING=1 on SIGTERM. The test plays systemd: a datagram socket named by NOTIFY_SOCKET.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/protocol/socket_io.h"
#include "subprocess.h"

namespace {

using testing_support::Child;
using testing_support::SimNode;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";

// What systemd listens on: one datagram per sd_notify call.
class NotifySocket {
 public:
  NotifySocket() : path_("/tmp/gs-notify-" + std::to_string(getpid()) + ".sock") {
    unlink(path_.c_str());
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ADD_FAILURE() << "bind " << path_;
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // The next message, or "" after `timeout_ms`.
  std::string Next(int timeout_ms = 20000) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return "";
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  std::string path_;
  int fd_ = -1;
};

class Service : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string base = "/tmp/gs-service-test-" + std::to_string(getpid());
    socket_ = base + ".broker.sock";
    config_ = base + ".toml";
    state_ = base + ".state";
    std::ofstream(config_) << "";
    auto env = node_.Env();
    env["STATE_DIRECTORY"] = state_;
    env["NOTIFY_SOCKET"] = notify_.path();
    broker_ = std::make_unique<Child>(std::vector<std::string>{BROKER_PATH, "--config", config_, "--socket", socket_}, env);
  }
  void TearDown() override {
    broker_.reset();
    std::remove(config_.c_str());
    std::error_code ec;
    std::filesystem::remove_all(state_, ec);
  }
  bool Accepts() {
    std::string error;
    const int fd = gpushare::protocol::ConnectUnix(socket_, &error);
    if (fd >= 0) close(fd);
    return fd >= 0;
  }

  SimNode node_{kOneGpu};
  NotifySocket notify_;
  std::string socket_, config_, state_;
  std::unique_ptr<Child> broker_;
};

TEST_F(Service, ReadyOnlyOnceTheSocketAcceptsConnections) {
  const std::string ready = notify_.Next();
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << "got '" << ready << "'; broker: " << broker_->ReadAll();
  EXPECT_NE(ready.find("STATUS=listening on " + socket_), std::string::npos) << ready;
  EXPECT_TRUE(Accepts());
}

TEST_F(Service, ReloadIsBracketedByReloadingAndReadyEvenWhenRefused) {
  ASSERT_NE(notify_.Next().find("READY=1"), std::string::npos) << broker_->ReadAll();
  for (const char* config : {"[scheduler]\nquantum_ms = 10\n", "[scheduler]\nquantum_ms = \"x\"\n"}) {
    std::ofstream(config_) << config;
    kill(broker_->pid(), SIGHUP);
    const std::string reloading = notify_.Next();
    EXPECT_NE(reloading.find("RELOADING=1"), std::string::npos) << config << ": got '" << reloading << "'";
    EXPECT_NE(reloading.find("MONOTONIC_USEC="), std::string::npos) << reloading;
    const std::string ready = notify_.Next();
    EXPECT_NE(ready.find("READY=1"), std::string::npos) << config << ": got '" << ready << "'";
    EXPECT_TRUE(Accepts());
  }
}

TEST_F(Service, StoppingOnTerm) {
  ASSERT_NE(notify_.Next().find("READY=1"), std::string::npos) << broker_->ReadAll();
  kill(broker_->pid(), SIGTERM);
  const std::string stopping = notify_.Next();
  EXPECT_NE(stopping.find("STOPPING=1"), std::string::npos) << "got '" << stopping << "'";
  const int status = broker_->Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
