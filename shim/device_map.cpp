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

std::optional<std::vector<int>> DeviceMap::NodeOrder(const std::vector<std::string>& masks) {
  std::optional<std::vector<int>> order;  // none applied yet
  for (const std::string& mask : masks) {
    std::vector<int> next;
    size_t at = 0;
    while (at <= mask.size()) {
      size_t comma = mask.find(',', at);
      if (comma == std::string::npos) comma = mask.size();
      const std::string item = mask.substr(at, comma - at);
      at = comma + 1;
      if (item.empty() && mask.empty()) break;  // an empty mask hides every GPU
      if (item.empty() || item.size() > 4 || item.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
      const int i = std::stoi(item);
      if (!order) {
        next.push_back(i);
      } else if (i < static_cast<int>(order->size())) {
        next.push_back((*order)[i]);
      } else {
        break;  // as the runtimes do: the list ends at the first GPU that does not exist
      }
    }
    order = next;
  }
  return order;
}

int DeviceMap::Virtual(int p) const {
  auto it = std::find(physical_.begin(), physical_.end(), p);
  return it == physical_.end() ? -1 : static_cast<int>(it - physical_.begin());
}

}  // namespace gpushare
