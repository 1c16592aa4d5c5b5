// Spatial sharing of one GPU by compute-unit masks (AMD: hipExtStreamCreateWithCUMask):
// which client's streams run on which CUs, and so which flows may hold a GPU at the same
// time instead of taking turns. Pure: a GPU's CU count and its clients' classes in, masks out.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "classifier.h"
#include "ledger.h"

namespace gpushare::broker {

enum class SpatialMode {
  kOff,     // every flow holds its GPU alone (time slices only)
  kCuMask,  // memory- and compute-bound flows hold disjoint CUs of one GPU at once
  kMps,     // NVIDIA MPS: co-located flows hold disjoint SM shares (percent units) at once
};

// Under MPS a "CU" of the plan is one percent of the GPU's SMs (an active thread
// percentage), so a flow's mask is its share and disjoint masks fit beside each other.
inline constexpr unsigned kMpsUnits = 100;

inline constexpr unsigned kCuMaskWords = 16;  // as protocol::kCuMaskWords
inline constexpr unsigned kMaxCus = 32 * kCuMaskWords;

// A set of compute units: bit i of word i / 32 is CU i (HIP's layout for CU masks).
class CuMask {
 public:
  CuMask() = default;
  // CUs [first, first + count), clipped at kMaxCus.
  static CuMask Range(unsigned first, unsigned count);

  bool Has(unsigned cu) const { return cu < kMaxCus && (words_[cu / 32] >> (cu % 32) & 1u) != 0; }
  unsigned Count() const;
  bool Empty() const { return Count() == 0; }
  bool Overlaps(const CuMask& other) const;
  CuMask& operator|=(const CuMask& other);
  bool operator==(const CuMask& other) const = default;
  // Words up to the one holding the highest CU: what hipExtStreamCreateWithCUMask is given.
  unsigned UsedWords() const;
  const std::array<uint32_t, kCuMaskWords>& words() const { return words_; }
  static CuMask FromWords(const uint32_t* words, unsigned count);
  // As one hexadecimal number, CU 0 the lowest bit: "0x7fff" for CUs 0-14; "0x0" if empty.
  std::string Hex() const;

 private:
  std::array<uint32_t, kCuMaskWords> words_{};
};

// One flow (a client's virtual GPU) on the GPU being planned, with the class it is run
// as (the caller keeps a flow's last busy class while it is idle: see Assign).
struct SpatialFlow {
  ClientId client = 0;
  int device = 0;
  WorkClass cls = WorkClass::kUnknown;
};

// Where a flow runs: on `mask` (nullopt: on every CU, alone), charged `fraction` of the
// time it holds the GPU (its share of the GPU's CUs).
struct SpatialAssignment {
  ClientId client = 0;
  int device = 0;
  std::optional<CuMask> mask;
  double fraction = 1;
  bool operator==(const SpatialAssignment& other) const = default;
};

class SpatialPolicy {
 public:
  SpatialPolicy(SpatialMode mode, unsigned memory_cu_percent);

  // How many of a GPU's `cu_count` CUs a memory-bound flow is held to: memory_cu_percent
  // of them, rounded, at least 1 and at most cu_count - 1 (compute-bound flows keep some).
  unsigned MemoryCus(unsigned cu_count) const;

  // The masks of the flows on one GPU with `cu_count` CUs, in the order given:
  //  - memory-bound flows: the low MemoryCus CUs, always (a memory-bound kernel is as
  //    fast there as on the whole GPU: those CUs saturate its bandwidth);
  //  - compute-bound flows: the other CUs, while a memory-bound flow is on the GPU
  //    (else the whole GPU: alone it would only lose CUs);
  //  - copy, unknown (and idle, if given): no mask.
  // Spatial off, or a GPU with fewer than 2 or more than kMaxCus CUs (0: unknown, e.g.
  // found by NVML): no mask for anyone.
  // Under MPS (cu_count kMpsUnits) a flow's class is the one its SM share was fixed for
  // when its context was made, and a compute-bound flow keeps the rest even alone: a
  // share cannot grow after its context exists.
  std::vector<SpatialAssignment> Assign(unsigned cu_count, const std::vector<SpatialFlow>& flows) const;

  // Flows may hold one GPU at the same time only on disjoint masks; one without a mask
  // needs the whole GPU.
  static bool MayCoHold(const std::optional<CuMask>& a, const std::optional<CuMask>& b);

 private:
  SpatialMode mode_;
  unsigned memory_cu_percent_;
};

}  // namespace gpushare::broker
