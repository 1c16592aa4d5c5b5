// The meter's cost on the broker (Google Benchmark; results in docs/benchmarks.md):
// a flush of N live sessions into a real SQLite file (what the daemon's loop pays every
// [metering] interval), and an allocation request (Take) with and without the meter.
// Record consumption with the meter attached is BM_BrokerConsume/1 in sched_bench.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "broker/core/broker_core.h"
#include "broker/io/meter_store.h"

namespace {

namespace broker = gpushare::broker;
namespace proto = gpushare::protocol;
constexpr uint64_t kS = 1'000'000'000;

// A BrokerCore on 8 GPUs with `clients` registered clients (10 tenants), each holding
// some memory; metered into a fresh database in a temporary directory when `metered`.
struct MeteredCore {
  std::filesystem::path dir;
  std::unique_ptr<broker::MeterStore> store;
  std::unique_ptr<broker::BrokerCore> core;
  uint64_t wall = 1'796'083'200ull * kS;

  MeteredCore(int clients, bool metered) {
    std::vector<broker::GpuInfo> gpus;
    for (int g = 0; g < 8; ++g) gpus.push_back({g, std::string(1, 'g').append(std::to_string(g)), 1ull << 40});
    core = std::make_unique<broker::BrokerCore>(broker::BrokerConfig{}, gpus, nullptr);
    if (metered) {
      dir = std::filesystem::temp_directory_path() / ("gs-meter-bench-" + std::to_string(getpid()));
      std::filesystem::remove_all(dir);
      std::string error;
      store = broker::MeterStore::Open((dir / "metering.db").string(), &error);
      if (!store) {
        std::fprintf(stderr, "meter_bench: %s\n", error.c_str());
        std::exit(1);
      }
      core->AttachMeter(store.get(), 1, {}, [this] { return wall; });
    }
    for (int c = 1; c <= clients; ++c) {
      core->Open(c, {c, 1000, 1000});
      proto::Hello h{};
      // (appended, not "t" + ...: GCC 12's -Wrestrict misfires on a one-letter literal plus a string)
      proto::SetString(h.tenant, std::string(1, 't').append(std::to_string(c % 10)));
      h.weight = 1;
      h.device_count = 1;
      for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = v == 0 ? c % 8 : -1;
      Send(c, proto::Encode(proto::Type::kHello, h));
      Send(c, proto::Encode(proto::Type::kTake, proto::Take{0, 0, 1ull << 20}));
    }
  }
  ~MeteredCore() {
    core.reset();
    store.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  void Send(broker::ClientId id, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t> in = bytes, out;
    std::string error;
    if (!core->Input(id, &in, &out, &error)) {
      std::fprintf(stderr, "meter_bench: %s\n", error.c_str());
      std::exit(1);
    }
  }
};

// One flush of every live session (counters read, integrals advanced, one transaction).
void BM_MeterFlush(benchmark::State& state) {
  MeteredCore m(static_cast<int>(state.range(0)), true);
  std::string error;
  for (auto _ : state) {
    m.wall += 10 * kS;  // an interval later
    if (!m.core->FlushMeter(&error)) state.SkipWithError(error.c_str());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_MeterFlush)->Arg(100)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

// A Take and a Give by one of 1000 clients: the ledger, and with the meter its SetHeld.
void BM_TakeGive(benchmark::State& state) {
  MeteredCore m(1000, state.range(0) != 0);
  const auto take = proto::Encode(proto::Type::kTake, proto::Take{0, 0, 4096});
  const auto give = proto::Encode(proto::Type::kGive, proto::Give{0, 4096});
  for (auto _ : state) {
    m.wall += 1000;
    m.Send(500, take);
    m.Send(500, give);
  }
}
BENCHMARK(BM_TakeGive)->Arg(0)->Arg(1);

}  // namespace

BENCHMARK_MAIN();
