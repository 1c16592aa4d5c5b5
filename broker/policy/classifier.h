// Classification of a client's work as compute-bound, memory-bound, copy or idle,
// from what its launch records and the GPU say: kernel-name rules (a configurable
// table with sensible defaults), an optional profile (kernel name -> class), the
// copy-to-kernel ratio, and measured per-process SM vs memory utilization (NVML).
// Hysteresis keeps a verdict from flapping. Pure: time is passed in, no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace gpushare::broker {

enum class WorkClass { kUnknown, kIdle, kCompute, kMemory, kCopy };
const char* WorkClassName(WorkClass c);  // "unknown", "idle", "compute", "memory", "copy"
std::optional<WorkClass> ParseWorkClass(const std::string& name);

// A kernel-name rule: a name containing `pattern` (case-insensitive) is of `cls`.
// Rules are tried in order; the first match wins. A rule or profile entry of class
// kUnknown means "no opinion": it stops the search and leaves the verdict to the
// other signals.
struct NameRule {
  std::string pattern;
  WorkClass cls = WorkClass::kCompute;
};

struct ClassifierConfig {
  std::vector<NameRule> rules = DefaultNameRules();
  std::map<std::string, WorkClass> profile;  // exact kernel name -> class; wins over rules
  std::string profile_path;                  // where `profile` came from ("" none)
  static std::vector<NameRule> DefaultNameRules();
};

// The class a kernel name gets from the profile, then the rules; nullopt: no opinion.
// Allocates and scans the rules: call once per distinct name, not per launch.
std::optional<WorkClass> ClassOfName(const ClassifierConfig& config, const std::string& name);

// One observed piece of work (a launch record, decoded by the broker).
struct Observation {
  uint64_t time_ns = 0;
  bool copy = false;        // an async copy or memset (not a kernel)
  uint64_t bytes = 0;       // copies: bytes moved
  std::string kernel_name;  // kernels: "" when unknown
};

// The classifier of one stream or one client.
class Classifier {
 public:
  explicit Classifier(const ClassifierConfig* config);
  // A reloaded config: the names this classifier cached are classified again.
  void SetConfig(const ClassifierConfig* config);

  // The simple path: classifies the kernel name (once per distinct name, cached).
  void Observe(const Observation& o);
  // The fast path, a few counter updates: the caller classified the kernel name once
  // (ClassOfName) and passes its class; nullopt: no opinion (or an unnamed kernel).
  // `copy`: an async copy or memset (name_class is then ignored); a kernel whose name
  // is of class kCopy also counts as a copy. `example_name` (may be null) is shown in
  // reason(); it is read during the call only, and a pointer equal to the previous
  // one of the same class is taken to be the same name (pass interned names).
  // `count` such launches at once (a client's tally), `bytes` their total.
  void ObserveClassified(uint64_t time_ns, std::optional<WorkClass> name_class, bool copy, uint64_t bytes,
                         const char* example_name, uint64_t count = 1);
  // Measured utilization of this client's process over a recent window (percent).
  void Utilization(uint64_t time_ns, unsigned sm_percent, unsigned mem_percent);
  // The client has work waiting (at the scheduler's gate) at `time_ns`: not idle, even
  // without records (a client the scheduler holds back launches nothing meanwhile).
  void Pending(uint64_t time_ns);
  // Re-evaluates at `now_ns`; returns the current (hysteresis-filtered) class.
  WorkClass Evaluate(uint64_t now_ns);

  WorkClass current() const { return current_; }
  // Why the current class, for gpushare-smi: e.g.
  // "names: 97% compute (simgpu_compute_500us); nvml sm 93% mem 12%".
  const std::string& reason() const { return reason_; }

  // Tuning (see classifier.cpp for how they are used).
  static constexpr uint64_t kBucketNs = 100'000'000;  // evidence is kept in 100 ms buckets...
  static constexpr uint32_t kBuckets = 10;            // ...over the last second
  static constexpr uint64_t kIdleAfterNs = 500'000'000;
  static constexpr uint64_t kHoldNs = 300'000'000;  // a new class must persist this long
  static constexpr size_t kMaxCachedNames = 4096;

 private:
  static constexpr uint64_t kNoBucket = UINT64_MAX;
  static constexpr size_t kExampleChars = 64;
  struct Bucket {
    uint64_t number = kNoBucket;  // time_ns / kBucketNs
    uint32_t compute = 0, memory = 0, unnamed = 0, copies = 0;
    uint64_t copy_bytes = 0;
    uint32_t samples = 0, samples_compute = 0, samples_memory = 0;  // NVML samples, and their votes
    uint64_t sm_sum = 0, mem_sum = 0;                               // for the means shown in reason()
  };
  struct Evidence;

  Bucket* BucketFor(uint64_t time_ns);
  Evidence Gather(uint64_t now_ns) const;
  std::optional<WorkClass> Propose(const Evidence& e, uint64_t now_ns, std::string* why) const;
  void NoteExample(int slot, const char* name);
  std::string NamesText(const Evidence& e) const;

  const ClassifierConfig* config_;
  WorkClass current_ = WorkClass::kUnknown;
  std::string reason_ = "no work seen yet";
  std::array<Bucket, kBuckets> buckets_{};
  bool seen_work_ = false;
  uint64_t last_work_ns_ = 0;
  // The latest kernel name of each class (0: compute, 1: memory), for reason().
  std::array<std::array<char, kExampleChars>, 2> examples_{};
  std::array<const char*, 2> example_sources_{};
  // A class that differs from current_: since when, over how many evaluations.
  std::optional<WorkClass> candidate_;
  uint64_t candidate_since_ns_ = 0;
  uint32_t candidate_evaluations_ = 0;
  std::unordered_map<std::string, std::optional<WorkClass>> name_cache_;
};

}  // namespace gpushare::broker
