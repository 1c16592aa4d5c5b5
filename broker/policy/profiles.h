// vGPU profiles and instances: a profile is a named slice of one physical GPU (a memory
// cap and a guaranteed compute fraction, optionally a ceiling); an instance is a
// profile granted to one client on one GPU. Pure admission: which GPUs have room for
// one more instance beside those granted and what is reserved, and why each other one
// has not; and the inventory (instances total / reserved / allocated per GPU) that
// `gpushare-smi vgpu` shows.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gpushare::broker {

struct Profile {
  uint64_t memory_bytes = 0;          // the instance's memory cap
  double compute = 0;                 // guaranteed fraction of a GPU under contention, (0, 1]
  std::optional<double> max_compute;  // ceiling on its GPU time, even when alone; >= compute
  std::string where;                  // "FILE:LINE" of its table, for errors found later
};

// What the node holds back on each GPU from instances: either room for this many more
// instances of the profile being granted, or a fraction of the GPU's memory and compute.
struct Reservation {
  int instances = 0;
  double fraction = 0;
};

struct Instance {  // a granted vGPU instance of a profile
  std::string profile;
  int gpu = -1;                       // physical GPU
  double compute = 0;                 // guaranteed fraction of the GPU, (0,1]
  std::optional<double> max_compute;  // ceiling, if any
  uint64_t memory_bytes = 0;          // the instance's memory cap
  uint64_t granted_ns = 0;            // CLOCK_MONOTONIC when granted
};

// One GPU as instance admission sees it.
struct InstanceGpu {
  uint64_t memory_bytes = 0;
  uint64_t other_promised_bytes = 0;  // promised to clients without an instance (their caps or holdings)
};

// Where an instance of `profile` can go: the GPUs (of `candidates`, in their order)
// where its memory and compute fit beside `granted` and the reservation; `refusal`
// names the profile and, per GPU left out, why it is full.
struct InstanceFit {
  std::vector<int> gpus;
  std::string refusal;  // set when `gpus` is empty
};
InstanceFit FitInstance(const std::string& name, const Profile& profile, const std::vector<InstanceGpu>& gpus,
                        const std::vector<Instance>& granted, const Reservation& reserved,
                        const std::vector<int>& candidates);

// Instances of one profile on one GPU: how many an empty GPU holds, how many of those
// are held back, and how many are granted now.
struct ProfileCount {
  int total = 0;
  int reserved = 0;
  int allocated = 0;  // instances of this profile granted on the GPU
  int available = 0;  // how many more would be admitted now (other profiles' instances count)
};
ProfileCount CountInstances(const std::string& name, const Profile& profile, const InstanceGpu& gpu, int gpu_index,
                            const std::vector<Instance>& granted, const Reservation& reserved);

}  // namespace gpushare::broker
