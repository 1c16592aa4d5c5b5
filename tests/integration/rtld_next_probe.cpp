// An interposer the way profilers and sanitizer runtimes are written: it defines
// getenv and finds the next definition with dlsym(RTLD_NEXT). Under libgpushare.so
// (which interposes dlsym) that lookup must still be relative to this library.
#include <dlfcn.h>

#include <cstdio>

extern "C" char* getenv(const char* name) {
  using Fn = char* (*)(const char*);
  static Fn next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "getenv"));
  if (next == reinterpret_cast<Fn>(&getenv)) {  // found itself: the lookup lost its caller
    std::fputs("rtld_next=self\n", stdout);
    return nullptr;
  }
  return next ? next(name) : nullptr;
}
