// The work classifier with a fake clock: name rules and profile, the decision rule
// (copies, names, NVML), the evidence window, hysteresis, and its [classifier] config.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <functional>

#include "broker/policy/classifier.h"
#include "broker/policy/config.h"
#include "config_errors.h"

namespace gpushare::broker {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;
const char* const kCompute = "simgpu_compute_500us";
const char* const kMemory = "simgpu_memory_500us";

Observation Kernel(uint64_t t, const std::string& name) { return Observation{t, false, 0, name}; }
Observation Copy(uint64_t t, uint64_t bytes) { return Observation{t, true, bytes, ""}; }

// Drives a classifier over [from, to): `emit` is called every `step` (it may observe
// records and samples), Evaluate every `evaluate_every`. Returns (time, class) per evaluation.
struct FakeClockRun {
  uint64_t step = kMs;
  uint64_t evaluate_every = 150 * kMs;
  std::vector<std::pair<uint64_t, WorkClass>> verdicts;

  void Drive(Classifier& c, uint64_t from, uint64_t to, const std::function<void(uint64_t)>& emit) {
    uint64_t next_eval = from + evaluate_every;
    for (uint64_t t = from; t < to; t += step) {
      emit(t);
      if (t + step > next_eval) {
        verdicts.emplace_back(next_eval, c.Evaluate(next_eval));
        next_eval += evaluate_every;
      }
    }
  }
  // When the verdict became `cls` for good (from then to the end); UINT64_MAX: never.
  uint64_t SettledOn(WorkClass cls) const {
    uint64_t since = UINT64_MAX;
    for (const auto& [t, v] : verdicts) {
      if (v != cls)
        since = UINT64_MAX;
      else if (since == UINT64_MAX)
        since = t;
    }
    return since;
  }
  size_t Changes() const {
    size_t n = 0;
    for (size_t i = 1; i < verdicts.size(); ++i) n += verdicts[i].second != verdicts[i - 1].second;
    return n;
  }
};

TEST(WorkClass, NamesRoundTrip) {
  for (WorkClass c : {WorkClass::kUnknown, WorkClass::kIdle, WorkClass::kCompute, WorkClass::kMemory, WorkClass::kCopy})
    EXPECT_EQ(ParseWorkClass(WorkClassName(c)), c);
  EXPECT_STREQ(WorkClassName(WorkClass::kMemory), "memory");
  EXPECT_EQ(ParseWorkClass("Compute"), std::nullopt);
  EXPECT_EQ(ParseWorkClass(""), std::nullopt);
}

TEST(ClassifierNames, DefaultRulesClassifyCommonKernels) {
  const ClassifierConfig config;
  const std::vector<std::pair<std::string, std::optional<WorkClass>>> cases = {
      {"simgpu_compute_500us", WorkClass::kCompute},
      {"_Z19simgpu_memory_40usPfS_i", WorkClass::kMemory},
      {"ampere_sgemm_128x64_nn", WorkClass::kCompute},
      {"sm80_xmma_fprop_implicit_gemm_indexed_f16f16_f16f32_f32_nhwckrsc_nhwc", WorkClass::kCompute},
      {"void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_128x128_32x3_nn_align4>(Params)", WorkClass::kCompute},
      {"void cudnn::detail::wgrad_alg0_engine<float, 128, 6, 7, 3, 3, 5, false, 512>", WorkClass::kCompute},
      {"void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", WorkClass::kCompute},
      {"fmha_cutlassF_f16_aligned_64x64_rf_sm80", WorkClass::kCompute},
      {"void cublasLt::epilogue::impl::globalKernel<8, 32, float>", WorkClass::kCompute},
      {"void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", WorkClass::kMemory},
      {"void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float>>>",
       WorkClass::kMemory},
      {"void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernel<float, float>", WorkClass::kMemory},
      {"void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, unsigned int, 4>", WorkClass::kMemory},
      {"void gemv2T_kernel_val<int, int, float, float, float, 128, 16, 4, 4, false>", WorkClass::kMemory},
      {"void cublasLt::splitKreduce_kernel<32, 16, int, float>", WorkClass::kMemory},
      {"convert_fp32_to_bf16", WorkClass::kMemory},
      {"LayerNormForward", WorkClass::kMemory},
      {"my_custom_kernel", std::nullopt},
      {"multiplication_kernel", std::nullopt},
      {"", std::nullopt},
  };
  for (const auto& [name, cls] : cases) EXPECT_EQ(ClassOfName(config, name), cls) << name;
}

TEST(ClassifierNames, ProfileWinsOverRulesAndUnknownMeansNoOpinion) {
  ClassifierConfig config;
  config.rules.insert(config.rules.begin(),
                      {NameRule{"Debug_GEMM", WorkClass::kUnknown}, NameRule{"MyStage", WorkClass::kCopy}});
  config.profile["fused_gemm_bias"] = WorkClass::kMemory;
  EXPECT_EQ(ClassOfName(config, "fused_gemm_bias"), WorkClass::kMemory);
  EXPECT_EQ(ClassOfName(config, "fused_gemm_bias2"), WorkClass::kCompute);  // exact names only
  EXPECT_EQ(ClassOfName(config, "debug_gemm_kernel"), std::nullopt);        // case-insensitive, stops the search
  EXPECT_EQ(ClassOfName(config, "void mystage_in<8>"), WorkClass::kCopy);
}

TEST(Classifier, NothingSeenStaysUnknown) {
  ClassifierConfig config;
  Classifier c(&config);
  EXPECT_EQ(c.Evaluate(5 * kSec), WorkClass::kUnknown);
  EXPECT_EQ(c.reason(), "no work seen yet");
  c.Observe(Kernel(5 * kSec, "my_custom_kernel"));
  EXPECT_EQ(c.Evaluate(5 * kSec + 100 * kMs), WorkClass::kUnknown);
  EXPECT_EQ(c.reason(), "unclear: no kernel names known");
}

TEST(Classifier, FirstClassificationFromUnknownIsImmediate) {
  ClassifierConfig config;
  Classifier c(&config);
  c.Observe(Kernel(0, kCompute));
  EXPECT_EQ(c.Evaluate(0), WorkClass::kCompute);
  EXPECT_EQ(c.reason(), "names: 100% compute (simgpu_compute_500us)");
}

TEST(Classifier, ComputeStreamWithTenPercentMemoryNoiseIsComputeWithinASecondAndStays) {
  ClassifierConfig config;
  Classifier c(&config);
  FakeClockRun run;
  int i = 0;
  run.Drive(c, 0, 5 * kSec, [&](uint64_t t) { c.Observe(Kernel(t, i++ % 10 == 9 ? kMemory : kCompute)); });
  EXPECT_EQ(run.verdicts.front(), std::make_pair(150 * kMs, WorkClass::kCompute));
  EXPECT_EQ(run.SettledOn(WorkClass::kCompute), 150 * kMs);
  EXPECT_EQ(run.Changes(), 0u);
  EXPECT_EQ(c.reason(), "names: 90% compute (simgpu_compute_500us)");
}

TEST(Classifier, MemoryStreamWithTenPercentComputeNoiseIsMemoryWithinASecondAndStays) {
  ClassifierConfig config;
  Classifier c(&config);
  FakeClockRun run;
  run.evaluate_every = 200 * kMs;
  int i = 0;
  run.Drive(c, 0, 5 * kSec, [&](uint64_t t) {
    c.Observe(Kernel(t, i % 10 == 9 ? kCompute : kMemory));
    if (i % 100 == 99) {
      const bool odd = t == 2099 * kMs;
      c.Utilization(t, odd ? 100 : 40, odd ? 10 : 95);
    }
    ++i;
  });
  EXPECT_EQ(run.SettledOn(WorkClass::kMemory), 200 * kMs);
  EXPECT_EQ(run.Changes(), 0u);
  EXPECT_EQ(c.reason(), "names: 90% memory (simgpu_memory_500us); nvml sm 40% mem 95%");
}

TEST(Classifier, UnnamedKernelsAreJudgedByNvmlVotesAndOneOddSparseSampleDoesNotFlip) {
  ClassifierConfig config;
  Classifier c(&config);
  FakeClockRun run;
  int i = 0;
  // Samples every 500 ms: a mean over the window would be (97+35)/2 sm, (15+95)/2 mem
  // around the odd one, which reads as memory; the votes are split, so nothing changes.
  run.Drive(c, 0, 6 * kSec, [&](uint64_t t) {
    c.Observe(Kernel(t, "my_custom_kernel"));
    if (i % 500 == 0) {
      const bool odd = t == 3 * kSec;
      c.Utilization(t, odd ? 35 : 97, odd ? 95 : 15);
    }
    ++i;
  });
  EXPECT_EQ(run.SettledOn(WorkClass::kCompute), 150 * kMs);
  EXPECT_EQ(run.Changes(), 0u);
  EXPECT_EQ(c.reason(), "nvml sm 97% mem 15%; no kernel names known");
}

TEST(Classifier, AClientThatChangesBehaviourIsReclassifiedWithinTwoSeconds) {
  ClassifierConfig config;
  Classifier c(&config);
  FakeClockRun run;
  run.evaluate_every = 200 * kMs;
  int i = 0;
  const uint64_t change = 3 * kSec;
  run.Drive(c, 0, 7 * kSec, [&](uint64_t t) {
    const bool noise = i++ % 10 == 9;
    c.Observe(Kernel(t, (t < change) != noise ? kCompute : kMemory));
    if (t % (100 * kMs) == 0) c.Utilization(t, t < change ? 98 : 42, t < change ? 14 : 96);
  });
  const uint64_t settled = run.SettledOn(WorkClass::kMemory);
  EXPECT_GT(settled, change);
  EXPECT_LE(settled, change + 2 * kSec);
  EXPECT_EQ(run.Changes(), 1u);  // compute until then, memory after: no flapping in between
  EXPECT_EQ(run.verdicts.front().second, WorkClass::kCompute);
}

TEST(Classifier, ANewClassMustHoldFor300msOverTwoEvaluations) {
  ClassifierConfig config;
  Classifier c(&config);
  for (uint64_t t = 0; t <= 1000 * kMs; t += kMs) c.Observe(Kernel(t, kCompute));
  EXPECT_EQ(c.Evaluate(1000 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(1499 * kMs), WorkClass::kCompute);  // 499 ms without work: not yet a candidate
  EXPECT_EQ(c.Evaluate(1500 * kMs), WorkClass::kCompute);  // idle is the candidate from here
  EXPECT_EQ(c.Evaluate(1700 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(1799 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.reason(), "names: 100% compute (simgpu_compute_500us)");
  EXPECT_EQ(c.Evaluate(1800 * kMs), WorkClass::kIdle);
  EXPECT_EQ(c.reason(), "idle: no work for 0.8 s");
  EXPECT_EQ(c.Evaluate(3000 * kMs), WorkClass::kIdle);
  EXPECT_EQ(c.reason(), "idle: no work for 2.0 s");
}

TEST(Classifier, AClientHeldBackByTheSchedulerIsNotIdle) {
  ClassifierConfig config;
  Classifier c(&config);
  for (uint64_t t = 0; t <= 1000 * kMs; t += kMs) c.Observe(Kernel(t, kCompute));
  EXPECT_EQ(c.Evaluate(1000 * kMs), WorkClass::kCompute);
  // Two seconds without a record, but waiting at its gate all along: still compute.
  for (uint64_t t = 1100 * kMs; t <= 3000 * kMs; t += 100 * kMs) {
    c.Pending(t);
    EXPECT_EQ(c.Evaluate(t), WorkClass::kCompute) << t / kMs << " ms";
  }
  // Once it stops waiting too, it goes idle as usual.
  EXPECT_EQ(c.Evaluate(3500 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(3800 * kMs), WorkClass::kIdle);
}

TEST(Classifier, AnInterruptedCandidateStartsOver) {
  ClassifierConfig config;
  Classifier c(&config);
  for (uint64_t t = 0; t <= 1000 * kMs; t += kMs) c.Observe(Kernel(t, kCompute));
  EXPECT_EQ(c.Evaluate(1000 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(1500 * kMs), WorkClass::kCompute);  // idle candidate...
  c.Observe(Kernel(1600 * kMs, kCompute));
  EXPECT_EQ(c.Evaluate(1700 * kMs), WorkClass::kCompute);  // ...interrupted
  EXPECT_EQ(c.Evaluate(2100 * kMs), WorkClass::kCompute);  // idle again, from here
  EXPECT_EQ(c.Evaluate(2300 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(2400 * kMs), WorkClass::kIdle);
}

TEST(Classifier, AClientWorkingAgainOnUnclearEvidenceLeavesIdleForUnknown) {
  ClassifierConfig config;
  Classifier c(&config);
  c.Observe(Kernel(0, kCompute));
  EXPECT_EQ(c.Evaluate(0), WorkClass::kCompute);
  EXPECT_EQ(c.Evaluate(600 * kMs), WorkClass::kCompute);  // idle is the candidate...
  EXPECT_EQ(c.Evaluate(900 * kMs), WorkClass::kIdle);     // ...and holds
  for (uint64_t t = 5 * kSec; t <= 5100 * kMs; t += kMs) c.Observe(Kernel(t, "my_custom_kernel"));
  EXPECT_EQ(c.Evaluate(5100 * kMs), WorkClass::kIdle);
  for (uint64_t t = 5101 * kMs; t <= 5400 * kMs; t += kMs) c.Observe(Kernel(t, "my_custom_kernel"));
  EXPECT_EQ(c.Evaluate(5400 * kMs), WorkClass::kUnknown);
  EXPECT_EQ(c.reason(), "unclear: no kernel names known");
  c.Utilization(5400 * kMs, 35, 97);
  EXPECT_EQ(c.Evaluate(5450 * kMs), WorkClass::kMemory);  // from unknown: at once
  EXPECT_EQ(c.reason(), "nvml sm 35% mem 97%; no kernel names known");
}

TEST(Classifier, CopiesDecideWhenTheyAreMostRecords) {
  ClassifierConfig config;
  Classifier c(&config);
  for (int i = 0; i < 10; ++i) {
    const uint64_t t = i * 10 * kMs;
    if (i % 5 == 0)
      c.Observe(Kernel(t, kCompute));
    else
      c.Observe(Copy(t, 1 << 20));
  }
  EXPECT_EQ(c.Evaluate(100 * kMs), WorkClass::kCopy);
  EXPECT_EQ(c.reason(), "copies: 80% of records (8.0 MiB)");

  Classifier half(&config);
  for (int i = 0; i < 10; ++i) half.Observe(i % 2 ? Copy(i * kMs, 4096) : Kernel(i * kMs, kMemory));
  EXPECT_EQ(half.Evaluate(10 * kMs), WorkClass::kMemory);
  EXPECT_EQ(half.reason(), "names: 100% memory (simgpu_memory_500us)");
}

TEST(Classifier, FewNamedKernelsDeferToNvml) {
  ClassifierConfig config;
  Classifier with_nvml(&config), without(&config);
  for (Classifier* c : {&with_nvml, &without}) {
    for (int i = 0; i < 100; ++i) c->Observe(Kernel(i * kMs, i % 10 == 0 ? "sgemm_nn" : "my_custom_kernel"));
  }
  with_nvml.Utilization(50 * kMs, 40, 95);
  EXPECT_EQ(with_nvml.Evaluate(100 * kMs), WorkClass::kMemory);
  EXPECT_EQ(with_nvml.reason(), "nvml sm 40% mem 95%; names: 100% compute (sgemm_nn)");
  EXPECT_EQ(without.Evaluate(100 * kMs), WorkClass::kCompute);
  EXPECT_EQ(without.reason(), "names: 100% compute (sgemm_nn), 10% of kernels named");
}

TEST(Classifier, UnclearNamesDeferToNvml) {
  ClassifierConfig config;
  Classifier c(&config);
  for (int i = 0; i < 100; ++i) c.Observe(Kernel(i * kMs, i % 20 < 11 ? kCompute : kMemory));
  EXPECT_EQ(c.Evaluate(100 * kMs), WorkClass::kUnknown);  // 55/45 and no samples
  EXPECT_EQ(c.reason(), "unclear: names: 55% compute (simgpu_compute_500us)");
  c.Utilization(100 * kMs, 99, 20);
  EXPECT_EQ(c.Evaluate(100 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.reason(), "nvml sm 99% mem 20%; names: 55% compute (simgpu_compute_500us)");
}

TEST(Classifier, EvidenceOlderThanASecondIsForgotten) {
  ClassifierConfig config;
  Classifier c(&config);
  for (uint64_t t = 0; t < 1000 * kMs; t += kMs) c.Observe(Kernel(t, kCompute));
  for (uint64_t t = 1000 * kMs; t < 1300 * kMs; t += kMs) c.Observe(Kernel(t, kMemory));
  EXPECT_EQ(c.Evaluate(1300 * kMs), WorkClass::kCompute);  // 600 compute, 300 memory in the window
  EXPECT_EQ(c.reason(), "names: 67% compute (simgpu_compute_500us)");
  c.Observe(Kernel(100 * kMs, kCompute));  // too late to count: its bucket is gone
  for (uint64_t t = 1300 * kMs; t < 2000 * kMs; t += kMs) c.Observe(Kernel(t, kMemory));
  EXPECT_EQ(c.Evaluate(2000 * kMs), WorkClass::kCompute);  // memory is the candidate...
  EXPECT_EQ(c.Evaluate(2300 * kMs), WorkClass::kMemory);   // ...and holds
  EXPECT_EQ(c.reason(), "names: 100% memory (simgpu_memory_500us)");
}

TEST(Classifier, FastPathCountsTheCallersClasses) {
  ClassifierConfig config;
  Classifier c(&config);
  const std::string name = "fused_attention_fwd";
  for (int i = 0; i < 20; ++i)
    c.ObserveClassified(i * kMs, i < 15 ? std::optional(WorkClass::kCompute) : std::nullopt, false, 0, name.c_str());
  c.ObserveClassified(20 * kMs, WorkClass::kCopy, false, 100, nullptr);  // a kernel named as a copy
  c.ObserveClassified(21 * kMs, WorkClass::kMemory, true, 200, "ignored_for_copies");
  EXPECT_EQ(c.Evaluate(30 * kMs), WorkClass::kCompute);
  EXPECT_EQ(c.reason(), "names: 100% compute (fused_attention_fwd)");
}

TEST(Classifier, SetConfigClassifiesCachedNamesAgain) {
  ClassifierConfig as_compute, as_memory;
  as_compute.profile["k"] = WorkClass::kCompute;
  as_memory.profile["k"] = WorkClass::kMemory;
  Classifier c(&as_compute);
  c.Observe(Kernel(0, "k"));
  EXPECT_EQ(c.Evaluate(0), WorkClass::kCompute);
  c.SetConfig(&as_memory);
  c.Observe(Kernel(2 * kSec, "k"));
  EXPECT_EQ(c.Evaluate(2 * kSec), WorkClass::kCompute);
  c.Observe(Kernel(2300 * kMs, "k"));
  EXPECT_EQ(c.Evaluate(2300 * kMs), WorkClass::kMemory);
  EXPECT_EQ(c.reason(), "names: 100% memory (k)");
}

// [classifier] and the class weights it brings.

using config_test::ErrorOf;

// A scratch directory, removed with the test.
struct TempDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("gpushare_classifier_test_" + std::to_string(getpid()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

TEST(BrokerConfigClassifier, DefaultsWithoutAClassifierTable) {
  std::string error;
  auto c = ParseBrokerConfig("", "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_DOUBLE_EQ(c->copy_weight, 0.3);
  EXPECT_DOUBLE_EQ(c->unknown_weight, 0.5);
  ASSERT_EQ(c->classifier.rules.size(), ClassifierConfig::DefaultNameRules().size());
  EXPECT_EQ(c->classifier.rules.front().pattern, "simgpu_compute");
  EXPECT_TRUE(c->classifier.profile.empty());
  EXPECT_EQ(c->classifier.profile_path, "");
}

TEST(BrokerConfigClassifier, ParsesClassWeightsForCopyAndUnknown) {
  std::string error;
  auto c = ParseBrokerConfig("[class_weights]\ncompute = 0.8\nmemory = 0.2\ncopy = 0.25\nunknown = 0.4\n",
                             "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_DOUBLE_EQ(c->copy_weight, 0.25);
  EXPECT_DOUBLE_EQ(c->unknown_weight, 0.4);
  EXPECT_EQ(ErrorOf("[class_weights]\ncopy = 0.2\nunknown = -1\n"),
            "broker.toml:3: class_weights.unknown: expected a positive number");
}

TEST(BrokerConfigClassifier, ConfigRulesComeBeforeTheDefaults) {
  std::string error;
  auto c = ParseBrokerConfig(R"([classifier]
rules = [
  { pattern = "gemm_epilogue", class = "memory" },
  { pattern = "stage_in", class = "copy" },
]
)",
                             "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  const std::vector<NameRule>& rules = c->classifier.rules;
  ASSERT_EQ(rules.size(), 2 + ClassifierConfig::DefaultNameRules().size());
  EXPECT_EQ(rules[0].pattern, "gemm_epilogue");
  EXPECT_EQ(rules[1].cls, WorkClass::kCopy);
  EXPECT_EQ(ClassOfName(c->classifier, "fused_gemm_epilogue_relu"), WorkClass::kMemory);
  EXPECT_EQ(ClassOfName(c->classifier, "ampere_sgemm_64x64"), WorkClass::kCompute);

  auto only = ParseBrokerConfig(
      "[classifier]\ndefault_rules = false\nrules = [{ pattern = \"mine\", class = \"compute\" }]\n", "b.toml", &error);
  ASSERT_TRUE(only) << error;
  ASSERT_EQ(only->classifier.rules.size(), 1u);
  EXPECT_EQ(ClassOfName(only->classifier, "mine_v2"), WorkClass::kCompute);
  EXPECT_EQ(ClassOfName(only->classifier, "ampere_sgemm_64x64"), std::nullopt);
}

TEST(BrokerConfigClassifier, ErrorsNameFileAndLine) {
  EXPECT_EQ(ErrorOf("[classifier]\nrulez = []\n"), "broker.toml:2: classifier.rulez: unknown key");
  EXPECT_EQ(ErrorOf("[classifier]\nrules = [\n  { pattern = \"a\", class = \"memory\" },\n"
                    "  { pattern = \"b\", clas = \"memory\" },\n]\n"),
            "broker.toml:4: classifier.rules[1].clas: unknown key");
  EXPECT_EQ(ErrorOf("[classifier]\n\nrules = [{ pattern = \"a\", class = \"fast\" }]\n"),
            "broker.toml:3: classifier.rules[0].class: expected \"compute\", \"memory\", \"copy\" or \"unknown\"");
  EXPECT_EQ(ErrorOf("[classifier]\nrules = [{ pattern = \"a\", class = \"idle\" }]\n"),
            "broker.toml:2: classifier.rules[0].class: expected \"compute\", \"memory\", \"copy\" or \"unknown\"");
  EXPECT_EQ(ErrorOf("[classifier]\nrules = [{ pattern = \"\", class = \"compute\" }]\n"),
            "broker.toml:2: classifier.rules[0].pattern: expected a non-empty string");
  EXPECT_EQ(ErrorOf("[classifier]\nrules = [{ class = \"compute\" }]\n"),
            "broker.toml:2: classifier.rules[0]: expected a pattern and a class");
  EXPECT_EQ(ErrorOf("[classifier]\nrules = [\"gemm\"]\n"),
            "broker.toml:2: classifier.rules[0]: expected { pattern = \"...\", class = \"...\" }");
  EXPECT_EQ(ErrorOf("[classifier]\ndefault_rules = \"no\"\n"),
            "broker.toml:2: classifier.default_rules: expected true or false");
  EXPECT_EQ(ErrorOf("[classifier]\nprofile = 3\n"), "broker.toml:2: classifier.profile: expected a file path");
  EXPECT_EQ(ErrorOf("classifier = 1\n"), "broker.toml:1: classifier: expected a table");
}

TEST(BrokerConfigClassifier, ProfileIsReadRelativeToTheConfigFile) {
  TempDir dir;
  dir.Write("kernels.txt",
            "# measured on A100\n"
            "\n"
            "fused_bias_gelu memory\n"
            "  void foo<int, float>(int*, float)\tcompute  \r\n"
            "stage_in copy\n"
            "debug_gemm unknown\n");
  const std::string config_path = dir.Write("broker.toml", "[classifier]\nprofile = \"kernels.txt\"\n");
  std::string error;
  auto c = LoadBrokerConfig(config_path, &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->classifier.profile_path, (dir.path / "kernels.txt").string());
  const std::map<std::string, WorkClass> expected = {{"fused_bias_gelu", WorkClass::kMemory},
                                                     {"void foo<int, float>(int*, float)", WorkClass::kCompute},
                                                     {"stage_in", WorkClass::kCopy},
                                                     {"debug_gemm", WorkClass::kUnknown}};
  EXPECT_EQ(c->classifier.profile, expected);
  EXPECT_EQ(ClassOfName(c->classifier, "debug_gemm"), std::nullopt);  // the profile's "no opinion" beats the rules
  EXPECT_EQ(ClassOfName(c->classifier, "fused_bias_gelu"), WorkClass::kMemory);

  // Parsing names the same directory through `source`; an absolute path is kept.
  auto parsed = ParseBrokerConfig("[classifier]\nprofile = \"kernels.txt\"\n", config_path, &error);
  ASSERT_TRUE(parsed) << error;
  EXPECT_EQ(parsed->classifier.profile.size(), 4u);
  auto absolute = ParseBrokerConfig("[classifier]\nprofile = \"" + (dir.path / "kernels.txt").string() + "\"\n",
                                    "elsewhere/broker.toml", &error);
  ASSERT_TRUE(absolute) << error;
  EXPECT_EQ(absolute->classifier.profile.size(), 4u);
}

TEST(BrokerConfigClassifier, ProfileErrorsNameTheProfileAndItsLine) {
  TempDir dir;
  const std::string profile = dir.Write("kernels.txt", "a compute\n# fine\nb fastest\n");
  const std::string config_path = dir.Write("broker.toml", "[classifier]\n\nprofile = \"kernels.txt\"\n");
  std::string error;
  EXPECT_FALSE(LoadBrokerConfig(config_path, &error));
  EXPECT_EQ(error, profile + ":3: class \"fastest\": expected \"compute\", \"memory\", \"copy\" or \"unknown\"");

  dir.Write("broker.toml", "[classifier]\n\nprofile = \"missing.txt\"\n");
  EXPECT_FALSE(LoadBrokerConfig(config_path, &error));
  EXPECT_EQ(error, config_path + ":3: classifier.profile: cannot read " + (dir.path / "missing.txt").string() +
                       ": cannot open: No such file or directory");

  EXPECT_FALSE(ParseClassifierProfile("a compute\nlonely\n", "p.txt", &error));
  EXPECT_EQ(error, "p.txt:2: expected \"KERNEL_NAME CLASS\"");
  EXPECT_FALSE(ParseClassifierProfile("a compute\n\nb idle\n", "p.txt", &error));
  EXPECT_EQ(error, "p.txt:3: class \"idle\": expected \"compute\", \"memory\", \"copy\" or \"unknown\"");
  EXPECT_FALSE(ParseClassifierProfile("a b compute\nx memory\na b  memory\n", "p.txt", &error));
  EXPECT_EQ(error, "p.txt:3: \"a b\" is already classified on line 1");
  auto empty = ParseClassifierProfile("# nothing\n\n", "p.txt", &error);
  ASSERT_TRUE(empty) << error;
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace gpushare::broker
