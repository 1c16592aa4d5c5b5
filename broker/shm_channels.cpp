// Per-client shared-memory channels (see shm_channels.h).
#include "shm_channels.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <new>

#include "broker_log.h"

namespace gpushare::broker {
namespace bip = boost::interprocess;
namespace proto = gpushare::protocol;

size_t DrainRing(proto::Channel* channel, uint64_t* tail, uint64_t* dropped,
                 const std::function<void(const proto::LaunchRecord&)>& on_record) {
  const uint64_t head = channel->ring_head.load(std::memory_order_acquire);
  if (head < *tail) {  // the client rewound its index: start again from where it says
    *tail = head;
    return 0;
  }
  if (head - *tail > proto::kRingRecords) {
    *dropped += head - *tail - proto::kRingRecords;
    *tail = head - proto::kRingRecords;
  }
  size_t read = 0;
  for (; *tail < head; ++*tail, ++read) {
    proto::LaunchRecord r;
    std::memcpy(&r, &channel->ring[*tail % proto::kRingRecords], sizeof r);
    if (r.device >= static_cast<uint32_t>(proto::kMaxDevices)) {
      ++*dropped;
      continue;
    }
    on_record(r);
  }
  channel->ring_tail.store(*tail, std::memory_order_release);
  return read;
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

size_t ShmChannels::DrainAll(const std::function<void(ClientId, const proto::LaunchRecord&)>& on_record) {
  size_t read = 0;
  for (auto& [id, s] : segments_)
    read +=
        DrainRing(s->channel, &s->tail, &s->dropped, [&, id = id](const proto::LaunchRecord& r) { on_record(id, r); });
  return read;
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
