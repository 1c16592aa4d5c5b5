// What placement costs at registration: BrokerCore handling a Hello (the policy over
// every GPU and, for a multi-GPU client, every set of GPUs) on nodes of 2 to 16 GPUs
// with 32 clients already there, and a rank of a job planning its job. In process, no
// socket: the decision only (broker_bench measures registration end to end).
// Run: build/bin/placement_bench (figures in docs/benchmarks.md).
#include <benchmark/benchmark.h>

#include <memory>

#include "broker/core/broker_core.h"

namespace {

using namespace gpushare::broker;
namespace proto = gpushare::protocol;
constexpr uint64_t kGiB = 1ull << 30;

// `n` GPUs in pairs over NVLink, PCIe P2P behind switches of four.
Topology Node(int n) {
  Topology t(std::vector<uint64_t>(n, 80 * kGiB));
  for (int a = 0; a < n; ++a)
    for (int b = a + 1; b < n; ++b)
      if (a / 4 == b / 4) t.Connect(a, b, a / 2 == b / 2 ? Link::kNvlink : Link::kPcie, PathLevel::kSingleSwitch);
  return t;
}

std::vector<uint8_t> HelloBytes(uint32_t device_count, const char* job, int rank, uint32_t job_size) {
  proto::Hello h{};
  proto::SetString(h.tenant, "t");
  proto::SetString(h.job, job);
  h.rank = rank;
  h.job_size = job_size;
  h.weight = 1;
  h.device_count = device_count;
  for (int& v : h.visible) v = -1;
  return proto::Encode(proto::Type::kHello, h);
}

bool Register(BrokerCore& core, ClientId id, const std::vector<uint8_t>& hello) {
  core.Open(id, {static_cast<int32_t>(id), 1000, 1000});
  std::vector<uint8_t> in = hello, out;
  std::string error;
  return core.Input(id, &in, &out, &error) && !out.empty();
}

// A node of `gpus` GPUs with 32 one-GPU clients on it (on the heap: BrokerCore's parts
// point into it, so it is neither copied nor moved).
std::unique_ptr<BrokerCore> BusyNode(int gpus) {
  std::vector<GpuInfo> info;
  for (int g = 0; g < gpus; ++g) info.push_back({g, "g", 80 * kGiB});
  BrokerConfig config;  // named: GCC 12 warns of a temporary's strings "maybe uninitialized" here
  auto core = std::make_unique<BrokerCore>(std::move(config), info, nullptr);
  core->SetTopology(Node(gpus));
  for (ClientId id = 1; id <= 32; ++id) Register(*core, id, HelloBytes(1, "", -1, 0));
  return core;
}

// args: GPUs on the node, GPUs the new client wants.
void BM_RegisterDecision(benchmark::State& state) {
  std::unique_ptr<BrokerCore> node = BusyNode(static_cast<int>(state.range(0)));
  BrokerCore& core = *node;
  ClientId next = 1000;
  const std::vector<uint8_t> hello = HelloBytes(static_cast<uint32_t>(state.range(1)), "", -1, 0);
  for (auto _ : state) {
    const ClientId id = next++;
    if (!Register(core, id, hello)) state.SkipWithError("refused");
    state.PauseTiming();
    core.Close(id);
    state.ResumeTiming();
  }
}
BENCHMARK(BM_RegisterDecision)->ArgsProduct({{2, 8, 16}, {1}})->Args({8, 4})->Args({16, 4})->Args({16, 8});

// The first rank of a job of `ranks` ranks: the job's set is planned and ordered.
void BM_PlanJob(benchmark::State& state) {
  std::unique_ptr<BrokerCore> node = BusyNode(static_cast<int>(state.range(0)));
  BrokerCore& core = *node;
  ClientId next = 1000;
  const std::vector<uint8_t> hello = HelloBytes(0, "job", 0, static_cast<uint32_t>(state.range(1)));
  for (auto _ : state) {
    const ClientId id = next++;
    if (!Register(core, id, hello)) state.SkipWithError("refused");
    state.PauseTiming();
    core.Close(id);  // the job's last rank: the plan is forgotten, the next iteration plans anew
    state.ResumeTiming();
  }
}
BENCHMARK(BM_PlanJob)->Args({8, 4})->Args({16, 8});

}  // namespace

BENCHMARK_MAIN();
