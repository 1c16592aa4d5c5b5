// Test helper: start real child processes with extra environment, talk to them over
// pipes, and collect their output and exit status. Used by the multi-process tests.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

extern char** environ;

namespace testing_support {

class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) std::abort();
    std::map<std::string, std::string> merged;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      size_t eq = kv.find('=');
      if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : env) merged[k] = v;
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (auto& e : env_strings) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(out[1], 2);  // tests read what the child says on either stream
      execve(cargv[0], cargv.data(), cenv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~Child() {
    CloseStdin();
    if (pid_ > 0 && status_ < 0) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (stdout_ >= 0) close(stdout_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  // One line of output (without the newline), or "" after `timeout_ms` or at EOF.
  std::string ReadLine(int timeout_ms = 20000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) return "";
      pollfd p{stdout_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) return "";
      char buf[4096];
      ssize_t n = read(stdout_, buf, sizeof buf);
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  std::string ReadAll() {
    std::string all = buffer_;
    buffer_.clear();
    char buf[4096];
    for (ssize_t n; (n = read(stdout_, buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(n));
    return all;
  }

  // Writes `text` to the child's stdin.
  bool Send(const std::string& text) {
    return stdin_ >= 0 && write(stdin_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }

  void CloseStdin() {
    if (stdin_ >= 0) close(stdin_);
    stdin_ = -1;
  }

  // Exit status as from waitpid (use WIFEXITED/WEXITSTATUS/WIFSIGNALED).
  int Wait() {
    if (status_ < 0) {
      int st = 0;
      waitpid(pid_, &st, 0);
      status_ = st;
    }
    return status_;
  }

  void Kill(int sig) { kill(pid_, sig); }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
  int status_ = -1;
  std::string buffer_;
};

struct RunResult {
  int exit_code;
  std::string out;
};

inline RunResult RunToEnd(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  Child c(argv, env);
  c.CloseStdin();
  std::string out = c.ReadAll();
  int st = c.Wait();
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// The number after "key=" in a program's output; UINT64_MAX when absent.
inline uint64_t Field(const std::string& text, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(key + "=([0-9]+)"))) return UINT64_MAX;
  return std::stoull(m[1]);
}

// A private simulated node for one test: its own config file and shared segment.
class SimNode {
 public:
  // The name is the test's pid, a count and the clock: a segment left by a killed
  // test whose pid was later reused is never attached (it would bring its armed
  // faults, its waiters and its counters). Segments of tests no longer running are
  // removed on the way.
  explicit SimNode(const std::string& config_json) {
    static int counter = 0;
    RemoveStale();
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    name_ = "simgpu-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
            std::to_string(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec));
    shm_unlink(("/" + name_).c_str());
    config_path_ = "/tmp/" + name_ + ".json";
    std::ofstream(config_path_) << config_json;
  }
  // Removes simgpu-test-PID-* segments and configs whose PID no longer runs.
  static void RemoveStale() {
    for (const char* dir : {"/dev/shm", "/tmp"}) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        const std::string file = entry.path().filename().string();
        int pid = 0;
        if (std::sscanf(file.c_str(), "simgpu-test-%d-", &pid) != 1 || pid <= 0) continue;
        if (kill(pid, 0) == 0 || errno != ESRCH) continue;  // running (or not ours to judge)
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
  ~SimNode() {
    shm_unlink(("/" + name_).c_str());
    std::remove(config_path_.c_str());
  }
  std::map<std::string, std::string> Env() const {
    return {{"LD_LIBRARY_PATH", SIMGPU_DIR}, {"SIMGPU_CONFIG", config_path_}, {"SIMGPU_NODE", name_}};
  }
  const std::string& config_path() const { return config_path_; }
  const std::string& name() const { return name_; }  // its SIMGPU_NODE

 private:
  std::string name_, config_path_;
};

}  // namespace testing_support
