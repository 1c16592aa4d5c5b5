// What the broker's /metrics says about its own state (docs/monitoring.md): per GPU,
// per client and per tenant, read from the same parts as the status report so that no
// share, class or cap is computed a second time. Built on the daemon's thread; the
// exporter (broker/io/metrics_exporter.h) only serves the result.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "broker/core/status_report.h"

namespace gpushare::broker {

// What BrokerCore counts for monitoring only (nothing decides by these).
struct CoreCounters {
  uint64_t registrations = 0;          // clients admitted (a re-registration too)
  uint64_t registration_refusals = 0;  // Hellos refused
  uint64_t reclaims = 0;               // clients gone, what they held returned
  uint64_t reclaimed_bytes = 0;
  uint64_t departed_records = 0;                        // launch records of clients gone
  std::map<ClientId, uint64_t> oom_refusals;            // per live client: allocations refused
  std::map<std::string, uint64_t> tenant_oom_refusals;  // per tenant with a live client
  // Gate waits of a live tenant's clients gone, per GPU: its histogram stays monotonic.
  std::map<std::pair<std::string, int>, WaitHistogram> departed_waits;
};

// Adds `from` into `into` (a tenant's histogram over its clients).
void AddWaits(WaitHistogram* into, const WaitHistogram& from);

// Appends the broker's families (names in docs/monitoring.md) to `out`.
void AppendCoreMetrics(const StatusSources& s, const CoreCounters& counters,
                       std::vector<prometheus::MetricFamily>* out);

// A family of `type` with one metric per call of Add (metrics_report.cpp and the io side).
class FamilyBuilder {
 public:
  FamilyBuilder(std::string name, std::string help, prometheus::MetricType type);
  prometheus::ClientMetric& Add(std::vector<prometheus::ClientMetric::Label> labels, double value);
  // Moves the family to `out` unless it has no metric.
  void MoveTo(std::vector<prometheus::MetricFamily>* out);

 private:
  prometheus::MetricFamily family_;
};

}  // namespace gpushare::broker
