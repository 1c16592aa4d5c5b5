// Per-client shared-memory channels (see shm_channels.h).
#include "shm_channels.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <new>

#include "broker_log.h"
#include "common/base/futex.h"

namespace gpushare::broker {
namespace bip = boost::interprocess;
namespace proto = gpushare::protocol;

size_t DrainRing(proto::Channel* channel, RingCursor* cursor,
                 const std::function<void(const proto::RecordData&)>& on_record) {
  return DrainRing(channel, cursor, MonotonicNs(), on_record);
}

size_t DrainRing(proto::Channel* channel, RingCursor* cursor, uint64_t now_ns,
                 const std::function<void(const proto::RecordData&)>& on_record) {
  const uint64_t head = channel->ring_head.load(std::memory_order_acquire);
  cursor->last_backlog =
      head >= cursor->tail ? static_cast<size_t>(std::min<uint64_t>(head - cursor->tail, proto::kRingRecords)) : 0;
  uint64_t& tail = cursor->tail;
  if (head < tail) {  // the client rewound its index: start again from where it says
    tail = head;
    channel->ring_tail.store(tail, std::memory_order_release);
    return 0;
  }
  if (head - tail > proto::kRingRecords) {
    cursor->dropped += head - tail - proto::kRingRecords;
    tail = head - proto::kRingRecords;
  }
  size_t read = 0;
  while (tail < head) {
    proto::LaunchRecord& slot = channel->ring[tail % proto::kRingRecords];
    const uint64_t seq = slot.seq.load(std::memory_order_acquire);
    if (seq < tail + 1) {  // claimed, not yet published: wait for it, for a while
      if (cursor->stuck_at != tail) {
        cursor->stuck_at = tail;
        cursor->stuck_since_ns = now_ns;
      }
      if (now_ns - cursor->stuck_since_ns < kRingStallNs) break;
    }
    cursor->stuck_at = UINT64_MAX;
    proto::RecordData r;
    r.stream = slot.stream;
    r.submit_ns = slot.submit_ns;
    r.bytes = slot.bytes;
    r.grid = slot.grid;
    r.block = slot.block;
    r.shared_bytes = slot.shared_bytes;
    r.name = slot.name;
    r.device = slot.device;
    const uint8_t kind = slot.kind;
    r.kind = static_cast<proto::RecordKind>(kind);
    std::atomic_thread_fence(std::memory_order_acquire);
    const bool intact = seq == tail + 1 && slot.seq.load(std::memory_order_relaxed) == seq;
    ++tail;
    if (!intact || r.device >= proto::kMaxDevices || kind < 1 || kind > 7 || r.name > proto::kNameSlots) {
      ++cursor->dropped;
      continue;
    }
    on_record(r);
    ++read;
  }
  channel->ring_tail.store(tail, std::memory_order_release);
  return read;
}

uint64_t ReadTallies(const proto::Channel* channel, TallyCursor* cursor,
                     const std::function<void(const proto::RecordData&, uint64_t count)>& on_growth) {
  uint64_t reported = 0;
  for (uint32_t s = 0; s < proto::kTallySlots; ++s) {
    for (uint32_t e = 0; e < proto::kTallyEntries; ++e) {
      const proto::TallyEntry& entry = channel->tallies[s].entries[e];
      TallyCursor::Seen& seen = cursor->seen[s * proto::kTallyEntries + e];
      // The count first (its writer stores it last, with release), then what it counts.
      const uint64_t count = entry.count.load(std::memory_order_acquire);
      if (count == seen.count) continue;
      const uint64_t key = entry.key.load(std::memory_order_relaxed);
      const uint64_t stream = entry.stream.load(std::memory_order_relaxed);
      const uint64_t bytes = entry.bytes.load(std::memory_order_relaxed);
      const bool same = key == seen.key && stream == seen.stream;
      const bool fresh = seen.key == 0 && seen.count == 0;
      const uint64_t grown = count - seen.count, grown_bytes = bytes - seen.bytes;
      const bool forward = count > seen.count && bytes >= seen.bytes;
      seen = {key, stream, count, bytes};
      if (!forward || (!same && !fresh)) continue;
      proto::RecordData r{};
      r.device = static_cast<uint8_t>(key >> 32);
      const uint8_t kind = static_cast<uint8_t>(key >> 16);
      r.kind = static_cast<proto::RecordKind>(kind);
      r.name = static_cast<uint16_t>(key);
      if ((key >> 63) == 0 || ((key >> 40) & 0x7fffff) != 0 || ((key >> 24) & 0xff) != 0 ||
          r.device >= proto::kMaxDevices || kind < 1 || kind > 7 || r.name > proto::kNameSlots)
        continue;
      r.stream = stream;
      r.bytes = grown_bytes;
      on_growth(r, grown);
      reported += grown;
    }
  }
  return reported;
}

std::string ReadKernelName(const proto::Channel* channel, uint16_t name) {
  if (name == 0 || name > proto::kNameSlots) return "";
  const proto::KernelName& n = channel->names[name - 1];
  if (n.ready.load(std::memory_order_acquire) != 1) return "";
  char text[proto::kNameBytes];
  std::memcpy(text, n.text, sizeof text);
  return std::string(text, strnlen(text, sizeof text));
}

void SetGate(proto::Channel* channel, int device, uint32_t state, uint64_t slice) {
  if (device < 0 || device >= proto::kMaxDevices) return;
  proto::Gate& g = channel->gates[device];
  // grant_seq is odd while state and slice change (the drain thread reads them as a
  // pair and retries on a change), and the futex word launches wait on.
  g.grant_seq.fetch_add(1, std::memory_order_seq_cst);
  g.slice.store(slice, std::memory_order_seq_cst);
  g.state.store(state, std::memory_order_seq_cst);
  g.grant_seq.fetch_add(1, std::memory_order_seq_cst);
  FutexWakeAll(&g.grant_seq);
  if (state == proto::kGateWait) {  // a revoke: the client's drain thread gives it back
    channel->client_wake.fetch_add(1, std::memory_order_seq_cst);
    FutexWakeAll(&channel->client_wake);
  }
}

static_assert(kCuMaskWords == proto::kCuMaskWords, "a CuMask is what a channel's mask slot holds");

void SetCuMask(proto::Channel* channel, int device, const uint32_t* words, uint32_t count) {
  if (device < 0 || device >= proto::kMaxDevices) return;
  proto::CuMaskSlot& m = channel->cu_masks[device];
  count = std::min(count, proto::kCuMaskWords);
  // Odd while the words change: a reader that sees an odd or changed seq reads again.
  m.seq.fetch_add(1, std::memory_order_seq_cst);
  for (uint32_t i = 0; i < proto::kCuMaskWords; ++i)
    m.words[i].store(i < count ? words[i] : 0, std::memory_order_relaxed);
  m.count.store(count, std::memory_order_relaxed);
  m.seq.fetch_add(1, std::memory_order_release);
}

ShmChannels::Segment::~Segment() {
  if (fd >= 0) close(fd);
}

int ShmChannels::Descriptor(ClientId id) const {
  auto it = segments_.find(id);
  return it == segments_.end() ? -1 : it->second->fd;
}

ShmChannels::ShmChannels(std::string prefix) : prefix_(std::move(prefix)) {}

ShmChannels::~ShmChannels() {
  for (auto& [id, s] : segments_) bip::shared_memory_object::remove(s->name.c_str());
}

std::string ShmChannels::Create(ClientId id, const PeerCredentials& peer) {
  auto s = std::make_unique<Segment>();
  s->name = prefix_ + "." + std::to_string(id);
  try {
    bip::shared_memory_object::remove(s->name.c_str());
    bip::permissions mode(0600);
    bip::shared_memory_object shm(bip::create_only, s->name.c_str(), bip::read_write, mode);
    if (geteuid() == 0 && fchown(shm.get_mapping_handle().handle, peer.uid, peer.gid) != 0)
      Log(LogLevel::kWarn, "channel %s: cannot give it to uid %u: %s", s->name.c_str(), peer.uid, std::strerror(errno));
    shm.truncate(sizeof(proto::Channel));
    s->region = bip::mapped_region(shm, bip::read_write);
    s->fd = fcntl(shm.get_mapping_handle().handle, F_DUPFD_CLOEXEC, 0);
  } catch (const bip::interprocess_exception& e) {
    Log(LogLevel::kError, "cannot create the channel %s: %s", s->name.c_str(), e.what());
    bip::shared_memory_object::remove(s->name.c_str());
    return "";
  }
  std::memset(s->region.get_address(), 0, sizeof(proto::Channel));
  s->channel = new (s->region.get_address()) proto::Channel;
  s->channel->magic = proto::kChannelMagic;
  s->channel->version = proto::kChannelVersion;
  std::string name = s->name;
  segments_[id] = std::move(s);
  return name;
}

void ShmChannels::Publish(ClientId id, const Grants& grants) {
  auto it = segments_.find(id);
  if (it == segments_.end()) return;
  proto::Channel* c = it->second->channel;
  for (size_t v = 0; v < grants.cap_bytes.size() && v < proto::kMaxDevices; ++v) {
    c->cap_bytes[v].store(grants.cap_bytes[v], std::memory_order_relaxed);
    c->tenant_held_bytes[v].store(grants.tenant_held_bytes[v], std::memory_order_relaxed);
  }
  c->weight_milli.store(static_cast<uint32_t>(std::lround(grants.weight * 1000)), std::memory_order_relaxed);
  c->grant_generation.fetch_add(1, std::memory_order_release);
}

void ShmChannels::Destroy(ClientId id) {
  auto it = segments_.find(id);
  if (it == segments_.end()) return;
  bip::shared_memory_object::remove(it->second->name.c_str());
  segments_.erase(it);
}

void ShmChannels::SetGate(ClientId id, int device, uint32_t state, uint64_t slice) {
  auto it = segments_.find(id);
  if (it != segments_.end()) broker::SetGate(it->second->channel, device, state, slice);
}

void ShmChannels::SetCuMask(ClientId id, int device, const std::optional<CuMask>& mask) {
  auto it = segments_.find(id);
  if (it == segments_.end()) return;
  if (mask)
    broker::SetCuMask(it->second->channel, device, mask->words().data(), mask->UsedWords());
  else
    broker::SetCuMask(it->second->channel, device, nullptr, 0);
}

size_t ShmChannels::Drain(ClientId id, const std::function<void(const proto::RecordData&)>& on_record) {
  auto it = segments_.find(id);
  return it == segments_.end() ? 0 : DrainRing(it->second->channel, &it->second->cursor, on_record);
}

std::string ShmChannels::KernelName(ClientId id, uint16_t name) {
  auto it = segments_.find(id);
  return it == segments_.end() ? "" : ReadKernelName(it->second->channel, name);
}

void ShmChannels::Tallies(ClientId id,
                          const std::function<void(const proto::RecordData&, uint64_t count)>& on_growth) {
  auto it = segments_.find(id);
  if (it != segments_.end()) ReadTallies(it->second->channel, &it->second->tallies, on_growth);
}

RingCounts ShmChannels::Counts(ClientId id) {
  RingCounts c;
  auto it = segments_.find(id);
  if (it == segments_.end()) return c;
  const proto::Channel* ch = it->second->channel;
  c.lost = it->second->cursor.dropped;
  c.dropped_records = ch->dropped_records.load(std::memory_order_relaxed);
  c.dropped_copies = ch->dropped_copies.load(std::memory_order_relaxed);
  c.dropped_bytes = ch->dropped_bytes.load(std::memory_order_relaxed);
  return c;
}

CollectiveCounts ShmChannels::Collectives(ClientId id) {
  CollectiveCounts c;
  auto it = segments_.find(id);
  if (it == segments_.end()) return c;
  const proto::Channel* ch = it->second->channel;
  for (const auto& ns : ch->collective_ns) c.ns.push_back(ns.load(std::memory_order_relaxed));
  c.count = ch->collectives.load(std::memory_order_relaxed);
  return c;
}

std::optional<uint64_t> ShmChannels::ReportedUsed(ClientId id, int device) {
  auto it = segments_.find(id);
  if (it == segments_.end() || device < 0 || device >= proto::kMaxDevices) return std::nullopt;
  return it->second->channel->used_bytes[device].load(std::memory_order_relaxed);
}

void ShmChannels::Recall(ClientId id) {
  auto it = segments_.find(id);
  if (it == segments_.end()) return;
  proto::Channel* c = it->second->channel;
  c->lease_recall.fetch_add(1, std::memory_order_seq_cst);
  c->client_wake.fetch_add(1, std::memory_order_seq_cst);  // its drain thread answers
  FutexWakeAll(&c->client_wake);
}

void ShmChannels::RemoveStale() {
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    int pid = 0;
    unsigned long long id = 0;
    if (std::sscanf(e->d_name, "gpushare.%d.%llu", &pid, &id) != 2) continue;
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) bip::shared_memory_object::remove(e->d_name);
  }
  closedir(dir);
}

}  // namespace gpushare::broker
