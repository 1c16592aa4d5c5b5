// The plumbing every hook family shares, written once: the table of its declared
// symbols (from its .def list), loading its real library and resolving that table,
// the hook of a symbol name (what the dlsym registry asks), the client with its
// devices known, and the one way hooks call a real function (GS_FAMILY_CALL).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <mutex>

#include "client.h"
#include "common/dlsym.h"
#include "common/guard.h"

namespace gpushare::hooks {

// One symbol of a family's .def list: the hook handed out for it (null: a real
// function the hooks call without replacing it) and where its real function is kept.
struct HookEntry {
  const char* symbol;
  void* hook;
  void** real;
};

// A family's plumbing over its description `Api`, a struct with:
//   Result, kOutOfMemory, kInternal      its error vocabulary (guard.h)
//   kEntries[], kEntryCount              its .def list as HookEntry rows
//   void* OpenRealLibrary()              the real library's handle, or null (the
//                                        reason said in the log)
//   Result NoReal(const char* symbol)    the answer when a real function is missing
//   bool InitDevices(Client&)            learns the devices from the real library
//                                        (only for families that call ReadyClient)
template <typename Api>
class Family {
 public:
  // Loads the real library and resolves every entry: once and thread-safe, after
  // that a single atomic load. False while the library cannot be had, and for a hook
  // reached from inside the real library's own loading (it would wait for itself).
  static bool Load() {
    if (loaded_.load(std::memory_order_acquire)) return true;
    return LoadOnce();
  }

  // The hook of an ABI symbol name ("cuMemAlloc_v2"), or null if not hooked here.
  static void* HookFor(const char* symbol) {
    for (size_t i = 0; i < Api::kEntryCount; ++i) {
      const HookEntry& e = Api::kEntries[i];
      if (e.hook != nullptr && std::strcmp(e.symbol, symbol) == 0) return e.hook;
    }
    return nullptr;
  }

  // The client runtime with its devices known. The first family to get here
  // initializes them from its real library, whichever call of the application's
  // came first; null if that library cannot tell.
  static Client* ReadyClient() {
    Client& client = Client::Get();
    if (client.devices_ready()) return &client;
    return Api::InitDevices(client) ? &client : nullptr;
  }

 private:
  static bool LoadOnce() {
    static thread_local bool loading = false;
    if (loading) return false;
    std::call_once(once_, [] {
      loading = true;
      if (void* handle = Api::OpenRealLibrary()) {
        for (size_t i = 0; i < Api::kEntryCount; ++i)
          *Api::kEntries[i].real = RealDlsym()(handle, Api::kEntries[i].symbol);
        loaded_.store(true, std::memory_order_release);
      }
      loading = false;
    });
    return loaded_.load(std::memory_order_acquire);
  }

  static inline std::atomic<bool> loaded_{false};
  static inline std::once_flag once_;
};

}  // namespace gpushare::hooks

// Calls real function `symbol` of the family described by `Api`, whose typed table of
// real functions is namespace `real_ns`: the real library is loaded first if need be;
// a function it lacks is answered with Api::NoReal. Each family names its own short
// form (GS_CUDA_CALL, GS_NVML_CALL, GS_HIP_CALL, GS_NCCL_CALL).
#define GS_FAMILY_CALL(Api, real_ns, symbol, ...)                                                      \
  (::gpushare::hooks::Family<Api>::Load() && real_ns::symbol != nullptr ? real_ns::symbol(__VA_ARGS__) \
                                                                        : Api::NoReal(#symbol))
