// NCCL/RCCL hooks: communicators made and ended are told to the broker (members and
// their GPUs, shown by gpushare-smi), and a communicator whose ranks cannot reach each
// other's GPUs directly is logged as a warning, before NCCL quietly falls back to
// copies through host memory. Collectives are timed on the GPU (collective_timer.h).
// Everything else about NCCL is left alone.
#include <dlfcn.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <vector>

#include "client.h"
#include "common/family.h"
#include "log.h"
#include "nccl/collective_timer.h"

namespace gpushare::nccl {
namespace real {
#define GS_NCCL_HOOK(symbol, params, args) inline decltype(&::symbol) symbol = nullptr;
#define GS_NCCL_REAL(symbol) inline decltype(&::symbol) symbol = nullptr;
#include "nccl/nccl_hooks.def"
#undef GS_NCCL_HOOK
#undef GS_NCCL_REAL
}  // namespace real

namespace {

// The NCCL/RCCL family as common/family.h sees it.
struct NcclApi {
  using Result = ncclResult_t;
  // What a hook answers when the shim itself fails (guard.h): NCCL reports a failed
  // allocation as ncclSystemError (a system call failed) and its own bugs as
  // ncclInternalError.
  static constexpr Result kOutOfMemory = ncclSystemError;
  static constexpr Result kInternal = ncclInternalError;
  static Result NoReal(const char* symbol) {
    Log(LogLevel::kError, "no real %s", symbol);
    return ncclSystemError;
  }
  static const hooks::HookEntry kEntries[];
  static const size_t kEntryCount;

  // The real library: the next definition after ours (a program linked with -lnccl or
  // -lrccl), else a copy already loaded by name (a program that dlopened it locally).
  static void* OpenRealLibrary() {
    if (hooks::RealDlsym()(RTLD_NEXT, "ncclCommInitRank") != nullptr) return RTLD_NEXT;
    for (const char* name : {"libnccl.so.2", "librccl.so.1", "librccl.so"})
      if (void* handle = dlopen(name, RTLD_NOW | RTLD_NOLOAD)) return handle;
    return nullptr;
  }
};
using Nccl = hooks::Family<NcclApi>;

const hooks::HookEntry NcclApi::kEntries[] = {
#define GS_NCCL_HOOK(symbol, params, args) \
  {#symbol, reinterpret_cast<void*>(&::symbol), reinterpret_cast<void**>(&real::symbol)},
#define GS_NCCL_REAL(symbol) {#symbol, nullptr, reinterpret_cast<void**>(&real::symbol)},
#include "nccl/nccl_hooks.def"
#undef GS_NCCL_HOOK
#undef GS_NCCL_REAL
};
const size_t NcclApi::kEntryCount = std::size(kEntries);

// Ranks of one communicator must send the same id: a hash of what they all share.
uint64_t Hash(const void* data, size_t n, uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Communicators this process is in, by handle (to report their end, to derive a
// split's id and to know a collective's GPU), and those made inside a group, known
// once the group ends.
std::mutex mu;
struct Membership {
  uint64_t id;
  int device;  // virtual
};
std::map<ncclComm_t, Membership> comms;
struct Pending {
  ncclComm_t comm;
  uint64_t id;
  int nranks;
  int rank;
};
thread_local int group_depth = 0;
thread_local std::vector<Pending> pending;
// Streams (and their GPUs) with collectives queued in the current group: NCCL enqueues
// them when the outermost group ends.
thread_local std::vector<std::pair<uintptr_t, int>> group_streams;

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
    comms[comm] = {id, device};
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
    id = it->second.id;
    comms.erase(it);
  }
  ReadCompletedCollectives();  // its last collectives, while the process is still registered
  CommunicatorEvent left;
  left.id = id;
  left.handle = reinterpret_cast<uintptr_t>(comm);
  Client::Get().ReportCommunicator(left);
}

uint64_t IdOf(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = comms.find(comm);
  return it == comms.end() ? Hash(&comm, sizeof comm, getpid()) : it->second.id;
}

int DeviceOf(ncclComm_t comm) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = comms.find(comm); it != comms.end()) return it->second.device;
  }
  int device = -1;
  if (real::ncclCommCuDevice == nullptr || real::ncclCommCuDevice(comm, &device) != ncclSuccess) return -1;
  return device;
}

// A collective: timed around the call, or, inside a group, around the group's end.
template <typename Call>
ncclResult_t Collective(ncclComm_t comm, cudaStream_t stream, Call call) {
  const auto s = reinterpret_cast<uintptr_t>(stream);
  const int device = DeviceOf(comm);
  if (group_depth > 0) {
    const std::pair<uintptr_t, int> key{s, device};
    if (std::find(group_streams.begin(), group_streams.end(), key) == group_streams.end()) group_streams.push_back(key);
    return call();
  }
  const CollectiveMark mark = BeginCollective(s, device);
  const ncclResult_t r = call();
  EndCollective(mark);
  return r;
}

}  // namespace

}  // namespace gpushare::nccl

// dlsym answers every nccl* name that the family hooks (NCCL's and RCCL's alike).
GS_DLSYM_ROUTE(nccl, {{"nccl", nullptr}, &gpushare::nccl::Nccl::HookFor});

using namespace gpushare::nccl;  // NOLINT: the hooks below are the real names

// Calls a real function (finding the library first if need be), or logs that there is
// none and answers ncclSystemError.
#define GS_NCCL_CALL(symbol, ...) GS_FAMILY_CALL(NcclApi, real, symbol, __VA_ARGS__)

extern "C" {

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return GS_GUARDED(NcclApi, {
    ncclResult_t r = GS_NCCL_CALL(ncclCommInitRank, comm, nranks, id, rank);
    if (r == ncclSuccess && comm != nullptr) Joined(*comm, Hash(&id, sizeof id), nranks, rank);
    return r;
  });
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
  return GS_GUARDED(NcclApi, {
    ncclResult_t r = GS_NCCL_CALL(ncclCommInitRankConfig, comm, nranks, id, rank, config);
    if ((r == ncclSuccess || r == ncclInProgress) && comm != nullptr) Joined(*comm, Hash(&id, sizeof id), nranks, rank);
    return r;
  });
}

ncclResult_t ncclCommInitRankScalable(ncclComm_t* comm, int nranks, int rank, int n_ids, ncclUniqueId* ids,
                                      ncclConfig_t* config) {
  return GS_GUARDED(NcclApi, {
    ncclResult_t r = GS_NCCL_CALL(ncclCommInitRankScalable, comm, nranks, rank, n_ids, ids, config);
    if ((r == ncclSuccess || r == ncclInProgress) && comm != nullptr && ids != nullptr && n_ids > 0)
      Joined(*comm, Hash(ids, sizeof *ids), nranks, rank);
    return r;
  });
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  return GS_GUARDED(NcclApi, {
    ncclResult_t r = GS_NCCL_CALL(ncclCommInitAll, comms, ndev, devlist);
    if (r == ncclSuccess && comms != nullptr && ndev > 0) {
      const uint64_t id = Hash(&comms[0], sizeof comms[0], static_cast<uint64_t>(getpid()));
      for (int i = 0; i < ndev; ++i) Joined(comms[i], id, ndev, i);
    }
    return r;
  });
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config) {
  return GS_GUARDED(NcclApi, {
    // The new communicator's ranks share their parent and their colour.
    const uint64_t parent = IdOf(comm);
    ncclResult_t r = GS_NCCL_CALL(ncclCommSplit, comm, color, key, newcomm, config);
    if ((r == ncclSuccess || r == ncclInProgress) && newcomm != nullptr && *newcomm != nullptr)
      Joined(*newcomm, Hash(&color, sizeof color, parent), 0, key);
    return r;
  });
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  return GS_GUARDED(NcclApi, {
    Left(comm);
    return GS_NCCL_CALL(ncclCommDestroy, comm);
  });
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  return GS_GUARDED(NcclApi, {
    Left(comm);
    return GS_NCCL_CALL(ncclCommAbort, comm);
  });
}

ncclResult_t ncclGroupStart() {
  return GS_GUARDED(NcclApi, {
    ncclResult_t r = GS_NCCL_CALL(ncclGroupStart);
    if (r == ncclSuccess) ++group_depth;
    return r;
  });
}

// Communicators made inside the group exist once it ends; its collectives are enqueued
// by its end (the outermost), so that is what is timed.
ncclResult_t ncclGroupEnd() {
  return GS_GUARDED(NcclApi, {
    std::vector<CollectiveMark> marks;
    if (group_depth == 1) {
      for (const auto& [stream, device] : group_streams) marks.push_back(BeginCollective(stream, device));
      group_streams.clear();
    }
    ncclResult_t r = GS_NCCL_CALL(ncclGroupEnd);
    for (const CollectiveMark& m : marks) EndCollective(m);
    if (group_depth > 0) --group_depth;
    if (group_depth == 0 && !pending.empty()) {
      std::vector<Pending> joined;
      joined.swap(pending);
      if (r == ncclSuccess || r == ncclInProgress)
        for (const Pending& p : joined) Joined(p.comm, p.id, p.nranks, p.rank);
    }
    return r;
  });
}

// The collectives of nccl_hooks.def, each timed on its stream.
#define GS_NCCL_HOOK(symbol, params, args)
#define GS_NCCL_REAL(symbol)
#define GS_NCCL_COLLECTIVE(symbol, params, args)                                                                      \
  ncclResult_t symbol params {                                                                                        \
    return GS_GUARDED(NcclApi, {                                                                                      \
      return Collective(comm, stream,                                                                                 \
                        [&] { return Nccl::Load() && real::symbol ? real::symbol args : NcclApi::NoReal(#symbol); }); \
    });                                                                                                               \
  }
#include "nccl/nccl_hooks.def"
#undef GS_NCCL_HOOK
#undef GS_NCCL_REAL

}  // extern "C"
