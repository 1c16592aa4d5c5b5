// The C++ half of the dlsym libgpushare.so interposes (the trampoline is
// dlsym_x86_64.S): finding glibc's dlsym, and asking the registered families
// (GS_DLSYM_ROUTE) for the hook of a name. Knows no family.
#include "common/dlsym.h"

#include <dlfcn.h>

#include <cstring>

using gpushare::hooks::DlsymRoute;

// What the trampoline calls may run before a sanitizer runtime is initialized
// (ThreadSanitizer resolves its interceptors through our dlsym): not instrumented.
#define GS_EARLY __attribute__((no_sanitize("address", "undefined", "thread")))

extern "C" {

// glibc's dlsym, found past ours. Resolved on first use: dlsym can be called before
// any constructor of ours ran.
__attribute__((visibility("hidden"))) void* gs_real_dlsym = nullptr;

// The bounds the linker gives the section of registered routes.
extern const DlsymRoute __start_gs_dlsym_routes[] __attribute__((visibility("hidden")));
extern const DlsymRoute __stop_gs_dlsym_routes[] __attribute__((visibility("hidden")));

__attribute__((visibility("hidden"))) GS_EARLY void gs_resolve_real_dlsym() {
  void* p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
  if (p == nullptr) p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
  __atomic_store_n(&gs_real_dlsym, p, __ATOMIC_RELEASE);
}

// The hook for `symbol` if a family claims the name and hooks it, else null (the
// trampoline then jumps to glibc's dlsym).
__attribute__((visibility("hidden"))) GS_EARLY void* gs_dlsym_hook_for(const char* symbol) {
  if (symbol == nullptr) return nullptr;
  for (const DlsymRoute* route = __start_gs_dlsym_routes; route != __stop_gs_dlsym_routes; ++route)
    for (const char* prefix : route->prefixes)
      if (prefix != nullptr && std::strncmp(symbol, prefix, std::strlen(prefix)) == 0) return route->hook_for(symbol);
  return nullptr;
}

// One of our names: the hook, provided the library asked really has the symbol.
__attribute__((visibility("hidden"))) void* gs_dlsym_hooked(void* handle, const char* symbol, void* hook) {
  return gpushare::hooks::RealDlsym()(handle, symbol) != nullptr ? hook : nullptr;
}

}  // extern "C"

namespace gpushare::hooks {

DlsymFn RealDlsym() {
  if (__atomic_load_n(&gs_real_dlsym, __ATOMIC_ACQUIRE) == nullptr) gs_resolve_real_dlsym();
  return reinterpret_cast<DlsymFn>(gs_real_dlsym);
}

}  // namespace gpushare::hooks
