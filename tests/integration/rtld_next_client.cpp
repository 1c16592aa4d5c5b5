// Calls the interposed getenv of rtld_next_probe.so; prints what it got.
#include <cstdio>
#include <cstdlib>

int main() {
  const char* v = std::getenv("GS_PROBE_VALUE");
  std::printf("rtld_next=%s\n", v ? v : "(null)");
  return 0;
}
