// The client's link to the broker (see broker_link.h).
#include "broker_link.h"

#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/shared_memory_object.hpp>
#include <chrono>
#include <cstring>

#include "common/protocol/socket_io.h"
#include "log.h"

namespace gpushare {
namespace {

namespace bip = boost::interprocess;
namespace proto = gpushare::protocol;

constexpr int kReplyTimeoutMs = 5000;    // a broker silent this long is treated as gone
constexpr uint64_t kRetryEveryMs = 500;  // how often a lost broker is looked for again

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

BrokerLink* g_link = nullptr;  // the one instance, for the fork handler

}  // namespace

BrokerLink::BrokerLink() {
  g_link = this;
  // Hold the lock across fork so a child never inherits it mid-request.
  pthread_atfork([] { g_link->mu_.lock(); }, [] { g_link->mu_.unlock(); },
                 [] {
                   g_link->mu_.unlock();
                   g_link->AfterForkInChild();
                 });
}

void BrokerLink::AfterForkInChild() {
  if (fd_ >= 0) close(fd_);  // the parent's connection stays the parent's
  fd_ = -1;
  disabled_ = true;
  channel_ = nullptr;  // and so is its channel (the observer forgets it without writing)
}

namespace {

struct OwnedFd {
  int fd = -1;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
};

// A descriptor of the channel's segment, as Boost.Interprocess maps a memory object.
struct PassedSegment {
  int fd;
  bip::mapping_handle_t get_mapping_handle() const { return bip::ipcdetail::mapping_handle_from_file_handle(fd); }
};

}  // namespace

std::optional<BrokerLink::Terms> BrokerLink::Register(const ClientOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  options_ = options;
  if (options.visible_devices) physical_ = *options.visible_devices;
  auto terms = Hello(false, {});
  if (!terms) {
    // A socket file without a broker behind it is worth a warning; no file at all is
    // the ordinary standalone case.
    Log(access(options.socket_path.c_str(), F_OK) == 0 ? LogLevel::kWarn : LogLevel::kInfo,
        "no broker answers at %s: standalone", options.socket_path.c_str());
    return std::nullopt;
  }
  if (!terms->accepted) {
    Log(LogLevel::kError, "the broker at %s refused this process: %s", options.socket_path.c_str(),
        terms->reason.c_str());
    close(fd_);
    fd_ = -1;
    disabled_ = true;
    return terms;
  }
  if (!terms->reason.empty()) Log(LogLevel::kWarn, "broker: %s", terms->reason.c_str());
  ever_attached_ = true;
  physical_ = terms->physical;
  return terms;
}

std::optional<BrokerLink::Terms> BrokerLink::Hello(bool reattach, const std::vector<uint64_t>& held) {
  std::string error;
  fd_ = proto::ConnectUnix(options_.socket_path, &error);
  if (fd_ < 0) return std::nullopt;
  proto::Hello h{};
  proto::SetString(h.tenant, options_.tenant);
  proto::SetString(h.job, options_.job);
  proto::SetString(h.profile, options_.profile);
  h.rank = options_.rank;
  h.job_size = static_cast<uint32_t>(std::min(options_.job_size, proto::kMaxDevices));
  h.weight = options_.weight;
  h.reattach = reattach ? 1 : 0;
  h.device_count = static_cast<uint32_t>(std::min<size_t>(physical_.size(), proto::kMaxDevices));
  for (int v = 0; v < proto::kMaxDevices; ++v) {
    h.visible[v] = v < static_cast<int>(physical_.size()) ? physical_[v] : -1;
    h.cap_bytes[v] = options_.memory.CapFor(v).value_or(0);
    h.held_bytes[v] = v < static_cast<int>(held.size()) ? held[v] : 0;
  }
  inbox_.clear();
  std::optional<proto::Message> m;
  OwnedFd channel_fd;  // the broker sends the channel's descriptor with the Welcome
  if (proto::SendAll(fd_, proto::EncodeHello(h)))
    m = proto::Receive(fd_, &inbox_, kReplyTimeoutMs, &error, &channel_fd.fd);
  if (!m || m->type != proto::Type::kWelcome) {
    Log(LogLevel::kWarn, "broker at %s did not welcome this process: %s", options_.socket_path.c_str(),
        error.empty() ? "unexpected reply" : error.c_str());
    close(fd_);
    fd_ = -1;
    return std::nullopt;
  }
  proto::Welcome w = proto::Sanitized(proto::As<proto::Welcome>(*m));
  Terms t;
  t.accepted = w.accepted == 1;
  t.reason = w.reason;
  t.weight = w.weight;
  for (uint32_t v = 0; v < w.device_count; ++v) {
    t.physical.push_back(w.physical[v]);
    t.cap_bytes.push_back(w.cap_bytes[v]);
  }
  if (t.accepted) MapChannel(w.channel, w.scheduled == 1, channel_fd.fd);
  return t;
}

void BrokerLink::UseMap(std::vector<int> physical) {
  std::lock_guard<std::mutex> lock(mu_);
  physical_ = std::move(physical);
}

void BrokerLink::SetChannelObserver(std::function<void(proto::Channel*, bool)> observer) {
  std::lock_guard<std::mutex> lock(mu_);
  observer_ = std::move(observer);
  if (channel_ != nullptr && observer_) observer_(channel_, scheduled_);
}

void BrokerLink::DropChannel() {
  if (observer_) observer_(nullptr, false);
  channel_ = nullptr;
  if (region_.get_address() != nullptr) retired_.push_back(std::move(region_));
  region_ = bip::mapped_region();
}

void BrokerLink::MapChannel(const std::string& name, bool scheduled, int passed_fd) {
  DropChannel();
  if (name.empty()) return;
  try {
    if (passed_fd >= 0) {  // what the broker handed over: works across IPC namespaces
      struct stat st {};
      if (fstat(passed_fd, &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(proto::Channel)) return;
      region_ = bip::mapped_region(PassedSegment{passed_fd}, bip::read_write, 0, sizeof(proto::Channel));
    } else {  // a broker that sends no descriptor: the segment by its name
      bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
      bip::offset_t size = 0;
      if (!shm.get_size(size) || static_cast<size_t>(size) < sizeof(proto::Channel)) return;
      region_ = bip::mapped_region(shm, bip::read_write, 0, sizeof(proto::Channel));
    }
    auto* c = static_cast<proto::Channel*>(region_.get_address());
    if (c->magic != proto::kChannelMagic || c->version != proto::kChannelVersion) return;
    channel_ = c;
    scheduled_ = scheduled;
    seen_generation_ = 0;
    if (observer_) observer_(channel_, scheduled_);
  } catch (const bip::interprocess_exception& e) {
    Log(LogLevel::kWarn, "cannot map the broker channel %s: %s", name.c_str(), e.what());
  }
}

bool BrokerLink::EnsureAttached(const std::vector<uint64_t>& held) {
  if (fd_ >= 0) return true;
  if (disabled_) return false;
  const uint64_t now = NowMs();
  if (now - last_try_ms_ < kRetryEveryMs) return false;
  last_try_ms_ = now;
  auto terms = Hello(true, held);
  if (!terms) return false;
  if (!terms->accepted) {
    Log(LogLevel::kWarn, "the broker is back but refused this process again (%s): staying standalone",
        terms->reason.c_str());
    close(fd_);
    fd_ = -1;
    disabled_ = true;
    return false;
  }
  Log(LogLevel::kWarn, "%s the broker at %s with what this process holds",
      ever_attached_ ? "registered again with" : "joined", options_.socket_path.c_str());
  ever_attached_ = true;
  return true;
}

void BrokerLink::Lost(const char* why) {
  Log(LogLevel::kWarn, "lost the broker at %s (%s): running standalone on the last caps until it is back",
      options_.socket_path.c_str(), why);
  close(fd_);
  fd_ = -1;
  DropChannel();
  last_try_ms_ = NowMs();
}

bool BrokerLink::SendSched(const proto::Sched& s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return false;
  if (!proto::SendAll(fd_, proto::Encode(proto::Type::kSched, s))) {
    Lost("send failed");
    return false;
  }
  return true;
}

bool BrokerLink::Alive() {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return true;  // busy with a request: it will notice itself
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
    Lost("it hung up");
    return false;
  }
  return true;
}

void BrokerLink::Reconnect(const std::vector<uint64_t>& held) {
  std::lock_guard<std::mutex> lock(mu_);
  EnsureAttached(held);
}

BrokerLink::Answer BrokerLink::Take(int device, uint64_t bytes, bool force, const std::vector<uint64_t>& held,
                                    std::string* reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!EnsureAttached(held)) return Answer::kStandalone;
  proto::Take t{};
  t.device = static_cast<uint32_t>(device);
  t.force = force ? 1 : 0;
  t.bytes = bytes;
  std::string error;
  if (!proto::SendAll(fd_, proto::Encode(proto::Type::kTake, t))) {
    Lost("send failed");
    return Answer::kStandalone;
  }
  auto m = proto::Receive(fd_, &inbox_, kReplyTimeoutMs, &error);
  if (!m || m->type != proto::Type::kTakeReply) {
    Lost(error.empty() ? "unexpected reply" : error.c_str());
    return Answer::kStandalone;
  }
  proto::TakeReply r = proto::Sanitized(proto::As<proto::TakeReply>(*m));
  if (r.granted == 1) return Answer::kGranted;
  *reason = r.reason;
  return Answer::kRefused;
}

std::optional<std::string> BrokerLink::SendComm(const CommunicatorEvent& event) {
  proto::Comm c{};
  c.event = static_cast<uint32_t>(event.joined ? proto::CommEvent::kJoined : proto::CommEvent::kLeft);
  c.comm_id = event.id;
  c.handle = event.handle;
  if (event.joined) {
    c.nranks = event.nranks;
    c.rank = event.rank;
    c.device = event.device < 0 ? UINT32_MAX : static_cast<uint32_t>(event.device);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return std::nullopt;
  std::string error;
  if (!proto::SendAll(fd_, proto::Encode(proto::Type::kComm, c))) {
    Lost("send failed");
    return std::nullopt;
  }
  auto m = proto::Receive(fd_, &inbox_, kReplyTimeoutMs, &error);
  if (!m || m->type != proto::Type::kCommReply) {
    Lost(error.empty() ? "unexpected reply" : error.c_str());
    return std::nullopt;
  }
  return std::string(m->payload.begin(), m->payload.end());
}

void BrokerLink::Give(int device, uint64_t bytes, const std::vector<uint64_t>& held) {
  std::lock_guard<std::mutex> lock(mu_);
  // After a re-registration the broker already knows the smaller holding.
  if (fd_ < 0) {
    EnsureAttached(held);
    return;
  }
  proto::Give g{};
  g.device = static_cast<uint32_t>(device);
  g.bytes = bytes;
  if (!proto::SendAll(fd_, proto::Encode(proto::Type::kGive, g))) Lost("send failed");
}

std::optional<std::vector<uint64_t>> BrokerLink::ChangedCaps() {
  std::lock_guard<std::mutex> lock(mu_);
  if (channel_ == nullptr) return std::nullopt;
  const uint64_t gen = channel_->grant_generation.load(std::memory_order_acquire);
  if (gen == seen_generation_) return std::nullopt;
  seen_generation_ = gen;
  std::vector<uint64_t> caps;
  for (size_t v = 0; v < physical_.size() && v < proto::kMaxDevices; ++v)
    caps.push_back(channel_->cap_bytes[v].load(std::memory_order_relaxed));
  return caps;
}

uint64_t BrokerLink::TenantHeld(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (channel_ == nullptr || device < 0 || device >= proto::kMaxDevices) return 0;
  return channel_->tenant_held_bytes[device].load(std::memory_order_relaxed);
}

void BrokerLink::ReportUsed(int device, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (channel_ != nullptr && device >= 0 && device < proto::kMaxDevices)
    channel_->used_bytes[device].store(bytes, std::memory_order_relaxed);
}

bool BrokerLink::attached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fd_ >= 0;
}

}  // namespace gpushare
