// The client runtime (see client.h).
#include "client.h"

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/base/futex.h"
#include "log.h"

namespace gpushare {
namespace {

void LogBacktrace() {
  unw_context_t context;
  unw_cursor_t cursor;
  if (unw_getcontext(&context) != 0 || unw_init_local(&cursor, &context) != 0) return;
  for (int depth = 0; depth < 32 && unw_step(&cursor) > 0; ++depth) {
    unw_word_t pc = 0, offset = 0;
    unw_get_reg(&cursor, UNW_REG_IP, &pc);
    char name[256] = "?";
    unw_get_proc_name(&cursor, name, sizeof name, &offset);
    Log(LogLevel::kError, "  #%d 0x%lx %s+0x%lx", depth, static_cast<unsigned long>(pc), name,
        static_cast<unsigned long>(offset));
  }
}

}  // namespace

Client::Client() {
  options_ = ParseClientOptions([](const char* name) { return std::getenv(name); },
                                [](const std::string& path) { return access(path.c_str(), F_OK) == 0; });
  SetLogLevel(options_.log_level);
  for (const std::string& e : options_.errors) Log(LogLevel::kError, "%s", e.c_str());
  LaunchGate::Hooks hooks;
  hooks.send = [this](const protocol::Sched& s) { return broker_.SendSched(s); };
  hooks.broker_alive = [this] { return broker_.Alive(); };
  hooks.reconnect = [this] { broker_.Reconnect(HeldPerDevice()); };
  hooks.tend = [this] { TendLeases(); };
  gate_.SetHooks(std::move(hooks));
  broker_.SetChannelObserver([this](protocol::Channel* c, bool scheduled) {
    // A lost broker reclaimed the leases; a new one knows only what is allocated.
    for (auto& lease : lease_free_) lease.store(0);
    if (c != nullptr)
      gate_.Attach(c, scheduled);
    else
      gate_.Detach();
  });
  pthread_atfork(nullptr, nullptr, [] { Client::Get().gate_.Forget(); });
}

namespace {

// The broker's node-wide GPUs as the runtime numbers them; false (and why in `errors`)
// if the runtime's masks hide one of them.
bool ToRuntimeIndices(const std::vector<int>& node_index, std::vector<int>* physical,
                      std::vector<std::string>* errors) {
  std::vector<int> runtime;
  for (size_t v = 0; v < physical->size(); ++v) {
    auto it = std::find(node_index.begin(), node_index.end(), (*physical)[v]);
    if (it == node_index.end()) {
      errors->push_back("the broker placed virtual GPU " + std::to_string(v) + " on GPU " +
                        std::to_string((*physical)[v]) +
                        ", which the runtime's visible-devices variable hides from this process; unset it");
      return false;
    }
    runtime.push_back(static_cast<int>(it - node_index.begin()));
  }
  *physical = runtime;
  return true;
}

}  // namespace

const std::optional<protocol::MpsTerms>& Client::MpsTerms() {
  std::call_once(mps_once_, [&] {
    mps_terms_ = BrokerLink::AskMps(options_);
    if (mps_terms_ && mps_terms_->percent > 0)
      Log(LogLevel::kInfo, "broker: joins MPS at %s with %u%% of the SMs (%s)", mps_terms_->pipe_directory,
          mps_terms_->percent, mps_terms_->reason);
    else if (mps_terms_ && mps_terms_->reason[0] != '\0')
      Log(LogLevel::kDebug, "broker: not co-located: %s", mps_terms_->reason);
  });
  return mps_terms_;
}

void Client::InitDevices(int physical_count, const std::optional<std::vector<int>>& node_index) {
  std::call_once(devices_once_, [&] {
    std::vector<std::string> errors;
    for (int v = 0; v < MemoryLedger::kMaxDevices; ++v)
      asked_caps_[v] = options_.memory.CapFor(v).value_or(MemoryLedger::kNoCap);
    auto terms = broker_.Register(options_);
    if (terms) {
      // The broker's map and caps; a refused process sees no GPU.
      std::vector<int> physical = terms->physical;
      const bool renumbered = node_index && ToRuntimeIndices(*node_index, &physical, &errors);
      devices_ = DeviceMap::Build(physical_count, physical, &errors);
      CheckCapIndices(&errors);
      ApplyBrokerCaps(terms->cap_bytes);
      Log(LogLevel::kInfo, "broker: %d virtual GPU(s) of %d physical, weight %g", devices_.count(), physical_count,
          terms->weight);
      for (const auto& [name, value] : options_.runtime_visible_devices) {
        if (renumbered)
          Log(LogLevel::kInfo, "%s=%s: the broker's GPUs are found in the runtime's numbering", name.c_str(),
              value.c_str());
        else
          Log(LogLevel::kWarn,
              "%s=%s is set: the GPU runtime renumbers the GPUs it shows, while the broker places by node-wide "
              "index; unset it and let the broker choose (docs/configuration.md)",
              name.c_str(), value.c_str());
      }
    } else {
      devices_ = DeviceMap::Build(physical_count, options_.visible_devices, &errors);
      CheckCapIndices(&errors);
      for (int v = 0; v < devices_.count() && v < MemoryLedger::kMaxDevices; ++v) ledger_.SetCap(v, asked_caps_[v]);
      std::vector<int> map;
      for (int v = 0; v < devices_.count(); ++v) map.push_back(devices_.Physical(v));
      broker_.UseMap(map);
      Log(LogLevel::kInfo, "standalone: %d virtual GPU(s) of %d physical", devices_.count(), physical_count);
    }
    for (const std::string& e : errors) Log(LogLevel::kError, "%s", e.c_str());
    devices_ready_.store(true, std::memory_order_release);
  });
}

void Client::CheckCapIndices(std::vector<std::string>* errors) {
  if (auto error = options_.memory.FailClosedOnIndicesPast(devices_.count())) {
    errors->push_back(*error);
    for (int v = 0; v < MemoryLedger::kMaxDevices; ++v) asked_caps_[v] = 0;
  }
}

void Client::ApplyBrokerCaps(const std::vector<uint64_t>& caps) {
  // The tighter of what this process asked and what the broker grants its tenant.
  for (size_t v = 0; v < caps.size() && v < MemoryLedger::kMaxDevices; ++v)
    ledger_.SetCap(static_cast<int>(v), std::min(asked_caps_[v], caps[v] == 0 ? MemoryLedger::kNoCap : caps[v]));
}

std::vector<uint64_t> Client::HeldPerDevice() const {
  std::vector<uint64_t> held;
  for (int v = 0; v < devices_.count() && v < MemoryLedger::kMaxDevices; ++v) held.push_back(ledger_.Used(v));
  return held;
}

bool Client::Reserve(int device, uint64_t bytes, const char* call) {
  if (auto caps = broker_.ChangedCaps()) ApplyBrokerCaps(*caps);
  std::string why;
  if (!ledger_.Reserve(device, bytes)) {
    why = "this process holds " + FormatBytes(ledger_.Used(device)) + " of its " + FormatBytes(ledger_.Cap(device)) +
          " cap";
  } else if (!broker_.linked() && !broker_.DueForRetry()) {
    return true;  // standalone: this process's cap is all there is
  } else if (TakeFromLease(device, bytes)) {
    lease_activity_.fetch_add(1, std::memory_order_relaxed);
    broker_.ReportUsed(device, ledger_.Used(device));
    return true;
  } else {
    BrokerLink::Answer answer;
    try {
      answer = GrowLease(device, bytes, &why);
    } catch (...) {
      // Out of host memory: the hook's guard answers the API's error, and the cap must
      // not keep bytes nothing was allocated for.
      ledger_.Unreserve(device, bytes);
      throw;
    }
    if (answer != BrokerLink::Answer::kRefused) {
      lease_activity_.fetch_add(1, std::memory_order_relaxed);
      broker_.ReportUsed(device, ledger_.Used(device));
      return true;
    }
    ledger_.Unreserve(device, bytes);
  }
  Log(LogLevel::kError, "%s: out of memory on virtual GPU %d (physical %d): asked for %s; tenant \"%s\": %s", call,
      device, devices_.Physical(device), FormatBytes(bytes).c_str(), options_.tenant.c_str(), why.c_str());
  if (options_.oom_backtrace) LogBacktrace();
  return false;
}

bool Client::TakeFromLease(int device, uint64_t bytes) {
  uint64_t free = lease_free_[device].load(std::memory_order_relaxed);
  do {
    if (free < bytes) return false;
  } while (!lease_free_[device].compare_exchange_weak(free, free - bytes, std::memory_order_acq_rel,
                                                        std::memory_order_relaxed));
  return true;
}

BrokerLink::Answer Client::GrowLease(int device, uint64_t bytes, std::string* why) {
  // The first few requests on a GPU ask for exactly what is needed (a process that
  // allocates once holds no more than that); later ones for a chunk, so a process that
  // keeps allocating asks the broker once per chunk.
  constexpr uint32_t kExactRequests = 4;
  constexpr uint64_t kChunkBytes = 64ull << 20;
  // Other processes asked for their idle leases answer within milliseconds; past this
  // the allocation is refused.
  constexpr uint64_t kRecallWaitNs = 500'000'000;
  std::lock_guard<std::mutex> lock(lease_mu_);
  const uint64_t start = MonotonicNs();
  for (;;) {
    if (TakeFromLease(device, bytes)) return BrokerLink::Answer::kGranted;
    const uint64_t need = bytes - std::min(bytes, lease_free_[device].load());
    const uint64_t want = lease_requests_[device].fetch_add(1) < kExactRequests ? need : std::max(need, kChunkBytes);
    uint64_t granted = 0;
    auto held_before = [&] {  // what a re-registration reports: not this allocation
      std::vector<uint64_t> held = HeldPerDevice();
      if (device < static_cast<int>(held.size())) held[device] -= bytes;
      return held;
    };
    switch (broker_.Lease(device, need, want, held_before, &granted, why)) {
      case BrokerLink::Answer::kGranted: lease_free_[device].fetch_add(granted); break;
      case BrokerLink::Answer::kRecalling:
        if (MonotonicNs() - start > kRecallWaitNs) {
          *why = "other processes of the tenant hold idle leases that would make room, and did not return them in time";
          return BrokerLink::Answer::kRefused;
        }
        usleep(500);
        break;
      case BrokerLink::Answer::kStandalone: return BrokerLink::Answer::kStandalone;
      case BrokerLink::Answer::kRefused: return BrokerLink::Answer::kRefused;
    }
  }
}

void Client::Release(int device, uint64_t bytes) {
  ledger_.Unreserve(device, bytes);
  if (broker_.linked()) {
    lease_free_[device].fetch_add(bytes);
    lease_activity_.fetch_add(1, std::memory_order_relaxed);
  } else if (broker_.DueForRetry()) {
    broker_.Give(device, bytes, HeldPerDevice());  // registers again if the broker is back
  }
  broker_.ReportUsed(device, ledger_.Used(device));
}

void Client::Unreserve(int device, uint64_t bytes) {
  ledger_.Unreserve(device, bytes);
  if (broker_.linked()) broker_.Give(device, bytes, HeldPerDevice());
  broker_.ReportUsed(device, ledger_.Used(device));
}

void Client::TendLeases() {
  constexpr uint64_t kIdleNs = 100'000'000;  // no allocation or free this long: idle
  const uint64_t now = MonotonicNs();
  const uint32_t recall = broker_.LeaseRecall();
  const uint64_t activity = lease_activity_.load(std::memory_order_relaxed);
  const bool recalled = recall != seen_recall_;
  seen_recall_ = recall;
  if (activity != seen_activity_) {
    seen_activity_ = activity;
    activity_changed_ns_ = now;
  }
  if (recalled || now - activity_changed_ns_ >= kIdleNs) ReturnLeases();
}

void Client::ReturnLeases() {
  for (int d = 0; d < MemoryLedger::kMaxDevices; ++d) {
    const uint64_t idle = lease_free_[d].exchange(0);
    if (idle == 0) continue;
    lease_requests_[d].store(0);  // asks exactly again until it keeps allocating
    broker_.Give(d, idle, HeldPerDevice());
  }
}

uint64_t Client::Held(int device) {
  // The tenant's holdings count this process's lease, which is free to it.
  const uint64_t tenant = broker_.TenantHeld(device);
  const uint64_t lease = device >= 0 && device < MemoryLedger::kMaxDevices ? lease_free_[device].load() : 0;
  return std::max(ledger_.Used(device), tenant - std::min(tenant, lease));
}

void Client::CapView(int device, uint64_t* free_bytes, uint64_t* total_bytes) {
  const uint64_t cap = ledger_.Cap(device);
  if (cap == MemoryLedger::kNoCap) return;
  const uint64_t used = Held(device);
  *total_bytes = cap;
  *free_bytes = std::min(*free_bytes, used >= cap ? 0 : cap - used);
}

void Client::Uncharge(AllocSpace space, uint64_t key) {
  if (auto a = ledger_.Forget(space, key)) Release(a->device, a->bytes);
}

void Client::NotePool(uint64_t pool, int device) {
  std::lock_guard<std::mutex> lock(pools_mu_);
  pools_[pool] = device;
}

int Client::PoolDevice(uint64_t pool) {
  std::lock_guard<std::mutex> lock(pools_mu_);
  auto it = pools_.find(pool);
  return it == pools_.end() ? -1 : it->second;
}

void Client::ChargeOverhead(int device, uint64_t bytes, const char* what) {
  std::string ignored;
  broker_.Take(device, bytes, true, HeldPerDevice(), &ignored);
  ledger_.ForceReserve(device, bytes);
  Log(LogLevel::kInfo, "virtual GPU %d: %s holds %s, charged to the cap", device, what, FormatBytes(bytes).c_str());
  if (ledger_.Used(device) > ledger_.Cap(device))
    Log(LogLevel::kWarn, "virtual GPU %d: the %s alone (%s) is past the %s cap; allocations will be refused", device,
        what, FormatBytes(bytes).c_str(), FormatBytes(ledger_.Cap(device)).c_str());
}

bool Client::MarkContextCharged(int device) {
  if (device < 0 || device >= MemoryLedger::kMaxDevices) return false;
  return !context_charged_[device].exchange(true);
}

}  // namespace gpushare
