// SM shares of MPS clients, fixed before their contexts exist (see mps_shares.h).
#include "mps_shares.h"

#include <algorithm>

namespace gpushare::broker {

MpsShare MpsShares::Decide(bool colocate, bool mps_up, WorkClass hint, const std::string& program,
                           unsigned memory_percent) const {
  MpsShare s;
  if (!colocate) {
    s.reason = "its tenant does not co-locate (colocate = false)";
    return s;
  }
  if (!mps_up) {
    s.reason = "no MPS daemon runs: time-sliced";
    return s;
  }
  WorkClass cls = hint;
  std::string from = "as it says (GPUSHARE_CLASS)";
  if (cls != WorkClass::kCompute && cls != WorkClass::kMemory) {
    cls = Known(program).value_or(WorkClass::kUnknown);
    from = "as \"" + program + "\" was measured before";
  }
  if (cls == WorkClass::kMemory) {
    s.percent = memory_percent;
  } else if (cls == WorkClass::kCompute) {
    s.percent = 100 - memory_percent;
  } else {
    s.reason = "class of \"" + program + "\" not known yet: time-sliced, its measured class serves its next run";
    return s;
  }
  s.cls = cls;
  s.reason = std::to_string(s.percent) + "% of the SMs " + from + ": " + WorkClassName(cls) + "-bound";
  return s;
}

void MpsShares::Learn(const std::string& program, WorkClass measured) {
  if (measured != WorkClass::kCompute && measured != WorkClass::kMemory) return;
  auto it = learned_.find(program);
  if (it != learned_.end()) {
    it->second = {measured, next_seq_++};
    return;
  }
  if (learned_.size() >= kMaxPrograms)
    learned_.erase(std::min_element(learned_.begin(), learned_.end(),
                                    [](const auto& a, const auto& b) { return a.second.seq < b.second.seq; }));
  learned_[program] = {measured, next_seq_++};
}

std::optional<WorkClass> MpsShares::Known(const std::string& program) const {
  auto it = learned_.find(program);
  if (it == learned_.end()) return std::nullopt;
  return it->second.cls;
}

void MpsShares::Expire(uint64_t now) {
  std::erase_if(pending_, [&](const auto& kv) { return now - kv.second.at_ns > kPendingNs; });
}

bool MpsShares::Asked(int32_t pid, Pending pending, uint64_t now) {
  Expire(now);
  if (pending_.size() >= kMaxPending && pending_.count(pid) == 0) return false;
  pending_[pid] = {std::move(pending), now};
  return true;
}

std::optional<MpsShares::Pending> MpsShares::Claim(int32_t pid, uint64_t now) {
  Expire(now);
  auto it = pending_.find(pid);
  if (it == pending_.end()) return std::nullopt;
  Pending p = std::move(it->second.pending);
  pending_.erase(it);
  return p;
}

}  // namespace gpushare::broker
