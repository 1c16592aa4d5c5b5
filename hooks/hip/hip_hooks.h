// The HIP hook family's shared pieces: the typed table of real runtime functions
// (from hip_hooks.def), loading the real libamdhip64, and the client with its
// devices known.
#pragma once

#include <hip/hip_ext.h>
#include <hip/hip_runtime_api.h>

#include "client.h"
#include "common/family.h"

namespace gpushare::hip {

// real::hipMalloc etc.: the real runtime's functions, null until resolved.
namespace real {
#define GS_HIP_HOOK(name) inline decltype(&::name) name = nullptr;
#define GS_HIP_HOOK_C(name, types) inline hipError_t(*name) types = nullptr;
#define GS_HIP_HOOK_CXX(name, symbol) GS_HIP_HOOK(name)
#define GS_HIP_REAL GS_HIP_HOOK
#define GS_HIP_DEVICE_HOOK(name, params, args) GS_HIP_HOOK(name)
#include "hip/hip_hooks.def"
#undef GS_HIP_HOOK
#undef GS_HIP_HOOK_C
#undef GS_HIP_HOOK_CXX
#undef GS_HIP_REAL
#undef GS_HIP_DEVICE_HOOK
}  // namespace real

// The HIP family as common/family.h sees it (defined in hip_lookup.cpp).
struct HipApi {
  using Result = hipError_t;
  // What a hook answers when the shim itself fails (guard.h).
  static constexpr Result kOutOfMemory = hipErrorOutOfMemory;
  static constexpr Result kInternal = hipErrorUnknown;
  static Result NoReal(const char*) { return hipErrorNotSupported; }  // this runtime lacks it
  static const hooks::HookEntry kEntries[];
  static const size_t kEntryCount;
  static void* OpenRealLibrary();  // the libamdhip64 the process has loaded, never loaded here
  static bool InitDevices(Client& client);
};
using Hip = hooks::Family<HipApi>;

// Finds the real HIP runtime the process has loaded and resolves the table (once;
// thread-safe; after the first call a single atomic load). False, said once in the
// log, if the process has no libamdhip64 loaded (it is not a HIP program).
inline bool LoadRealRuntime() { return Hip::Load(); }

// The client runtime, with its devices known (the real runtime initialized), or null.
inline Client* ReadyClient() { return Hip::ReadyClient(); }

// The virtual GPU of the calling thread's current device, or -1.
int CurrentDevice(Client* client);

// The virtual GPU a stream's work runs on (the current device for the null stream).
int StreamDevice(Client* client, hipStream_t stream);

// Waits for this process's queued work on virtual GPU `device` (the gate's drain).
void DrainDevice(int device);

// Calls a real function (loading the runtime first if need be), or answers
// hipErrorNotSupported when this runtime lacks it.
#define GS_HIP_CALL(name, ...) GS_FAMILY_CALL(::gpushare::hip::HipApi, ::gpushare::hip::real, name, __VA_ARGS__)

}  // namespace gpushare::hip
