// What the HIP hook family offers the dlsym hook (cuda_lookup.cpp), without the HIP
// headers.
#pragma once

namespace gpushare::hip {

// The hook of a HIP ABI symbol name ("hipMalloc"), or null if not hooked.
void* HookForSymbol(const char* symbol);

}  // namespace gpushare::hip
