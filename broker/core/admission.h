// Admission: whether a tenant's memory cap can be met on each GPU placement chose for a
// client, beside what the GPU has been promised to other tenants. The config says what
// happens where it cannot: the GPU is refused (the whole registration where the map must
// stay exact), or admitted oversubscribed with a warning.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "broker/core/client_registry.h"
#include "broker/policy/config.h"
#include "broker/policy/ledger.h"

namespace gpushare::broker {

struct AdmissionResult {
  std::vector<int> physical;  // the GPUs admitted, in placement's order
  std::string refusal;        // set: the client is refused
};

// `exact`: the map is all admitted or refused (GPUs asked for, a rank's view of its job).
// `warning` and `explanation` are placement's, and admission adds to them.
AdmissionResult Admit(const std::vector<int>& placed, const std::string& tenant, const std::optional<uint64_t>& cap,
                      bool exact, Admission mode, const NodeLedger& ledger, const ClientRegistry& clients,
                      std::string* warning, std::vector<std::string>* explanation);

}  // namespace gpushare::broker
