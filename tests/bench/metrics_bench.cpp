// /metrics with 256 clients (docs/benchmarks.md): what the daemon's thread spends on a
// snapshot (BrokerCore::AppendMetrics and the exporter's Refresh), and a whole scrape
// over HTTP from prometheus-cpp's Exposer (serialization included) while the snapshot
// is refreshed. In process: BrokerCore with a fake channel host, every client scheduled,
// so each has its scheduler series (GPU time, shares, gate-wait histogram).
// Run: build/bin/metrics_bench (prints a markdown table).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/text_serializer.h>

#include "../integration/metrics_http.h"
#include "broker/core/broker_core.h"
#include "broker/io/metrics_exporter.h"

namespace {

using namespace gpushare::broker;
namespace proto = gpushare::protocol;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kGiB = 1ull << 30;
constexpr int kClients = 256;
constexpr int kGpus = 8;
constexpr int kRounds = 200;

class Channels : public ChannelHost {
 public:
  std::string Create(ClientId id, const PeerCredentials&) override { return "bench." + std::to_string(id); }
  void Publish(ClientId, const Grants&) override {}
  void Destroy(ClientId) override {}
};

struct Spread {
  double p50, p99, max;
};
Spread SpreadOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(std::ceil(q * v.size())) - 1)]; };
  return {at(0.5), at(0.99), v.back()};
}
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

int main() {
  std::vector<GpuInfo> gpus;
  for (int g = 0; g < kGpus; ++g) gpus.push_back({g, "bench", 80 * kGiB});
  Channels channels;
  BrokerConfig config;
  config.admission = Admission::kOversubscribe;
  auto core = std::make_unique<BrokerCore>(config, gpus, &channels);
  for (ClientId id = 1; id <= kClients; ++id) {
    proto::Hello h{};
    proto::SetString(h.tenant, ("tenant" + std::to_string(id % 16)).c_str());
    proto::SetString(h.job, ("job" + std::to_string(id % 32)).c_str());
    h.rank = -1;
    h.weight = 1;
    h.device_count = 1;
    h.cap_bytes[0] = 2 * kGiB;
    for (int& v : h.visible) v = -1;
    core->Open(id, {static_cast<int32_t>(100000 + id), 1000, 1000});
    std::vector<uint8_t> in = proto::Encode(proto::Type::kHello, h), out;
    std::string error;
    if (!core->Input(id, &in, &out, &error)) {
      std::fprintf(stderr, "registration %llu: %s\n", static_cast<unsigned long long>(id), error.c_str());
      return 1;
    }
  }
  core->Poll();

  std::vector<double> build;
  size_t families = 0, series = 0;
  for (int i = 0; i < kRounds; ++i) {
    std::vector<prometheus::MetricFamily> out;
    const auto t0 = Clock::now();
    core->AppendMetrics(&out);
    build.push_back(Ms(Clock::now() - t0));
    families = out.size();
    series = 0;
    for (const auto& f : out) series += f.metric.size();
  }

  const int port = testing_support::FreePort();
  std::string error;
  auto exporter = MetricsExporter::Start("127.0.0.1:" + std::to_string(port), 1'000'000'000, &error);
  if (!exporter) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::vector<double> refresh, scrape;
  size_t bytes = 0;
  for (int i = 0; i < kRounds; ++i) {
    const auto t0 = Clock::now();
    exporter->Refresh(*core, DaemonCounters{});
    refresh.push_back(Ms(Clock::now() - t0));
    const auto t1 = Clock::now();
    auto body = testing_support::HttpGet(port, "/metrics", &error);
    scrape.push_back(Ms(Clock::now() - t1));
    if (!body) {
      std::fprintf(stderr, "scrape: %s\n", error.c_str());
      return 1;
    }
    bytes = body->size();
  }
  // The scrape's parts in this thread: the snapshot's copy, then its text.
  std::vector<double> copy, text;
  for (int i = 0; i < kRounds; ++i) {
    const auto t0 = Clock::now();
    std::vector<prometheus::MetricFamily> families_now = exporter->Snapshot();
    const auto t1 = Clock::now();
    const std::string body = prometheus::TextSerializer().Serialize(families_now);
    text.push_back(Ms(Clock::now() - t1));
    copy.push_back(Ms(t1 - t0));
    if (body.size() < 1000) return 1;
  }
  const Spread b = SpreadOf(build), r = SpreadOf(refresh), s = SpreadOf(scrape), c = SpreadOf(copy), t = SpreadOf(text);
  std::printf("%d clients on %d GPUs: %zu families, %zu series, %zu bytes of text per scrape\n\n", kClients, kGpus,
              families, series, bytes);
  std::printf("| measurement (%d rounds) | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n", kRounds);
  std::printf("| BrokerCore::AppendMetrics (daemon thread) | %.3f | %.3f | %.3f |\n", b.p50, b.p99, b.max);
  std::printf("| MetricsExporter::Refresh (daemon thread) | %.3f | %.3f | %.3f |\n", r.p50,
              r.p99, r.max);
  std::printf("| of which: the snapshot's copy (scrape thread) | %.3f | %.3f | %.3f |\n", c.p50, c.p99, c.max);
  std::printf("| of which: TextSerializer (scrape thread) | %.3f | %.3f | %.3f |\n", t.p50, t.p99, t.max);
  std::printf("| GET /metrics over HTTP (the scrape: copy, serialize, send) | %.3f | %.3f | %.3f |\n", s.p50, s.p99,
              s.max);
  return 0;
}
