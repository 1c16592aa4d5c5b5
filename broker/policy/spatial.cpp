// CU masks and the spatial-sharing policy (see spatial.h).
#include "spatial.h"

#include <algorithm>
#include <bit>
#include <cstdio>

namespace gpushare::broker {

CuMask CuMask::Range(unsigned first, unsigned count) {
  CuMask m;
  const unsigned end = std::min<unsigned>(kMaxCus, first + std::min(count, kMaxCus));
  for (unsigned cu = first; cu < end; ++cu) m.words_[cu / 32] |= 1u << (cu % 32);
  return m;
}

unsigned CuMask::Count() const {
  unsigned n = 0;
  for (uint32_t w : words_) n += static_cast<unsigned>(std::popcount(w));
  return n;
}

bool CuMask::Overlaps(const CuMask& other) const {
  for (unsigned i = 0; i < kCuMaskWords; ++i)
    if ((words_[i] & other.words_[i]) != 0) return true;
  return false;
}

CuMask& CuMask::operator|=(const CuMask& other) {
  for (unsigned i = 0; i < kCuMaskWords; ++i) words_[i] |= other.words_[i];
  return *this;
}

unsigned CuMask::UsedWords() const {
  for (unsigned i = kCuMaskWords; i > 0; --i)
    if (words_[i - 1] != 0) return i;
  return 0;
}

CuMask CuMask::FromWords(const uint32_t* words, unsigned count) {
  CuMask m;
  for (unsigned i = 0; i < count && i < kCuMaskWords; ++i) m.words_[i] = words[i];
  return m;
}

std::string CuMask::Hex() const {
  const unsigned used = UsedWords();
  if (used == 0) return "0x0";
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", words_[used - 1]);
  std::string out = buf;
  for (unsigned i = used - 1; i > 0; --i) {
    std::snprintf(buf, sizeof buf, "%08x", words_[i - 1]);
    out += buf;
  }
  return out;
}

SpatialPolicy::SpatialPolicy(SpatialMode mode, unsigned memory_cu_percent)
    : mode_(mode), memory_cu_percent_(memory_cu_percent) {}

unsigned SpatialPolicy::MemoryCus(unsigned cu_count) const {
  if (cu_count < 2) return cu_count;
  const unsigned k = (cu_count * memory_cu_percent_ + 50) / 100;
  return std::clamp(k, 1u, cu_count - 1);
}

std::vector<SpatialAssignment> SpatialPolicy::Assign(unsigned cu_count, const std::vector<SpatialFlow>& flows) const {
  std::vector<SpatialAssignment> out;
  for (const SpatialFlow& f : flows) out.push_back({f.client, f.device, std::nullopt, 1.0});
  if (mode_ == SpatialMode::kOff || cu_count < 2 || cu_count > kMaxCus) return out;
  const bool memory_present =
      std::any_of(flows.begin(), flows.end(), [](const SpatialFlow& f) { return f.cls == WorkClass::kMemory; });
  const unsigned k = MemoryCus(cu_count);
  const double n = static_cast<double>(cu_count);
  for (size_t i = 0; i < flows.size(); ++i) {
    if (flows[i].cls == WorkClass::kMemory) {
      out[i].mask = CuMask::Range(0, k);
      out[i].fraction = k / n;
    } else if (flows[i].cls == WorkClass::kCompute && (memory_present || mode_ == SpatialMode::kMps)) {
      out[i].mask = CuMask::Range(k, cu_count - k);
      out[i].fraction = (cu_count - k) / n;
    }
  }
  return out;
}

bool SpatialPolicy::MayCoHold(const std::optional<CuMask>& a, const std::optional<CuMask>& b) {
  return a && b && !a->Overlaps(*b);
}

}  // namespace gpushare::broker
