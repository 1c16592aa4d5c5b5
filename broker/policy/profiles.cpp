// Instance admission and the instance inventory (see profiles.h).
#include "profiles.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/base/units.h"

namespace gpushare::broker {
namespace {

// Fractions such as 0.33 x 3 are compared with this much slack, so that a GPU split
// in thirds is full after three and not after two.
constexpr double kSlack = 1e-9;

// What the instances granted on one GPU take of it.
struct Taken {
  uint64_t memory_bytes = 0;
  double compute = 0;
};

Taken TakenOn(int gpu, const std::vector<Instance>& granted) {
  Taken t;
  for (const Instance& i : granted)
    if (i.gpu == gpu) {
      t.memory_bytes += i.memory_bytes;
      t.compute += i.compute;
    }
  return t;
}

// The memory and compute instances may take on `gpu` (a reserved fraction left out),
// and how many instances of the profile must stay free besides the one asked for.
struct Room {
  double memory_bytes = 0;  // may go negative when other clients were promised more
  double compute = 0;
  int keep_free = 0;
};

Room RoomFor(const InstanceGpu& gpu, const Reservation& reserved) {
  Room r;
  const double keep = 1 - std::clamp(reserved.fraction, 0.0, 1.0);
  r.memory_bytes = static_cast<double>(gpu.memory_bytes) * keep - static_cast<double>(gpu.other_promised_bytes);
  r.compute = keep;
  r.keep_free = std::max(0, reserved.instances);
  return r;
}

// How many instances of `profile` fit in `memory_bytes` and `compute`.
int HowMany(const Profile& profile, double memory_bytes, double compute) {
  if (memory_bytes < 0 || compute < 0) return 0;
  double n = compute / profile.compute;
  if (profile.memory_bytes > 0) n = std::min(n, memory_bytes / static_cast<double>(profile.memory_bytes));
  return static_cast<int>(std::floor(n + kSlack));
}

std::string Fraction(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", f);
  return buf;
}

}  // namespace

InstanceFit FitInstance(const std::string& name, const Profile& profile, const std::vector<InstanceGpu>& gpus,
                        const std::vector<Instance>& granted, const Reservation& reserved,
                        const std::vector<int>& candidates) {
  InstanceFit fit;
  std::string why;
  for (int g : candidates) {
    if (g < 0 || g >= static_cast<int>(gpus.size())) continue;
    const Taken taken = TakenOn(g, granted);
    const Room room = RoomFor(gpus[g], reserved);
    const int n = 1 + room.keep_free;
    const double memory_needed =
        static_cast<double>(taken.memory_bytes) + n * static_cast<double>(profile.memory_bytes);
    const double compute_needed = taken.compute + n * profile.compute;
    const bool memory_ok = memory_needed <= room.memory_bytes + kSlack;
    const bool compute_ok = compute_needed <= room.compute + kSlack;
    if (memory_ok && compute_ok) {
      fit.gpus.push_back(g);
      continue;
    }
    std::string line = "GPU " + std::to_string(g) + ":";
    if (!compute_ok) line += " compute " + Fraction(taken.compute) + " of " + Fraction(room.compute) + " granted";
    if (!memory_ok)
      line += std::string(compute_ok ? "" : ",") + " memory " + FormatBytes(taken.memory_bytes) +
              " granted to instances and " + FormatBytes(gpus[g].other_promised_bytes) + " promised to others of " +
              FormatBytes(gpus[g].memory_bytes);
    if (room.keep_free > 0) line += " (" + std::to_string(room.keep_free) + " instance(s) reserved)";
    if (reserved.fraction > 0) line += " (" + Fraction(reserved.fraction) + " reserved)";
    why += (why.empty() ? "" : "; ") + line;
  }
  if (fit.gpus.empty()) {
    fit.refusal = "no instance of profile \"" + name + "\" (" + FormatBytes(profile.memory_bytes) + ", compute " +
                  Fraction(profile.compute) + ") is free on the GPUs it may use";
    if (!why.empty()) fit.refusal += ": " + why;
  }
  return fit;
}

ProfileCount CountInstances(const std::string& name, const Profile& profile, const InstanceGpu& gpu, int gpu_index,
                            const std::vector<Instance>& granted, const Reservation& reserved) {
  ProfileCount c;
  c.total = HowMany(profile, static_cast<double>(gpu.memory_bytes), 1.0);
  const Room empty = RoomFor(InstanceGpu{gpu.memory_bytes, 0}, reserved);
  const int usable = std::max(0, HowMany(profile, empty.memory_bytes, empty.compute) - empty.keep_free);
  c.reserved = c.total - std::min(c.total, usable);
  for (const Instance& i : granted)
    if (i.gpu == gpu_index && i.profile == name) ++c.allocated;
  const Taken taken = TakenOn(gpu_index, granted);
  const Room room = RoomFor(gpu, reserved);
  c.available = std::max(
      0, HowMany(profile, room.memory_bytes - static_cast<double>(taken.memory_bytes), room.compute - taken.compute) -
             room.keep_free);
  return c;
}

}  // namespace gpushare::broker
