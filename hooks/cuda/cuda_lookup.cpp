// How every route into the driver reaches the hooks: the CUDA family's table and
// description for the common plumbing (common/family.h loads the driver and resolves
// cuda_hooks.def), its dlsym route, and cuGetProcAddress/_v2, which answer with the
// hook wherever the real driver would have answered with a hooked function.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>

#include "common/dlsym.h"
#include "cuda/cuda_entry_points.h"
#include "cuda/cuda_hooks.h"
#include "log.h"

namespace gpushare::cuda {

// cuda_hooks.def as the common plumbing's table, and beside it, row for row, the entry
// point each symbol is (name, version, per-thread flag), looked up in the generated
// table while compiling (EntryPointOf is consteval).
const hooks::HookEntry CudaApi::kEntries[] = {
#define GS_CUDA_HOOK(symbol) {#symbol, reinterpret_cast<void*>(&::symbol), reinterpret_cast<void**>(&real::symbol)},
#define GS_CUDA_REAL(symbol) {#symbol, nullptr, reinterpret_cast<void**>(&real::symbol)},
#include "cuda/cuda_hooks.def"
};
const size_t CudaApi::kEntryCount = std::size(kEntries);

namespace {

const EntryPoint kEntryPoints[] = {
#define GS_CUDA_HOOK(symbol) EntryPointOf(#symbol),
#include "cuda/cuda_hooks.def"
};
static_assert(std::size(kEntryPoints) == std::size(CudaApi::kEntries));

// The hook to hand out for `name` when the real driver answered `real_fn` to a lookup
// at `version` with `flags`: the hook of that very function, else (should the driver
// answer with a pointer other than its exported symbol) the hook of the newest
// version not past `version`, per-thread variants only for per-thread lookups.
void* InterceptLookup(const char* name, int version, cuuint64_t flags, void* real_fn) {
  const bool per_thread = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const size_t n = CudaApi::kEntryCount;
  size_t best = n;
  bool has_per_thread = false;
  for (size_t i = 0; i < n; ++i) {
    const hooks::HookEntry& e = CudaApi::kEntries[i];
    if (e.hook == nullptr || std::strcmp(kEntryPoints[i].name.data(), name) != 0) continue;
    if (*e.real == real_fn) return e.hook;
    has_per_thread = has_per_thread || kEntryPoints[i].per_thread;
  }
  for (size_t i = 0; i < n; ++i) {
    const EntryPoint& api = kEntryPoints[i];
    if (CudaApi::kEntries[i].hook == nullptr || std::strcmp(api.name.data(), name) != 0 || api.version > version)
      continue;
    if (api.per_thread != (per_thread && has_per_thread)) continue;
    if (best == n || api.version > kEntryPoints[best].version) best = i;
  }
  return best != n ? CudaApi::kEntries[best].hook : real_fn;
}

}  // namespace

void* CudaApi::OpenRealLibrary() {
  void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* path = std::getenv("LD_LIBRARY_PATH");
    Log(LogLevel::kError,
        "cannot load the real CUDA driver libcuda.so.1 (%s); looked in LD_LIBRARY_PATH=\"%s\", the ld.so cache "
        "(ldconfig -p) and the system library directories",
        dlerror(), path ? path : "");
  }
  return handle;
}

// The driver joins MPS (or not) when it is first initialized, and an MPS client's SM
// share is fixed when its context is made: both variables must be in the environment
// before the real cuInit. The primary contexts the CUDA runtime makes take the share
// from there too, which a share given through cuCtxCreate_v3 would not reach.
void JoinMpsIfGranted() {
  static std::once_flag once;
  std::call_once(once, [] {
    const auto& terms = Client::Get().MpsTerms();
    if (!terms || terms->percent == 0) return;
    setenv("CUDA_MPS_PIPE_DIRECTORY", terms->pipe_directory, 1);
    setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", std::to_string(terms->percent).c_str(), 1);
  });
}

bool CudaApi::InitDevices(Client& client) {
  // The driver may have been initialized through a route that did not pass cuInit's
  // hook (or not at all: then the real driver says so).
  int count = 0;
  if (GS_CUDA_CALL(cuDeviceGetCount, &count) != CUDA_SUCCESS) return false;
  client.gate().SetDrain(DrainDevice);
  client.InitDevices(count);
  return true;
}

}  // namespace gpushare::cuda

// dlsym answers every name starting with "cu" that the family hooks.
GS_DLSYM_ROUTE(cuda, {{"cu", nullptr}, &gpushare::cuda::Cuda::HookFor});

using namespace gpushare::cuda;

extern "C" {

CUresult cuInit(unsigned int flags) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    JoinMpsIfGranted();
    CUresult r = GS_CUDA_CALL(cuInit, flags);
    if (r == CUDA_SUCCESS) ReadyClient();
    return r;
  });
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = GS_CUDA_CALL(cuGetProcAddress_v2, symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
      *pfn = InterceptLookup(symbol, version, flags, *pfn);
    return r;
  });
}

CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = GS_CUDA_CALL(cuGetProcAddress, symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
      *pfn = InterceptLookup(symbol, version, flags, *pfn);
    return r;
  });
}

}  // extern "C"
