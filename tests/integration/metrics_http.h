// For the /metrics tests: a free TCP port on 127.0.0.1 and a plain HTTP GET.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

namespace testing_support {

// A port nothing listens on now (the kernel's pick; a test binds it right after).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

// GET `path` from 127.0.0.1:`port`; the body of a 200 answer, else nullopt with the reason.
inline std::optional<std::string> HttpGet(int port, const std::string& path, std::string* error,
                                          int timeout_ms = 5000) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    *error = "cannot connect to port " + std::to_string(port);
    if (fd >= 0) close(fd);
    return std::nullopt;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    *error = "send failed";
    close(fd);
    return std::nullopt;
  }
  std::string response;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) {
      *error = "no answer within " + std::to_string(timeout_ms) + " ms";
      close(fd);
      return std::nullopt;
    }
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || end == std::string::npos || response.find(" 200 ") > response.find("\r\n")) {
    *error = "not a 200 answer: " + response.substr(0, response.find("\r\n"));
    return std::nullopt;
  }
  return response.substr(end + 4);
}

// Runs `command` (a shell line) with `input` on its stdin; its exit status and output.
inline int RunWithInput(const std::string& command, const std::string& input, std::string* output) {
  char path[] = "/tmp/gs-metrics-out-XXXXXX";
  const int out_fd = mkstemp(path);
  if (out_fd < 0) return -1;
  close(out_fd);
  FILE* p = popen((command + " > " + path + " 2>&1").c_str(), "w");
  if (p == nullptr) return -1;
  fwrite(input.data(), 1, input.size(), p);
  const int status = pclose(p);
  output->clear();
  if (FILE* f = fopen(path, "r")) {
    char b[4096];
    size_t n;
    while ((n = fread(b, 1, sizeof b, f)) > 0) output->append(b, n);
    fclose(f);
  }
  std::remove(path);
  return status;
}

}  // namespace testing_support
