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

// Reads a fuzz input as a program's bytes: past the end every read is zero.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // `n` bytes, little-endian.
  uint64_t Raw(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{Byte()} << (8 * i);
    return v;
  }
  void Bytes(void* dst, size_t n) {
    auto* d = static_cast<uint8_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = Byte();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

std::vector<std::vector<uint8_t>> FuzzSeeds();
