// The broker's Prometheus endpoint ([metrics] listen, docs/monitoring.md). The daemon's
// thread owns BrokerCore; prometheus-cpp serves scrapes from threads of its own. So a
// scrape never touches the core: the daemon builds a snapshot of every family (the
// core's, the latest NVML sample, its own counters) every [metrics] refresh, and a
// scrape copies the latest snapshot under a short lock. NVML is sampled on a thread of
// the exporter's: some of its queries block (PCIe throughput samples for 20 ms), and
// the daemon's thread runs the scheduler.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace prometheus {
class Exposer;
}

namespace gpushare::broker {

class BrokerCore;

// Per GPU from NVML: identity, utilization, memory, PCIe throughput and link, NVLink.
// Quietly nothing where NVML or a query is not available.
class GpuSampler {
 public:
  GpuSampler();
  void Append(std::vector<prometheus::MetricFamily>* out);

 private:
  struct Device {
    void* handle = nullptr;
    std::string uuid;
    std::string name;
  };
  std::vector<Device> devices_;
  void* lib_ = nullptr;
};

// What the daemon itself counts.
struct DaemonCounters {
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
};

class MetricsExporter {
 public:
  // Listens on `listen` ("HOST:PORT") and samples NVML every `nvml_every_ns`; null with
  // the reason in `error` where it cannot listen (a malformed address, a port in use).
  static std::unique_ptr<MetricsExporter> Start(const std::string& listen, uint64_t nvml_every_ns,
                                                std::string* error);
  ~MetricsExporter();

  // The daemon's thread: a new snapshot of `core`, NVML and `daemon`.
  void Refresh(const BrokerCore& core, const DaemonCounters& daemon);
  // The snapshot as it stands (what a scrape serves).
  std::vector<prometheus::MetricFamily> Snapshot() const { return snapshot_->Collect(); }

 private:
  class Published : public prometheus::Collectable {
   public:
    std::vector<prometheus::MetricFamily> Collect() const override;
    void Set(std::vector<prometheus::MetricFamily> families);

   private:
    mutable std::mutex mu_;
    std::shared_ptr<const std::vector<prometheus::MetricFamily>> families_;
  };

  MetricsExporter() = default;
  void SampleGpus(uint64_t every_ns);  // the NVML thread

  std::shared_ptr<Published> snapshot_ = std::make_shared<Published>();
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::mutex gpu_mu_;
  std::condition_variable gpu_cv_;
  bool stopping_ = false;
  std::vector<prometheus::MetricFamily> gpu_families_;  // the latest NVML sample
  std::thread gpu_thread_;
};

}  // namespace gpushare::broker
