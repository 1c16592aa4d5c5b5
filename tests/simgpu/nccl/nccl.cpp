// simgpu's stand-in for NCCL (build/simgpu/libnccl.so.2): enough of the library for
// the shim's NCCL hooks and the NCCL sample to run on the simulated node. Ranks of a
// communicator meet in a POSIX shared-memory segment named after their unique id; as
// real NCCL does, init fails with ncclInvalidUsage when two ranks use one GPU (told
// apart by PCI bus id). All-reduce sums real bytes: device memory is host memory here,
// then takes GPU time on the stream as real NCCL's kernel would: a kernel whose name
// gives simgpu its cost, the ring's traffic (2 (n-1)/n of the buffer per rank) over the
// slowest link between the ranks' GPUs (NVLink, PCIe P2P, or staged through the host at
// half PCIe speed, as simgpu's copies are), launched through the driver so that the
// shim's gate and records see it like any kernel.
#include <cuda.h>
#include <fcntl.h>
#include <nccl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <strings.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config.h"

struct ncclComm {
  ncclUniqueId id;
  int nranks;
  int rank;
  int device;
  double link_gbps;  // the slowest link between its ranks' GPUs
  uint64_t ops = 0;  // collectives issued: ranks meet per operation by its number
};

namespace {

constexpr int kMaxRanks = 64;
constexpr auto kTimeout = std::chrono::seconds(30);

thread_local std::string last_error;
thread_local int group_depth = 0;
struct Op {
  const void* send;
  void* recv;
  size_t count;
  ncclDataType_t type;
  ncclRedOp_t op;
  ncclComm_t comm;
  CUstream stream;
};
thread_local std::vector<Op> queued;

ncclResult_t Fail(ncclResult_t r, const std::string& why) {
  last_error = why;
  std::fprintf(stderr, "simgpu NCCL WARN %s\n", why.c_str());
  return r;
}

std::string Hex(const ncclUniqueId& id, uint64_t extra) {
  char buf[64];
  uint64_t a, b;
  std::memcpy(&a, id.internal, 8);
  std::memcpy(&b, id.internal + 8, 8);
  std::snprintf(buf, sizeof buf, "/simgpu-nccl-%016llx%016llx-%llu", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b), static_cast<unsigned long long>(extra));
  return buf;
}

// A meeting of the communicator's ranks: each publishes `bytes` into its slot, waits
// for all, reads, and the last to leave removes the segment.
struct Meeting {
  std::atomic<uint32_t> arrived;
  std::atomic<uint32_t> left;
  std::atomic<uint32_t> present[kMaxRanks];
  uint64_t slot_bytes;
  // then kMaxRanks slots of slot_bytes
};

ncclResult_t Meet(const std::string& name, int nranks, int rank, const void* mine, size_t bytes,
                  const std::function<void(const unsigned char* slots)>& read) {
  const size_t size = sizeof(Meeting) + static_cast<size_t>(kMaxRanks) * bytes;
  const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0) return Fail(ncclSystemError, "shm_open " + name + ": " + std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    close(fd);
    return Fail(ncclSystemError, "ftruncate " + name);
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return Fail(ncclSystemError, "mmap " + name);
  auto* m = static_cast<Meeting*>(p);
  auto* slots = static_cast<unsigned char*>(p) + sizeof(Meeting);
  std::memcpy(slots + static_cast<size_t>(rank) * bytes, mine, bytes);
  m->present[rank].store(1, std::memory_order_release);
  m->arrived.fetch_add(1, std::memory_order_acq_rel);
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (m->arrived.load(std::memory_order_acquire) < static_cast<uint32_t>(nranks)) {
    if (std::chrono::steady_clock::now() > deadline) {
      munmap(p, size);
      shm_unlink(name.c_str());
      return Fail(ncclSystemError, "rank " + std::to_string(rank) + ": the other ranks did not come within 30 s");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  read(slots);
  if (m->left.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(nranks)) shm_unlink(name.c_str());
  munmap(p, size);
  return ncclSuccess;
}

size_t TypeSize(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
  }
}

template <typename T>
void Reduce(T* out, const unsigned char* slots, size_t bytes, size_t count, int nranks, ncclRedOp_t op) {
  for (size_t i = 0; i < count; ++i) {
    T acc;
    std::memcpy(&acc, slots + i * sizeof(T), sizeof(T));
    for (int r = 1; r < nranks; ++r) {
      T v;
      std::memcpy(&v, slots + static_cast<size_t>(r) * bytes + i * sizeof(T), sizeof(T));
      switch (op) {
        case ncclProd: acc = acc * v; break;
        case ncclMax: acc = v > acc ? v : acc; break;
        case ncclMin: acc = v < acc ? v : acc; break;
        default: acc = acc + v; break;
      }
    }
    if (op == ncclAvg) acc = acc / static_cast<T>(nranks);
    out[i] = acc;
  }
}

// The collective's time on the GPU: a kernel on its stream, launched in the stream's
// context (the caller's current context is kept).
ncclResult_t LaunchTransfer(const Op& o, size_t bytes) {
  const ncclComm_t c = o.comm;
  const double traffic = c->nranks < 2 ? 0.0 : 2.0 * (c->nranks - 1) / c->nranks * static_cast<double>(bytes);
  const long us = std::max(1L, std::lround(traffic / (c->link_gbps * 1e3)));
  CUcontext ctx = nullptr, caller = nullptr;
  if (cuStreamGetCtx(o.stream, &ctx) != CUDA_SUCCESS) return Fail(ncclUnhandledCudaError, "cuStreamGetCtx");
  cuCtxGetCurrent(&caller);
  cuCtxSetCurrent(ctx);
  static std::mutex mu;
  static CUmodule module = nullptr;  // an image without PTX entries: any kernel name
  CUfunction kernel = nullptr;
  CUresult r;
  {
    std::lock_guard<std::mutex> lock(mu);
    r = module != nullptr ? CUDA_SUCCESS : cuModuleLoadData(&module, "simgpu NCCL kernels");
    if (r == CUDA_SUCCESS)
      r = cuModuleGetFunction(&kernel, module,
                              ("ncclDevKernel_AllReduce_simgpu_memory_" + std::to_string(us) + "us").c_str());
  }
  if (r == CUDA_SUCCESS) r = cuLaunchKernel(kernel, 1, 1, 1, 32, 1, 1, 0, o.stream, nullptr, nullptr);
  cuCtxSetCurrent(caller);
  return r == CUDA_SUCCESS ? ncclSuccess
                           : Fail(ncclUnhandledCudaError, "the all-reduce's kernel: CUDA error " + std::to_string(r));
}

ncclResult_t RunAllReduce(const Op& o) {
  const size_t bytes = o.count * TypeSize(o.type);
  if (bytes == 0 && o.count > 0) return Fail(ncclInvalidArgument, "data type not modeled by simgpu");
  cuStreamSynchronize(o.stream);  // earlier work on the stream first, as the collective would
  ncclComm_t c = o.comm;
  const std::string name = Hex(c->id, ++c->ops);
  ncclResult_t met = Meet(name, c->nranks, c->rank, o.send, bytes, [&](const unsigned char* slots) {
    switch (o.type) {
      case ncclFloat32: Reduce(static_cast<float*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      case ncclFloat64: Reduce(static_cast<double*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      case ncclInt32: Reduce(static_cast<int32_t*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      case ncclUint32: Reduce(static_cast<uint32_t*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      case ncclInt64: Reduce(static_cast<int64_t*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      case ncclUint64: Reduce(static_cast<uint64_t*>(o.recv), slots, bytes, o.count, c->nranks, o.op); break;
      default: std::memcpy(o.recv, slots, bytes); break;  // 8/16-bit types: rank 0's data
    }
  });
  return met == ncclSuccess ? LaunchTransfer(o, bytes) : met;
}

// The current device, as the runtime NCCL uses would see it (device 0 if no context).
int CurrentDevice() {
  CUdevice dev = 0;
  if (cuCtxGetDevice(&dev) != CUDA_SUCCESS) return 0;
  return static_cast<int>(dev);
}

std::string BusId(int device) {
  char bus[32] = {};
  CUdevice dev = 0;
  if (cuDeviceGet(&dev, device) != CUDA_SUCCESS || cuDeviceGetPCIBusId(bus, sizeof bus, dev) != CUDA_SUCCESS) return "";
  return bus;
}

// The slowest link between the GPUs of `buses` (PCI bus ids), in GB/s, from the node's
// config: NVLink, PCIe P2P, or none (staged through the host at half PCIe speed).
double SlowestLinkGbps(const std::vector<std::string>& buses) {
  std::string error;
  static const std::optional<simgpu::NodeConfig> config = simgpu::LoadConfigFromEnv(&error);
  if (!config) return 25.0;
  std::vector<int> gpus;
  for (const std::string& bus : buses)
    for (size_t g = 0; g < config->gpus.size(); ++g)
      if (strcasecmp(config->gpus[g].pci_bus_id.c_str(), bus.c_str()) == 0) gpus.push_back(static_cast<int>(g));
  double slowest = config->nvlink_bandwidth_gbps;
  for (size_t i = 0; i < gpus.size(); ++i)
    for (size_t j = i + 1; j < gpus.size(); ++j) {
      const simgpu::LinkKind k = config->link(gpus[i], gpus[j]);
      slowest = std::min(slowest, k == simgpu::LinkKind::kNvlink ? config->nvlink_bandwidth_gbps
                                  : k == simgpu::LinkKind::kPcie ? config->pcie_bandwidth_gbps
                                                                 : config->pcie_bandwidth_gbps / 2);
    }
  return slowest;
}

// Init of one rank: the ranks meet and compare their GPUs.
ncclResult_t Init(ncclComm_t* out, int nranks, const ncclUniqueId& id, int rank, int device) {
  if (out == nullptr) return Fail(ncclInvalidArgument, "comm is NULL");
  if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
    return Fail(ncclInvalidArgument, "rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " is invalid");
  char bus[32] = {};
  const std::string mine = BusId(device);
  if (mine.empty()) return Fail(ncclUnhandledCudaError, "cannot identify CUDA device " + std::to_string(device));
  std::snprintf(bus, sizeof bus, "%s", mine.c_str());
  std::vector<std::string> all(nranks);
  ncclResult_t r = Meet(Hex(id, 0), nranks, rank, bus, sizeof bus, [&](const unsigned char* slots) {
    for (int i = 0; i < nranks; ++i) all[i] = reinterpret_cast<const char*>(slots + i * sizeof bus);
  });
  if (r != ncclSuccess) return r;
  for (int i = 0; i < nranks; ++i)
    if (i != rank && all[i] == mine)
      return Fail(ncclInvalidUsage, "Duplicate GPU detected : rank " + std::to_string(rank) + " and rank " +
                                        std::to_string(i) + " both on CUDA device " + mine);
  *out = new ncclComm{id, nranks, rank, device, SlowestLinkGbps(all)};
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (version == nullptr) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == nullptr) return ncclInvalidArgument;
  std::memset(id, 0, sizeof *id);
  if (getrandom(id->internal, 16, 0) != 16) return Fail(ncclSystemError, "getrandom");
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t*) {
  return Init(comm, nranks, id, rank, CurrentDevice());
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return Init(comm, nranks, id, rank, CurrentDevice());
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (comms == nullptr || ndev < 1 || ndev > kMaxRanks) return Fail(ncclInvalidArgument, "ncclCommInitAll arguments");
  ncclUniqueId id;
  if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return r;
  std::vector<std::string> buses(ndev);
  for (int i = 0; i < ndev; ++i) {
    const int dev = devlist ? devlist[i] : i;
    buses[i] = BusId(dev);
    if (buses[i].empty()) return Fail(ncclUnhandledCudaError, "cannot identify CUDA device " + std::to_string(dev));
    for (int j = 0; j < i; ++j)
      if (buses[j] == buses[i])
        return Fail(ncclInvalidUsage, "Duplicate GPU detected : rank " + std::to_string(i) + " and rank " +
                                          std::to_string(j) + " both on CUDA device " + buses[i]);
  }
  const double gbps = SlowestLinkGbps(buses);
  for (int i = 0; i < ndev; ++i) comms[i] = new ncclComm{id, ndev, i, devlist ? devlist[i] : i, gbps};
  return ncclSuccess;
}

// Simplified: the new communicator has the parent's ranks (simgpu does not gather colours).
ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int, ncclComm_t* newcomm, ncclConfig_t*) {
  if (comm == nullptr || newcomm == nullptr) return Fail(ncclInvalidArgument, "ncclCommSplit arguments");
  if (color == NCCL_SPLIT_NOCOLOR) {
    *newcomm = nullptr;
    return ncclSuccess;
  }
  ncclUniqueId id = comm->id;
  id.internal[16] = static_cast<char>(id.internal[16] + 1 + color);
  *newcomm = new ncclComm{id, comm->nranks, comm->rank, comm->device, comm->link_gbps};
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t) { return ncclSuccess; }
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (comm == nullptr || count == nullptr) return ncclInvalidArgument;
  *count = comm->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (comm == nullptr || device == nullptr) return ncclInvalidArgument;
  *device = comm->device;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (comm == nullptr || rank == nullptr) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* error) {
  if (error == nullptr) return ncclInvalidArgument;
  *error = ncclSuccess;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}
const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

ncclResult_t ncclGroupStart() {
  ++group_depth;
  return ncclSuccess;
}

// A group's collectives run together (one thread per rank of this process), as one
// process driving several GPUs needs.
ncclResult_t ncclGroupEnd() {
  if (group_depth == 0) return Fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--group_depth > 0) return ncclSuccess;
  std::vector<Op> ops;
  ops.swap(queued);
  std::vector<ncclResult_t> results(ops.size(), ncclSuccess);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ops.size(); ++i) threads.emplace_back([&, i] { results[i] = RunAllReduce(ops[i]); });
  for (std::thread& t : threads) t.join();
  for (ncclResult_t r : results)
    if (r != ncclSuccess) return r;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  if (comm == nullptr) return Fail(ncclInvalidArgument, "comm is NULL");
  Op o{send, recv, count, type, op, comm, reinterpret_cast<CUstream>(stream)};
  if (group_depth > 0) {
    queued.push_back(o);
    return ncclSuccess;
  }
  return RunAllReduce(o);
}

}  // extern "C"
