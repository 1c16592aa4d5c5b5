// Fuzzes everything the broker runs on a client's bytes (framing, payload decoding,
// BrokerCore's Hello/Take/Give/Status/Sched/SetWeight handling, the scheduler's
// grants and revokes as time passes) over several connections at once. The
// input is a small program (see Op) so that the fuzzer reaches registered clients,
// capped tenants and full GPUs, not only framing errors; after every step the ledger,
// the replies and the published grants are checked, and a broken invariant traps.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "broker/core/broker_core.h"
#include "common/protocol/protocol.h"
#include "fuzz_target.h"

namespace {

namespace proto = gpushare::protocol;
using gpushare::broker::Admission;
using gpushare::broker::BrokerConfig;
using gpushare::broker::BrokerCore;
using gpushare::broker::ChannelHost;
using gpushare::broker::ClientId;
using gpushare::broker::GpuInfo;
using gpushare::broker::Grants;
using gpushare::broker::PeerCredentials;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kGpuBytes = 16 * kGiB;
constexpr int kGpus = 2;
constexpr int kSlots = 4;  // connections open at once

// The program's instructions: the low nibble of an op byte (modulo kOpCount), the
// connection slot in the high nibble. Operands follow; a program that runs out of
// bytes reads zeros.
enum class Op : uint8_t {
  kHello,       // encode a Hello into the slot's pending bytes
  kTake,        // encode a Take
  kGive,        // encode a Give
  kStatus,      // encode a Status request
  kRaw,         // append raw bytes: length, bytes
  kDeliver,     // hand the broker the next n pending bytes (0: all) and run Input
  kReconnect,   // hang up and connect again (a new connection id, same peer)
  kReload,      // switch to config variant n (0: empty, as at start)
  kStatusJson,  // the status report, as the tools read it
  kSched,       // encode a Sched (gate event): device, event, slice, drained time
  kSetWeight,   // encode a SetWeight: pid selector, tenant, weight
  kPoll,        // time passes (n ms) and the broker does its periodic work
  kComm,        // encode a Comm (communicator joined/left): event, id, ranks, device
  kOpCount,
};

// Quantities that sit on the ledger's edges: a GPU's capacity, just past it, overflow.
constexpr uint64_t kQuantities[] = {0,
                                    1,
                                    4096,
                                    1 << 20,
                                    kGiB,
                                    4 * kGiB,
                                    8 * kGiB,
                                    kGpuBytes - 1,
                                    kGpuBytes,
                                    kGpuBytes + 1,
                                    2 * kGpuBytes,
                                    uint64_t{1} << 63,
                                    std::numeric_limits<uint64_t>::max() - kGiB,
                                    std::numeric_limits<uint64_t>::max()};
constexpr size_t kQuantityRaw = std::size(kQuantities);  // then 8 raw bytes
constexpr size_t kQuantitySteps = kQuantityRaw + 1;      // then (byte + 1) * 64 MiB

constexpr double kWeights[] = {1,
                               0.5,
                               2,
                               10,
                               1000,
                               1001,
                               0,
                               -1,
                               std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity()};
constexpr size_t kWeightRaw = std::size(kWeights);

// Tenant names with a policy in some config variant; any other selector is raw bytes.
const char* const kTenants[] = {"", "a", "b", "c", "default"};
const char* const kProfiles[] = {"", "q8g", "half", "none"};

// Decodes the program; past the end every read is zero.
class Reader : public FuzzInput {
 public:
  using FuzzInput::FuzzInput;
  template <size_t N>
  void Text(char (&dst)[N], size_t n) {
    for (size_t i = 0; i < std::min(n, N); ++i) dst[i] = static_cast<char>(Byte());
  }
  uint64_t Quantity() {
    const uint8_t sel = Byte() % (kQuantitySteps + 1);
    if (sel < kQuantityRaw) return kQuantities[sel];
    if (sel == kQuantityRaw) return Raw(8);
    return (uint64_t{Byte()} + 1) * (64 << 20);
  }
  double Weight() {
    const uint8_t sel = Byte() % (kWeightRaw + 1);
    if (sel < kWeightRaw) return kWeights[sel];
    const uint64_t bits = Raw(8);
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }
  int32_t Visible() {
    const uint8_t b = Byte();
    switch (b % 4) {
      case 0: return -1;
      case 1: return 0;
      case 2: return 1;
      default: return static_cast<int32_t>(Raw(4));
    }
  }
  uint32_t Device() {
    const uint8_t b = Byte();
    return b < 0xf0 ? b % 3 : static_cast<uint32_t>(Raw(4));
  }
};

// Carries out SocketAdmin requests on paper: whatever reaches it passed the parser's checks.
class FakeSockets : public gpushare::broker::SocketHost {
 public:
  std::string Carry(const gpushare::broker::SocketAdminRequest& r) override {
    FUZZ_CHECK(gpushare::broker::ValidSocketName(r.name));
    FUZZ_CHECK(!r.tenant || gpushare::broker::ValidSocketName(*r.tenant));
    FUZZ_CHECK(r.mode <= 0777);
    return "ok /fuzz/containers/" + r.name + ".sock";
  }
};

// Records what the core publishes and checks it against the core's own view.
class FakeChannels : public ChannelHost {
 public:
  const BrokerCore* core = nullptr;
  bool fail_creates = false;  // as when /dev/shm is full
  std::set<ClientId> live;

  std::string Create(ClientId id, const PeerCredentials&) override {
    FUZZ_CHECK(live.count(id) == 0);
    if (fail_creates) return "";
    live.insert(id);
    return "fake." + std::to_string(id);
  }
  void Publish(ClientId id, const Grants& grants) override {
    const auto* client = core->Client(id);
    FUZZ_CHECK(client != nullptr);
    FUZZ_CHECK(grants.cap_bytes.size() == client->physical.size());
    FUZZ_CHECK(grants.tenant_held_bytes.size() == client->physical.size());
    FUZZ_CHECK(client->physical.size() <= static_cast<size_t>(proto::kMaxDevices));
    FUZZ_CHECK(std::isfinite(grants.weight) && grants.weight > 0);
    for (uint64_t held : grants.tenant_held_bytes) FUZZ_CHECK(held <= kGpuBytes);
  }
  void Destroy(ClientId id) override {
    FUZZ_CHECK(core->Client(id) == nullptr);
    live.erase(id);
    for (auto it = gates.begin(); it != gates.end();) it = it->first.first == id ? gates.erase(it) : std::next(it);
  }
  void SetGate(ClientId id, int device, uint32_t state, uint64_t slice) override {
    const auto* client = core->Client(id);
    FUZZ_CHECK(client != nullptr && client->scheduled);
    FUZZ_CHECK(device >= 0 && static_cast<size_t>(device) < client->physical.size());
    FUZZ_CHECK(state == proto::kGateHeld || state == proto::kGateWait);
    FUZZ_CHECK(state != proto::kGateHeld || slice != 0);
    gates[{id, device}] = state;
  }
  // At most one client holds each physical GPU.
  void CheckGates() const {
    std::map<int, int> holders;
    for (const auto& [key, state] : gates) {
      if (state != proto::kGateHeld) continue;
      const auto* client = core->Client(key.first);
      FUZZ_CHECK(client != nullptr);
      FUZZ_CHECK(++holders[client->physical[key.second]] <= 1);
    }
  }
  std::map<std::pair<ClientId, int>, uint32_t> gates;
};

// One client connection as the daemon keeps it.
struct Slot {
  PeerCredentials peer;
  ClientId id = 0;
  bool open = false;
  std::vector<uint8_t> pending;  // written by the program, not yet received
  std::vector<uint8_t> in;       // received, not yet a whole message
};

BrokerConfig ConfigVariant(uint8_t n) {
  BrokerConfig c;
  switch (n % 3) {
    case 0: break;  // empty: every tenant on the client's terms
    case 1:
      c.profiles["q8g"] = {8 * kGiB, 0.25, 0.5, ""};
      c.profiles["half"] = {kGpuBytes / 2, 0.5, std::nullopt, ""};
      c.reserved.instances = 1;
      c.tenants["c"].profile = "q8g";
      c.tenants["a"].memory = 4 * kGiB;
      c.tenants["a"].gpus = std::vector<int>{1};
      c.tenants["b"].uids = std::vector<uint32_t>{1000};
      c.tenants["b"].max_memory = 8 * kGiB;
      c.tenants["b"].max_weight = 2;
      c.tenants["c"].weight = 5;
      break;
    case 2:
      c.profiles["q8g"] = {8 * kGiB, 0.25, std::nullopt, ""};
      c.tenants["b"].max_compute = 0.3;
      c.admission = Admission::kOversubscribe;
      c.tenants["a"].memory = 12 * kGiB;
      c.tenants["c"].max_memory = 10 * kGiB;
      c.tenants["c"].gpus = std::vector<int>{0, 5};
      c.tenants["default"].uids = std::vector<uint32_t>{0};
      break;
  }
  return c;
}

class Harness {
 public:
  explicit Harness(uint8_t setup)
      : core_(BrokerConfig{}, {GpuInfo{0, "fake-0", kGpuBytes}, GpuInfo{1, "fake-1", kGpuBytes}}, &channels_) {
    channels_.core = &core_;
    channels_.fail_creates = (setup & 1) != 0;
    core_.SetClock([this] { return now_; });
    core_.SetAdminUid(1000);
    core_.SetSocketHost(&sockets_);
    const PeerCredentials peers[kSlots] = {{100, 0, 0}, {200, 1000, 1000}, {201, 1000, 1000}, {300, 1001, 1001}};
    for (int s = 0; s < kSlots; ++s) {
      slots_[s].peer = peers[s];
      Connect(slots_[s]);
    }
  }

  void Step(Reader& r) {
    const uint8_t b = r.Byte();
    Slot& s = slots_[(b >> 4) % kSlots];
    switch (static_cast<Op>((b & 0x0f) % static_cast<uint8_t>(Op::kOpCount))) {
      case Op::kHello: Append(s, proto::Encode(proto::Type::kHello, ReadHello(r))); break;
      case Op::kTake: {
        proto::Take t{};
        t.device = r.Device();
        const uint8_t force = r.Byte();
        t.force = force < 0xf0 ? force & 1 : force;
        t.bytes = r.Quantity();
        Append(s, proto::Encode(proto::Type::kTake, t));
        break;
      }
      case Op::kGive: {
        proto::Give g{};
        g.device = r.Device();
        g.bytes = r.Quantity();
        Append(s, proto::Encode(proto::Type::kGive, g));
        break;
      }
      case Op::kStatus: Append(s, proto::EncodeText(proto::Type::kStatus, "")); break;
      case Op::kRaw: {
        const size_t n = r.Byte() % 64;
        for (size_t i = 0; i < n; ++i) s.pending.push_back(r.Byte());
        break;
      }
      case Op::kDeliver: Deliver(s, r.Byte()); break;
      case Op::kReconnect:
        Disconnect(s);
        Connect(s);
        break;
      case Op::kReload:
        core_.Reload(ConfigVariant(r.Byte()));
        admission_checked_ = false;  // a reload may lower or raise caps past what admission promised
        break;
      case Op::kStatusJson: CheckStatus(core_.StatusJson()); break;
      case Op::kSched: {
        proto::Sched m{};
        m.device = r.Device();
        m.event = r.Byte() % 4;  // 1 want, 2 released, else nonsense
        m.slice = r.Byte() < 0xf0 ? r.Byte() % 8 : r.Raw(8);
        m.drained_ns = now_ + (r.Byte() < 0x80 ? 0 : r.Raw(8));
        Append(s, proto::Encode(proto::Type::kSched, m));
        break;
      }
      case Op::kSetWeight: {
        proto::SetWeight m{};
        const uint8_t who = r.Byte();
        m.pid = who % 3 == 0 ? 0 : who % 3 == 1 ? slots_[who / 3 % kSlots].peer.pid : static_cast<int32_t>(r.Raw(4));
        const uint8_t tenant = r.Byte();
        if (tenant < std::size(kTenants))
          proto::SetString(m.tenant, kTenants[tenant]);
        else
          r.Text(m.tenant, tenant % 65);
        m.weight = r.Weight();
        Append(s, proto::Encode(proto::Type::kSetWeight, m));
        break;
      }
      case Op::kPoll:
        now_ += (uint64_t{r.Byte()} + 1) * 1'000'000;
        core_.Poll();
        if (auto d = core_.NextDeadline()) FUZZ_CHECK(*d + 2'000'000'000ull > now_);  // none long overdue
        break;
      case Op::kComm: {
        proto::Comm m{};
        m.event = r.Byte() % 4;  // 1 joined, 2 left, else nonsense
        m.comm_id = r.Byte() < 0xf0 ? r.Byte() % 4 : r.Raw(8);
        m.nranks = static_cast<uint32_t>(r.Byte() < 0xf0 ? r.Byte() % 8 : r.Raw(4));
        m.rank = static_cast<int32_t>(r.Byte() < 0xf0 ? r.Byte() % 8 : r.Raw(4));
        m.device = r.Device();
        m.handle = r.Byte() % 4;
        Append(s, proto::Encode(proto::Type::kComm, m));
        break;
      }
      case Op::kOpCount: break;
    }
    CheckLedger();
    channels_.CheckGates();
  }

  // The program ended: what the clients still have to say arrives, then they all hang up.
  void Finish() {
    for (Slot& s : slots_)
      if (s.open && !s.pending.empty()) Deliver(s, 0);
    CheckLedger();
    for (Slot& s : slots_) Disconnect(s);
    CheckLedger();
    FUZZ_CHECK(core_.client_count() == 0);
    FUZZ_CHECK(channels_.live.empty());
    for (int g = 0; g < kGpus; ++g) {
      FUZZ_CHECK(core_.ledger().GpuHeld(g) == 0);
      for (const std::string& t : tenants_seen_) FUZZ_CHECK(core_.ledger().TenantHeld(t, g) == 0);
    }
  }

 private:
  proto::Hello ReadHello(Reader& r) {
    proto::Hello h{};
    const uint8_t flags = r.Byte();
    h.reattach = (flags & 2) ? static_cast<uint32_t>(r.Raw(4)) : flags & 1;
    const uint8_t tenant = r.Byte();
    if (tenant < std::size(kTenants))
      proto::SetString(h.tenant, kTenants[tenant]);
    else
      r.Text(h.tenant, tenant % 65);  // may be unterminated, may not be UTF-8
    const uint8_t job = r.Byte();
    if (job < 0xc0)
      proto::SetString(h.job, std::string(job % 3, 'j'));  // "", "j", "jj": ranks of a few jobs meet
    else
      r.Text(h.job, job % 130);
    h.rank = static_cast<int8_t>(r.Byte());
    const uint8_t size = r.Byte();
    h.job_size = size < 0xf0 ? size % 6 : static_cast<uint32_t>(r.Raw(4));
    h.weight = r.Weight();
    const uint8_t count = r.Byte();
    h.device_count = count == 0xff ? static_cast<uint32_t>(r.Raw(4)) : count;
    for (uint32_t v = 0; v < std::min<uint32_t>(h.device_count, proto::kMaxDevices); ++v) h.visible[v] = r.Visible();
    const uint8_t caps = r.Byte() % 3;
    for (uint8_t v = 0; v < caps; ++v) h.cap_bytes[v] = r.Quantity();
    if (h.reattach)
      for (uint32_t v = 0; v < std::min<uint32_t>(h.device_count, proto::kMaxDevices); ++v)
        h.held_bytes[v] = r.Quantity();
    if (flags & 4) {  // a vGPU profile: one the config may have, or any bytes
      const uint8_t profile = r.Byte();
      if (profile < std::size(kProfiles))
        proto::SetString(h.profile, kProfiles[profile]);
      else
        r.Text(h.profile, profile % 33);  // may be unterminated
    }
    return h;
  }

  static void Append(Slot& s, const std::vector<uint8_t>& bytes) {
    s.pending.insert(s.pending.end(), bytes.begin(), bytes.end());
  }

  void Connect(Slot& s) {
    s.id = next_id_++;
    s.open = true;
    s.pending.clear();
    s.in.clear();
    core_.Open(s.id, s.peer);
  }

  void Disconnect(Slot& s) {
    if (!s.open) return;
    core_.Close(s.id);
    s.open = false;
    FUZZ_CHECK(core_.Client(s.id) == nullptr);
    FUZZ_CHECK(!core_.ledger().HasClient(s.id));
    FUZZ_CHECK(channels_.live.count(s.id) == 0);
  }

  // The daemon's receive path: bytes arrive, Input consumes whole messages, a breach drops the peer.
  void Deliver(Slot& s, size_t n) {
    if (!s.open) Connect(s);  // the client connects again
    if (n == 0 || n > s.pending.size()) n = s.pending.size();
    s.in.insert(s.in.end(), s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(n));
    s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(n));

    const std::vector<uint8_t> received = s.in;
    const bool registered = core_.Client(s.id) != nullptr;
    std::vector<uint8_t> out;
    std::string error;
    const bool kept = core_.Input(s.id, &s.in, &out, &error);
    FUZZ_CHECK(kept == error.empty());

    // The core consumed whole messages off the front and left the rest alone.
    FUZZ_CHECK(s.in.size() <= received.size());
    const size_t consumed = received.size() - s.in.size();
    FUZZ_CHECK(std::equal(s.in.begin(), s.in.end(), received.begin() + static_cast<std::ptrdiff_t>(consumed)));
    std::vector<uint8_t> prefix(received.begin(), received.begin() + static_cast<std::ptrdiff_t>(consumed));
    std::vector<proto::Message> requests;
    std::string split_error;
    while (auto m = proto::Split(&prefix, &split_error)) requests.push_back(std::move(*m));
    FUZZ_CHECK(prefix.empty() && split_error.empty());
    for (const proto::Message& m : requests) {
      if (m.type != proto::Type::kHello) continue;
      const proto::Hello h = proto::Sanitized(proto::As<proto::Hello>(m));
      tenants_seen_.insert(h.tenant[0] != '\0' ? h.tenant : "default");
      if (h.reattach) admission_checked_ = false;  // re-registering skips admission
    }

    const bool breached = CheckReplies(s, registered, requests, out);
    if (kept) {
      FUZZ_CHECK(!breached);
    } else if (!breached) {  // then the bytes left cannot be framed
      std::vector<uint8_t> rest = s.in;
      FUZZ_CHECK(!proto::Split(&rest, &split_error) && !split_error.empty());
    }
    if (!kept) Disconnect(s);
  }

  // Walks the requests the core consumed as the protocol says it must answer them: one
  // well-formed reply per Hello, Take and Status, in order; Take and Give only after an
  // accepted Hello, one Hello per registration, no broker's message from a client.
  // Returns whether the last request broke the protocol (it gets no reply).
  bool CheckReplies(const Slot& s, bool registered, const std::vector<proto::Message>& requests,
                    std::vector<uint8_t> out) {
    std::string error;
    bool breached = false;
    for (const proto::Message& req : requests) {
      FUZZ_CHECK(!breached);  // nothing is read past a breach
      const bool breach = req.type == proto::Type::kHello ? registered
                          : req.type == proto::Type::kTake || req.type == proto::Type::kGive ||
                                  req.type == proto::Type::kSched || req.type == proto::Type::kComm
                              ? !registered
                              : req.type != proto::Type::kStatus && req.type != proto::Type::kSetWeight &&
                                    req.type != proto::Type::kUsage && req.type != proto::Type::kSocketAdmin &&
                                    req.type != proto::Type::kMpsAsk;
      if (breach) {
        breached = true;
        continue;
      }
      if (req.type == proto::Type::kGive || req.type == proto::Type::kSched) continue;
      auto reply = proto::Split(&out, &error);
      FUZZ_CHECK(reply.has_value());
      switch (req.type) {
        case proto::Type::kHello: {
          FUZZ_CHECK(reply->type == proto::Type::kWelcome);
          const proto::Welcome w = proto::As<proto::Welcome>(*reply);
          FUZZ_CHECK(w.accepted == 0 || w.accepted == 1);
          FUZZ_CHECK(w.device_count <= static_cast<uint32_t>(proto::kMaxDevices));
          FUZZ_CHECK(std::memchr(w.reason, 0, sizeof w.reason) != nullptr);
          FUZZ_CHECK(std::memchr(w.channel, 0, sizeof w.channel) != nullptr);
          for (uint32_t v = 0; v < w.device_count; ++v) {
            FUZZ_CHECK(w.physical[v] >= 0 && w.physical[v] < kGpus);
            for (uint32_t u = 0; u < v; ++u) FUZZ_CHECK(w.physical[u] != w.physical[v]);  // one GPU, one virtual
          }
          if (w.accepted) FUZZ_CHECK(w.client_id == s.id);
          registered = w.accepted == 1;
          break;
        }
        case proto::Type::kTake: {
          FUZZ_CHECK(reply->type == proto::Type::kTakeReply);
          const proto::TakeReply t = proto::As<proto::TakeReply>(*reply);
          FUZZ_CHECK(t.granted == 0 || t.granted == 1);
          FUZZ_CHECK(std::memchr(t.reason, 0, sizeof t.reason) != nullptr);
          break;
        }
        case proto::Type::kComm: FUZZ_CHECK(reply->type == proto::Type::kCommReply); break;
        case proto::Type::kMpsAsk: {  // before registration or after: a share, or none
          FUZZ_CHECK(reply->type == proto::Type::kMpsTerms);
          const proto::MpsTerms t = proto::As<proto::MpsTerms>(*reply);
          FUZZ_CHECK(t.percent <= 100);
          FUZZ_CHECK(std::memchr(t.reason, 0, sizeof t.reason) != nullptr);
          FUZZ_CHECK(std::memchr(t.pipe_directory, 0, sizeof t.pipe_directory) != nullptr);
          break;
        }
        case proto::Type::kStatus:
          FUZZ_CHECK(reply->type == proto::Type::kStatusReply);
          CheckStatus(std::string(reply->payload.begin(), reply->payload.end()));
          // Later requests of the batch may have changed the clients since: compare
          // with the registry only when the status was the last.
          if (&req == &requests.back())
            CheckVisibility(s.peer, std::string(reply->payload.begin(), reply->payload.end()));
          break;
        case proto::Type::kSetWeight: {
          FUZZ_CHECK(reply->type == proto::Type::kToolReply);
          const std::string text(reply->payload.begin(), reply->payload.end());
          FUZZ_CHECK(text.rfind("ok", 0) == 0 || text.rfind("refused", 0) == 0);
          if (s.peer.uid != 0 && s.peer.uid != 1000) FUZZ_CHECK(text.rfind("refused", 0) == 0);
          break;
        }
        case proto::Type::kUsage:
          FUZZ_CHECK(reply->type == proto::Type::kUsageReply);
          FUZZ_CHECK(nlohmann::json::accept(std::string(reply->payload.begin(), reply->payload.end())));
          break;
        case proto::Type::kSocketAdmin: {
          FUZZ_CHECK(reply->type == proto::Type::kToolReply);
          const std::string text(reply->payload.begin(), reply->payload.end());
          FUZZ_CHECK(text.rfind("ok ", 0) == 0 || text.rfind("refused: ", 0) == 0);
          if (s.peer.uid != 0 && s.peer.uid != 1000) FUZZ_CHECK(text.rfind("refused: ", 0) == 0);
          break;
        }
        default: FUZZ_CHECK(false && "a request the core should have refused");
      }
    }
    FUZZ_CHECK(out.empty());
    FUZZ_CHECK((core_.Client(s.id) != nullptr) == registered);
    return breached;
  }

  static void CheckStatus(const std::string& text) {
    FUZZ_CHECK(nlohmann::json::accept(text));
    const auto j = nlohmann::json::parse(text);
    FUZZ_CHECK(j.at("gpus").size() == static_cast<size_t>(kGpus));
  }

  // What a viewer's status shows (visibility.h): root and the admin (uid 1000) every
  // client; anyone else at least their own processes' clients, the rest counted.
  void CheckVisibility(const PeerCredentials& viewer, const std::string& text) const {
    const auto j = nlohmann::json::parse(text);
    const size_t shown = j.at("clients").size();
    const size_t hidden = j.at("hidden_clients").get<size_t>();
    FUZZ_CHECK(shown + hidden == core_.client_count());
    if (viewer.uid == 0 || viewer.uid == 1000) FUZZ_CHECK(hidden == 0);
    std::set<uint64_t> ids;
    for (const auto& c : j.at("clients")) ids.insert(c.at("id").get<uint64_t>());
    for (const Slot& other : slots_)
      if (other.open && core_.Client(other.id) != nullptr && other.peer.uid == viewer.uid)
        FUZZ_CHECK(ids.count(other.id) == 1);
  }

  // The ledger's books balance: no GPU past its capacity, every byte a GPU holds is
  // some live client's, a tenant's holdings are its clients', and (while admission
  // alone decided) the caps promised on a GPU fit in it.
  void CheckLedger() {
    const auto& ledger = core_.ledger();
    size_t registered = 0;
    for (const Slot& s : slots_) {
      const auto* c = s.open ? core_.Client(s.id) : nullptr;
      FUZZ_CHECK(!s.open || (c != nullptr) == ledger.HasClient(s.id));
      if (c == nullptr) continue;
      ++registered;
      FUZZ_CHECK(c->physical.size() <= static_cast<size_t>(proto::kMaxDevices));
      for (int g : c->physical) FUZZ_CHECK(g >= 0 && g < kGpus);
    }
    FUZZ_CHECK(core_.client_count() == registered);
    for (ClientId id : channels_.live) FUZZ_CHECK(core_.Client(id) != nullptr);

    for (int g = 0; g < kGpus; ++g) {
      FUZZ_CHECK(ledger.GpuHeld(g) <= ledger.capacity(g));
      uint64_t clients_held = 0;
      std::map<std::string, uint64_t> tenant_held;
      std::map<std::string, uint64_t> caps_on_gpu;  // capped tenants with a client on g
      for (const Slot& s : slots_) {
        const auto* c = s.open ? core_.Client(s.id) : nullptr;
        if (c == nullptr) continue;
        clients_held += ledger.Held(s.id, g);
        tenant_held[c->tenant] += ledger.Held(s.id, g);
        const auto cap = ledger.TenantCap(c->tenant);
        if (cap && std::find(c->physical.begin(), c->physical.end(), g) != c->physical.end())
          caps_on_gpu[c->tenant] = *cap;
      }
      FUZZ_CHECK(clients_held == ledger.GpuHeld(g));
      for (const auto& [tenant, held] : tenant_held) FUZZ_CHECK(ledger.TenantHeld(tenant, g) == held);
      // No step takes a tenant past its cap, forced or restored (issue 22): it may stay
      // past a cap a reload lowered, never grow there.
      for (const std::string& tenant : tenants_seen_) {
        const uint64_t held = ledger.TenantHeld(tenant, g);
        const auto cap = ledger.TenantCap(tenant);
        uint64_t& before = tenant_held_before_[{tenant, g}];
        FUZZ_CHECK(!cap || held <= *cap || held <= before);
        before = held;
      }
      if (admission_checked_) {
        uint64_t promised = 0;
        for (const auto& [tenant, cap] : caps_on_gpu)
          FUZZ_CHECK(!__builtin_add_overflow(promised, cap, &promised) && "caps promised on a GPU overflow");
        FUZZ_CHECK(promised <= ledger.capacity(g));
      }
    }
  }

  uint64_t now_ = 1'000'000'000;  // the broker's clock (ns)
  FakeChannels channels_;
  FakeSockets sockets_;
  BrokerCore core_;
  Slot slots_[kSlots];
  ClientId next_id_ = 1;
  bool admission_checked_ = true;  // admission = "refuse", no reload, no reattach so far
  std::set<std::string> tenants_seen_;
  std::map<std::pair<std::string, int>, uint64_t> tenant_held_before_;  // at the last CheckLedger
};

// Writes programs for the seeds, mirroring Reader.
class Writer {
 public:
  // `visible`: Reader::Visible selectors (0: -1, 1: GPU 0, 2: GPU 1); `caps`, `held`: kQuantities indexes.
  Writer& Hello(int slot, uint8_t tenant, std::vector<uint8_t> visible = {}, std::vector<uint8_t> caps = {},
                uint8_t weight = 0) {
    return HelloMessage(slot, tenant, visible, caps, weight, nullptr);
  }
  // A tenant name of raw bytes (at most 64).
  Writer& HelloRawTenant(int slot, const std::vector<uint8_t>& tenant) {
    Op(Op::kHello, slot);
    bytes_.push_back(0);
    bytes_.push_back(static_cast<uint8_t>(65 + tenant.size()));  // past kTenants; % 65 is the length
    bytes_.insert(bytes_.end(), tenant.begin(), tenant.end());
    bytes_.insert(bytes_.end(), {0, 0, 0, 0, 0});  // no job, rank 0, weight 1, no GPUs, no caps
    return *this;
  }
  // Re-registering with memory held already, per visible entry.
  Writer& Reattach(int slot, uint8_t tenant, std::vector<uint8_t> visible, std::vector<uint8_t> caps,
                   std::vector<uint8_t> held) {
    return HelloMessage(slot, tenant, visible, caps, 0, &held);
  }
  Writer& Take(int slot, uint8_t device, uint8_t quantity, bool force = false) {
    Op(Op::kTake, slot);
    bytes_.insert(bytes_.end(), {device, static_cast<uint8_t>(force), quantity});
    return *this;
  }
  Writer& Give(int slot, uint8_t device, uint8_t quantity) {
    Op(Op::kGive, slot);
    bytes_.insert(bytes_.end(), {device, quantity});
    return *this;
  }
  Writer& Status(int slot) { return Op(Op::kStatus, slot); }
  Writer& Raw(int slot, const std::vector<uint8_t>& raw) {
    Op(Op::kRaw, slot);
    bytes_.push_back(static_cast<uint8_t>(raw.size()));
    bytes_.insert(bytes_.end(), raw.begin(), raw.end());
    return *this;
  }
  Writer& Deliver(int slot, uint8_t n = 0) {
    Op(Op::kDeliver, slot);
    bytes_.push_back(n);
    return *this;
  }
  Writer& Reconnect(int slot) { return Op(Op::kReconnect, slot); }
  Writer& Reload(uint8_t variant) {
    Op(Op::kReload, 0);
    bytes_.push_back(variant);
    return *this;
  }
  Writer& StatusJson() { return Op(Op::kStatusJson, 0); }
  Writer& Sched(int slot, uint8_t device, uint8_t event, uint8_t slice) {
    Op(Op::kSched, slot);
    bytes_.insert(bytes_.end(), {device, event, 0, slice, 0});
    return *this;
  }
  Writer& SetWeight(int slot, uint8_t who, uint8_t tenant, uint8_t weight) {
    Op(Op::kSetWeight, slot);
    bytes_.insert(bytes_.end(), {who, tenant, weight});
    return *this;
  }
  Writer& Poll(uint8_t ms) {
    Op(Op::kPoll, 0);
    bytes_.push_back(ms);
    return *this;
  }
  std::vector<uint8_t> Done(uint8_t setup = 0) {
    bytes_.insert(bytes_.begin(), setup);
    return bytes_;
  }

 private:
  Writer& HelloMessage(int slot, uint8_t tenant, const std::vector<uint8_t>& visible, const std::vector<uint8_t>& caps,
                       uint8_t weight, const std::vector<uint8_t>* held) {
    Op(Op::kHello, slot);
    bytes_.push_back(held != nullptr ? 1 : 0);
    bytes_.push_back(tenant);
    bytes_.push_back(3);  // job: three bytes
    bytes_.insert(bytes_.end(), {'j', 'o', 'b'});
    bytes_.push_back(0);  // rank
    bytes_.push_back(weight);
    bytes_.push_back(static_cast<uint8_t>(visible.size()));
    bytes_.insert(bytes_.end(), visible.begin(), visible.end());
    bytes_.push_back(static_cast<uint8_t>(caps.size()));
    bytes_.insert(bytes_.end(), caps.begin(), caps.end());
    if (held != nullptr) bytes_.insert(bytes_.end(), held->begin(), held->end());
    return *this;
  }
  Writer& Op(Op op, int slot) {
    bytes_.push_back(static_cast<uint8_t>(static_cast<uint8_t>(op) | (slot << 4)));
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

// Indexes into kQuantities.
constexpr uint8_t kQ1GiB = 4, kQ4GiB = 5, kQ8GiB = 6, kQFull = 8, kQPastFull = 9, kQMax = 13;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Harness harness(data[0]);
  Reader r(data + 1, size - 1);
  for (int steps = 0; !r.done() && steps < 512; ++steps) harness.Step(r);
  harness.Finish();
  return 0;
}

std::vector<std::vector<uint8_t>> FuzzSeeds() {
  std::vector<std::vector<uint8_t>> seeds;
  // A capped tenant takes to its cap and past it, gives back, asks for status.
  seeds.push_back(Writer()
                      .Hello(0, 1, {1}, {kQ8GiB})
                      .Deliver(0)
                      .Take(0, 0, kQ4GiB)
                      .Take(0, 0, kQ8GiB)
                      .Give(0, 0, kQ1GiB)
                      .Take(0, 1, kQ1GiB)
                      .Status(0)
                      .Deliver(0)
                      .Done());
  // Two tenants fill GPU 0; a forced take past the cap; one hangs up, the other takes its room.
  seeds.push_back(Writer()
                      .Hello(0, 1, {1}, {kQ8GiB})
                      .Hello(1, 2, {1}, {kQ8GiB})
                      .Deliver(0)
                      .Deliver(1)
                      .Take(0, 0, kQ8GiB)
                      .Take(1, 0, kQ8GiB)
                      .Take(1, 0, kQ1GiB, true)
                      .Deliver(0)
                      .Deliver(1)
                      .Reconnect(0)
                      .Take(1, 0, kQ1GiB)
                      .Deliver(1)
                      .StatusJson()
                      .Done());
  // Uncapped clients on both GPUs, the broker chooses; a take of a whole GPU and more.
  seeds.push_back(Writer()
                      .Hello(2, 4, {}, {}, 2)
                      .Hello(3, 0, {}, {}, 3)
                      .Deliver(2)
                      .Deliver(3)
                      .Take(2, 0, kQFull)
                      .Take(3, 1, kQPastFull)
                      .Take(3, 1, kQMax)
                      .Give(2, 0, kQMax)
                      .Deliver(2)
                      .Deliver(3)
                      .Done());
  // Re-registering after a broker restart with memory already held, then a forced take.
  seeds.push_back(Writer()
                      .Reattach(0, 1, {1, 2}, {kQ4GiB}, {kQ8GiB, kQFull})
                      .Reattach(1, 2, {1}, {}, {kQFull})
                      .Deliver(0)
                      .Deliver(1)
                      .Take(1, 0, kQ1GiB, true)
                      .Deliver(1)
                      .Done());
  // Messages split across reads, a byte at a time and in odd chunks.
  seeds.push_back(Writer()
                      .Hello(1, 3, {2})
                      .Take(1, 0, kQ1GiB)
                      .Deliver(1, 1)
                      .Deliver(1, 7)
                      .Deliver(1, 100)
                      .Deliver(1, 250)
                      .Deliver(1, 250)
                      .Deliver(1)
                      .Done());
  // The config's tenants: a fixed cap and GPU, a uid list, then an oversubscribing config.
  seeds.push_back(Writer()
                      .Reload(1)
                      .Hello(0, 1)
                      .Hello(1, 2, {}, {kQFull})
                      .Hello(3, 2)
                      .Deliver(0)
                      .Deliver(1)
                      .Deliver(3)
                      .Reload(2)
                      .Hello(2, 1, {1})
                      .Deliver(2)
                      .Take(2, 0, kQ8GiB)
                      .Deliver(2)
                      .Reload(0)
                      .StatusJson()
                      .Done(1));
  // Protocol breaches: Take before Hello, a second Hello, a broker's message, bad magic.
  seeds.push_back(Writer()
                      .Take(0, 0, kQ1GiB)
                      .Deliver(0)
                      .Hello(1, 0)
                      .Hello(1, 0)
                      .Deliver(1)
                      .Raw(2, {0x47, 0x53, 0x48, 0x52, 1, 0, 2, 0, 0, 0, 0, 0})
                      .Deliver(2)
                      .Raw(3, {0xde, 0xad, 0xbe, 0xef, 1, 0, 1, 0})
                      .Deliver(3)
                      .Done());
  // A cap past any GPU beside a small one (Promised + cap used to wrap and admit it).
  seeds.push_back(Writer()
                      .Hello(0, 1, {1}, {kQ1GiB})
                      .Hello(1, 2, {1}, {kQMax})
                      .Deliver(0)
                      .Deliver(1)
                      .Take(1, 0, kQFull)
                      .Deliver(1)
                      .Done());
  // Names that are not UTF-8 in the status report (StatusJson used to throw on them).
  seeds.push_back(Writer().HelloRawTenant(0, {0xfa, 'x', 0xc3}).Deliver(0).Status(1).Deliver(1).StatusJson().Done());
  // Two clients on GPU 0 take turns: want, grant, revoke at the quantum, give back; a
  // stale give-back; the admin (uid 1000, slot 1) and root (slot 0) change weights.
  seeds.push_back(Writer()
                      .Hello(1, 2, {1})
                      .Hello(2, 2, {1})
                      .Deliver(1)
                      .Deliver(2)
                      .Sched(1, 0, 1, 0)
                      .Sched(2, 0, 1, 0)
                      .Deliver(1)
                      .Deliver(2)
                      .Poll(25)
                      .Sched(1, 0, 2, 1)
                      .Sched(1, 0, 2, 7)
                      .Deliver(1)
                      .Poll(3)
                      .SetWeight(1, 1, 0, 2)
                      .SetWeight(0, 0, 2, 3)
                      .SetWeight(3, 0, 2, 3)
                      .Deliver(1)
                      .Deliver(0)
                      .Deliver(3)
                      .Reconnect(2)
                      .Poll(200)
                      .StatusJson()
                      .Done());
  // Issue 22's lying client: a 4 GiB tenant forces 8 GiB, then the whole GPU; another
  // re-registers claiming a whole GPU beside its 1 GiB cap; an unprivileged uid (slot
  // 3) and root (slot 0) ask for the status.
  seeds.push_back(Writer()
                      .Hello(1, 1, {1}, {kQ4GiB})
                      .Deliver(1)
                      .Take(1, 0, kQ8GiB, true)
                      .Take(1, 0, kQFull, true)
                      .Deliver(1)
                      .Reattach(2, 2, {1}, {kQ1GiB}, {kQFull})
                      .Deliver(2)
                      .Take(2, 0, kQ1GiB, true)
                      .Deliver(2)
                      .Hello(3, 3, {1}, {kQ4GiB})
                      .Status(3)
                      .Deliver(3)
                      .Status(0)
                      .Deliver(0)
                      .Done());
  // SocketAdmin (issue 19): root makes a container's socket, an unprivileged uid (slot 3)
  // is refused, and a malformed request from root is refused by field.
  const auto admin = [](const std::string& json) { return proto::EncodeText(proto::Type::kSocketAdmin, json); };
  const std::vector<uint8_t> create = admin(R"({"op":"create","name":"c1","tenant":null,"uid":0,"gid":0})");
  const std::vector<uint8_t> bind = admin(R"({"op":"bind","name":"c1","tenant":"t"})");
  const std::vector<uint8_t> bad = admin(R"({"op":"create","name":"../x","uid":0})");
  Writer w;
  for (const auto* message : {&create, &bind, &bad})
    for (size_t at = 0; at < message->size(); at += 63)
      w.Raw(0,
            std::vector<uint8_t>(message->begin() + static_cast<std::ptrdiff_t>(at),
                                 message->begin() + static_cast<std::ptrdiff_t>(std::min(message->size(), at + 63))));
  for (size_t at = 0; at < create.size(); at += 63)
    w.Raw(3, std::vector<uint8_t>(create.begin() + static_cast<std::ptrdiff_t>(at),
                                  create.begin() + static_cast<std::ptrdiff_t>(std::min(create.size(), at + 63))));
  seeds.push_back(w.Deliver(0).Deliver(3).Done());
  return seeds;
}
