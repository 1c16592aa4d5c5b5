// How every route into the driver reaches the hooks: the real driver is loaded and
// its functions resolved from cuda_hooks.def; cuGetProcAddress/_v2 and dlsym answer
// with the hook wherever the real driver would have answered with a hooked function.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda/cuda_entry_points.h"
#include "cuda/cuda_hooks.h"
#include "hip/hip_dlsym.h"
#include "log.h"
#include "nccl/nccl_hooks.h"
#include "nvml/nvml_hooks.h"
#include "common/real_dlsym.h"

namespace gpushare::cuda {
namespace {

// What the dlsym trampoline calls may run before a sanitizer runtime is initialized
// (ThreadSanitizer resolves its interceptors through our dlsym): not instrumented.
#define GS_EARLY __attribute__((no_sanitize("address", "undefined", "thread")))

}  // namespace

// glibc's dlsym, found past ours (we interpose dlsym itself). Resolved on first use:
// dlsym can be called before any constructor of ours ran.
extern "C" {
__attribute__((visibility("hidden"))) void* gs_real_dlsym = nullptr;
}

extern "C" __attribute__((visibility("hidden"))) GS_EARLY void gs_resolve_real_dlsym() {
  void* p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
  if (p == nullptr) p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
  __atomic_store_n(&gs_real_dlsym, p, __ATOMIC_RELEASE);
}

namespace {

struct HookEntry {
  EntryPoint api;  // name, version, symbol, per-thread: from the generated table
  void* hook;      // null for real functions used but not hooked
  void** real;
};

// Each declared symbol's entry point is looked up while compiling (EntryPointOf is
// consteval); its strings are literals, so .data() is NUL-terminated.
const HookEntry kHooks[] = {
#define GS_CUDA_ENTRY(symbol, hook) {EntryPointOf(#symbol), hook, reinterpret_cast<void**>(&real::symbol)},
#define GS_CUDA_HOOK(symbol) GS_CUDA_ENTRY(symbol, reinterpret_cast<void*>(&::symbol))
#define GS_CUDA_REAL(symbol) GS_CUDA_ENTRY(symbol, nullptr)
#define GS_CUDA_DEVICE_HOOK(symbol, params, args) GS_CUDA_HOOK(symbol)
#define GS_CUDA_DEVICE_HOOK_THEN(symbol, params, args, then) GS_CUDA_HOOK(symbol)
#include "cuda/cuda_hooks.def"
#undef GS_CUDA_DEVICE_HOOK
#undef GS_CUDA_DEVICE_HOOK_THEN
#undef GS_CUDA_ENTRY
#undef GS_CUDA_HOOK
#undef GS_CUDA_REAL
};

// The hook to hand out for `name` when the real driver answered `real_fn` to a lookup
// at `version` with `flags`: the hook of that very function, else (should the driver
// answer with a pointer other than its exported symbol) the hook of the newest
// version not past `version`, per-thread variants only for per-thread lookups.
void* InterceptLookup(const char* name, int version, cuuint64_t flags, void* real_fn) {
  const bool per_thread = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const HookEntry* best = nullptr;
  bool has_per_thread = false;
  for (const HookEntry& e : kHooks) {
    if (e.hook == nullptr || std::strcmp(e.api.name.data(), name) != 0) continue;
    if (*e.real == real_fn) return e.hook;
    has_per_thread = has_per_thread || e.api.per_thread;
  }
  for (const HookEntry& e : kHooks) {
    if (e.hook == nullptr || std::strcmp(e.api.name.data(), name) != 0 || e.api.version > version) continue;
    if (e.api.per_thread != (per_thread && has_per_thread)) continue;
    if (best == nullptr || e.api.version > best->api.version) best = &e;
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
    for (const HookEntry& e : kHooks) *e.real = RealDlsym()(handle, e.api.symbol.data());
    loaded = true;
  });
  return loaded;
}

void* HookForSymbol(const char* symbol) {
  for (const HookEntry& e : kHooks)
    if (e.hook != nullptr && std::strcmp(e.api.symbol.data(), symbol) == 0) return e.hook;
  return nullptr;
}

Client* ReadyClient() {
  Client& client = Client::Get();
  if (client.devices_ready()) return &client;
  // The driver may have been initialized through a route that did not pass cuInit's
  // hook (or not at all: then the real driver says so).
  int count = 0;
  if (!LoadRealDriver() || GS_REAL(cuDeviceGetCount, &count) != CUDA_SUCCESS) return nullptr;
  client.gate().SetDrain(DrainDevice);
  client.InitDevices(count);
  return &client;
}

}  // namespace gpushare::cuda

using namespace gpushare::cuda;

extern "C" {

CUresult cuInit(unsigned int flags) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = GS_REAL(cuInit, flags);
    if (r == CUDA_SUCCESS) ReadyClient();
    return r;
  });
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = GS_REAL(cuGetProcAddress_v2, symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
      *pfn = InterceptLookup(symbol, version, flags, *pfn);
    return r;
  });
}

CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  return GS_GUARDED(CudaApi, {
    if (!LoadRealDriver()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = GS_REAL(cuGetProcAddress, symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS && symbol != nullptr && pfn != nullptr && *pfn != nullptr)
      *pfn = InterceptLookup(symbol, version, flags, *pfn);
    return r;
  });
}

// Programs that dlopen the driver, NVML, NCCL/RCCL or the HIP runtime and dlsym from the handle get the hooks.
// dlsym itself is a small assembly trampoline: a lookup of any other name jumps to
// glibc's dlsym with the caller's own return address on the stack, so lookups
// relative to the caller (RTLD_NEXT, which interposers such as sanitizer runtimes
// and profilers rely on) keep their meaning. Only our names take the C++ path.

// The hook for `symbol` if it is a name we intercept, else null.
__attribute__((visibility("hidden"))) GS_EARLY void* gs_dlsym_hook_for(const char* symbol) {
  if (symbol == nullptr) return nullptr;
  if (symbol[0] == 'c' && symbol[1] == 'u') return HookForSymbol(symbol);
  if (std::strncmp(symbol, "nvml", 4) == 0) return gpushare::nvml::HookForSymbol(symbol);
  if (std::strncmp(symbol, "nccl", 4) == 0) return gpushare::nccl::HookForSymbol(symbol);
  if (std::strncmp(symbol, "hip", 3) == 0 || std::strncmp(symbol, "_Z24hip", 7) == 0)
    return gpushare::hip::HookForSymbol(symbol);
  return nullptr;
}

// One of our names: the hook, provided the library asked really has the symbol.
__attribute__((visibility("hidden"))) void* gs_dlsym_hooked(void* handle, const char* symbol, void* hook) {
  return gpushare::RealDlsym()(handle, symbol) != nullptr ? hook : nullptr;
}

}  // extern "C"

// void* dlsym(void* handle, const char* symbol)
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
dlsym:
  push %rdi
  push %rsi
  sub $8, %rsp
  mov gs_real_dlsym(%rip), %rax
  test %rax, %rax
  jnz 1f
  call gs_resolve_real_dlsym
1:
  mov 8(%rsp), %rdi
  call gs_dlsym_hook_for
  mov %rax, %rdx
  add $8, %rsp
  pop %rsi
  pop %rdi
  test %rdx, %rdx
  jnz 2f
  jmp *gs_real_dlsym(%rip)
2:
  jmp gs_dlsym_hooked
  .size dlsym, .-dlsym
)");
