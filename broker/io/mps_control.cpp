// The MPS control daemon, started, watched and stopped (see mps_control.h).
#include "mps_control.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "broker_log.h"

extern char** environ;

namespace gpushare::broker {
namespace {

constexpr uint64_t kCheckEveryNs = 1'000'000'000ull;
constexpr uint64_t kCheckTimeoutNs = 3'000'000'000ull;  // a control program this slow: the daemon is hung
constexpr int kRunTimeoutMs = 5000;

// Waits for `pid` up to `timeout_ms`; its exit status, or -1 (killed) on timeout.
int WaitBounded(pid_t pid, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0 && errno != EINTR) return -1;
    if (waited >= timeout_ms) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(10'000);
  }
}

}  // namespace

pid_t MpsControl::Spawn(const std::string& input, bool daemon_flag) const {
  int in[2];
  if (pipe2(in, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  // The broker's stderr (its log) gets what the control program says when it fails.
  std::vector<std::string> env_text{"CUDA_MPS_PIPE_DIRECTORY=" + pipe_dir_};
  if (!log_dir_.empty()) env_text.push_back("CUDA_MPS_LOG_DIRECTORY=" + log_dir_);
  std::vector<char*> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (std::strncmp(*e, "CUDA_MPS_PIPE_DIRECTORY=", 24) != 0 && std::strncmp(*e, "CUDA_MPS_LOG_DIRECTORY=", 23) != 0)
      env.push_back(*e);
  for (std::string& e : env_text) env.push_back(e.data());
  env.push_back(nullptr);
  std::string program = control_, flag = "-d";
  std::vector<char*> argv{program.data()};
  if (daemon_flag) argv.push_back(flag.data());
  argv.push_back(nullptr);
  // The broker blocks the signals its signalfd reads; the daemon must not inherit that.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, program.c_str(), &actions, &attr, argv.data(), env.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  if (rc != 0) {
    close(in[1]);
    return -1;
  }
  if (!input.empty() && write(in[1], input.data(), input.size()) < 0) {
    // A control program that exits before reading its input says so by its status.
  }
  close(in[1]);
  return pid;
}

std::unique_ptr<MpsControl> MpsControl::Start(const MpsConfig& config, const std::string& socket_path,
                                              std::string* error) {
  std::unique_ptr<MpsControl> m(new MpsControl());
  m->control_ = config.control.empty() ? "nvidia-cuda-mps-control" : config.control;
  if (!config.pipe_directory.empty()) {
    m->pipe_dir_ = config.pipe_directory;
  } else {
    const std::filesystem::path socket(socket_path);
    m->own_dir_ = (socket.parent_path() / (socket.stem().string() + "-mps")).string();
    m->pipe_dir_ = m->own_dir_ + "/pipe";
    m->log_dir_ = m->own_dir_ + "/log";
    std::error_code ec;
    for (const std::string& dir : {m->pipe_dir_, m->log_dir_}) {
      std::filesystem::create_directories(dir, ec);
      if (ec) {
        *error = "cannot create " + dir + ": " + ec.message();
        return nullptr;
      }
    }
    chmod(m->own_dir_.c_str(), 0755);
    chmod(m->pipe_dir_.c_str(), 0755);  // clients of every tenant reach the daemon through it
  }
  const auto answers = [&] {
    const pid_t pid = m->Spawn("get_server_list\n", false);
    return pid > 0 && WaitBounded(pid, kRunTimeoutMs) == 0;
  };
  if (!config.pipe_directory.empty()) {
    if (!answers()) {
      *error = "no MPS control daemon answers at " + m->pipe_dir_ + " ([mps] pipe_directory) through " + m->control_;
      return nullptr;
    }
    return m;
  }
  if (answers()) {  // one a broker before this one left running: it is this broker's now
    Log(LogLevel::kInfo, "mps: a control daemon already serves %s; the broker takes it over", m->pipe_dir_.c_str());
  } else {
    const pid_t pid = m->Spawn("", true);
    if (pid < 0) {
      *error = "cannot run " + m->control_ + ": " + std::strerror(errno) + " ([mps] control)";
      return nullptr;
    }
    if (int status = WaitBounded(pid, kRunTimeoutMs); status != 0) {
      *error = m->control_ + " -d exited with status " + std::to_string(status);
      return nullptr;
    }
    bool up = false;
    for (int i = 0; i < 20 && !(up = answers()); ++i) usleep(100'000);
    if (!up) {
      *error = m->control_ + " -d started but does not answer at " + m->pipe_dir_;
      return nullptr;
    }
  }
  m->owned_ = true;
  return m;
}

bool MpsControl::Poll(uint64_t now_ns) {
  if (!alive_) return false;
  if (check_pid_ > 0) {
    int status = 0;
    const pid_t r = waitpid(check_pid_, &status, WNOHANG);
    if (r == check_pid_ || (r < 0 && errno != EINTR)) {
      alive_ = r == check_pid_ && WIFEXITED(status) && WEXITSTATUS(status) == 0;
      check_pid_ = -1;
    } else if (now_ns - check_started_ns_ > kCheckTimeoutNs) {
      kill(check_pid_, SIGKILL);
      waitpid(check_pid_, &status, 0);
      check_pid_ = -1;
      alive_ = false;
    }
    return alive_;
  }
  if (now_ns - last_check_ns_ >= kCheckEveryNs) {
    last_check_ns_ = check_started_ns_ = now_ns;
    check_pid_ = Spawn("get_server_list\n", false);
    if (check_pid_ < 0) alive_ = false;
  }
  return alive_;
}

MpsControl::~MpsControl() {
  if (check_pid_ > 0) {
    kill(check_pid_, SIGKILL);
    waitpid(check_pid_, nullptr, 0);
  }
  if (!owned_) return;
  if (alive_) {
    const pid_t pid = Spawn("quit\n", false);
    if (pid < 0 || WaitBounded(pid, kRunTimeoutMs) != 0) {
      Log(LogLevel::kWarn, "mps: \"quit\" to the control daemon at %s failed; it may still run", pipe_dir_.c_str());
      return;
    }
    Log(LogLevel::kInfo, "mps: control daemon at %s stopped", pipe_dir_.c_str());
  }
  std::error_code ec;
  std::filesystem::remove_all(own_dir_, ec);
}

}  // namespace gpushare::broker
