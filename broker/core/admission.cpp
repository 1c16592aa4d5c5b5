// Admission of a tenant's cap on the GPUs placement chose (see admission.h).
#include "admission.h"

#include <algorithm>

#include "common/base/units.h"

namespace gpushare::broker {

AdmissionResult Admit(const std::vector<int>& placed, const std::string& tenant, const std::optional<uint64_t>& cap,
                      bool exact, Admission mode, const NodeLedger& ledger, const ClientRegistry& clients,
                      std::string* warning, std::vector<std::string>* explanation) {
  AdmissionResult r;
  for (int g : placed) {
    // As room left, not a sum: a client's huge cap would wrap Promised + cap past the check.
    const bool met = !cap || clients.TenantOn(tenant, g) ||
                     *cap <= ledger.capacity(g) - std::min(ledger.capacity(g), clients.Promised(g, tenant, ledger));
    if (met) {
      r.physical.push_back(g);
    } else if (mode == Admission::kOversubscribe) {
      r.physical.push_back(g);
      *warning = "GPU " + std::to_string(g) + " is oversubscribed: its " + FormatBytes(ledger.capacity(g)) +
                 " cannot hold every tenant's cap at once";
      explanation->push_back("admission: " + *warning);
    } else if (exact) {
      r.refusal = "the " + FormatBytes(*cap) + " cap of tenant \"" + tenant + "\" cannot be met on GPU " +
                  std::to_string(g) + ": " + FormatBytes(clients.Promised(g, tenant, ledger)) + " of its " +
                  FormatBytes(ledger.capacity(g)) + " is promised to other tenants";
      return r;
    } else {
      explanation->push_back("admission: GPU " + std::to_string(g) + " left out: the tenant's cap cannot be met there");
    }
  }
  if (r.physical.empty())
    r.refusal = "the " + FormatBytes(cap.value_or(0)) + " cap of tenant \"" + tenant +
                "\" cannot be met on any GPU it may use (admission = \"refuse\")";
  return r;
}

}  // namespace gpushare::broker
