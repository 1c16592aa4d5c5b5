// What the NCCL/RCCL hook family offers the dlsym hook (cuda_lookup.cpp), without the
// NCCL header.
#pragma once

namespace gpushare::nccl {

// The hook of an NCCL/RCCL symbol name ("ncclCommInitRank"), or null if not hooked.
void* HookForSymbol(const char* symbol);

}  // namespace gpushare::nccl
