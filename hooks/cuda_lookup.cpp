// How every route into the driver reaches the hooks: the real driver is loaded and
// its functions resolved from cuda_hooks.def; cuGetProcAddress/_v2 and dlsym answer
// with the hook wherever the real driver would have answered with a hooked function.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda_hooks.h"
#include "log.h"

namespace gpushare::cuda {
namespace {

using DlsymFn = void* (*)(void*, const char*);

// glibc's dlsym, found past ours (we interpose the symbol dlsym itself).
DlsymFn RealDlsym() {
  static const DlsymFn fn = [] {
    void* p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (p == nullptr) p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    return reinterpret_cast<DlsymFn>(p);
  }();
  return fn;
}

struct HookEntry {
  const char* name;
  int version;
  const char* symbol;
  void* hook;
  void** real;
};

const HookEntry kHooks[] = {
#define GS_CUDA_HOOK(name, version, symbol) \
  {#name, version, #symbol, reinterpret_cast<void*>(&::symbol), reinterpret_cast<void**>(&real::symbol)},
#include "cuda_hooks.def"
#undef GS_CUDA_HOOK
};

// The hook to hand out for `name` at `version` when the real driver answered `real_fn`.
void* InterceptLookup(const char* name, int version, void* real_fn) {
  const HookEntry* best = nullptr;
  for (const HookEntry& e : kHooks) {
    if (std::strcmp(e.name, name) != 0) continue;
    if (*e.real == real_fn) return e.hook;  // the very function we wrap
    if (e.version <= version && (best == nullptr || e.version > best->version)) best = &e;
  }
  return best ? best->hook : real_fn;
}

}  // namespace

bool LoadRealDriver() {
  static std::once_flag once;
  static bool loaded = false;
  std::call_once(once, [] {
    void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr) {
      const char* path = std::getenv("LD_LIBRARY_PATH");
      Log(LogLevel::kError,
          "cannot load the real CUDA driver libcuda.so.1 (%s); looked in LD_LIBRARY_PATH=\"%s\", the ld.so cache "
          "(ldconfig -p) and the system library directories",
          dlerror(), path ? path : "");
      return;
    }
    for (const HookEntry& e : kHooks) *e.real = RealDlsym()(handle, e.symbol);
    loaded = true;
  });
  return loaded;
}

void* HookForSymbol(const char* symbol) {
  for (const HookEntry& e : kHooks)
    if (std::strcmp(e.symbol, symbol) == 0) return e.hook;
  return nullptr;
}

Client* ReadyClient() {
  Client& client = Client::Get();
  if (client.devices_ready()) return &client;
  // The driver may have been initialized through a route that did not pass cuInit's
  // hook (or not at all: then the real driver says so).
  int count = 0;
  if (!LoadRealDriver() || GS_REAL(cuDeviceGetCount, &count) != CUDA_SUCCESS) return nullptr;
  client.InitDevices(count);
  return &client;
}

}  // namespace gpushare::cuda

using namespace gpushare::cuda;

extern "C" {

CUresult cuInit(unsigned int flags) {
  if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
  CUresult r = GS_REAL(cuInit, flags);
  if (r == CUDA_SUCCESS) ReadyClient();
  return r;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
  CUresult r = GS_REAL(cuGetProcAddress_v2, symbol, pfn, version, flags, status);
  if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
    *pfn = InterceptLookup(symbol, version, *pfn);
  return r;
}

CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
  CUresult r = GS_REAL(cuGetProcAddress, symbol, pfn, version, flags);
  if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
    *pfn = InterceptLookup(symbol, version, *pfn);
  return r;
}

// Programs that dlopen the driver and dlsym from its handle get the hooks too.
void* dlsym(void* handle, const char* symbol) {
  void* found = RealDlsym()(handle, symbol);
  if (found != nullptr && symbol[0] == 'c' && symbol[1] == 'u')
    if (void* hook = HookForSymbol(symbol)) return hook;
  return found;
}

}  // extern "C"
