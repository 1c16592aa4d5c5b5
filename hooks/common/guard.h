// The exception boundary every hook family shares: nothing thrown inside the shim (a
// std::bad_alloc from a map or a string, a bug) may unwind into the application, which
// knows only the API's error codes. A hook's body runs in Guarded; what escapes it
// becomes the API's own error, and the reason goes to the log once.
#pragma once

#include <exception>
#include <new>
#include <utility>

namespace gpushare::hooks {

// Logs, once per process, that `hook` stopped an exception (`what`); later escapes
// are logged at debug level only, so a failing path cannot flood stderr.
void ReportEscape(const char* hook, const char* what) noexcept;

// Runs `body` (a hook's whole body) and answers Api::kOutOfMemory when it threw
// std::bad_alloc, Api::kInternal for anything else. Api is a family's error vocabulary:
//   struct { using Result = CUresult; static constexpr Result kOutOfMemory = ..., kInternal = ...; }
// Costs nothing when nothing is thrown (table-driven unwinding), so it guards the hot
// path too.
template <typename Api, typename Body>
inline typename Api::Result Guarded(const char* hook, Body&& body) noexcept {
  try {
    return std::forward<Body>(body)();
  } catch (const std::bad_alloc&) {
    ReportEscape(hook, "out of memory inside the shim");
    return Api::kOutOfMemory;
  } catch (const std::exception& e) {
    ReportEscape(hook, e.what());
    return Api::kInternal;
  } catch (...) {
    ReportEscape(hook, "an exception of unknown type");
    return Api::kInternal;
  }
}

}  // namespace gpushare::hooks

// The body of an exported hook: `return GS_GUARDED(CudaApi, { ...statements... });`
// reads as the hook's own body, with __func__ naming the hook in the log.
#define GS_GUARDED(Api, ...) ::gpushare::hooks::Guarded<Api>(__func__, [&]() -> Api::Result __VA_ARGS__)
