// What the broker learns of each client's work: its launch records, drained from its
// channel into classifiers (per client and per stream), kernel names looked up in the
// config's rules, NVML utilization, and a re-evaluation of every class each 100 ms.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/policy/classifier.h"
#include "broker/policy/config.h"

namespace gpushare::broker {

// One client's work as its records and NVML show it.
struct ClientWork {
  explicit ClientWork(const ClassifierConfig* config) : overall(config) {}
  Classifier overall;
  std::map<uint64_t, Classifier> streams;  // by stream id, bounded (kMaxStreams)
  std::vector<int8_t> name_class;          // per name slot: -1 not looked up, -2 no class, else WorkClass
  std::vector<std::string> names;          // per name slot, once read (stable: interned for reasons)
  uint64_t records = 0;
  uint64_t kernels = 0;
  uint64_t copies = 0;
  uint64_t copy_bytes = 0;
  uint64_t device_copy_bytes[protocol::kMaxDevices] = {};  // per virtual GPU (monitoring)
  uint32_t launched_mask = 0;  // virtual GPUs with records in the current drain
};

class WorkTracker {
 public:
  // `config` is the broker's, read at each use (a reload applies at once); `channels`
  // may be null (no records then).
  WorkTracker(const BrokerConfig* config, ChannelHost* channels) : config_(config), channels_(channels) {}

  void Add(ClientId id);
  void Remove(ClientId id) { work_.erase(id); }
  // The kernel-name rules may have changed: names are looked up again.
  void ForgetNameClasses();

  const ClientWork* Find(ClientId id) const;
  // Its measured class (kUnknown until it has one).
  WorkClass Current(ClientId id) const;

  // Reads every client's new launch records into its classifiers (a ring read full is
  // read on, bounded); `launched` hears of each virtual GPU that had records, client by
  // client as they are read. Returns whether a ring was a quarter full or more.
  bool Drain(uint64_t now, const std::function<void(ClientId, int)>& launched);
  // Every 100 ms: re-evaluates every class, a client's as pending where `waiting` says
  // it waits at a gate; `changed` hears of each client whose class changed.
  void Evaluate(uint64_t now, const std::function<bool(ClientId)>& waiting,
                const std::function<void(ClientId)>& changed);
  // Measured utilization of one client's process (NVML).
  void Utilization(ClientId id, uint64_t now, unsigned sm_percent, unsigned mem_percent);

 private:
  // `count` launches like `r` (1 for a ring record; a tally's growth, `r.bytes` their total).
  void Observe(ClientId id, ClientWork& w, const protocol::RecordData& r, uint64_t now, uint64_t count);

  const BrokerConfig* config_;
  ChannelHost* channels_;
  std::map<ClientId, std::unique_ptr<ClientWork>> work_;
  uint64_t last_evaluation_ns_ = 0;
};

}  // namespace gpushare::broker
