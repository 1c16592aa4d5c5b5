// The client's link to the broker (see broker_link.h).
#include "broker_link.h"

#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <boost/interprocess/shared_memory_object.hpp>
#include <cstring>

#include "common/protocol/socket_io.h"
#include "log.h"

namespace gpushare {
namespace {

namespace bip = boost::interprocess;
namespace proto = gpushare::protocol;

constexpr int kReplyTimeoutMs = 5000;    // a broker silent this long is treated as gone
constexpr uint64_t kRetryEveryMs = 500;  // how often a lost broker is looked for again

// Coarse (a few ms) and without a system call: only retry intervals are timed with it.
uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
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
  SetFd(-1);
  disabled_ = true;
  channel_ = nullptr;  // and so is its channel (the observer forgets it without writing)
}

std::optional<proto::MpsTerms> BrokerLink::AskMps(const ClientOptions& options) {
  std::string error;
  const int fd = proto::ConnectUnix(options.socket_path, &error);
  if (fd < 0) return std::nullopt;
  proto::MpsAsk ask{};
  proto::SetString(ask.tenant, options.tenant);
  proto::SetString(ask.program, program_invocation_short_name);
  ask.hint = static_cast<uint32_t>(options.work_class);
  std::vector<uint8_t> inbox;
  std::optional<proto::Message> m;
  if (proto::SendAll(fd, proto::Encode(proto::Type::kMpsAsk, ask))) m = proto::Receive(fd, &inbox, kReplyTimeoutMs, &error);
  close(fd);
  // A broker from before MPS drops the unknown message: the same as no share.
  if (!m || m->type != proto::Type::kMpsTerms) return std::nullopt;
  return proto::Sanitized(proto::As<proto::MpsTerms>(*m));
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
    SetFd(-1);
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
  SetFd(proto::ConnectUnix(options_.socket_path, &error));
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
    SetFd(-1);
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
  if (channel_.load() != nullptr && observer_) observer_(channel_.load(), scheduled_);
}

void BrokerLink::DropChannel() {
  if (observer_) observer_(nullptr, false);
  channel_.store(nullptr, std::memory_order_release);
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
    channel_.store(c, std::memory_order_release);
    scheduled_ = scheduled;
    seen_generation_ = 0;
    if (observer_) observer_(c, scheduled_);
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
    SetFd(-1);
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
  SetFd(-1);
  DropChannel();
  last_try_ms_ = NowMs();
}

void BrokerLink::SetFd(int fd) {
  fd_ = fd;
  fd_open_.store(fd >= 0, std::memory_order_release);
}

bool BrokerLink::DueForRetry() const {
  return !disabled_.load(std::memory_order_relaxed) &&
         NowMs() - last_try_ms_.load(std::memory_order_relaxed) >= kRetryEveryMs;
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
  // Unchanged (the allocation path's usual answer) without the lock.
  const proto::Channel* seen = channel_.load(std::memory_order_acquire);
  if (seen == nullptr || seen->grant_generation.load(std::memory_order_acquire) == seen_generation_.load())
    return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  const proto::Channel* c = channel_.load();
  if (c == nullptr) return std::nullopt;
  const uint64_t gen = c->grant_generation.load(std::memory_order_acquire);
  if (gen == seen_generation_.load()) return std::nullopt;
  seen_generation_ = gen;
  std::vector<uint64_t> caps;
  for (size_t v = 0; v < physical_.size() && v < proto::kMaxDevices; ++v)
    caps.push_back(c->cap_bytes[v].load(std::memory_order_relaxed));
  return caps;
}

uint64_t BrokerLink::TenantHeld(int device) const {
  const proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c == nullptr || device < 0 || device >= proto::kMaxDevices) return 0;
  return c->tenant_held_bytes[device].load(std::memory_order_relaxed);
}

void BrokerLink::ReportUsed(int device, uint64_t bytes) {
  proto::Channel* c = channel_.load(std::memory_order_acquire);
  if (c != nullptr && device >= 0 && device < proto::kMaxDevices)
    c->used_bytes[device].store(bytes, std::memory_order_relaxed);
}

uint32_t BrokerLink::LeaseRecall() const {
  const proto::Channel* c = channel_.load(std::memory_order_acquire);
  return c == nullptr ? 0 : c->lease_recall.load(std::memory_order_acquire);
}

BrokerLink::Answer BrokerLink::Lease(int device, uint64_t need, uint64_t want,
                                     const std::function<std::vector<uint64_t>()>& held, uint64_t* granted,
                                     std::string* reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0 && (disabled_ || !EnsureAttached(held()))) return Answer::kStandalone;
  proto::Lease l{};
  l.device = static_cast<uint32_t>(device);
  l.need_bytes = need;
  l.want_bytes = want;
  std::string error;
  if (!proto::SendAll(fd_, proto::Encode(proto::Type::kLease, l))) {
    Lost("send failed");
    return Answer::kStandalone;
  }
  auto m = proto::Receive(fd_, &inbox_, kReplyTimeoutMs, &error);
  if (!m || m->type != proto::Type::kLeaseReply) {
    Lost(error.empty() ? "unexpected reply" : error.c_str());
    return Answer::kStandalone;
  }
  const proto::LeaseReply r = proto::Sanitized(proto::As<proto::LeaseReply>(*m));
  switch (static_cast<proto::LeaseStatus>(r.status)) {
    case proto::LeaseStatus::kGranted: *granted = r.granted_bytes; return Answer::kGranted;
    case proto::LeaseStatus::kRecalling: return Answer::kRecalling;
    case proto::LeaseStatus::kRefused: break;
  }
  *reason = r.reason;
  return Answer::kRefused;
}

bool BrokerLink::attached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fd_ >= 0;
}

}  // namespace gpushare
