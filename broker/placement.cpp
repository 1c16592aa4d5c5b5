// The least-loaded placement rule (see placement.h).
#include "placement.h"

#include <algorithm>

namespace gpushare::broker {

PlacementResult PlaceLeastLoaded(const NodeLedger& ledger, const PlacementRequest& request) {
  PlacementResult r;
  auto allowed = [&](int g) {
    return g >= 0 && g < ledger.gpu_count() &&
           (!request.allowed ||
            std::find(request.allowed->begin(), request.allowed->end(), g) != request.allowed->end());
  };
  if (!request.asked.empty()) {
    for (int g : request.asked) {
      if (!allowed(g)) {
        r.refusal = g >= 0 && g < ledger.gpu_count() ? "GPU " + std::to_string(g) + " is not among the tenant's GPUs"
                                                     : "there is no GPU " + std::to_string(g);
        r.physical.clear();
        return r;
      }
      r.physical.push_back(g);
    }
    return r;
  }
  for (int g = 0; g < ledger.gpu_count(); ++g)
    if (allowed(g)) r.physical.push_back(g);
  std::stable_sort(r.physical.begin(), r.physical.end(),
                   [&](int a, int b) { return ledger.GpuHeld(a) < ledger.GpuHeld(b); });
  if (r.physical.empty()) r.refusal = "the tenant may use no GPU of this node";
  return r;
}

}  // namespace gpushare::broker
