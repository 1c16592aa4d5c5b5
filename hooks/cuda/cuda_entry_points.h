// The CUDA driver's entry points as cuGetProcAddress knows them: (name, version, ABI
// symbol, per-thread variant or not), generated once from the toolkit's headers by
// scripts/gen_cuda_entry_points.py into generated/cuda_entry_points.inc (checked in).
#pragma once

#include <string_view>

namespace gpushare::cuda {

struct EntryPoint {
  std::string_view name;    // as cuGetProcAddress is asked ("cuMemAlloc")
  int version;              // the first CUDA version that asks for this symbol
  std::string_view symbol;  // the driver's ABI symbol ("cuMemAlloc_v2")
  bool per_thread;          // a _ptsz/_ptds variant: answers per-thread-default-stream lookups
};

inline constexpr EntryPoint kEntryPoints[] = {
#define GS_CUDA_ENTRY_POINT(name, version, symbol, per_thread) {#name, version, #symbol, per_thread != 0},
#include "cuda/generated/cuda_entry_points.inc"
#undef GS_CUDA_ENTRY_POINT
};

// The entry point an ABI symbol implements. Evaluated while compiling: a symbol this
// toolkit does not know is a build error, not a wrong answer at run time.
consteval EntryPoint EntryPointOf(std::string_view symbol) {
  for (const EntryPoint& e : kEntryPoints)
    if (e.symbol == symbol) return e;
  throw "not an entry point of the CUDA toolkit's headers: see hooks/cuda/generated/cuda_entry_points.inc";
}

}  // namespace gpushare::cuda
