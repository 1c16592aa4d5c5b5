// What every fuzz target in tests/fuzz defines: the libFuzzer entry point, and the
// seed inputs it starts from (written to corpus/<target>/ by the standalone driver's
// --write-seeds, so the input format lives only in the target's source).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

// An invariant of the code under test: a broken one traps (a crash to libFuzzer, a failed
// ctest run to the standalone driver) after naming the condition, file and line.
#define FUZZ_CHECK(cond)                                                                        \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "fuzz: invariant broken at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                                         \
    }                                                                                           \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

std::vector<std::vector<uint8_t>> FuzzSeeds();
