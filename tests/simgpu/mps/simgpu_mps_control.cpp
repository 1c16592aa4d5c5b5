// The simulated node's MPS control daemon: the same command line as
// nvidia-cuda-mps-control, so that the broker's [mps] control can point at it.
//   simgpu-mps-control -d   starts the daemon in the background (it returns once it serves)
//   simgpu-mps-control      sends each line of stdin to the daemon, prints each answer;
//                           exit 1 when no daemon serves
// Both find each other in CUDA_MPS_PIPE_DIRECTORY (default /tmp/nvidia-mps): the daemon
// listens on its `control` socket and holds `control.lock` while it runs, which is how
// the simulated driver (core/process.cpp) knows an MPS server is up. Commands:
// get_server_list (the daemon's pid: one simulated server), quit; others are answered
// as unknown. The log goes to CUDA_MPS_LOG_DIRECTORY/control.log where that is set.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <string>

namespace {

std::string PipeDirectory() {
  const char* d = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  return d != nullptr && *d != '\0' ? d : "/tmp/nvidia-mps";
}

bool Address(const std::string& path, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) return false;
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

void LogLine(FILE* log, const std::string& line) {
  if (log == nullptr) return;
  std::fprintf(log, "[%ld] %s\n", static_cast<long>(std::time(nullptr)), line.c_str());
  std::fflush(log);
}

// One command per connection: a line in, an answer out.
std::string Answer(const std::string& command, bool* quit) {
  if (command == "quit") {
    *quit = true;
    return "";
  }
  if (command == "get_server_list") return std::to_string(getpid());
  return "unknown command: " + command;
}

int Serve(int listen_fd, FILE* log) {
  for (bool quit = false; !quit;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::string line;
    char c;
    while (line.size() < 256 && read(fd, &c, 1) == 1 && c != '\n') line += c;
    if (!line.empty()) {
      const std::string reply = Answer(line, &quit) + "\n";
      LogLine(log, "command: " + line);
      if (write(fd, reply.data(), reply.size()) < 0) LogLine(log, "a client left before its answer");
    }
    close(fd);
  }
  LogLine(log, "quit");
  return 0;
}

int StartDaemon() {
  const std::string dir = PipeDirectory();
  mkdir(dir.c_str(), 0755);
  const std::string lock_path = dir + "/control.lock", socket_path = dir + "/control";
  sockaddr_un addr;
  if (!Address(socket_path, &addr)) {
    std::fprintf(stderr, "simgpu-mps-control: pipe directory path too long: %s\n", dir.c_str());
    return 1;
  }
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr, "simgpu-mps-control: a control daemon already runs in %s\n", dir.c_str());
    return 1;
  }
  unlink(socket_path.c_str());
  const int listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0 || bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd, 64) != 0) {
    std::fprintf(stderr, "simgpu-mps-control: cannot listen on %s: %s\n", socket_path.c_str(), std::strerror(errno));
    return 1;
  }
  chmod(socket_path.c_str(), 0666);
  std::fflush(nullptr);
  // As nvidia-cuda-mps-control -d: the caller gets its status once the daemon serves.
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) _exit(0);
  setsid();
  signal(SIGPIPE, SIG_IGN);
  const int null_fd = open("/dev/null", O_RDWR);
  for (int fd = 0; fd <= 2; ++fd) dup2(null_fd, fd);
  FILE* log = nullptr;
  if (const char* d = std::getenv("CUDA_MPS_LOG_DIRECTORY"); d != nullptr && *d != '\0')
    log = std::fopen((std::string(d) + "/control.log").c_str(), "a");
  LogLine(log, "started, serving " + dir);
  const int rc = Serve(listen_fd, log);
  unlink(socket_path.c_str());
  close(lock_fd);
  return rc;
}

int SendCommands() {
  const std::string socket_path = PipeDirectory() + "/control";
  sockaddr_un addr;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || !Address(socket_path, &addr) || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::fprintf(stderr, "Cannot find MPS control daemon process (%s: %s)\n", socket_path.c_str(), std::strerror(errno));
      return 1;
    }
    line += '\n';
    if (write(fd, line.data(), line.size()) < 0) return 1;
    std::string reply;
    char c;
    while (read(fd, &c, 1) == 1) reply += c;
    close(fd);
    std::fputs(reply.c_str(), stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "-d") == 0) return StartDaemon();
  if (argc == 1) return SendCommands();
  std::fprintf(stderr, "usage: simgpu-mps-control [-d]   (commands on stdin)\n");
  return 2;
}
