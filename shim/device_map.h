// Virtual GPUs of this client and the physical GPUs behind them. Built once when the
// driver is initialized, read-only afterwards (so lookups take no lock).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace gpushare {

class DeviceMap {
 public:
  DeviceMap() = default;
  // `visible`: physical ordinals in virtual order (GPUSHARE_VISIBLE_DEVICES), or all
  // `physical_count` GPUs in order when absent. Out-of-range entries are dropped and
  // reported in `errors`.
  static DeviceMap Build(int physical_count, const std::optional<std::vector<int>>& visible,
                         std::vector<std::string>* errors);

  int count() const { return static_cast<int>(physical_.size()); }
  // Physical ordinal of virtual `v`, or -1 if `v` is not a virtual GPU.
  int Physical(int v) const { return v >= 0 && v < count() ? physical_[v] : -1; }
  // Virtual ordinal of physical `p`, or -1 if this client does not see `p`.
  int Virtual(int p) const;

  // The node-wide index of each GPU a runtime shows after its visible-devices masks
  // (each mask's entries index the GPUs the masks before it left), or nullopt when a
  // mask is not a list of indices (UUIDs, garbage): the runtime's order is unknown.
  // `masks` holds at least one, outermost (ROCR_VISIBLE_DEVICES) first.
  static std::optional<std::vector<int>> NodeOrder(const std::vector<std::string>& masks);

 private:
  std::vector<int> physical_;
};

}  // namespace gpushare
