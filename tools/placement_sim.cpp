// placement-sim: the placement study of docs/placement.md. A seeded stream of synthetic
// jobs (1, 2 or 4 GPUs; compute- or memory-bound; multi-rank or one multi-GPU process)
// is placed by the broker's policy (broker/placement_policy.h) and by the round-robin
// and least-memory-held baselines, then run on a simple model of GPU sharing; it
// prints makespan and slowdown per policy as markdown. Deterministic: the same flags
// print the same table on any machine (own distributions over mt19937_64, which the
// standard fully specifies, instead of std::*_distribution, which it does not).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "broker/policy/placement_policy.h"
#include "broker/policy/topology.h"

namespace {

using namespace gpushare::broker;

constexpr uint64_t kGiB = 1ull << 30;

const char kUsage[] =
    "usage: placement-sim [--seed N] [--jobs N] [--load X] [--repeat N] [--topology NAME[,NAME...]|all]\n"
    "                     [--explain N] [--weight NAME=VALUE]...\n"
    "Places a seeded stream of synthetic jobs with the placement policy, round-robin and\n"
    "least-memory-held, simulates them on a simple model of GPU sharing, and prints the\n"
    "makespan and slowdown of each as markdown (docs/placement.md explains the model).\n"
    "  --seed N        first seed (default 1)\n"
    "  --jobs N        jobs in the stream (default 200)\n"
    "  --load X        offered GPU work / GPU time available while jobs arrive (default 0.9)\n"
    "  --repeat N      seeds seed..seed+N-1: the means, and how often each beats least memory held\n"
    "  --topology T    2-p2p, 4-nvlink-pairs, 8-two-switches, 4-mixed-memory, or all\n"
    "                  (default 8-two-switches)\n"
    "  --explain N     also print the policy's explanation of its first N placements\n"
    "  --weight W=V    change one of the policy's weights (PlacementPolicy::Weights): headroom,\n"
    "                  demand, same_class, other_class, client, cap_unmet, nvlink, pcie_one_switch,\n"
    "                  pcie_switches, pcie_host_bridge, pcie_far\n";

PlacementPolicy::Weights g_weights;  // as --weight leaves them

double* WeightNamed(const std::string& name) {
  PlacementPolicy::Weights& w = g_weights;
  const std::pair<const char*, double*> all[] = {{"headroom", &w.headroom},
                                                 {"demand", &w.demand},
                                                 {"same_class", &w.same_class},
                                                 {"other_class", &w.other_class},
                                                 {"client", &w.client},
                                                 {"cap_unmet", &w.cap_unmet},
                                                 {"nvlink", &w.nvlink},
                                                 {"pcie_one_switch", &w.pcie_one_switch},
                                                 {"pcie_switches", &w.pcie_switches},
                                                 {"pcie_host_bridge", &w.pcie_host_bridge},
                                                 {"pcie_far", &w.pcie_far}};
  for (const auto& [n, field] : all)
    if (name == n) return field;
  return nullptr;
}

// --- The model -----------------------------------------------------------------------

// How much a co-located client slows another, by class (the victim's first): time-
// shared compute-bound work halves each other's speed; a memory-bound client beside a
// compute-bound one competes for little of what it needs.
double Interference(WorkClass victim, WorkClass other) { return victim == other ? 1.0 : 0.3; }

// A multi-GPU job's slowdown from its weakest link (all its GPUs synchronize).
double LinkFactor(Link link, bool comm_heavy) {
  switch (link) {
    case Link::kNvlink: return 1.0;
    case Link::kPcie: return comm_heavy ? 1.3 : 1.1;
    case Link::kNone: return comm_heavy ? 2.0 : 1.3;
  }
  return 1.0;
}

// --- Deterministic randomness -----------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Exponential(double mean) { return -mean * std::log(1.0 - Uniform()); }
  // An index drawn with the given weights.
  size_t Pick(const std::vector<double>& weights) {
    double total = 0;
    for (double w : weights) total += w;
    double u = Uniform() * total;
    for (size_t i = 0; i < weights.size(); ++i) {
      if (u < weights[i]) return i;
      u -= weights[i];
    }
    return weights.size() - 1;
  }

 private:
  std::mt19937_64 gen_;
};

// --- Topologies -------------------------------------------------------------------------

const char kAllTopologies[] = "2-p2p,4-nvlink-pairs,8-two-switches,4-mixed-memory";

bool MakeTopology(const std::string& name, Topology* out) {
  if (name == "2-p2p") {
    Topology t({80 * kGiB, 80 * kGiB});
    t.Connect(0, 1, Link::kPcie, PathLevel::kSingleSwitch);
    *out = t;
  } else if (name == "4-nvlink-pairs") {
    Topology t(std::vector<uint64_t>(4, 80 * kGiB));
    for (int a = 0; a < 4; ++a)
      for (int b = a + 1; b < 4; ++b) t.Connect(a, b, Link::kPcie, PathLevel::kHostBridge);
    t.Connect(0, 1, Link::kNvlink);
    t.Connect(2, 3, Link::kNvlink);
    *out = t;
  } else if (name == "8-two-switches") {
    Topology t(std::vector<uint64_t>(8, 80 * kGiB));
    for (int a = 0; a < 8; ++a)
      for (int b = a + 1; b < 8; ++b)
        if (a / 4 == b / 4) t.Connect(a, b, Link::kPcie, PathLevel::kSingleSwitch);
    *out = t;
  } else if (name == "4-mixed-memory") {
    Topology t({80 * kGiB, 80 * kGiB, 24 * kGiB, 24 * kGiB});
    t.Connect(0, 1, Link::kPcie, PathLevel::kSingleSwitch);
    t.Connect(2, 3, Link::kPcie, PathLevel::kSingleSwitch);
    *out = t;
  } else {
    return false;
  }
  return true;
}

// --- Jobs -------------------------------------------------------------------------------

struct Job {
  int id = 0;
  double arrival_s = 0;
  double work_s = 0;  // its run time alone on the node, on NVLink if it spans GPUs
  int gpus = 1;
  bool ranks = false;  // one process per GPU (a distributed job); else one process with `gpus` GPUs
  WorkClass cls = WorkClass::kCompute;
  bool comm_heavy = false;
  uint64_t memory_bytes = 0;  // per GPU
};

std::vector<Job> MakeJobs(const Topology& t, int count, double load, uint64_t seed) {
  Rng rng(seed);
  std::vector<Job> jobs;
  std::vector<uint64_t> sizes = t.memory_bytes;
  std::sort(sizes.rbegin(), sizes.rend());
  const std::vector<uint64_t> memory_choices = {4 * kGiB, 8 * kGiB, 16 * kGiB, 24 * kGiB, 40 * kGiB};
  double clock = 0, gpu_work = 0;
  for (int i = 0; i < count; ++i) {
    Job j;
    j.id = i;
    clock += rng.Exponential(1.0);
    j.arrival_s = clock;
    j.gpus = std::min<int>(t.gpu_count, std::vector<int>{1, 2, 4}[rng.Pick({0.55, 0.25, 0.20})]);
    j.ranks = j.gpus > 1 && rng.Uniform() < 0.75;
    j.cls = rng.Uniform() < 0.6 ? WorkClass::kCompute : WorkClass::kMemory;
    j.comm_heavy = j.gpus > 1 && rng.Uniform() < 0.5;
    // Log-uniform between 10 minutes and 4 hours (mean about 72 minutes).
    j.work_s = 600.0 * std::exp(rng.Uniform() * std::log(24.0));
    // Per GPU, at most half of the job's smallest GPU on an otherwise empty node: every
    // job fits when it is alone.
    std::vector<double> weights;
    for (uint64_t m : memory_choices) weights.push_back(m * 2 <= sizes[j.gpus - 1] ? 1.0 : 0.0);
    j.memory_bytes = memory_choices[rng.Pick(weights)];
    gpu_work += j.gpus * j.work_s;
    jobs.push_back(j);
  }
  // Arrivals stretched so that the work offered is `load` of the GPU time while they arrive.
  const double scale = gpu_work / (load * t.gpu_count * clock);
  for (Job& j : jobs) j.arrival_s *= scale;
  return jobs;
}

// --- Placement, as each policy would do it --------------------------------------------

struct Resident {
  int job;
  WorkClass cls;
};

struct Node {
  const Topology* topology;
  std::vector<uint64_t> held;
  std::vector<std::vector<Resident>> on;  // per GPU

  std::vector<GpuLoad> Loads() const {
    std::vector<GpuLoad> loads(topology->gpu_count);
    for (int g = 0; g < topology->gpu_count; ++g) {
      GpuLoad& l = loads[g];
      l.held_bytes = l.promised_bytes = held[g];  // every job's cap is what it uses
      l.clients = static_cast<int>(on[g].size());
      l.demand = on[g].empty() ? 0.0 : 1.0;  // the GPU's shares add up to 1 while anyone runs
      for (const Resident& r : on[g]) (r.cls == WorkClass::kMemory ? l.memory_clients : l.compute_clients)++;
    }
    return loads;
  }
  bool Fits(int g, uint64_t bytes) const { return held[g] + bytes <= topology->memory_bytes[g]; }
};

enum class Rule { kRoundRobin, kLeastMemoryHeld, kPolicy, kPolicyKnownClass };
const char* RuleName(Rule r) {
  switch (r) {
    case Rule::kRoundRobin: return "round-robin";
    case Rule::kLeastMemoryHeld: return "least memory held";
    case Rule::kPolicy: return "policy (class unknown at placement)";
    case Rule::kPolicyKnownClass: return "policy (class known at placement)";
  }
  return "?";
}

// The job's GPUs (one per rank, or the process's), or empty: it must wait.
std::vector<int> PlaceJob(Rule rule, const Node& node, const Job& job, int* cursor,
                          std::vector<std::string>* explanation) {
  const Topology& t = *node.topology;
  if (rule == Rule::kRoundRobin || rule == Rule::kLeastMemoryHeld) {
    // Admission-aware baselines: only the GPUs that can hold the job.
    PolicyRequest r;
    r.device_count = job.gpus;
    r.allowed = std::vector<int>{};
    for (int g = 0; g < t.gpu_count; ++g)
      if (node.Fits(g, job.memory_bytes)) r.allowed->push_back(g);
    if (static_cast<int>(r.allowed->size()) < job.gpus) return {};
    int tentative = *cursor;
    PolicyDecision d =
        rule == Rule::kRoundRobin ? PlaceRoundRobin(t, r, &tentative) : PlaceLeastMemoryHeld(t, node.Loads(), r);
    if (!d.refusal.empty()) return {};
    *cursor = tentative;
    return d.physical;
  }
  const PlacementPolicy policy(g_weights);
  PolicyRequest base;
  base.cap_bytes = job.memory_bytes;
  base.tenant = "job" + std::to_string(job.id);
  if (rule == Rule::kPolicyKnownClass) base.expected_class = job.cls;
  std::vector<GpuLoad> loads = node.Loads();
  std::vector<int> placed;
  const int processes = job.ranks ? job.gpus : 1;
  for (int rank = 0; rank < processes; ++rank) {
    PolicyRequest r = base;
    if (job.ranks) {
      r.job = base.tenant;
      r.rank = rank;
      for (size_t i = 0; i < placed.size(); ++i) r.job_peers.push_back({static_cast<int>(i), placed[i]});
    } else {
      r.device_count = job.gpus;
    }
    PolicyDecision d = policy.Place(t, loads, r);
    if (explanation != nullptr) explanation->insert(explanation->end(), d.explanation.begin(), d.explanation.end());
    if (!d.refusal.empty()) return {};
    for (int g : d.physical) {
      if (loads[g].held_bytes + job.memory_bytes > t.memory_bytes[g]) return {};  // admission: wait
      // As the broker counts a client it just placed: by the class it assumed.
      loads[g].held_bytes += job.memory_bytes;
      loads[g].promised_bytes += job.memory_bytes;
      loads[g].clients++;
      (d.assumed_class == WorkClass::kMemory ? loads[g].memory_clients : loads[g].compute_clients)++;
      placed.push_back(g);
    }
  }
  return placed;
}

// --- Simulation -------------------------------------------------------------------------

struct Result {
  double makespan_h = 0;
  double mean_slowdown = 0;
  double p95_slowdown = 0;
  double mean_wait_min = 0;
  int multi = 0, multi_without_p2p = 0, multi_on_nvlink = 0;
  int unplaced = 0;
};

Link WeakestLink(const Topology& t, const std::vector<int>& gpus) {
  Link weakest = Link::kNvlink;
  for (size_t i = 0; i < gpus.size(); ++i)
    for (size_t j = i + 1; j < gpus.size(); ++j)
      if (static_cast<int>(t.link(gpus[i], gpus[j])) < static_cast<int>(weakest)) weakest = t.link(gpus[i], gpus[j]);
  return weakest;
}

Result Simulate(Rule rule, const Topology& t, const std::vector<Job>& jobs, int explain) {
  Node node{&t, std::vector<uint64_t>(t.gpu_count, 0), std::vector<std::vector<Resident>>(t.gpu_count)};
  struct Running {
    int job;
    std::vector<int> gpus;
    double left_s;  // of its work
    double link_factor;
  };
  std::vector<Running> running;
  std::vector<int> pending;
  std::vector<double> start(jobs.size(), -1), finish(jobs.size(), -1);
  size_t next = 0;
  double now = 0;
  int cursor = 0;
  Result res;
  auto rate = [&](const Running& r) {
    double slowest = 1;
    for (int g : r.gpus) {
      double s = 1;
      for (const Resident& o : node.on[g])
        if (o.job != r.job) s += Interference(jobs[r.job].cls, o.cls);
      slowest = std::max(slowest, s);
    }
    return 1.0 / (slowest * r.link_factor);
  };
  while (next < jobs.size() || !running.empty() || !pending.empty()) {
    // Place what waits, in arrival order (a job that does not fit lets later ones try).
    for (auto it = pending.begin(); it != pending.end();) {
      const Job& job = jobs[*it];
      std::vector<std::string> lines;
      const bool show = explain > 0 && (rule == Rule::kPolicy);
      std::vector<int> gpus = PlaceJob(rule, node, job, &cursor, show ? &lines : nullptr);
      if (gpus.empty() && running.empty()) {
        ++res.unplaced;  // cannot run even on an empty node: dropped (never expected)
        it = pending.erase(it);
        continue;
      }
      if (gpus.empty()) {
        ++it;
        continue;
      }
      if (show) {
        --explain;
        std::printf("job %d (%d GPU%s, %s, %s, %s, %.0f GiB per GPU):\n", job.id, job.gpus, job.gpus > 1 ? "s" : "",
                    job.ranks ? "ranks" : "one process", job.cls == WorkClass::kMemory ? "memory" : "compute",
                    job.comm_heavy ? "comm-heavy" : "comm-light", job.memory_bytes / double(kGiB));
        for (const std::string& l : lines) std::printf("    %s\n", l.c_str());
      }
      Running r{job.id, gpus, job.work_s, 1.0};
      if (gpus.size() > 1) {
        const Link weakest = WeakestLink(t, gpus);
        r.link_factor = LinkFactor(weakest, job.comm_heavy);
        ++res.multi;
        res.multi_without_p2p += weakest == Link::kNone;
        res.multi_on_nvlink += weakest == Link::kNvlink;
      }
      for (int g : gpus) {
        node.held[g] += job.memory_bytes;
        node.on[g].push_back({job.id, job.cls});
      }
      start[job.id] = now;
      running.push_back(r);
      it = pending.erase(it);
    }
    // Advance to the next arrival or completion.
    double step = next < jobs.size() ? jobs[next].arrival_s - now : INFINITY;
    for (const Running& r : running) step = std::min(step, r.left_s / rate(r));
    if (!std::isfinite(step)) break;
    step = std::max(0.0, step);
    std::vector<double> rates;
    for (const Running& r : running) rates.push_back(rate(r));
    now += step;
    for (size_t i = 0; i < running.size(); ++i) running[i].left_s -= rates[i] * step;
    for (auto it = running.begin(); it != running.end();) {
      if (it->left_s > 1e-6) {
        ++it;
        continue;
      }
      finish[it->job] = now;
      for (int g : it->gpus) {
        node.held[g] -= jobs[it->job].memory_bytes;
        auto& v = node.on[g];
        v.erase(std::remove_if(v.begin(), v.end(), [&](const Resident& o) { return o.job == it->job; }), v.end());
      }
      it = running.erase(it);
    }
    while (next < jobs.size() && jobs[next].arrival_s <= now + 1e-9) pending.push_back(jobs[next++].id);
  }
  std::vector<double> slowdowns;
  double first = INFINITY, last = 0, wait = 0;
  for (const Job& j : jobs) {
    if (finish[j.id] < 0) continue;
    slowdowns.push_back((finish[j.id] - j.arrival_s) / j.work_s);
    wait += start[j.id] - j.arrival_s;
    first = std::min(first, j.arrival_s);
    last = std::max(last, finish[j.id]);
  }
  if (slowdowns.empty()) return res;
  std::sort(slowdowns.begin(), slowdowns.end());
  double sum = 0;
  for (double s : slowdowns) sum += s;
  res.makespan_h = (last - first) / 3600;
  res.mean_slowdown = sum / slowdowns.size();
  res.p95_slowdown =
      slowdowns[std::min(slowdowns.size() - 1, static_cast<size_t>(std::ceil(0.95 * slowdowns.size())) - 1)];
  res.mean_wait_min = wait / slowdowns.size() / 60;
  return res;
}

// --- Output -------------------------------------------------------------------------------

std::string Percent(int part, int whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", whole ? 100.0 * part / whole : 0.0);
  return buf;
}

void PrintRow(const char* name, const Result& r) {
  std::printf("| %s | %.1f | %.2f | %.2f | %.1f | %s | %s |\n", name, r.makespan_h, r.mean_slowdown, r.p95_slowdown,
              r.mean_wait_min, Percent(r.multi_on_nvlink, r.multi).c_str(),
              Percent(r.multi_without_p2p, r.multi).c_str());
}

void PrintHeader() {
  std::printf(
      "| placement | makespan (h) | mean slowdown | p95 slowdown | mean wait (min) | multi-GPU jobs on NVLink | "
      "multi-GPU jobs without P2P |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
}

bool ParseInt(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  long seed = 1, count = 200, repeat = 1, explain = 0;
  double load = 0.9;
  std::vector<std::string> topologies = {"8-two-switches"};
  for (int i = 1; i < argc; i += 2) {  // flag, value
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    bool ok = v != nullptr;
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--seed" && ok) {
      ok = ParseInt(v, 0, 1L << 40, &seed);
    } else if (a == "--jobs" && ok) {
      ok = ParseInt(v, 1, 100000, &count);
    } else if (a == "--repeat" && ok) {
      ok = ParseInt(v, 1, 10000, &repeat);
    } else if (a == "--explain" && ok) {
      ok = ParseInt(v, 0, 100000, &explain);
    } else if (a == "--load" && ok) {
      char* end = nullptr;
      load = std::strtod(v, &end);
      ok = end != v && *end == '\0' && load > 0 && load <= 10;
    } else if (a == "--weight" && ok) {
      const std::string kv = v;
      const size_t eq = kv.find('=');
      double* field = eq == std::string::npos ? nullptr : WeightNamed(kv.substr(0, eq));
      char* end = nullptr;
      const double value = field ? std::strtod(kv.c_str() + eq + 1, &end) : 0;
      ok = field != nullptr && end != kv.c_str() + eq + 1 && *end == '\0' && std::isfinite(value);
      if (ok) *field = value;
    } else if (a == "--topology" && ok) {
      topologies.clear();
      std::string list = v;
      if (list == "all") list = kAllTopologies;
      for (size_t at = 0; at <= list.size();) {
        size_t comma = std::min(list.find(',', at), list.size());
        topologies.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "placement-sim: bad argument %s%s%s\n%s", a.c_str(), v ? " " : "", v ? v : "", kUsage);
      return 2;
    }
  }
  const Rule rules[] = {Rule::kRoundRobin, Rule::kLeastMemoryHeld, Rule::kPolicy, Rule::kPolicyKnownClass};
  for (const std::string& name : topologies) {
    Topology t;
    if (!MakeTopology(name, &t)) {
      std::fprintf(stderr, "placement-sim: no topology \"%s\" (known: %s, or all)\n", name.c_str(), kAllTopologies);
      return 2;
    }
    std::printf("### %s: %d GPUs, %ld jobs, load %.2f, seed%s %ld%s\n\n", name.c_str(), t.gpu_count, count, load,
                repeat > 1 ? "s" : "", seed, repeat > 1 ? ("-" + std::to_string(seed + repeat - 1)).c_str() : "");
    std::printf("```\n%s", t.Describe().c_str());
    for (int g = 0; g < t.gpu_count; ++g)
      std::printf("%sGPU%d %.0f GiB", g ? ", " : "", g, t.memory_bytes[g] / double(kGiB));
    std::printf("\n```\n\n");
    std::map<Rule, Result> sums;
    std::map<Rule, int> wins;  // seeds where the rule's mean slowdown is below least memory held's (today's rule)
    for (long s = seed; s < seed + repeat; ++s) {
      const std::vector<Job> jobs = MakeJobs(t, static_cast<int>(count), load, static_cast<uint64_t>(s));
      std::map<Rule, Result> one;
      for (Rule rule : rules) {
        one[rule] = Simulate(rule, t, jobs, s == seed ? static_cast<int>(explain) : 0);
        Result& sum = sums[rule];
        sum.makespan_h += one[rule].makespan_h / repeat;
        sum.mean_slowdown += one[rule].mean_slowdown / repeat;
        sum.p95_slowdown += one[rule].p95_slowdown / repeat;
        sum.mean_wait_min += one[rule].mean_wait_min / repeat;
        sum.multi += one[rule].multi;
        sum.multi_on_nvlink += one[rule].multi_on_nvlink;
        sum.multi_without_p2p += one[rule].multi_without_p2p;
        sum.unplaced += one[rule].unplaced;
      }
      for (Rule rule : rules)
        if (one[rule].mean_slowdown < one[Rule::kLeastMemoryHeld].mean_slowdown - 1e-12) wins[rule]++;
    }
    if (explain > 0) std::printf("\n");
    PrintHeader();
    for (Rule rule : rules) PrintRow(RuleName(rule), sums[rule]);
    if (repeat > 1) {
      std::printf("\nseeds (of %ld) with a lower mean slowdown than least memory held:", repeat);
      for (Rule rule : rules)
        if (rule != Rule::kLeastMemoryHeld)
          std::printf(" %s %d%s", RuleName(rule), wins[rule], rule == rules[3] ? "" : ";");
      std::printf("\n");
    }
    for (Rule rule : rules)
      if (sums[rule].unplaced)
        std::printf("\n%s: %d jobs could not be placed at all\n", RuleName(rule), sums[rule].unplaced);
    std::printf("\n");
  }
  return 0;
}
