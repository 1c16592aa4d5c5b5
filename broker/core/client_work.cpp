// What the broker learns of each client's work (see client_work.h).
#include "client_work.h"

#include <optional>

namespace gpushare::broker {
namespace {

namespace proto = gpushare::protocol;

constexpr size_t kMaxStreams = 64;                  // classified one by one; more share the client's
constexpr uint64_t kEvaluateEveryNs = 100'000'000;  // classification and weights

}  // namespace

void WorkTracker::Add(ClientId id) { work_[id] = std::make_unique<ClientWork>(&config_->classifier); }

void WorkTracker::ForgetNameClasses() {
  for (auto& [id, w] : work_) w->name_class.clear();
}

const ClientWork* WorkTracker::Find(ClientId id) const {
  auto w = work_.find(id);
  return w == work_.end() ? nullptr : w->second.get();
}

WorkClass WorkTracker::Current(ClientId id) const {
  auto w = work_.find(id);
  return w == work_.end() ? WorkClass::kUnknown : w->second->overall.current();
}

void WorkTracker::Observe(ClientId id, ClientWork& w, const proto::RecordData& r, uint64_t now, uint64_t count) {
  w.records += count;
  w.launched_mask |= 1u << r.device;
  const bool copy = proto::IsCopy(r.kind);
  std::optional<WorkClass> cls;
  const char* example = nullptr;
  if (copy) {
    w.copies += count;
    w.copy_bytes += r.bytes;
    if (r.device < protocol::kMaxDevices) w.device_copy_bytes[r.device] += r.bytes;
  } else {
    w.kernels += count;
    if (r.name != 0) {
      if (w.name_class.empty()) {
        w.name_class.assign(proto::kNameSlots, -1);
        w.names.assign(proto::kNameSlots, std::string());
      }
      int8_t& known = w.name_class[r.name - 1];
      if (known == -1) {
        std::string name = channels_->KernelName(id, r.name);
        if (!name.empty()) {
          auto c = ClassOfName(config_->classifier, name);
          known = c ? static_cast<int8_t>(*c) : static_cast<int8_t>(-2);
          w.names[r.name - 1] = std::move(name);
        }
      }
      if (known >= 0) cls = static_cast<WorkClass>(known);
      if (known != -1) example = w.names[r.name - 1].c_str();
    }
  }
  w.overall.ObserveClassified(now, cls, copy, r.bytes, example, count);
  auto stream = w.streams.find(r.stream);
  if (stream == w.streams.end() && w.streams.size() < kMaxStreams)
    stream = w.streams.emplace(r.stream, Classifier(&config_->classifier)).first;
  if (stream != w.streams.end()) stream->second.ObserveClassified(now, cls, copy, r.bytes, example, count);
}

bool WorkTracker::Drain(uint64_t now, const std::function<void(ClientId, int)>& launched) {
  bool busy = false;
  if (channels_ == nullptr) return busy;
  for (auto& [id, w] : work_) {
    ClientWork& work = *w;
    const ClientId client = id;
    work.launched_mask = 0;
    // A ring read full may have more behind it: read on (bounded) and poll sooner.
    size_t read = 0;
    for (int round = 0; round < 4; ++round) {
      const size_t n = channels_->Drain(id, [&](const proto::RecordData& r) { Observe(client, work, r, now, 1); });
      read += n;
      if (n < proto::kRingRecords) break;
    }
    // What the client's threads counted themselves since the last look.
    channels_->Tallies(id, [&](const proto::RecordData& r, uint64_t count) { Observe(client, work, r, now, count); });
    busy = busy || read >= proto::kRingRecords / 4;
    for (int d = 0; work.launched_mask != 0; ++d, work.launched_mask >>= 1)
      if (work.launched_mask & 1u) launched(client, d);
  }
  return busy;
}

void WorkTracker::Evaluate(uint64_t now, const std::function<bool(ClientId)>& waiting,
                           const std::function<void(ClientId)>& changed) {
  if (now - last_evaluation_ns_ < kEvaluateEveryNs) return;
  last_evaluation_ns_ = now;
  for (auto& [id, w] : work_) {
    const WorkClass before = w->overall.current();
    if (waiting(id)) w->overall.Pending(now);
    w->overall.Evaluate(now);
    for (auto& [stream, c] : w->streams) c.Evaluate(now);
    if (w->overall.current() != before) changed(id);
  }
}

void WorkTracker::Utilization(ClientId id, uint64_t now, unsigned sm_percent, unsigned mem_percent) {
  if (auto w = work_.find(id); w != work_.end()) w->second->overall.Utilization(now, sm_percent, mem_percent);
}

}  // namespace gpushare::broker
