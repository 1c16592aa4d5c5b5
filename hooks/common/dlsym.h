// The one dlsym libgpushare.so interposes (dlsym.cpp, dlsym_x86_64.S), its registry of
// hook families, and glibc's own dlsym past it. A family claims the names it answers
// for with GS_DLSYM_ROUTE; a lookup of any other name goes straight to glibc.
#pragma once

namespace gpushare::hooks {

// glibc's dlsym: what every family resolves its real library's functions with, so
// that a lookup never lands on one of our own hooks.
using DlsymFn = void* (*)(void*, const char*);
DlsymFn RealDlsym();

// A family's claim on dlsym: a name starting with one of `prefixes` (null: unused) is
// answered by `hook_for` (its hook, or null: not hooked, glibc's answer stands).
struct DlsymRoute {
  const char* prefixes[2];
  void* (*hook_for)(const char* symbol);
};

}  // namespace gpushare::hooks

// Registers a family's route, e.g. GS_DLSYM_ROUTE(cuda, {{"cu", nullptr}, &Cuda::HookFor}).
// Routes are constants in one linker section that dlsym reads in place: no
// constructor has to run first, and dlsym can be called before any did.
#define GS_DLSYM_ROUTE(family, ...)                                                                              \
  extern "C" __attribute__((used, section("gs_dlsym_routes"), aligned(alignof(::gpushare::hooks::DlsymRoute)),   \
                            visibility("hidden"))) const ::gpushare::hooks::DlsymRoute gs_dlsym_route_##family = \
      __VA_ARGS__
