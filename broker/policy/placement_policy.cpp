// The placement policy and its baselines (see placement_policy.h). Every number that
// decides is also written into the explanation, so that `gpushare-smi --explain` can
// show a user exactly why their client landed where it did.
#include "placement_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/base/units.h"

namespace gpushare::broker {

namespace {

constexpr double kEpsilon = 1e-9;           // scores closer than this are a tie (lowest index wins)
constexpr size_t kMaxSetsWeighed = 20'000;  // C(16, 8) = 12,870: every set on a 16-GPU node; beyond, greedy
constexpr size_t kSetsShown = 3;            // the best sets written into the explanation

std::string Signed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.2f", v + 0.0);  // + 0.0: no "-0.00"
  return buf;
}

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v + 0.0);
  return buf;
}

std::string List(const std::vector<int>& gpus) {
  std::string s;
  for (size_t i = 0; i < gpus.size(); ++i) s += (i ? ", " : "") + std::to_string(gpus[i]);
  return s;
}

std::string Plural(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string JobName(const PolicyRequest& r) { return "job \"" + r.job + "\""; }

std::string RankName(int rank) { return rank >= 0 ? "rank " + std::to_string(rank) : "a rank (number unknown)"; }

// "job "J" rank 3": how refusals and warnings name the client (short: they travel in
// the broker's 256-byte reply).
std::string JobRank(const PolicyRequest& r) { return JobName(r) + " " + RankName(r.rank); }

// A client of a job is placed as a rank only when its rank is known: a process that
// only names a job (GPUSHARE_JOB without a rank) is placed as any client.
bool InJob(const PolicyRequest& r) { return !r.job.empty() && r.rank >= 0; }

std::string Who(const PolicyRequest& r) {
  std::string s = InJob(r)        ? JobRank(r)
                  : r.job.empty() ? "client"
                                  : "client (" + JobName(r) + ", rank unknown: placed as any client)";
  if (!r.tenant.empty()) s += " of tenant \"" + r.tenant + "\"";
  return s;
}

bool Allowed(const Topology& t, const PolicyRequest& r, int g) {
  return g >= 0 && g < t.gpu_count &&
         (!r.allowed || std::find(r.allowed->begin(), r.allowed->end(), g) != r.allowed->end());
}

// The asked GPUs' refusal, as placement.cpp words it; "" when all may be used.
// Two virtual GPUs of one client on one physical GPU would share its one primary
// context, so the driver could not tell them apart (which is current, whose memory):
// asked twice is refused, and placement never does it.
std::string CheckAsked(const Topology& t, const PolicyRequest& r) {
  for (size_t i = 0; i < r.asked.size(); ++i) {
    const int g = r.asked[i];
    if (!Allowed(t, r, g))
      return g >= 0 && g < t.gpu_count ? "GPU " + std::to_string(g) + " is not among the tenant's GPUs"
                                       : "there is no GPU " + std::to_string(g);
    if (std::find(r.asked.begin(), r.asked.begin() + static_cast<long>(i), g) != r.asked.begin() + static_cast<long>(i))
      return "GPU " + std::to_string(g) + " is asked for twice: two virtual GPUs cannot share one physical GPU";
  }
  return "";
}

std::vector<int> Candidates(const Topology& t, const PolicyRequest& r) {
  std::vector<int> c;
  for (int g = 0; g < t.gpu_count; ++g)
    if (Allowed(t, r, g)) c.push_back(g);
  return c;
}

// device_count 0 is "every GPU the tenant may use", except for a rank of a job: NCCL
// wants one GPU per rank, and a rank given all of them would hold every GPU its job's
// other ranks need.
size_t Wanted(const PolicyRequest& r, size_t candidates) {
  if (r.device_count > 0) return static_cast<size_t>(r.device_count);
  return InJob(r) ? 1 : candidates;
}

const char* kNoGpu = "the tenant may use no GPU of this node";

WorkClass AssumeClass(const PolicyRequest& r, std::string* why) {
  auto heavy = [](WorkClass c) { return c == WorkClass::kMemory || c == WorkClass::kCopy ? WorkClass::kMemory : c; };
  if (r.expected_class == WorkClass::kCompute || heavy(r.expected_class) == WorkClass::kMemory) {
    *why = "expected";
    return heavy(r.expected_class);
  }
  size_t compute = 0, memory = 0;
  for (WorkClass c : r.tenant_classes) {
    if (c == WorkClass::kCompute) ++compute;
    if (heavy(c) == WorkClass::kMemory) ++memory;
  }
  if (compute + memory > 0) {
    *why =
        "as the tenant's other clients: " + std::to_string(compute) + " compute, " + std::to_string(memory) + " memory";
    return memory > compute ? WorkClass::kMemory : WorkClass::kCompute;
  }
  *why = "unknown at registration: treated as compute";
  return WorkClass::kCompute;
}

const char* ClassWord(WorkClass c) { return c == WorkClass::kMemory ? "memory" : "compute"; }

struct Scored {
  double total = 0;
  bool cap_met = true;
  std::string line;
};

// A set of GPUs weighed for a multi-GPU client.
struct SetChoice {
  std::vector<int> gpus;  // ascending
  int cap_unmet = 0;      // GPUs of the set where the tenant's cap cannot be met
  bool p2p = true;        // every pair can reach the other's memory
  double gpu_sum = 0;
  double links = 0;  // mean link value over the pairs
  int nvlink_pairs = 0, pcie_pairs = 0, none_pairs = 0;
  double total() const { return gpu_sum + links; }
};

// a before b: the cap met on more of them, then P2P-connected, then the higher score;
// on a tie the earlier set (sets are weighed in lexicographic order) stays.
bool Better(const SetChoice& a, const SetChoice& b) {
  if (a.cap_unmet != b.cap_unmet) return a.cap_unmet < b.cap_unmet;
  if (a.p2p != b.p2p) return a.p2p;
  return a.total() > b.total() + kEpsilon;
}

std::string SetLine(const SetChoice& s) {
  std::string pairs;
  const int n = s.nvlink_pairs + s.pcie_pairs + s.none_pairs;
  if (n == 1) {
    pairs = s.nvlink_pairs ? "NVLink" : s.pcie_pairs ? "PCIe" : "no P2P";
  } else {
    pairs = "mean of " + std::to_string(n) + " pairs:";
    if (s.nvlink_pairs) pairs += " " + std::to_string(s.nvlink_pairs) + " NVLink";
    if (s.pcie_pairs) pairs += std::string(s.nvlink_pairs ? "," : "") + " " + std::to_string(s.pcie_pairs) + " PCIe";
    if (s.none_pairs)
      pairs += std::string(s.nvlink_pairs || s.pcie_pairs ? "," : "") + " " + std::to_string(s.none_pairs) + " no P2P";
  }
  std::string line = "set {" + List(s.gpus) + "}: score " + Signed(s.total()) + " = GPUs " + Signed(s.gpu_sum) +
                     ", links " + Signed(s.links) + " (" + pairs + ")";
  if (!s.p2p) line += "; not P2P-connected";
  if (s.cap_unmet) line += "; the cap cannot be met on " + Plural(s.cap_unmet, "GPU", "GPUs");
  return line;
}

}  // namespace

double PlacementPolicy::LinkValue(const Topology& t, int a, int b) const {
  switch (t.link(a, b)) {
    case Link::kNone: return 0;
    case Link::kNvlink: return weights_.nvlink;
    case Link::kPcie: break;
  }
  switch (t.level(a, b)) {
    case PathLevel::kSame:
    case PathLevel::kSingleSwitch: return weights_.pcie_one_switch;
    case PathLevel::kMultipleSwitches: return weights_.pcie_switches;
    case PathLevel::kHostBridge: return weights_.pcie_host_bridge;
    default: return weights_.pcie_far;
  }
}

PolicyDecision PlacementPolicy::Place(const Topology& t, const std::vector<GpuLoad>& gpus,
                                      const PolicyRequest& r) const {
  PolicyDecision d;
  std::vector<std::string>& ex = d.explanation;
  auto refuse = [&](std::string why) {
    d.physical.clear();
    d.refusal = std::move(why);
    ex.push_back("refused: " + d.refusal);
    return d;
  };
  if (static_cast<int>(gpus.size()) != t.gpu_count)
    return refuse("placement: the topology has " + std::to_string(t.gpu_count) + " GPUs but the load describes " +
                  std::to_string(gpus.size()));

  const bool in_job = InJob(r);
  std::string class_why;
  d.assumed_class = AssumeClass(r, &class_why);
  std::string wants;
  if (!r.asked.empty())
    wants = "asks for " + std::string(r.asked.size() == 1 ? "GPU " : "GPUs ") + List(r.asked);
  else if (r.device_count > 0)
    wants = "wants " + Plural(static_cast<size_t>(r.device_count), "GPU", "GPUs");
  else
    wants = in_job ? "wants 1 GPU (a rank of a job uses one)" : "wants every GPU the tenant may use";
  ex.push_back(Who(r) + ": " + wants + "; class " + ClassWord(d.assumed_class) + " (" + class_why + "); " +
               (r.cap_bytes ? "cap " + FormatBytes(*r.cap_bytes) + " per GPU" : std::string("uncapped")));

  // The job's other ranks, where they are.
  std::vector<JobPeer> peers;
  if (in_job)
    for (const JobPeer& p : r.job_peers)
      if (p.gpu >= 0 && p.gpu < t.gpu_count) peers.push_back(p);
  auto peer_on = [&](int g) -> const JobPeer* {
    for (const JobPeer& p : peers)
      if (p.gpu == g) return &p;
    return nullptr;
  };

  if (!r.asked.empty()) {
    if (std::string why = CheckAsked(t, r); !why.empty()) return refuse(why);
    d.physical = r.asked;
    ex.push_back("asked GPUs are honoured: the tenant may use them");
    for (int g : r.asked)
      if (const JobPeer* p = peer_on(g); p != nullptr && d.warning.empty())
        d.warning = "GPU " + std::to_string(g) + " already holds " + RankName(p->rank) + " of " + JobName(r) +
                    ": NCCL refuses two ranks on one GPU if both use it";
    if (!d.warning.empty()) ex.push_back("warning: " + d.warning);
    return d;
  }

  const std::vector<int> candidates = Candidates(t, r);
  if (candidates.empty()) return refuse(kNoGpu);
  std::vector<int> usable;
  for (int g : candidates)
    if (peer_on(g) == nullptr) usable.push_back(g);
  size_t want = Wanted(r, candidates.size());
  if (in_job && usable.size() < want) {
    const std::string n = std::to_string(candidates.size());
    if (usable.empty())
      return refuse(JobRank(r) + ": " +
                    (candidates.size() == 1 ? "the only GPU the tenant may use already holds"
                                            : "all " + n + " GPUs the tenant may use already hold") +
                    " a rank of " + JobName(r) + "; NCCL refuses two ranks on one GPU");
    return refuse(JobRank(r) + " wants " + Plural(want, "GPU", "GPUs") + ", but only " + std::to_string(usable.size()) +
                  " of the " + n + " GPUs the tenant may use hold no rank of " + JobName(r) +
                  "; NCCL refuses two ranks on one GPU");
  }
  if (want > usable.size()) {
    ex.push_back("the tenant may use " + Plural(usable.size(), "GPU", "GPUs") + ": placing " +
                 std::to_string(usable.size()) + " of the " + std::to_string(want) + " wanted");
    want = usable.size();
  }

  // Every GPU's score, and why.
  const WorkClass mine = d.assumed_class;
  const double largest = static_cast<double>(std::max<uint64_t>(1, t.largest_memory_bytes()));
  std::vector<Scored> scored(t.gpu_count);
  for (int g = 0; g < t.gpu_count; ++g) {
    const std::string name = "GPU " + std::to_string(g) + ": ";
    if (!Allowed(t, r, g)) {
      ex.push_back(name + "not among the tenant's GPUs");
      continue;
    }
    if (const JobPeer* p = peer_on(g)) {
      ex.push_back(name + "excluded: holds " + RankName(p->rank) + " of " + JobName(r) +
                   " (NCCL refuses two ranks on one GPU)");
      continue;
    }
    const GpuLoad& l = gpus[g];
    const uint64_t capacity = t.memory_bytes[g];
    const uint64_t room = capacity - std::min(capacity, std::max(l.held_bytes, l.promised_bytes));
    std::vector<std::string> terms;
    double total = 0;
    auto term = [&](const char* what, double v, const std::string& detail) {
      total += v;
      terms.push_back(std::string(what) + " " + Signed(v) + " (" + detail + ")");
    };
    term("headroom", weights_.headroom * static_cast<double>(room) / largest,
         FormatBytes(room) + " of " + FormatBytes(capacity) + " free");
    Scored& s = scored[g];
    s.cap_met = !r.cap_bytes || l.tenant_present || *r.cap_bytes <= capacity - std::min(capacity, l.promised_bytes);
    if (!s.cap_met)
      term("cap", -weights_.cap_unmet,
           "the " + FormatBytes(*r.cap_bytes) + " cap cannot be met: " +
               (*r.cap_bytes > capacity ? "the GPU is smaller"
                                        : FormatBytes(l.promised_bytes) + " is promised to other tenants"));
    if (l.demand > 0) term("demand", -weights_.demand * l.demand, "measured " + Fixed(l.demand));
    const int same = mine == WorkClass::kMemory ? l.memory_clients : l.compute_clients;
    const int other = mine == WorkClass::kMemory ? l.compute_clients : l.memory_clients;
    if (same + other > 0)
      term("class mix", -weights_.same_class * same - weights_.other_class * other,
           std::to_string(l.compute_clients) + " compute-bound, " + std::to_string(l.memory_clients) +
               " memory-bound beside a " + ClassWord(mine) + " client");
    if (l.clients > 0) term("clients", -weights_.client * l.clients, std::to_string(l.clients) + " there");
    if (!peers.empty()) {
      // The job's collectives run at the pace of its slowest link: the weakest counts.
      const JobPeer* weakest = nullptr;
      double value = 0;
      for (const JobPeer& p : peers) {
        const double v = LinkValue(t, g, p.gpu);
        if (weakest == nullptr || v < value - kEpsilon) {
          weakest = &p;
          value = v;
        }
      }
      const Link link = t.link(g, weakest->gpu);
      std::string how = link == Link::kPcie ? std::string("PCIe ") + PathLevelName(t.level(g, weakest->gpu))
                                            : std::string(LinkName(link));
      term("link", value,
           how + " to " + RankName(weakest->rank) + " on GPU " + std::to_string(weakest->gpu) +
               (peers.size() > 1 ? ", the weakest to the job's ranks" : ""));
    }
    s.total = total;
    std::string line = name + "score " + Signed(total) + ": ";
    for (size_t i = 0; i < terms.size(); ++i) line += (i ? ", " : "") + terms[i];
    ex.push_back(line);
  }

  // A GPU before another: the cap met, then the higher score, then the lower index.
  auto before = [&](int a, int b) {
    if (scored[a].cap_met != scored[b].cap_met) return scored[a].cap_met;
    if (scored[a].total > scored[b].total + kEpsilon) return true;
    if (scored[b].total > scored[a].total + kEpsilon) return false;
    return a < b;
  };

  std::vector<int> chosen;
  std::string why;
  if (want == 1) {
    int best = usable.front();
    for (int g : usable)
      if (before(g, best)) best = g;
    chosen = {best};
    why = "the best score";
    for (int g : usable)
      if (g != best && scored[g].cap_met == scored[best].cap_met &&
          std::abs(scored[g].total - scored[best].total) <= kEpsilon) {
        why += "; tied with GPU " + std::to_string(g) + ", the lower index first";
        break;
      }
  } else {
    // Up to C(16, 8) sets are weighed: link values are looked up, not recomputed, and a
    // set is copied only when it is among the best so far.
    std::vector<double> link_value(static_cast<size_t>(t.gpu_count) * t.gpu_count, 0);
    for (int a : usable)
      for (int b : usable) link_value[static_cast<size_t>(a) * t.gpu_count + b] = LinkValue(t, a, b);
    auto weigh = [&](const std::vector<int>& set) {
      SetChoice s;
      double link_sum = 0;
      int pairs = 0;
      for (size_t i = 0; i < set.size(); ++i) {
        s.gpu_sum += scored[set[i]].total;
        s.cap_unmet += scored[set[i]].cap_met ? 0 : 1;
        for (size_t j = i + 1; j < set.size(); ++j) {
          const Link link = t.link(set[i], set[j]);
          (link == Link::kNvlink ? s.nvlink_pairs : link == Link::kPcie ? s.pcie_pairs : s.none_pairs)++;
          link_sum += link_value[static_cast<size_t>(set[i]) * t.gpu_count + set[j]];
          ++pairs;
        }
      }
      s.p2p = s.none_pairs == 0;
      s.links = pairs ? link_sum / pairs : 0;
      return s;
    };
    // How many sets there are, stopping once past the limit.
    size_t sets = 1;
    for (size_t i = 0; i < want && sets <= kMaxSetsWeighed; ++i) sets = sets * (usable.size() - i) / (i + 1);
    std::vector<SetChoice> best;  // the best few, best first
    auto consider = [&](const std::vector<int>& set) {
      SetChoice s = weigh(set);
      if (best.size() == kSetsShown && !Better(s, best.back())) return;
      s.gpus = set;
      auto at = std::find_if(best.begin(), best.end(), [&](const SetChoice& b) { return Better(s, b); });
      best.insert(at, std::move(s));
      if (best.size() > kSetsShown) best.pop_back();
    };
    if (want == usable.size()) {
      consider(usable);
      ex.push_back("the set is every usable GPU");
    } else if (sets <= kMaxSetsWeighed) {
      std::vector<size_t> pick(want);
      for (size_t i = 0; i < want; ++i) pick[i] = i;
      std::vector<int> set;
      for (;;) {
        set.clear();
        for (size_t i : pick) set.push_back(usable[i]);
        consider(set);
        size_t i = want;  // next combination in lexicographic order
        while (i > 0 && pick[i - 1] == usable.size() - want + (i - 1)) --i;
        if (i == 0) break;
        ++pick[i - 1];
        for (size_t j = i; j < want; ++j) pick[j] = pick[j - 1] + 1;
      }
      ex.push_back("sets of " + std::to_string(want) + " among GPUs " + List(usable) + ": " + std::to_string(sets) +
                   " weighed (the cap met, then P2P-connected, then the score); the best:");
    } else {
      // Too many to weigh all: grow from the best GPU, adding the one that keeps the
      // set P2P-connected and scores best with its links to the set.
      std::vector<int> set;
      std::vector<int> left = usable;
      std::sort(left.begin(), left.end(), before);
      set.push_back(left.front());
      left.erase(left.begin());
      while (set.size() < want) {
        auto gain = [&](int g) {
          double links = 0;
          bool p2p = true;
          for (int m : set) {
            links += LinkValue(t, g, m);
            p2p = p2p && t.p2p(g, m);
          }
          return std::make_pair(p2p, scored[g].total + links / set.size());
        };
        auto better = [&](int a, int b) {  // the cap met, then P2P with the set, then the gain
          if (scored[a].cap_met != scored[b].cap_met) return scored[a].cap_met;
          const auto ga = gain(a), gb = gain(b);
          if (ga.first != gb.first) return ga.first;
          return ga.second > gb.second + kEpsilon;
        };
        auto pick = left.begin();
        for (auto it = left.begin(); it != left.end(); ++it)
          if (better(*it, *pick)) pick = it;
        set.push_back(*pick);
        left.erase(pick);
      }
      std::sort(set.begin(), set.end());
      consider(set);
      ex.push_back("sets of " + std::to_string(want) + " among " + std::to_string(usable.size()) +
                   " GPUs: too many to weigh all, grown greedily from the best GPU:");
    }
    for (const SetChoice& s : best) ex.push_back("  " + SetLine(s));
    chosen = best.front().gpus;
    std::sort(chosen.begin(), chosen.end(), before);  // the best GPU is virtual 0
    why = "the best set";
    if (!best.front().p2p) {
      int a = -1, b = -1;
      for (size_t i = 0; i < chosen.size() && a < 0; ++i)
        for (size_t j = i + 1; j < chosen.size() && a < 0; ++j)
          if (!t.p2p(chosen[i], chosen[j])) a = chosen[i], b = chosen[j];
      d.warning = "no P2P-connected set of " + std::to_string(want) + " GPUs the tenant may use: GPUs " +
                  std::to_string(std::min(a, b)) + " and " + std::to_string(std::max(a, b)) +
                  " copy to each other through host memory";
    }
  }

  // Ranks the new one cannot reach directly: NCCL still works, through host memory.
  for (int g : chosen)
    for (const JobPeer& p : peers)
      if (!t.p2p(g, p.gpu) && d.warning.empty())
        d.warning = JobRank(r) + " on GPU " + std::to_string(g) + " has no P2P path to " + RankName(p.rank) +
                    " on GPU " + std::to_string(p.gpu) + ": NCCL will copy through host memory";

  d.physical = chosen;
  std::string placed = "placed: ";
  for (size_t v = 0; v < chosen.size(); ++v)
    placed += (v ? ", " : "") + std::string("virtual ") + std::to_string(v) + " -> GPU " + std::to_string(chosen[v]);
  ex.push_back(placed + " (" + why + ")");
  for (int g : chosen)
    if (!scored[g].cap_met)
      ex.push_back("note: the tenant's cap cannot be met on GPU " + std::to_string(g) + " (admission decides)");
  if (!d.warning.empty()) ex.push_back("warning: " + d.warning);
  return d;
}

PolicyDecision PlaceRoundRobin(const Topology& t, const PolicyRequest& r, int* cursor) {
  PolicyDecision d;
  if (!r.asked.empty()) {
    d.refusal = CheckAsked(t, r);
    if (d.refusal.empty()) d.physical = r.asked;
    return d;
  }
  const std::vector<int> c = Candidates(t, r);
  if (c.empty()) {
    d.refusal = kNoGpu;
    return d;
  }
  const size_t want = std::min(Wanted(r, c.size()), c.size());
  // The first candidate at or after the cursor, then onwards, wrapping around.
  size_t first = 0;
  while (first < c.size() && c[first] < *cursor) ++first;
  for (size_t i = 0; i < want; ++i) d.physical.push_back(c[(first + i) % c.size()]);
  *cursor = (d.physical.back() + 1) % std::max(1, t.gpu_count);
  d.explanation.push_back("round-robin: GPUs " + List(d.physical));
  return d;
}

PolicyDecision PlaceLeastMemoryHeld(const Topology& t, const std::vector<GpuLoad>& gpus, const PolicyRequest& r) {
  PolicyDecision d;
  if (!r.asked.empty()) {
    d.refusal = CheckAsked(t, r);
    if (d.refusal.empty()) d.physical = r.asked;
    return d;
  }
  std::vector<int> c = Candidates(t, r);
  if (c.empty()) {
    d.refusal = kNoGpu;
    return d;
  }
  auto held = [&](int g) { return static_cast<size_t>(g) < gpus.size() ? gpus[g].held_bytes : 0; };
  std::stable_sort(c.begin(), c.end(), [&](int a, int b) { return held(a) < held(b); });
  c.resize(std::min(Wanted(r, c.size()), c.size()));
  d.physical = c;
  d.explanation.push_back("least memory held: GPUs " + List(d.physical));
  return d;
}

}  // namespace gpushare::broker
