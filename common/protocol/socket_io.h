// Blocking message I/O over the broker's Unix socket, for clients and tools (the
// broker itself multiplexes non-blocking sockets). Sends never raise SIGPIPE in the
// caller's process. Which path to connect to is the caller's (common/base/socket_path.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "protocol.h"

namespace gpushare::protocol {

// Connects (close-on-exec); returns the fd or -1 with `error` set.
int ConnectUnix(const std::string& path, std::string* error);
bool SendAll(int fd, const std::vector<uint8_t>& bytes);
// Reads until one whole message is in `buffer` and returns it; nullopt with `error`
// on hang-up, a read error, a malformed message, or after `timeout_ms` (-1: none).
// `passed_fd`: if not null, a descriptor the broker sent with the bytes (SCM_RIGHTS,
// close-on-exec) is stored there (the caller owns it; -1 if none came).
std::optional<Message> Receive(int fd, std::vector<uint8_t>* buffer, int timeout_ms, std::string* error,
                               int* passed_fd = nullptr);

}  // namespace gpushare::protocol
