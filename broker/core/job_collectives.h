// The share of a job's GPU time spent in collectives (NCCL), one reading for the status
// report, /metrics and gpushare-doctor: per job (its ranks' clients, by tenant and
// GPUSHARE_JOB; a client without a job is a job of its own), the time the GPU spent in
// its collectives as its ranks measured it on their streams (hooks/nccl), over the GPU
// time the scheduler charged its clients (the time they held their GPUs).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/client_registry.h"
#include "broker/policy/scheduler.h"

namespace gpushare::broker {

struct JobCollectives {
  std::string tenant;
  std::string job;  // GPUSHARE_JOB, or "pid N" for a client without one
  std::vector<int32_t> pids;
  std::vector<int> gpus;  // physical, in the order its clients name them, each once
  uint64_t collective_ns = 0;
  uint64_t collectives = 0;
  uint64_t gpu_ns = 0;     // charged by the scheduler
  bool scheduled = false;  // some client of it is scheduled: gpu_ns is measured
  // collective_ns / gpu_ns, at most 1 (the scheduler charges a lone holder at its quantum's
  // ends, so its GPU time may lag); nullopt without measured GPU time.
  std::optional<double> share() const;
};

// Per client: the time its collectives took on each of its virtual GPUs, and how many.
struct ClientCollectives {
  std::vector<uint64_t> ns;  // per virtual GPU it has
  uint64_t count = 0;
};
ClientCollectives CollectivesOf(ClientId id, const ClientRecord& c, ChannelHost* channels);

// Jobs that timed at least one collective, by tenant and job name. `channels` may be null (none then).
std::vector<JobCollectives> CollectiveJobs(const ClientRegistry& clients, const Scheduler& scheduler,
                                           ChannelHost* channels, uint64_t now_ns);

}  // namespace gpushare::broker
