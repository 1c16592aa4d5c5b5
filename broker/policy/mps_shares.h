// Which SM share an MPS client is given before its context exists (issue 20). Its class
// cannot be measured yet then, so it is what the client says (GPUSHARE_CLASS), else what
// the same program of its tenant was measured as before, else unknown: such a client
// stays out of MPS and is time-sliced, and its measured class serves its next run. Pure:
// the broker's clock and what it knows are passed in.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "classifier.h"

namespace gpushare::broker {

struct MpsShare {
  WorkClass cls = WorkClass::kUnknown;  // the class the share is for; unknown: not co-located
  unsigned percent = 0;                 // CUDA_MPS_ACTIVE_THREAD_PERCENTAGE; 0: stays out of MPS
  std::string reason;                   // for the client's log and gpushare-smi
};

class MpsShares {
 public:
  // How many programs' classes and unregistered askers are remembered at most.
  static constexpr size_t kMaxPrograms = 4096;
  static constexpr size_t kMaxPending = 4096;
  // An ask whose Hello does not follow within this is forgotten.
  static constexpr uint64_t kPendingNs = 60'000'000'000ull;

  // The share of a client of a tenant that may co-locate (`colocate`) while an MPS
  // daemon runs (`mps_up`): memory-bound `memory_percent`, compute-bound the rest.
  MpsShare Decide(bool colocate, bool mps_up, WorkClass hint, const std::string& program, unsigned memory_percent) const;
  // A co-locating program measured as compute- or memory-bound (other classes say nothing).
  void Learn(const std::string& program, WorkClass measured);
  std::optional<WorkClass> Known(const std::string& program) const;

  // What process `pid` was told, until its Hello takes it (Claim) or kPendingNs pass.
  struct Pending {
    MpsShare share;
    std::string program;
  };
  // False when kMaxPending askers wait already (the client is then kept out of MPS).
  bool Asked(int32_t pid, Pending pending, uint64_t now);
  std::optional<Pending> Claim(int32_t pid, uint64_t now);

 private:
  void Expire(uint64_t now);
  struct Learned {
    WorkClass cls;
    uint64_t seq;  // the oldest is forgotten first
  };
  std::map<std::string, Learned> learned_;
  uint64_t next_seq_ = 0;
  struct Asker {
    Pending pending;
    uint64_t at_ns;
  };
  std::map<int32_t, Asker> pending_;
};

}  // namespace gpushare::broker
