// The MPS control daemon that `[scheduler] spatial = "mps"` co-locates clients through
// (docs/scheduling.md): one the broker starts (`CONTROL -d`, pipe and log directories
// beside its socket: /run/gpushare/broker.sock gives /run/gpushare/broker-mps/{pipe,log})
// and stops at exit (`quit` on the control program's
// stdin), or an operator's (`[mps] pipe_directory`) that it only watches. Either way
// its liveness is asked the way an operator would (`get_server_list`), off the loop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "broker/policy/config.h"

namespace gpushare::broker {

class MpsControl {
 public:
  // Starts (or adopts, with pipe_directory set) the daemon; nullptr with the reason in
  // `error` if it does not answer. `socket_path`: the broker's.
  static std::unique_ptr<MpsControl> Start(const MpsConfig& config, const std::string& socket_path,
                                           std::string* error);
  ~MpsControl();  // stops a daemon the broker started
  MpsControl(const MpsControl&) = delete;
  MpsControl& operator=(const MpsControl&) = delete;

  const std::string& pipe_directory() const { return pipe_dir_; }
  // Checks liveness about every second without blocking; false once it stopped answering.
  bool Poll(uint64_t now_ns);

 private:
  MpsControl() = default;
  // Runs the control program with `input` on its stdin; its pid, or -1.
  pid_t Spawn(const std::string& input, bool daemon_flag) const;

  std::string control_;
  std::string pipe_dir_;
  std::string log_dir_;
  std::string own_dir_;  // what the broker made for its daemon, removed once it stopped
  bool owned_ = false;  // started by this broker: stopped at exit
  bool alive_ = true;
  pid_t check_pid_ = -1;  // a liveness check in flight
  uint64_t check_started_ns_ = 0;
  uint64_t last_check_ns_ = 0;
};

}  // namespace gpushare::broker
