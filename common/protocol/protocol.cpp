// Framing and sanitizing of protocol messages (see protocol.h).
#include "protocol.h"

#include <algorithm>
#include <type_traits>

namespace gpushare::protocol {
namespace {

// The exact size of a fixed-size payload; 0 for text (variable length).
template <typename T>
constexpr size_t PayloadBytes() {
  if constexpr (std::is_same_v<T, Text>)
    return 0;
  else
    return sizeof(T);
}

// The size of a payload's oldest form (MessageInfo::oldest_payload_bytes).
template <typename T>
constexpr size_t OldestPayloadBytes() {
  if constexpr (std::is_same_v<T, Hello>)
    return kHelloWithoutProfileBytes;
  else
    return PayloadBytes<T>();
}

// Each declared type's payload and route, from messages.def.
constexpr struct {
  uint16_t type;
  MessageInfo info;
} kMessages[] = {
#define GS_REQUEST(name, number, payload, route, reply) \
  {number, {#name, PayloadBytes<payload>(), Route::route, OldestPayloadBytes<payload>()}},
#define GS_NOTICE(name, number, payload, route) \
  {number, {#name, PayloadBytes<payload>(), Route::route, OldestPayloadBytes<payload>()}},
#define GS_REPLY(name, number, payload) \
  {number, {#name, PayloadBytes<payload>(), Route::kReply, OldestPayloadBytes<payload>()}},
#include "messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
};

template <size_t N>
void Terminate(char (&s)[N]) {
  s[N - 1] = '\0';
}

}  // namespace

const MessageInfo* Describe(uint16_t type) {
  for (const auto& m : kMessages)
    if (m.type == type) return &m.info;
  return nullptr;
}

std::vector<uint8_t> EncodeText(Type type, const std::string& text) {
  std::vector<uint8_t> out(sizeof(Header) + text.size());
  Header h{kMagic, kVersion, static_cast<uint16_t>(type), static_cast<uint32_t>(text.size())};
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, text.data(), text.size());
  return out;
}

std::vector<uint8_t> EncodeHello(const Hello& hello) {
  std::vector<uint8_t> out = Encode(Type::kHello, hello);
  if (hello.profile[0] != '\0') return out;
  out.resize(sizeof(Header) + kHelloWithoutProfileBytes);
  const uint32_t length = static_cast<uint32_t>(kHelloWithoutProfileBytes);
  std::memcpy(out.data() + offsetof(Header, length), &length, sizeof length);
  return out;
}

std::optional<Message> Split(std::vector<uint8_t>* buffer, std::string* error) {
  error->clear();
  if (buffer->size() < sizeof(Header)) return std::nullopt;
  Header h;
  std::memcpy(&h, buffer->data(), sizeof h);
  if (h.magic != kMagic) {
    *error = "not a gpushare message (bad magic)";
    return std::nullopt;
  }
  if (h.version != kVersion) {
    *error = "protocol version " + std::to_string(h.version) + ", expected " + std::to_string(kVersion);
    return std::nullopt;
  }
  const MessageInfo* info = Describe(h.type);
  if (info == nullptr) {
    *error = "unknown message type " + std::to_string(h.type);
    return std::nullopt;
  }
  if (h.length > kMaxPayload ||
      (info->payload_bytes != 0 && h.length != info->payload_bytes && h.length != info->oldest_payload_bytes)) {
    *error = "message type " + std::to_string(h.type) + " with a payload of " + std::to_string(h.length) + " bytes";
    return std::nullopt;
  }
  if (buffer->size() < sizeof(Header) + h.length) return std::nullopt;
  Message m{static_cast<Type>(h.type),
            std::vector<uint8_t>(buffer->begin() + sizeof(Header), buffer->begin() + sizeof(Header) + h.length)};
  buffer->erase(buffer->begin(), buffer->begin() + sizeof(Header) + h.length);
  return m;
}

Hello Sanitized(Hello h) {
  Terminate(h.tenant);
  Terminate(h.job);
  Terminate(h.profile);
  h.device_count = std::min<uint32_t>(h.device_count, kMaxDevices);
  h.reattach = h.reattach != 0;
  h.job_size = std::min<uint32_t>(h.job_size, kMaxDevices);
  if (!(h.weight > 0 && h.weight <= kMaxWeight)) h.weight = 1;  // NaN and nonsense read as the default
  h.weight = std::max(h.weight, kMinWeight);
  for (int32_t& v : h.visible) v = std::clamp(v, -1, 1023);
  return h;
}

Welcome Sanitized(Welcome w) {
  Terminate(w.reason);
  Terminate(w.channel);
  w.device_count = std::min<uint32_t>(w.device_count, kMaxDevices);
  w.scheduled = w.scheduled != 0;
  return w;
}

Take Sanitized(Take t) {
  t.force = t.force != 0;
  return t;
}

TakeReply Sanitized(TakeReply r) {
  Terminate(r.reason);
  return r;
}

Lease Sanitized(Lease l) {
  l.want_bytes = std::max(l.want_bytes, l.need_bytes);
  return l;
}

LeaseReply Sanitized(LeaseReply r) {
  if (r.status != static_cast<int32_t>(LeaseStatus::kGranted) &&
      r.status != static_cast<int32_t>(LeaseStatus::kRecalling))
    r.status = static_cast<int32_t>(LeaseStatus::kRefused);
  Terminate(r.reason);
  return r;
}

Sched Sanitized(Sched s) {
  if (s.event != static_cast<uint32_t>(SchedEvent::kWant) && s.event != static_cast<uint32_t>(SchedEvent::kReleased))
    s.event = 0;  // read as nothing
  return s;
}

SetWeight Sanitized(SetWeight s) {
  Terminate(s.tenant);
  if (!(s.weight >= kMinWeight && s.weight <= kMaxWeight)) s.weight = 0;  // refused
  return s;
}

Comm Sanitized(Comm c) {
  if (c.event != static_cast<uint32_t>(CommEvent::kJoined) && c.event != static_cast<uint32_t>(CommEvent::kLeft))
    c.event = 0;  // read as nothing
  c.nranks = std::min<uint32_t>(c.nranks, 1u << 20);
  c.rank = std::clamp<int32_t>(c.rank, -1, 1 << 20);
  return c;
}

MpsAsk Sanitized(MpsAsk a) {
  Terminate(a.tenant);
  Terminate(a.program);
  if (a.hint > static_cast<uint32_t>(MpsClass::kMemory)) a.hint = 0;  // read as no hint
  return a;
}

MpsTerms Sanitized(MpsTerms t) {
  Terminate(t.pipe_directory);
  Terminate(t.reason);
  if (t.percent > 100) t.percent = 0;
  return t;
}

}  // namespace gpushare::protocol
