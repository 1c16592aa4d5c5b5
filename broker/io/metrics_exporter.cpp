// The broker's Prometheus endpoint (see metrics_exporter.h).
#include "metrics_exporter.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/exposer.h>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "broker/core/broker_core.h"
#include "broker/core/metrics_report.h"
#include "broker/io/gpu_inventory.h"
#include "common/vendor/nvml_api.h"

namespace gpushare::broker {

using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

// Bytes per second one lane carries at a PCIe generation, after line coding.
double LaneBytesPerSecond(unsigned generation) {
  switch (generation) {
    case 1: return 2.5e9 * 8 / 10 / 8;
    case 2: return 5e9 * 8 / 10 / 8;
    case 3: return 8e9 * 128 / 130 / 8;
    case 4: return 16e9 * 128 / 130 / 8;
    case 5: return 32e9 * 128 / 130 / 8;
    case 6: return 64e9 * 242 / 256 / 8;  // FLIT mode
    default: return 0;
  }
}

template <typename F>
F Symbol(void* lib, const char* name) {
  return lib == nullptr ? nullptr : reinterpret_cast<F>(dlsym(lib, name));
}

// Whether `host:port` can be bound now (a clear error where it cannot: civetweb's is vague).
bool CanBind(const std::string& host, uint16_t port, std::string* error) {
  const bool v6 = host.front() == '[';
  const std::string literal = v6 ? host.substr(1, host.size() - 2) : host == "localhost" ? "127.0.0.1" : host;
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, literal.c_str(), &a->sin6_addr) != 1) {
      *error = "not an IPv6 address: " + literal;
      return false;
    }
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, literal.c_str(), &a->sin_addr) != 1) {
      *error = "not an IPv4 address: " + literal;
      return false;
    }
    len = sizeof *a;
  }
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as civetweb does
  const bool ok = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0;
  if (!ok)
    *error =
        std::string(errno == EADDRINUSE ? "the port is in use (another broker or exporter?)" : std::strerror(errno));
  if (fd >= 0) close(fd);
  return ok;
}

}  // namespace

GpuSampler::GpuSampler() {
  NvmlDevices nvml = OpenNvmlDevices();
  lib_ = nvml.lib;
  auto uuid = Symbol<decltype(&nvmlDeviceGetUUID)>(lib_, "nvmlDeviceGetUUID");
  auto name = Symbol<decltype(&nvmlDeviceGetName)>(lib_, "nvmlDeviceGetName");
  for (void* handle : nvml.handles) {
    Device d;
    d.handle = handle;
    const auto h = static_cast<nvmlDevice_t>(handle);
    char buf[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
    if (h && uuid && uuid(h, buf, sizeof buf) == NVML_SUCCESS) d.uuid = buf;
    char nbuf[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = {};
    if (h && name && name(h, nbuf, sizeof nbuf) == NVML_SUCCESS) d.name = nbuf;
    devices_.push_back(d);
  }
}

void GpuSampler::Append(std::vector<MetricFamily>* out) {
  auto util = Symbol<decltype(&nvmlDeviceGetUtilizationRates)>(lib_, "nvmlDeviceGetUtilizationRates");
  auto memory = Symbol<decltype(&nvmlDeviceGetMemoryInfo)>(lib_, "nvmlDeviceGetMemoryInfo");
  auto pcie = Symbol<decltype(&nvmlDeviceGetPcieThroughput)>(lib_, "nvmlDeviceGetPcieThroughput");
  auto gen = Symbol<decltype(&nvmlDeviceGetCurrPcieLinkGeneration)>(lib_, "nvmlDeviceGetCurrPcieLinkGeneration");
  auto width = Symbol<decltype(&nvmlDeviceGetCurrPcieLinkWidth)>(lib_, "nvmlDeviceGetCurrPcieLinkWidth");
  auto nvlink = Symbol<decltype(&nvmlDeviceGetNvLinkState)>(lib_, "nvmlDeviceGetNvLinkState");
  const MetricType kGauge = MetricType::Gauge;
  FamilyBuilder info("gpushare_gpu_info", "A GPU NVML reports (always 1): its UUID and name.", kGauge);
  FamilyBuilder utilization("gpushare_gpu_utilization_ratio", "Time a kernel ran on the GPU (NVML, recent).", kGauge);
  FamilyBuilder memory_util("gpushare_gpu_memory_utilization_ratio",
                            "Time device memory was read or written (NVML, recent).", kGauge);
  FamilyBuilder used("gpushare_gpu_memory_used_bytes", "Device memory in use, every process (NVML).", kGauge);
  FamilyBuilder total("gpushare_gpu_memory_total_bytes", "Device memory (NVML).", kGauge);
  FamilyBuilder rx("gpushare_gpu_pcie_rx_bytes_per_second", "PCIe bytes received by the GPU (NVML, recent).", kGauge);
  FamilyBuilder tx("gpushare_gpu_pcie_tx_bytes_per_second", "PCIe bytes sent by the GPU (NVML, recent).", kGauge);
  FamilyBuilder link_gen("gpushare_gpu_pcie_link_generation", "The PCIe link's current generation.", kGauge);
  FamilyBuilder link_width("gpushare_gpu_pcie_link_width", "The PCIe link's current width (lanes).", kGauge);
  FamilyBuilder link_max("gpushare_gpu_pcie_link_max_bytes_per_second",
                         "What the PCIe link carries at most each way (generation x width, after line coding).",
                         kGauge);
  FamilyBuilder nvlinks("gpushare_gpu_nvlink_active_links", "Active NVLink links (GPUs with NVLink).", kGauge);
  for (size_t i = 0; i < devices_.size(); ++i) {
    const Device& d = devices_[i];
    if (d.handle == nullptr) continue;
    auto* h = static_cast<nvmlDevice_t>(d.handle);
    const std::vector<prometheus::ClientMetric::Label> gpu{{"gpu", std::to_string(i)}, {"uuid", d.uuid}};
    info.Add({{"gpu", std::to_string(i)}, {"uuid", d.uuid}, {"name", d.name}}, 1);
    nvmlUtilization_t u{};
    if (util && util(h, &u) == NVML_SUCCESS) {
      utilization.Add(gpu, u.gpu / 100.0);
      memory_util.Add(gpu, u.memory / 100.0);
    }
    nvmlMemory_t m{};
    if (memory && memory(h, &m) == NVML_SUCCESS) {
      used.Add(gpu, static_cast<double>(m.used));
      total.Add(gpu, static_cast<double>(m.total));
    }
    unsigned kb = 0;
    if (pcie && pcie(h, NVML_PCIE_UTIL_RX_BYTES, &kb) == NVML_SUCCESS) rx.Add(gpu, kb * 1024.0);
    if (pcie && pcie(h, NVML_PCIE_UTIL_TX_BYTES, &kb) == NVML_SUCCESS) tx.Add(gpu, kb * 1024.0);
    unsigned g = 0, w = 0;
    const bool have_gen = gen && gen(h, &g) == NVML_SUCCESS, have_width = width && width(h, &w) == NVML_SUCCESS;
    if (have_gen) link_gen.Add(gpu, g);
    if (have_width) link_width.Add(gpu, w);
    if (have_gen && have_width && LaneBytesPerSecond(g) > 0) link_max.Add(gpu, LaneBytesPerSecond(g) * w);
    nvmlEnableState_t active;
    if (nvlink && nvlink(h, 0, &active) == NVML_SUCCESS) {  // NOT_SUPPORTED: no NVLink
      unsigned links = 0;
      for (unsigned l = 0; l < NVML_NVLINK_MAX_LINKS; ++l)
        if (nvlink(h, l, &active) == NVML_SUCCESS && active == NVML_FEATURE_ENABLED) ++links;
      nvlinks.Add(gpu, links);
    }
  }
  for (FamilyBuilder* f :
       {&info, &utilization, &memory_util, &used, &total, &rx, &tx, &link_gen, &link_width, &link_max, &nvlinks})
    f->MoveTo(out);
}

std::vector<MetricFamily> MetricsExporter::Published::Collect() const {
  std::shared_ptr<const std::vector<MetricFamily>> families;
  {
    std::lock_guard<std::mutex> lock(mu_);
    families = families_;
  }
  return families ? *families : std::vector<MetricFamily>{};
}

void MetricsExporter::Published::Set(std::vector<MetricFamily> families) {
  auto next = std::make_shared<const std::vector<MetricFamily>>(std::move(families));
  std::lock_guard<std::mutex> lock(mu_);
  families_.swap(next);  // the old one is freed outside the lock, by `next`
}

std::unique_ptr<MetricsExporter> MetricsExporter::Start(const std::string& listen, uint64_t nvml_every_ns,
                                                       std::string* error) {
  std::string host;
  uint16_t port = 0;
  if (!ParseListenAddress(listen, &host, &port)) {
    *error = "metrics: not HOST:PORT: \"" + listen + "\"";
    return nullptr;
  }
  if (!CanBind(host, port, error)) {
    *error = "metrics: cannot listen on " + listen + ": " + *error;
    return nullptr;
  }
  std::unique_ptr<MetricsExporter> exporter(new MetricsExporter());
  try {
    // civetweb's listening_ports: "127.0.0.1:9400", "[::1]:9400"; "localhost" it does not resolve.
    exporter->exposer_ = std::make_unique<prometheus::Exposer>(
        (host == "localhost" ? std::string("127.0.0.1") : host) + ":" + std::to_string(port), 1);
  } catch (const std::exception& e) {
    *error = "metrics: cannot listen on " + listen + ": " + e.what();
    return nullptr;
  }
  exporter->exposer_->RegisterCollectable(exporter->snapshot_);
  exporter->gpu_thread_ = std::thread([e = exporter.get(), nvml_every_ns] { e->SampleGpus(nvml_every_ns); });
  return exporter;
}

void MetricsExporter::SampleGpus(uint64_t every_ns) {
  GpuSampler sampler;
  std::unique_lock<std::mutex> lock(gpu_mu_);
  while (!stopping_) {
    lock.unlock();
    std::vector<MetricFamily> families;
    sampler.Append(&families);
    lock.lock();
    gpu_families_ = std::move(families);
    gpu_cv_.wait_for(lock, std::chrono::nanoseconds(every_ns), [this] { return stopping_; });
  }
}

MetricsExporter::~MetricsExporter() {
  {
    std::lock_guard<std::mutex> lock(gpu_mu_);
    stopping_ = true;
  }
  gpu_cv_.notify_all();
  if (gpu_thread_.joinable()) gpu_thread_.join();
}

void MetricsExporter::Refresh(const BrokerCore& core, const DaemonCounters& daemon) {
  std::vector<MetricFamily> families;
  core.AppendMetrics(&families);
  {
    std::lock_guard<std::mutex> lock(gpu_mu_);  // the NVML thread's latest sample
    families.insert(families.end(), gpu_families_.begin(), gpu_families_.end());
  }
  FamilyBuilder reloads("gpushare_config_reloads_total", "Configuration reloads applied (SIGHUP).",
                        MetricType::Counter);
  FamilyBuilder failures("gpushare_config_reload_failures_total",
                         "Configuration reloads refused (the running config stayed).", MetricType::Counter);
  reloads.Add({}, static_cast<double>(daemon.reloads));
  failures.Add({}, static_cast<double>(daemon.reload_failures));
  reloads.MoveTo(&families);
  failures.MoveTo(&families);
  snapshot_->Set(std::move(families));
}

}  // namespace gpushare::broker
