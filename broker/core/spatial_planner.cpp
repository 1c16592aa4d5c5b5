// Spatial sharing as the broker carries it out (see spatial_planner.h).
#include "spatial_planner.h"

namespace gpushare::broker {

const SpatialAssignment* SpatialPlanner::Find(ClientId id, int device) const {
  auto m = spatial_.find({id, device});
  return m == spatial_.end() ? nullptr : &m->second;
}

void SpatialPlanner::Update(uint64_t now) {
  const SpatialPolicy policy(config_->spatial,
                             config_->spatial == SpatialMode::kMps ? config_->mps.memory_percent : config_->memory_cu_percent);
  std::map<int, std::vector<SpatialFlow>> on_gpu;
  const bool mps = config_->spatial == SpatialMode::kMps;
  for (const auto& [id, c] : *clients_) {
    if (!c.scheduled) continue;
    if (mps) {  // the share it was given when it joined; a class change waits for its next run
      for (size_t v = 0; v < c.physical.size(); ++v)
        on_gpu[c.physical[v]].push_back({id, static_cast<int>(v), c.mps_class});
      continue;
    }
    WorkClass cls = work_->Current(id);
    // A pause keeps the mask: it is applied where streams are created, and a client
    // that pauses comes back to the same streams.
    if (cls == WorkClass::kIdle) {
      auto last = spatial_class_.find(id);
      cls = last == spatial_class_.end() ? WorkClass::kUnknown : last->second;
    } else {
      spatial_class_[id] = cls;
    }
    for (size_t v = 0; v < c.physical.size(); ++v) on_gpu[c.physical[v]].push_back({id, static_cast<int>(v), cls});
  }
  std::erase_if(spatial_class_, [&](const auto& kv) { return !clients_->Has(kv.first); });
  std::map<std::pair<ClientId, int>, SpatialAssignment> next;
  for (const auto& [g, flows] : on_gpu) {
    unsigned cus = g >= 0 && g < static_cast<int>(gpus_->size()) ? (*gpus_)[g].cu_count : 0;
    if (mps) cus = mps_pipe_->empty() ? 0 : kMpsUnits;
    for (const SpatialAssignment& a : policy.Assign(cus, flows))
      if (a.mask) next[{a.client, a.device}] = a;
  }
  for (const auto& [key, a] : next) {
    auto before = spatial_.find(key);
    if (before != spatial_.end() && before->second == a) continue;
    scheduler_->SetMask(key.first, key.second, a.mask, a.fraction, now);
    if (!mps) channels_->SetCuMask(key.first, key.second, a.mask);
  }
  for (const auto& [key, a] : spatial_) {
    if (next.count(key) > 0 || !clients_->Has(key.first)) continue;
    scheduler_->SetMask(key.first, key.second, std::nullopt, 1.0, now);
    if (!mps) channels_->SetCuMask(key.first, key.second, std::nullopt);
  }
  spatial_ = std::move(next);
}

}  // namespace gpushare::broker
