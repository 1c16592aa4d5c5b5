// Where a client's virtual GPUs go (issue 4's simple rule; the placement issue makes
// it topology- and class-aware): the GPUs it asked for if it may have them, else all
// the GPUs it may use, least memory held first. Pure.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ledger.h"

namespace gpushare::broker {

struct PlacementRequest {
  std::vector<int> asked;                   // physical GPUs in virtual order; empty: broker chooses
  std::optional<std::vector<int>> allowed;  // the tenant's GPUs; nullopt: all
};

struct PlacementResult {
  std::vector<int> physical;  // virtual i -> physical physical[i]
  std::string refusal;        // non-empty: cannot place
};

PlacementResult PlaceLeastLoaded(const NodeLedger& ledger, const PlacementRequest& request);

}  // namespace gpushare::broker
