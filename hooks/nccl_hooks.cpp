// NCCL/RCCL hooks: communicators made and ended are told to the broker (members and
// their GPUs, shown by gpushare-smi), and a communicator whose ranks cannot reach each
// other's GPUs directly is logged as a warning, before NCCL quietly falls back to
// copies through host memory. Everything else about NCCL is left alone.
#include <dlfcn.h>
#include <nccl.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "client.h"
#include "log.h"
#include "nccl_hooks.h"
#include "real_dlsym.h"

namespace gpushare::nccl {
namespace real {
#define GS_NCCL_HOOK(symbol, params, args) inline decltype(&::symbol) symbol = nullptr;
#define GS_NCCL_REAL(symbol) inline decltype(&::symbol) symbol = nullptr;
#include "nccl_hooks.def"
#undef GS_NCCL_HOOK
#undef GS_NCCL_REAL
}  // namespace real

namespace {

struct HookEntry {
  const char* symbol;
  void* hook;
  void** real;
};

const HookEntry kHooks[] = {
#define GS_NCCL_HOOK(symbol, params, args) \
  {#symbol, reinterpret_cast<void*>(&::symbol), reinterpret_cast<void**>(&real::symbol)},
#define GS_NCCL_REAL(symbol) {#symbol, nullptr, reinterpret_cast<void**>(&real::symbol)},
#include "nccl_hooks.def"
#undef GS_NCCL_HOOK
#undef GS_NCCL_REAL
};

// The real library: the next definition after ours (a program linked with -lnccl or
// -lrccl), else a copy already loaded by name (a program that dlopened it locally).
void ResolveReal() {
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = RTLD_NEXT;
    if (RealDlsym()(RTLD_NEXT, "ncclCommInitRank") == nullptr)
      for (const char* name : {"libnccl.so.2", "librccl.so.1", "librccl.so"})
        if ((handle = dlopen(name, RTLD_NOW | RTLD_NOLOAD)) != nullptr) break;
    if (handle == nullptr) return;
    for (const HookEntry& e : kHooks) *e.real = RealDlsym()(handle, e.symbol);
  });
}

// Ranks of one communicator must send the same id: a hash of what they all share.
uint64_t Hash(const void* data, size_t n, uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Communicators this process is in, by handle (to report their end and to derive a
// split's id), and those made inside a group, known once the group ends.
std::mutex mu;
std::map<ncclComm_t, uint64_t> comms;  // handle -> id
struct Pending {
  ncclComm_t comm;
  uint64_t id;
  int nranks;
  int rank;
};
thread_local int group_depth = 0;
thread_local std::vector<Pending> pending;

// Tells the broker; logs its warning. `nranks`/`rank` are what the call said, used
// when the communicator cannot be asked yet (non-blocking init).
void Joined(ncclComm_t comm, uint64_t id, int nranks, int rank) {
  if (comm == nullptr) return;
  if (group_depth > 0) {
    pending.push_back({comm, id, nranks, rank});
    return;
  }
  int count = nranks, me = rank, device = -1;
  if (real::ncclCommCount) real::ncclCommCount(comm, &count);
  if (real::ncclCommUserRank) real::ncclCommUserRank(comm, &me);
  if (real::ncclCommCuDevice && real::ncclCommCuDevice(comm, &device) != ncclSuccess) device = -1;
  {
    std::lock_guard<std::mutex> lock(mu);
    comms[comm] = id;
  }
  CommunicatorEvent joined;
  joined.joined = true;
  joined.nranks = static_cast<uint32_t>(count);
  joined.rank = me;
  joined.device = device;
  joined.id = id;
  joined.handle = reinterpret_cast<uintptr_t>(comm);
  const std::string warning = Client::Get().ReportCommunicator(joined);
  Log(LogLevel::kInfo, "communicator %016llx: rank %d of %d on virtual GPU %d", static_cast<unsigned long long>(id), me,
      count, device);
  if (!warning.empty())
    Log(LogLevel::kWarn, "communicator %016llx (rank %d of %d): %s", static_cast<unsigned long long>(id), me, count,
        warning.c_str());
}

void Left(ncclComm_t comm) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = comms.find(comm);
    if (it == comms.end()) return;
    id = it->second;
    comms.erase(it);
  }
  CommunicatorEvent left;
  left.id = id;
  left.handle = reinterpret_cast<uintptr_t>(comm);
  Client::Get().ReportCommunicator(left);
}

uint64_t IdOf(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = comms.find(comm);
  return it == comms.end() ? Hash(&comm, sizeof comm, getpid()) : it->second;
}

}  // namespace

void* HookForSymbol(const char* symbol) {
  for (const HookEntry& e : kHooks)
    if (e.hook != nullptr && std::strcmp(symbol, e.symbol) == 0) return e.hook;
  return nullptr;
}

}  // namespace gpushare::nccl

using namespace gpushare::nccl;  // NOLINT: the hooks below are the real names

#define GS_REAL_NCCL(symbol, ...)                          \
  (ResolveReal(), real::symbol ? real::symbol(__VA_ARGS__) \
                               : (gpushare::Log(gpushare::LogLevel::kError, "no real %s", #symbol), ncclSystemError))

extern "C" {

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  ncclResult_t r = GS_REAL_NCCL(ncclCommInitRank, comm, nranks, id, rank);
  if (r == ncclSuccess && comm != nullptr) Joined(*comm, Hash(&id, sizeof id), nranks, rank);
  return r;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
  ncclResult_t r = GS_REAL_NCCL(ncclCommInitRankConfig, comm, nranks, id, rank, config);
  if ((r == ncclSuccess || r == ncclInProgress) && comm != nullptr) Joined(*comm, Hash(&id, sizeof id), nranks, rank);
  return r;
}

ncclResult_t ncclCommInitRankScalable(ncclComm_t* comm, int nranks, int rank, int n_ids, ncclUniqueId* ids,
                                      ncclConfig_t* config) {
  ncclResult_t r = GS_REAL_NCCL(ncclCommInitRankScalable, comm, nranks, rank, n_ids, ids, config);
  if ((r == ncclSuccess || r == ncclInProgress) && comm != nullptr && ids != nullptr && n_ids > 0)
    Joined(*comm, Hash(ids, sizeof *ids), nranks, rank);
  return r;
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  ncclResult_t r = GS_REAL_NCCL(ncclCommInitAll, comms, ndev, devlist);
  if (r == ncclSuccess && comms != nullptr && ndev > 0) {
    const uint64_t id = Hash(&comms[0], sizeof comms[0], static_cast<uint64_t>(getpid()));
    for (int i = 0; i < ndev; ++i) Joined(comms[i], id, ndev, i);
  }
  return r;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config) {
  // The new communicator's ranks share their parent and their colour.
  const uint64_t parent = IdOf(comm);
  ncclResult_t r = GS_REAL_NCCL(ncclCommSplit, comm, color, key, newcomm, config);
  if ((r == ncclSuccess || r == ncclInProgress) && newcomm != nullptr && *newcomm != nullptr)
    Joined(*newcomm, Hash(&color, sizeof color, parent), 0, key);
  return r;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  Left(comm);
  return GS_REAL_NCCL(ncclCommDestroy, comm);
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  Left(comm);
  return GS_REAL_NCCL(ncclCommAbort, comm);
}

ncclResult_t ncclGroupStart() {
  ncclResult_t r = GS_REAL_NCCL(ncclGroupStart);
  if (r == ncclSuccess) ++group_depth;
  return r;
}

// Communicators made inside the group exist once it ends.
ncclResult_t ncclGroupEnd() {
  ncclResult_t r = GS_REAL_NCCL(ncclGroupEnd);
  if (group_depth > 0) --group_depth;
  if (group_depth == 0 && !pending.empty()) {
    std::vector<Pending> joined;
    joined.swap(pending);
    if (r == ncclSuccess || r == ncclInProgress)
      for (const Pending& p : joined) Joined(p.comm, p.id, p.nranks, p.rank);
  }
  return r;
}

}  // extern "C"
