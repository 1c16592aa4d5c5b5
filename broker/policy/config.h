// The broker's configuration (TOML): node policy, class weights and tenants. Parsing
// is pure (text in, config or an error naming file:line out) so that a reload can
// check a new file before it replaces the running one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "billing.h"
#include "classifier.h"
#include "cluster_state.h"
#include "profiles.h"
#include "spatial.h"

namespace gpushare::broker {

enum class Admission { kRefuse, kOversubscribe };

struct TenantPolicy {
  std::optional<double> weight;               // fixed: what the client asks is ignored
  std::optional<double> max_weight;           // bound on what the client asks
  std::optional<uint64_t> memory;             // fixed cap per GPU, across the tenant's processes
  std::optional<uint64_t> max_memory;         // bound on the cap the client asks
  std::optional<std::vector<int>> gpus;       // allowed physical GPUs
  std::optional<std::vector<uint32_t>> uids;  // who may use this tenant (with gids: either matches)
  // Initialized, so that positional initializers written before these keys stay valid.
  std::optional<std::string> profile = std::nullopt;         // every client's vGPU profile (asking another: refused)
  std::optional<double> max_compute = std::nullopt;          // ceiling on each client's GPU time, (0, 1]
  std::optional<std::vector<uint32_t>> gids = std::nullopt;  // who may use it by primary group
  // Its own socket, tenants/<name>.sock beside the main one (docs/threat-model.md):
  // whoever reaches it is this tenant, so its owner, group and mode say who may be.
  bool socket = false;
  std::optional<uint32_t> socket_owner = std::nullopt;  // uid; unset: the broker's
  std::optional<uint32_t> socket_group = std::nullopt;  // gid; unset: the broker's
  uint32_t socket_mode = 0660;
  bool colocate = false;  // its clients join the MPS server (spatial = "mps"), giving up fault isolation
};

// [sockets]: the main socket's permissions. Its default (0666, anyone connects, the
// tenant checked against uids/gids) suits a machine of trusted users; 0600 or 0660
// with a group makes it admin-only, so that workloads reach only their tenants' sockets.
struct SocketsConfig {
  uint32_t main_mode = 0666;
  std::optional<uint32_t> main_group;  // gid; unset: the broker's
};

// [mps] (docs/scheduling.md): the MPS control daemon `[scheduler] spatial = "mps"` co-locates through.
struct MpsConfig {
  std::string control;  // started with -d, stopped with "quit" on its stdin; "": nvidia-cuda-mps-control
  std::string pipe_directory;    // "": the broker runs its own daemon; else an operator's, used as it is
  uint32_t memory_percent = 25;  // SM share of a memory-bound client; a compute-bound one gets the rest
};

// [limits]: what one local user can make the broker hold (issue 22). Connections
// beyond these are closed at accept; unregistered ones are dropped after the timeout.
struct LimitsConfig {
  uint32_t max_connections = 4096;          // in all; also bounded by the fd limit
  uint32_t max_connections_per_uid = 256;   // open at once by one uid, registered or not
  uint32_t handshake_timeout_ms = 3000;     // a connection that has not sent Hello by then is dropped
};

// [metering] (meter.h, broker/io/meter_store.h).
struct MeteringConfig {
  bool enabled = true;
  std::string database;                      // "" : metering.db in the broker's state directory
  uint64_t interval_ns = 10'000'000'000ull;  // rows are written at least this often
  uint32_t retention_days = 400;             // day rows older than this are deleted (0: kept forever)
};

// [metrics] (docs/monitoring.md): the Prometheus endpoint. Off unless `listen` is set.
struct MetricsConfig {
  std::string listen;                      // "HOST:PORT" ("127.0.0.1:9400"); "" : no endpoint
  uint64_t refresh_ns = 1'000'000'000ull;  // how stale a scrape's figures may be
};
// "HOST:PORT" split, HOST an IPv4 address, "localhost" or "[IPv6]", PORT 1..65535;
// false if `text` is not one.
bool ParseListenAddress(const std::string& text, std::string* host, uint16_t* port);

struct BrokerConfig {
  Admission admission = Admission::kRefuse;
  // [node] placement: "topology-aware" (placement_policy.h), or a baseline of the
  // placement study: "least-loaded" (least memory held first) or "round-robin".
  std::string placement = "topology-aware";
  double compute_weight = 0.7;
  double memory_weight = 0.3;
  double copy_weight = 0.3;
  double unknown_weight = 0.5;
  // [scheduler]: WFQ on GPU time (scheduler.h).
  bool scheduling = true;       // false: clients run free (memory caps and placement only)
  uint32_t quantum_us = 20000;  // a client's exclusive slice of a GPU before others may have it
  // Spatial sharing (spatial.h): off, CU masks (AMD) or MPS (NVIDIA) that let a memory-bound
  // and a compute-bound client hold one GPU at once, the memory-bound one on this share of its CUs.
  SpatialMode spatial = SpatialMode::kOff;
  uint32_t memory_cu_percent = 25;
  std::map<std::string, TenantPolicy> tenants;
  // [profiles.NAME] (profiles.h) and what [node] holds back from instances on each GPU.
  std::map<std::string, Profile> profiles;
  Reservation reserved;
  // [classifier]: kernel-name rules (the config's, then the defaults) and a profile.
  ClassifierConfig classifier;
  MeteringConfig metering;
  BillingConfig billing;
  LimitsConfig limits;
  MetricsConfig metrics;
  SocketsConfig sockets;
  ClusterConfig cluster;  // [cluster] (docs/cluster.md)
  // Last: placed before the tenants, GCC 12 finds its strings "maybe uninitialized" in
  // a temporary BrokerConfig{} (tests/bench/placement_bench.cpp).
  MpsConfig mps;
};

// What the broker reads is only a regular file under a size limit (not a FIFO, a
// device such as /dev/zero, or a directory): a bad path is a refused config, never a
// hung or exhausted broker.
inline constexpr size_t kMaxConfigBytes = 1 << 20;
inline constexpr size_t kMaxProfileBytes = 16 << 20;  // a classifier profile
// The file's text; nullopt with the reason in `error` if it is not a regular file of
// at most `max_bytes` or cannot be read. Opened non-blocking: a FIFO cannot hang it.
std::optional<std::string> ReadRegularFile(const std::string& path, size_t max_bytes, std::string* error);

// Parses TOML text. On error returns nullopt and sets `error` to "SOURCE:LINE: what".
std::optional<BrokerConfig> ParseBrokerConfig(const std::string& text, const std::string& source, std::string* error);
std::optional<BrokerConfig> LoadBrokerConfig(const std::string& path, std::string* error);

// A classifier profile: one "KERNEL_NAME CLASS" per line, the name being everything
// before the last blank-separated field (names may contain blanks); CLASS is compute,
// memory, copy or unknown (no opinion). Blank lines and lines starting with '#' are
// skipped. On error returns nullopt and sets `error` to "SOURCE:LINE: what".
std::optional<std::map<std::string, WorkClass>> ParseClassifierProfile(const std::string& text,
                                                                       const std::string& source, std::string* error);

// "" if every profile fits an empty GPU of the node beside its reservation, else
// "FILE:LINE: why" for the first that does not (checked when the broker starts and on
// reload, once the GPUs are known).
std::string ProfilesUnfit(const BrokerConfig& config, const std::vector<uint64_t>& gpu_memory_bytes);

// What a client gets as a member of its tenant, from the policy and what it asked.
struct TenantTerms {
  double weight = 1;
  std::optional<uint64_t> memory_cap;  // per GPU; nullopt: uncapped
  std::optional<std::vector<int>> gpus;
  std::string refusal;  // non-empty: the client may not join
};
// `gid`: the client's primary group, matched against the tenant's gids. `by_socket`: the
// client reached the tenant's own socket (or a container's bound to it), which is its
// credential: uids and gids do not apply.
TenantTerms ResolveTenant(const BrokerConfig& config, const std::string& tenant, uint32_t uid, double asked_weight,
                          std::optional<uint64_t> asked_cap, std::optional<uint32_t> gid = std::nullopt,
                          bool by_socket = false);

}  // namespace gpushare::broker
