// The meter in the broker: what feeds it (registration, the ledger's changes, the
// scheduler's charged GPU time, the work tracker's launches and copies, hang-ups) and the
// usage and bill requests that read it back. The store is the daemon's (MeterSink); without
// one nothing is metered. Who may read whose usage is MaySeeUsage.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "broker/core/channel_host.h"
#include "broker/core/client_registry.h"
#include "broker/core/client_work.h"
#include "broker/policy/billing.h"
#include "broker/policy/config.h"
#include "broker/policy/ledger.h"
#include "broker/policy/meter.h"
#include "broker/policy/scheduler.h"

namespace gpushare::broker {

// What a session is billed by: its profile's name and the fraction of a GPU allotted.
struct SessionTerms {
  std::string profile;  // "" : none
  double fraction = 0;  // summed over its GPUs
};
// Without a profile, a client's fraction on each of its GPUs is its weight (its tenant's,
// or one set at run time; not its class weight) over the sum of those weights of the
// clients on that GPU, re-evaluated whenever a client joins or leaves or a weight
// changes: the share WFQ guarantees it while all of them are busy. `weight_on_gpu` is
// that sum per physical GPU (WeightOnGpus). A client with a vGPU instance (profiles.h)
// is billed by its instance: the profile's name and compute fraction, whoever else runs.
SessionTerms SessionTermsOf(const ClientRecord& c, double weight, const std::map<int, double>& weight_on_gpu);

// Who may read a tenant's usage and bill: the status's rule (visibility.h, MaySee) over
// the config's members only: root and the broker's admin uid all of them; a uid or
// primary gid the config lists in the tenant's `uids`/`gids` that tenant's. Nobody else,
// so a tenant named only on first use is the operator's to read.
bool MaySeeUsage(const BrokerConfig& config, const PeerCredentials& viewer, uint32_t admin_uid,
                 const std::string& tenant);

// Where meter rows go and come from: the SQLite store, in the daemon.
class MeterSink {
 public:
  virtual ~MeterSink() = default;
  virtual bool Write(const MeterFlush& flush, std::string* error) = 0;
  virtual std::optional<std::vector<UsageRow>> Read(int64_t since_day, int64_t until_day, const std::string& tenant,
                                                    std::string* error) = 0;
};

// The rows of [since_day, until_day) of one tenant ("" : all), or nullopt with why.
using UsageReader = std::function<std::optional<std::vector<UsageRow>>(int64_t since_day, int64_t until_day,
                                                                       const std::string& tenant, std::string* error)>;
// The answer (JSON, docs/metering.md) to a usage or bill request from `peer` over the
// rows `read` gives, `today` being the day the request is made: the broker's over its
// store, the cluster manager's over every node's published rows.
std::string AnswerUsage(const BrokerConfig& config, const PeerCredentials& peer, uint32_t admin_uid,
                        const std::string& request, int64_t today, const UsageReader& read);

class Metering {
 public:
  Metering(const BrokerConfig* config, const ClientRegistry* clients, const NodeLedger* ledger,
           const Scheduler* scheduler, const WorkTracker* work, const std::function<uint64_t()>* clock);

  // Starts metering into `sink`: sessions get ids from `first_id`; `open` are the sessions
  // the store has open (their clients may re-register). `wall_clock`: unix ns.
  void Attach(MeterSink* sink, uint64_t first_id, std::vector<MeterSnapshot> open,
              std::function<uint64_t()> wall_clock);
  bool active() const { return sink_ != nullptr; }

  // A client registered (after a broker restart: `reattach`, its session may continue);
  // its session starts at its terms (`weight` as for Reterm). Call Reterm after: the
  // others' fractions changed.
  void Joined(ClientId id, bool reattach, const std::function<double(const ClientRecord&)>& weight);
  // What a client holds changed in the ledger.
  void Held(ClientId id);
  // Weights or the clients on some GPU changed: every session's fraction is re-evaluated.
  // `weight` gives a client's weight (Weights::Base).
  void Reterm(const std::function<double(const ClientRecord&)>& weight);
  // A client hangs up (call before its parts forget it): its session ends, to be written
  // by FlushEnded (or the next Flush).
  void Left(ClientId id);
  // Writes the sessions ended since the last write: the daemon calls it after each loop
  // pass, so hang-ups arriving together cost one transaction.
  bool FlushEnded(std::string* error);
  // Writes every session's usage up to now (the daemon calls it each interval); false
  // with the reason when the store refused (the rows are kept for the next try).
  bool Flush(std::string* error);
  // Sessions the store had open whose clients have not re-registered within `grace_ns`
  // of Attach end at their last record.
  void CloseOrphans(uint64_t grace_ns);

  // A usage or bill request (JSON, docs/metering.md) from `peer`; the reply as JSON.
  std::string Request(const PeerCredentials& peer, uint32_t admin_uid, const std::string& request);

 private:
  // Reads the scheduler's and the work tracker's totals into the meter (of one client, or all).
  void Counters(uint64_t wall_now, std::optional<ClientId> only);
  std::map<int, double> WeightOnGpus(const std::function<double(const ClientRecord&)>& weight) const;
  bool Write(MeterFlush flush, std::string* error);

  const BrokerConfig* config_;
  const ClientRegistry* clients_;
  const NodeLedger* ledger_;
  const Scheduler* scheduler_;
  const WorkTracker* work_;
  const std::function<uint64_t()>* clock_;  // monotonic, the scheduler's
  MeterSink* sink_ = nullptr;
  std::function<uint64_t()> wall_clock_;
  Meter meter_{1};
  std::optional<MeterFlush> unwritten_;
  uint64_t attached_at_ns_ = 0;
  bool ended_unwritten_ = false;  // what the store refused, written first next time
};

}  // namespace gpushare::broker
