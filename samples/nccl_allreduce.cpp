// nccl_allreduce: an all-reduce across GPUs with NCCL, the way distributed training
// uses it, checked for the right sum. Two forms:
//   nccl_allreduce [--gpus N]                      one process, one rank per GPU (ncclCommInitAll)
//   nccl_allreduce --rank R --nranks N --id-file F one process per rank (ncclCommInitRank); rank 0
//                                                  writes the unique id to F, the others read it
// A rank uses virtual GPU R (--device overrides), as torchrun programs use LOCAL_RANK.
// Every rank prints the GPU it ran on (PCI bus id) so a run shows where ranks landed.
// --compute K launches the compute kernel (compute_kernel.h) K times on each rank's
// stream before each all-reduce: a training step's compute, then its gradient exchange.
#include <nccl.h>
#include <unistd.h>

#include <fstream>
#include <thread>
#include <vector>

#include "common.h"
#include "compute_kernel.h"

namespace {

#define NCCL_CHECK(call) NcclCheck((call), #call, __FILE__, __LINE__)
void NcclCheck(ncclResult_t r, const char* call, const char* file, int line) {
  if (r == ncclSuccess) return;
  std::fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", file, line, call, ncclGetErrorString(r), static_cast<int>(r));
  std::exit(1);
}

std::string BusId(CUdevice dev) {
  char bus[32] = {};
  CHECK(cuDeviceGetPCIBusId(bus, static_cast<int>(sizeof bus), dev));
  return bus;
}

// One rank's buffers: `count` floats, all equal to rank + 1 before the all-reduce.
struct Rank {
  samples::Device device;
  CUstream stream = nullptr;
  CUdeviceptr buffer = 0;
  ncclComm_t comm = nullptr;
  CUmodule module = nullptr;  // the compute kernel's, with --compute
  CUfunction compute = nullptr;
  CUdeviceptr compute_out = 0;
  unsigned grid = 0;
};

constexpr unsigned kComputeBlock = 256;
unsigned compute_iters = 20000;  // ~0.5 ms per launch on an H100, as compute_loop's

void LoadCompute(Rank& r) {
  CHECK(cuCtxSetCurrent(r.device.ctx));
  int sms = 0;
  CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, r.device.dev));
  r.grid = static_cast<unsigned>(sms) * 4;
  CHECK(cuMemAlloc(&r.compute_out, size_t{r.grid} * kComputeBlock * sizeof(float)));
  r.module = samples::LoadPtx(samples::kComputePtx);
  CHECK(cuModuleGetFunction(&r.compute, r.module, samples::kComputeKernel));
}

void Compute(Rank& r, long long launches) {
  CHECK(cuCtxSetCurrent(r.device.ctx));
  void* params[] = {&r.compute_out, &compute_iters};
  for (long long i = 0; i < launches; ++i)
    CHECK(cuLaunchKernel(r.compute, r.grid, 1, 1, kComputeBlock, 1, 1, 0, r.stream, params, nullptr));
}

void Fill(Rank& r, int rank, size_t count) {
  CHECK(cuCtxSetCurrent(r.device.ctx));
  std::vector<float> host(count, static_cast<float>(rank + 1));
  CHECK(cuMemAlloc(&r.buffer, count * sizeof(float)));
  CHECK(cuMemcpyHtoD(r.buffer, host.data(), count * sizeof(float)));
  CHECK(cuStreamCreate(&r.stream, CU_STREAM_NON_BLOCKING));
}

// After the first all-reduce (a sum, in place) each element must be 1 + 2 + ... + nranks.
bool Check(Rank& r, int rank, int nranks, size_t count) {
  CHECK(cuCtxSetCurrent(r.device.ctx));
  std::vector<float> host(count);
  CHECK(cuMemcpyDtoH(host.data(), r.buffer, count * sizeof(float)));
  const float want = static_cast<float>(nranks) * static_cast<float>(nranks + 1) / 2;
  for (size_t i = 0; i < count; ++i)
    if (host[i] != want) {
      std::fprintf(stderr, "rank %d: element %zu is %g, expected %g\n", rank, i, host[i], want);
      return false;
    }
  return true;
}

void Finish(Rank& r) {
  CHECK(cuCtxSetCurrent(r.device.ctx));
  NCCL_CHECK(ncclCommDestroy(r.comm));
  if (r.module != nullptr) {
    CHECK(cuModuleUnload(r.module));
    CHECK(cuMemFree(r.compute_out));
  }
  CHECK(cuStreamDestroy(r.stream));
  CHECK(cuMemFree(r.buffer));
  samples::CloseDevice(r.device);
}

ncclUniqueId ShareId(int rank, const std::string& path) {
  ncclUniqueId id{};
  if (rank == 0) {
    NCCL_CHECK(ncclGetUniqueId(&id));
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp, std::ios::binary).write(id.internal, sizeof id.internal);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::perror(path.c_str());
      std::exit(1);
    }
    return id;
  }
  for (int waited_ms = 0; waited_ms < 60000; waited_ms += 10) {
    std::ifstream in(path, std::ios::binary);
    if (in.read(id.internal, sizeof id.internal)) return id;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "rank %d: no unique id in %s after 60 s\n", rank, path.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  samples::Args args(argc, argv,
                     {"--gpus", "--rank", "--nranks", "--id-file", "--device", "--count", "--rounds", "--compute"},
                     "[--gpus N] | --rank R --nranks N --id-file FILE [--device D]  [--count FLOATS] [--rounds K] "
                     "[--compute LAUNCHES]");
  const size_t count = static_cast<size_t>(args.Int("--count", 1 << 20));
  // More rounds: keep all-reducing (every rank the same number of times, as collectives
  // must) and print the rate.
  const long long rounds = args.Int("--rounds", 1);
  if (rounds < 1) args.Fail("--rounds: expected a positive number");
  const long long compute = args.Int("--compute", 0);
  if (compute < 0) args.Fail("--compute: expected 0 or more launches");
  CHECK(cuInit(0));
  int visible = 0;
  CHECK(cuDeviceGetCount(&visible));

  std::vector<Rank> ranks;
  std::vector<int> numbers;  // the rank number of each entry of `ranks`
  int nranks = 0;
  if (args.Int("--nranks", 0) > 0) {
    nranks = static_cast<int>(args.Int("--nranks", 0));
    const int rank = static_cast<int>(args.Int("--rank", -1));
    if (rank < 0 || rank >= nranks) args.Fail("--rank: expected 0 to --nranks - 1");
    const std::string path = args.String("--id-file", "");
    if (path.empty()) args.Fail("--id-file is needed with --nranks");
    const ncclUniqueId id = ShareId(rank, path);
    ranks.resize(1);
    numbers = {rank};
    ranks[0].device = samples::OpenDevice(args.Int("--device", rank));
    Fill(ranks[0], rank, count);
    NCCL_CHECK(ncclCommInitRank(&ranks[0].comm, nranks, id, rank));
  } else {
    nranks = static_cast<int>(args.Int("--gpus", visible));
    if (nranks < 1 || nranks > visible) args.Fail("--gpus: expected 1 to " + std::to_string(visible));
    ranks.resize(nranks);
    std::vector<ncclComm_t> comms(nranks);
    std::vector<int> devices(nranks);
    for (int i = 0; i < nranks; ++i) {
      devices[i] = i;
      numbers.push_back(i);
      ranks[i].device = samples::OpenDevice(i);
      Fill(ranks[i], i, count);
    }
    NCCL_CHECK(ncclCommInitAll(comms.data(), nranks, devices.data()));
    for (int i = 0; i < nranks; ++i) ranks[i].comm = comms[i];
  }

  if (compute > 0)
    for (Rank& r : ranks) LoadCompute(r);
  auto all_reduce = [&] {
    if (compute > 0)
      for (Rank& r : ranks) Compute(r, compute);
    NCCL_CHECK(ncclGroupStart());
    for (Rank& r : ranks) {
      CHECK(cuCtxSetCurrent(r.device.ctx));
      NCCL_CHECK(ncclAllReduce(reinterpret_cast<void*>(r.buffer), reinterpret_cast<void*>(r.buffer), count, ncclFloat,
                               ncclSum, r.comm, r.stream));
    }
    NCCL_CHECK(ncclGroupEnd());
    for (Rank& r : ranks) {
      CHECK(cuCtxSetCurrent(r.device.ctx));
      CHECK(cuStreamSynchronize(r.stream));
    }
  };
  all_reduce();
  bool ok = true;
  for (size_t i = 0; i < ranks.size(); ++i) {
    ok = Check(ranks[i], numbers[i], nranks, count) && ok;
    std::printf("nccl_allreduce: rank %d of %d on virtual GPU %d (%s, PCI %s): %s\n", numbers[i], nranks,
                ranks[i].device.ordinal, ranks[i].device.name.c_str(), BusId(ranks[i].device.dev).c_str(),
                ok ? "sum ok" : "WRONG SUM");
  }
  std::fflush(stdout);
  if (rounds > 1) {
    const auto start = std::chrono::steady_clock::now();
    for (long long i = 1; i < rounds; ++i) all_reduce();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("nccl_allreduce: %lld more all-reduces of %zu floats in %.2f s (%.1f per second)\n", rounds - 1, count,
                elapsed, static_cast<double>(rounds - 1) / elapsed);
  }
  for (Rank& r : ranks) Finish(r);
  return ok ? 0 : 1;
}
