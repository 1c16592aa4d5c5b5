// Work classification (see classifier.h).
//
// Evidence window: records and NVML samples are counted in ten 100 ms buckets (a ring
// indexed by time / 100 ms), so an evaluation sees the last 0.9-1.0 s and a record
// costs a division by a constant and a few increments; records older than the ring
// are dropped. Counting records (not durations) is what the launch records allow.
//
// Decision rule, first that applies, over the window at `now`:
//   1. idle    no record for 500 ms (once any record was seen; before that: unknown).
//   2. copy    copies (async copies, memsets, kernels of class copy) are >= 60% of records.
//   3. names   the kernels whose names have a class (profile, then rules) are >= half of
//              the kernels, and >= 60% of them are one of compute/memory: that class.
//   4. nvml    >= 60% of the process's samples vote for one class. A sample votes
//              compute if mem <= 0.4 x sm, memory if mem >= 0.6 x sm, nothing if in
//              between or inactive (sm and mem < 5%). A ratio, so time-slicing (which
//              lowers both) does not change it; simgpu reports sm ~100 / mem 10-20
//              for compute kernels (0.1-0.2) and sm 30-50 / mem 90-100 for memory
//              kernels (>= 1.8); real GPUs show sm ~100 for any kernel and mem 70-95%
//              for streaming ones, 20-40% for GEMMs. Votes, not means: one odd sample
//              cannot outweigh its neighbours even when samples are sparse.
//   5. names   a 60% majority among fewer named kernels (rule 3 without the coverage).
//   Otherwise nothing decides: the current class stays, except that a client seen
//   working again leaves idle for unknown.
// Hysteresis: the first class after unknown is taken at once. Any other change needs
// the same proposal at >= 2 consecutive evaluations spanning >= 300 ms; an
// evaluation that proposes the current class or nothing resets the candidate.
//
// Default name rules (case-insensitive substrings, first match wins; config rules
// come before them). Ordered so that memory-bound kernels whose names contain a
// compute word are caught first, and the broad library names come last:
//   simgpu_compute -> compute, simgpu_memory -> memory   (simgpu's cost model)
//   gemv, axpy, splitkreduce, convert -> memory          (BLAS-1/2, cuBLASLt split-K
//                                                          reduction, dtype casts)
//   gemm (sgemm, hgemm, igemm...), conv, wgrad, dgrad, fprop, winograd, attention,
//   attn, flash, fmha, xmma, hmma, wmma, imma -> compute
//   elementwise, reduce, reduction, softmax, layer_norm, layernorm, batch_norm,
//   batchnorm, group_norm, gammabeta, bn_fw, bn_bw, copy, memcpy, memset, fill, transpose,
//   gather, scatter, index, concat, catarray, embedding -> memory
//   cutlass, cublas -> compute                             (their other kernels)
// ("mma" alone would match "gamma" in layer-norm backward kernels, and "cat" alone
// "multiplication", hence the longer patterns.)
#include "classifier.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common/base/units.h"

namespace gpushare::broker {
namespace {

std::string Lower(const std::string& s) {
  std::string out = s;
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Percent(uint64_t part, uint64_t whole) {
  return std::to_string(whole == 0 ? 0 : std::llround(100.0 * static_cast<double>(part) / static_cast<double>(whole))) +
         "%";
}

}  // namespace

const char* WorkClassName(WorkClass c) {
  switch (c) {
    case WorkClass::kIdle: return "idle";
    case WorkClass::kCompute: return "compute";
    case WorkClass::kMemory: return "memory";
    case WorkClass::kCopy: return "copy";
    default: return "unknown";
  }
}

std::optional<WorkClass> ParseWorkClass(const std::string& name) {
  for (WorkClass c : {WorkClass::kUnknown, WorkClass::kIdle, WorkClass::kCompute, WorkClass::kMemory, WorkClass::kCopy})
    if (name == WorkClassName(c)) return c;
  return std::nullopt;
}

std::vector<NameRule> ClassifierConfig::DefaultNameRules() {
  constexpr WorkClass C = WorkClass::kCompute, M = WorkClass::kMemory;
  return {
      {"simgpu_compute", C}, {"simgpu_memory", M},

      {"gemv", M},           {"axpy", M},          {"splitkreduce", M}, {"convert", M},

      {"gemm", C},           {"conv", C},          {"wgrad", C},        {"dgrad", C},      {"fprop", C},
      {"winograd", C},       {"attention", C},     {"attn", C},         {"flash", C},      {"fmha", C},
      {"xmma", C},           {"hmma", C},          {"wmma", C},         {"imma", C},

      {"elementwise", M},    {"reduce", M},        {"reduction", M},    {"softmax", M},    {"layer_norm", M},
      {"layernorm", M},      {"batch_norm", M},    {"batchnorm", M},    {"group_norm", M}, {"gammabeta", M},
      {"bn_fw", M},          {"bn_bw", M},         {"copy", M},         {"memcpy", M},     {"memset", M},
      {"fill", M},           {"transpose", M},     {"gather", M},       {"scatter", M},    {"index", M},
      {"concat", M},         {"catarray", M},      {"embedding", M},

      {"cutlass", C},        {"cublas", C},
  };
}

std::optional<WorkClass> ClassOfName(const ClassifierConfig& config, const std::string& name) {
  std::optional<WorkClass> cls;
  if (auto it = config.profile.find(name); it != config.profile.end()) {
    cls = it->second;
  } else {
    const std::string lower = Lower(name);
    for (const NameRule& r : config.rules) {
      if (!r.pattern.empty() && lower.find(Lower(r.pattern)) != std::string::npos) {
        cls = r.cls;
        break;
      }
    }
  }
  if (cls == WorkClass::kUnknown || cls == WorkClass::kIdle) return std::nullopt;  // no opinion
  return cls;
}

struct Classifier::Evidence {
  uint64_t compute = 0, memory = 0, unnamed = 0, copies = 0, copy_bytes = 0;
  uint64_t samples = 0, samples_compute = 0, samples_memory = 0, sm_sum = 0, mem_sum = 0;
  uint64_t kernels() const { return compute + memory + unnamed; }
  uint64_t named() const { return compute + memory; }
};

Classifier::Classifier(const ClassifierConfig* config) : config_(config) {}

void Classifier::SetConfig(const ClassifierConfig* config) {
  config_ = config;
  name_cache_.clear();
  example_sources_ = {};  // they pointed into the cache
}

Classifier::Bucket* Classifier::BucketFor(uint64_t time_ns) {
  const uint64_t number = time_ns / kBucketNs;
  Bucket& b = buckets_[number % kBuckets];
  if (b.number != number) {
    if (b.number != kNoBucket && b.number > number) return nullptr;  // older than the window
    b = Bucket{};
    b.number = number;
  }
  return &b;
}

void Classifier::NoteExample(int slot, const char* name) {
  if (name == nullptr || name == example_sources_[slot]) return;
  std::array<char, kExampleChars>& e = examples_[slot];
  std::strncpy(e.data(), name, e.size() - 1);
  e.back() = '\0';
  example_sources_[slot] = name;
}

void Classifier::ObserveClassified(uint64_t time_ns, std::optional<WorkClass> name_class, bool copy, uint64_t bytes,
                                   const char* example_name, uint64_t count) {
  if (!seen_work_ || time_ns > last_work_ns_) last_work_ns_ = time_ns;
  seen_work_ = true;
  Bucket* b = BucketFor(time_ns);
  if (b == nullptr) return;
  const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(count, 1u << 30));  // a client's claim, bounded
  if (copy || name_class == WorkClass::kCopy) {
    b->copies += n;
    b->copy_bytes += bytes;
  } else if (name_class == WorkClass::kCompute) {
    b->compute += n;
    NoteExample(0, example_name);
  } else if (name_class == WorkClass::kMemory) {
    b->memory += n;
    NoteExample(1, example_name);
  } else {
    b->unnamed += n;
  }
}

void Classifier::Observe(const Observation& o) {
  if (o.copy || o.kernel_name.empty()) {
    ObserveClassified(o.time_ns, std::nullopt, o.copy, o.bytes, nullptr);
    return;
  }
  auto it = name_cache_.find(o.kernel_name);
  if (it == name_cache_.end()) {
    if (name_cache_.size() >= kMaxCachedNames) {  // a flood of distinct names: classify, do not keep
      const std::optional<WorkClass> cls = ClassOfName(*config_, o.kernel_name);
      ObserveClassified(o.time_ns, cls, false, o.bytes, o.kernel_name.c_str());
      example_sources_ = {};  // o.kernel_name's storage is not ours to recognize later
      return;
    }
    it = name_cache_.emplace(o.kernel_name, ClassOfName(*config_, o.kernel_name)).first;
  }
  ObserveClassified(o.time_ns, it->second, false, o.bytes, it->first.c_str());  // keys are stable
}

void Classifier::Utilization(uint64_t time_ns, unsigned sm_percent, unsigned mem_percent) {
  Bucket* b = BucketFor(time_ns);
  if (b == nullptr) return;
  const uint64_t sm = std::min(sm_percent, 100u), mem = std::min(mem_percent, 100u);
  ++b->samples;
  b->sm_sum += sm;
  b->mem_sum += mem;
  if (std::max(sm, mem) < 5) return;  // inactive: no vote
  if (mem * 10 <= sm * 4) ++b->samples_compute;
  if (mem * 10 >= sm * 6) ++b->samples_memory;
}

Classifier::Evidence Classifier::Gather(uint64_t now_ns) const {
  const uint64_t now_number = now_ns / kBucketNs;
  Evidence e;
  for (const Bucket& b : buckets_) {
    if (b.number == kNoBucket || b.number + kBuckets <= now_number) continue;
    e.compute += b.compute;
    e.memory += b.memory;
    e.unnamed += b.unnamed;
    e.copies += b.copies;
    e.copy_bytes += b.copy_bytes;
    e.samples += b.samples;
    e.samples_compute += b.samples_compute;
    e.samples_memory += b.samples_memory;
    e.sm_sum += b.sm_sum;
    e.mem_sum += b.mem_sum;
  }
  return e;
}

std::string Classifier::NamesText(const Evidence& e) const {
  const bool compute_leads = e.compute >= e.memory;
  std::string text =
      "names: " + Percent(compute_leads ? e.compute : e.memory, e.named()) + (compute_leads ? " compute" : " memory");
  const char* example = examples_[compute_leads ? 0 : 1].data();
  if (example[0] != '\0') text += std::string(" (") + example + ")";
  return text;
}

void Classifier::Pending(uint64_t time_ns) {
  if (seen_work_) last_work_ns_ = std::max(last_work_ns_, time_ns);
}

std::optional<WorkClass> Classifier::Propose(const Evidence& e, uint64_t now_ns, std::string* why) const {
  if (!seen_work_) {
    *why = "no work seen yet";
    return std::nullopt;
  }
  if (now_ns >= last_work_ns_ && now_ns - last_work_ns_ >= kIdleAfterNs) {
    char text[64];
    std::snprintf(text, sizeof text, "idle: no work for %.1f s", static_cast<double>(now_ns - last_work_ns_) / 1e9);
    *why = text;
    return WorkClass::kIdle;
  }
  const uint64_t records = e.kernels() + e.copies;
  if (records > 0 && e.copies * 10 >= records * 6) {
    *why = "copies: " + Percent(e.copies, records) + " of records";
    if (e.copy_bytes > 0) *why += " (" + FormatBytes(e.copy_bytes) + ")";
    return WorkClass::kCopy;
  }

  std::optional<WorkClass> by_names;  // a 60% majority among the named kernels
  if (e.compute * 10 >= e.named() * 6 && e.compute > 0) by_names = WorkClass::kCompute;
  if (e.memory * 10 >= e.named() * 6 && e.memory > 0) by_names = WorkClass::kMemory;
  const bool names_cover = e.named() * 2 >= e.kernels();

  std::optional<WorkClass> by_nvml;
  std::string nvml_text;
  if (e.samples > 0) {
    nvml_text = "nvml sm " + std::to_string(std::llround(static_cast<double>(e.sm_sum) / e.samples)) + "% mem " +
                std::to_string(std::llround(static_cast<double>(e.mem_sum) / e.samples)) + "%";
    if (e.samples_compute * 10 >= e.samples * 6) by_nvml = WorkClass::kCompute;
    if (e.samples_memory * 10 >= e.samples * 6) by_nvml = WorkClass::kMemory;
  }

  const std::string names_text = e.named() > 0 ? NamesText(e) : "no kernel names known";
  if (by_names && names_cover) {
    *why = names_text + (nvml_text.empty() ? "" : "; " + nvml_text);
    return by_names;
  }
  if (by_nvml) {
    *why = nvml_text + "; " + names_text;
    return by_nvml;
  }
  if (by_names) {
    *why = names_text + ", " + Percent(e.named(), e.kernels()) + " of kernels named";
    return by_names;
  }
  *why = "unclear: " + names_text + (nvml_text.empty() ? "" : "; " + nvml_text);
  if (current_ == WorkClass::kIdle) return WorkClass::kUnknown;  // working again, but at what
  return std::nullopt;
}

WorkClass Classifier::Evaluate(uint64_t now_ns) {
  std::string why;
  const std::optional<WorkClass> proposal = Propose(Gather(now_ns), now_ns, &why);
  if (!proposal) {
    candidate_.reset();
    if (current_ == WorkClass::kUnknown) reason_ = why;
    return current_;
  }
  if (current_ == WorkClass::kUnknown || *proposal == current_) {
    current_ = *proposal;
    reason_ = why;
    candidate_.reset();
    return current_;
  }
  if (candidate_ != proposal) {
    candidate_ = proposal;
    candidate_since_ns_ = now_ns;
    candidate_evaluations_ = 1;
  } else {
    ++candidate_evaluations_;
  }
  if (candidate_evaluations_ >= 2 && now_ns >= candidate_since_ns_ + kHoldNs) {
    current_ = *proposal;
    reason_ = why;
    candidate_.reset();
  }
  return current_;
}

}  // namespace gpushare::broker
