// glibc's own dlsym, past the one libgpushare.so interposes (cuda_lookup.cpp): what
// every hook family resolves the real library's functions with, so that a lookup
// never lands on one of our own hooks.
#pragma once

namespace gpushare {

using DlsymFn = void* (*)(void*, const char*);
DlsymFn RealDlsym();

}  // namespace gpushare
