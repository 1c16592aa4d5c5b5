// Virtual <-> physical GPU ordinals (see device_map.h).
#include "device_map.h"

#include <algorithm>

namespace gpushare {

DeviceMap DeviceMap::Build(int physical_count, const std::optional<std::vector<int>>& visible,
                           std::vector<std::string>* errors) {
  DeviceMap m;
  if (!visible) {
    for (int p = 0; p < physical_count; ++p) m.physical_.push_back(p);
    return m;
  }
  for (int p : *visible) {
    if (p >= 0 && p < physical_count) {
      m.physical_.push_back(p);
    } else if (errors) {
      errors->push_back("GPUSHARE_VISIBLE_DEVICES names GPU " + std::to_string(p) + " but the node has " +
                        std::to_string(physical_count) + "; it is left out");
    }
  }
  return m;
}

int DeviceMap::Virtual(int p) const {
  auto it = std::find(physical_.begin(), physical_.end(), p);
  return it == physical_.end() ? -1 : static_cast<int>(it - physical_.begin());
}

}  // namespace gpushare
