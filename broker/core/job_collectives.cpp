// Collectives' share of a job's GPU time (see job_collectives.h).
#include "job_collectives.h"

#include <algorithm>
#include <map>

namespace gpushare::broker {

std::optional<double> JobCollectives::share() const {
  if (!scheduled || gpu_ns == 0) return std::nullopt;
  return std::min(1.0, static_cast<double>(collective_ns) / static_cast<double>(gpu_ns));
}

ClientCollectives CollectivesOf(ClientId id, const ClientRecord& c, ChannelHost* channels) {
  ClientCollectives out;
  out.ns.assign(c.physical.size(), 0);
  if (channels == nullptr) return out;
  const CollectiveCounts counts = channels->Collectives(id);
  // Only the GPUs it has: a client's figures for others are its own mistake.
  for (size_t v = 0; v < c.physical.size() && v < counts.ns.size(); ++v) out.ns[v] = counts.ns[v];
  out.count = counts.count;
  return out;
}

std::vector<JobCollectives> CollectiveJobs(const ClientRegistry& clients, const Scheduler& scheduler,
                                           ChannelHost* channels, uint64_t now_ns) {
  std::map<std::pair<std::string, std::string>, JobCollectives> jobs;
  for (const auto& [id, c] : clients) {
    const ClientCollectives mine = CollectivesOf(id, c, channels);
    if (mine.count == 0) continue;
    const std::string job = c.job.empty() ? "pid " + std::to_string(c.peer.pid) : c.job;
    JobCollectives& j = jobs[{c.tenant, job}];
    j.tenant = c.tenant;
    j.job = job;
    j.pids.push_back(c.peer.pid);
    j.collectives += mine.count;
    for (size_t v = 0; v < c.physical.size(); ++v) {
      // Saturating: a client's counters are its own bytes.
      j.collective_ns = mine.ns[v] > UINT64_MAX - j.collective_ns ? UINT64_MAX : j.collective_ns + mine.ns[v];
      if (std::find(j.gpus.begin(), j.gpus.end(), c.physical[v]) == j.gpus.end()) j.gpus.push_back(c.physical[v]);
      if (auto f = scheduler.Status(id, static_cast<int>(v), now_ns)) {
        j.scheduled = true;
        j.gpu_ns += f->used_ns;
      }
    }
  }
  std::vector<JobCollectives> out;
  for (auto& [key, j] : jobs) out.push_back(std::move(j));
  return out;
}

}  // namespace gpushare::broker
