// The client's link to the node broker: registration at first driver use, synchronous
// Take (may I hold more?) and one-way Give, and the shared-memory channel the broker
// publishes grants into. When the broker is absent or goes away, the client runs
// standalone on its last caps (logged once) and re-registers when the broker is back,
// reporting what it holds so the rebuilt ledger counts it once. API-neutral.
#pragma once

#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol/channel.h"
#include "options.h"

namespace gpushare {

// A collective communicator (NCCL/RCCL) this process joined or left, as the hooks
// report it: API-neutral, and not the wire's struct (BrokerLink translates).
struct CommunicatorEvent {
  bool joined = false;  // false: left (only `id` and `handle` count)
  uint32_t nranks = 0;
  int32_t rank = 0;     // in the communicator
  int device = -1;      // virtual GPU the rank uses; -1: unknown
  uint64_t id = 0;      // the same for every rank of the communicator
  uint64_t handle = 0;  // this process's communicator (pairs a leave with its join)
};

class BrokerLink {
 public:
  // What the broker granted at registration.
  struct Terms {
    bool accepted = false;
    std::string reason;               // why not, or a warning when accepted
    std::vector<int> physical;        // virtual i -> physical GPU
    std::vector<uint64_t> cap_bytes;  // per virtual GPU; 0: uncapped
    double weight = 1;
  };

  BrokerLink();

  // Asks the broker, on a connection of its own, the SM share this process is to join
  // MPS with (docs/scheduling.md); nullopt: no broker answers. Made before the driver
  // starts, since the driver joins MPS (or not) when it is first initialized.
  static std::optional<protocol::MpsTerms> AskMps(const ClientOptions& options);

  // Registers with the broker at `options.socket_path`. nullopt: no broker answers
  // (standalone); otherwise the broker's terms, accepted or not.
  std::optional<Terms> Register(const ClientOptions& options);

  // The virtual->physical map in use (standalone: the one built from the options), which
  // a later registration keeps.
  void UseMap(std::vector<int> physical);

  enum class Answer { kGranted, kRefused, kStandalone, kRecalling };
  // Asks to hold `bytes` more on virtual GPU `device` (`force`: already held, record it).
  // `held` gives what the client holds per virtual GPU, for re-registering after the
  // broker came back.
  Answer Take(int device, uint64_t bytes, bool force, const std::vector<uint64_t>& held, std::string* reason);
  void Give(int device, uint64_t bytes, const std::vector<uint64_t>& held);
  // Asks for a lease of at least `need` and up to `want` bytes on virtual GPU `device`
  // (kGranted: `*granted` bytes; kRecalling: other processes were asked for their idle
  // leases, ask again). `held` as for Take, asked only when registering again.
  Answer Lease(int device, uint64_t need, uint64_t want, const std::function<std::vector<uint64_t>()>& held,
               uint64_t* granted, std::string* reason);
  // Bumped by the broker when it wants idle leases back (0 without a channel).
  uint32_t LeaseRecall() const;
  // Registered with a broker now; else whether it is time to look for one again (a
  // Take or Give then registers if it answers). Lock-free: for the allocation path.
  bool linked() const { return fd_open_.load(std::memory_order_acquire); }
  bool DueForRetry() const;

  // Caps the broker now grants per virtual GPU, if they changed since the last call
  // (a config reload); what all the tenant's processes hold on `device` (0 if unknown).
  std::optional<std::vector<uint64_t>> ChangedCaps();
  uint64_t TenantHeld(int device) const;
  // Reports this process's usage into its channel (what gpushare-smi can show).
  void ReportUsed(int device, uint64_t bytes);

  bool attached() const;

  // Told of every channel mapped (after registering) and of its loss (nullptr).
  void SetChannelObserver(std::function<void(protocol::Channel*, bool scheduled)> observer);
  // A collective communicator this process joined or left: the broker's warning about
  // it ("" if none), or nullopt without a broker.
  std::optional<std::string> SendComm(const CommunicatorEvent& event);
  // A gate event for the broker; false when the broker is gone.
  bool SendSched(const protocol::Sched& s);
  // False once the broker has hung up (checked without waiting; true while busy).
  bool Alive();
  // Registers again if the broker is back (at most every 500 ms).
  void Reconnect(const std::vector<uint64_t>& held);

 private:
  std::optional<Terms> Hello(bool reattach, const std::vector<uint64_t>& held);
  bool EnsureAttached(const std::vector<uint64_t>& held);  // mu_ held
  void Lost(const char* why);                              // mu_ held
  void SetFd(int fd);                                      // mu_ held
  // The channel named `name`, mapped from `passed_fd` when the broker sent one (a
  // container cannot open the broker's shared memory by name), else by the name.
  void MapChannel(const std::string& name, bool scheduled, int passed_fd = -1);
  void DropChannel();
  void AfterForkInChild();

  mutable std::mutex mu_;
  ClientOptions options_;
  std::vector<int> physical_;  // the map in use, kept across re-registration
  int fd_ = -1;
  std::atomic<bool> fd_open_{false};  // fd_ >= 0, for lock-free readers
  bool ever_attached_ = false;
  std::atomic<bool> disabled_{false};  // a forked child: the parent's registration is not its own
  std::atomic<uint64_t> last_try_ms_{0};
  std::vector<uint8_t> inbox_;
  boost::interprocess::mapped_region region_;
  std::vector<boost::interprocess::mapped_region> retired_;  // never unmapped: launches may hold pointers
  std::function<void(protocol::Channel*, bool)> observer_;
  // Written under mu_; read lock-free (a channel stays mapped for the process's life).
  std::atomic<protocol::Channel*> channel_{nullptr};
  std::atomic<uint64_t> seen_generation_{0};
  bool scheduled_ = false;
};

}  // namespace gpushare
