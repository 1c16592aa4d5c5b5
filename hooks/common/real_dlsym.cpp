// gpushare::RealDlsym (real_dlsym.h), over the pointer cuda_lookup.cpp resolves for its
// dlsym trampoline.
#include "common/real_dlsym.h"

extern "C" void* gs_real_dlsym;
extern "C" void gs_resolve_real_dlsym();

namespace gpushare {

DlsymFn RealDlsym() {
  if (__atomic_load_n(&gs_real_dlsym, __ATOMIC_ACQUIRE) == nullptr) gs_resolve_real_dlsym();
  return reinterpret_cast<DlsymFn>(gs_real_dlsym);
}

}  // namespace gpushare
