// The wire protocol between clients (libgpushare.so), tools and the broker, over the
// broker's Unix socket. Messages are a fixed header and a fixed-size payload per type
// (strings are NUL-padded arrays), so decoding is a bounds check and a copy; every
// decoder the broker runs on client input is in protocol.cpp and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace gpushare::protocol {

inline constexpr uint32_t kMagic = 0x52485347;  // "GSHR"
inline constexpr uint16_t kVersion = 3;
inline constexpr int kMaxDevices = 16;
inline constexpr size_t kMaxPayload = 1 << 20;
// A scheduling weight's range. The floor keeps a client from asking itself into
// starvation by accident (GPUSHARE_WEIGHT=5e-324 read as a weight); the ceiling keeps
// one client from drowning the rest.
inline constexpr double kMinWeight = 0.001;
inline constexpr double kMaxWeight = 1000;

// The message types, from messages.def (where each is described).
enum class Type : uint16_t {
#define GS_REQUEST(name, number, payload, route, reply) k##name = number,
#define GS_NOTICE(name, number, payload, route) k##name = number,
#define GS_REPLY(name, number, payload) k##name = number,
#include "messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
};

// When the broker takes a message (messages.def says which, per type).
enum class Route {
  kRegister,    // only as a connection's registration, once
  kRegistered,  // only after the connection registered
  kAnyone,      // any connection, registered or not (tools)
  kReply,       // the broker's own answer: never taken from a peer
};

// What messages.def says of one type.
struct MessageInfo {
  const char* name;      // "Hello"
  size_t payload_bytes;  // the payload struct's size; 0: text of any length up to kMaxPayload
  Route route;
  // A payload that grew at its end: older peers send only its first `oldest_payload_bytes`
  // (the rest reads as zeros). Equal to payload_bytes for a payload that never grew.
  size_t oldest_payload_bytes;
};
// nullptr for a number messages.def does not declare.
const MessageInfo* Describe(uint16_t type);

struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint32_t length;  // payload bytes after the header
};

struct Hello {
  char tenant[64];
  char job[128];
  int32_t rank;
  double weight;
  uint32_t device_count;             // virtual GPUs the client wants (0: all it may have)
  int32_t visible[kMaxDevices];      // asked physical GPUs in virtual order, -1: broker chooses
  uint64_t cap_bytes[kMaxDevices];   // asked cap per virtual GPU, 0: none asked
  uint64_t held_bytes[kMaxDevices];  // held already (re-registering after a broker restart)
  uint32_t reattach;                 // 1: re-registering; `visible` is the map in use and must stay
  uint32_t job_size;                 // ranks of `job` on this node (torchrun's LOCAL_WORLD_SIZE); 0: unknown
  // Added after the first version-3 clients, who send the Hello without it (read as "").
  char profile[32];  // the vGPU profile asked for (GPUSHARE_PROFILE); "": none, or the tenant's
};
// What a version-3 client without profiles sends: the Hello up to `profile`.
inline constexpr size_t kHelloWithoutProfileBytes = offsetof(Hello, profile);
static_assert(kHelloWithoutProfileBytes == 544, "the older Hello's size is the wire's: never change it");

struct Welcome {
  int32_t accepted;  // 1 yes, 0 refused
  char reason[256];
  uint64_t client_id;
  double weight;
  uint32_t device_count;
  int32_t physical[kMaxDevices];
  uint64_t cap_bytes[kMaxDevices];  // 0: uncapped
  char channel[64];                 // the client's shared-memory channel (channel.h), "" if none
  uint32_t scheduled;               // 1: launches pass the channel's gates (GPU time is scheduled)
};

struct Take {
  uint32_t device;  // virtual
  uint32_t force;   // 1: memory the driver already holds (a context's): recorded up to the tenant's cap and the GPU
  uint64_t bytes;
};

struct TakeReply {
  int32_t granted;  // 1 yes; 0 no
  char reason[128];
};

struct Give {
  uint32_t device;
  uint64_t bytes;
};

// An allocation lease: capacity the client takes from its tenant's ledger ahead of its
// allocations and allocates from without asking; what it does not use it returns with
// Give (when idle, or when its channel's lease_recall changes).
struct Lease {
  uint32_t device;  // virtual
  uint32_t reserved;
  uint64_t need_bytes;  // at least this much, or nothing
  uint64_t want_bytes;  // up to this much (the chunk it would like)
};

enum class LeaseStatus : int32_t {
  kRefused = 0,
  kGranted = 1,
  kRecalling = 2,  // other processes hold idle leases that would make room: they were asked for them; ask again
};
struct LeaseReply {
  int32_t status;  // LeaseStatus
  uint32_t reserved;
  uint64_t granted_bytes;
  char reason[128];  // why not (refused)
};

enum class SchedEvent : uint32_t {
  kWant = 1,      // threads wait at the gate of `device`
  kReleased = 2,  // grant `slice` given back; the work drained at `drained_ns`
};
struct Sched {
  uint32_t device;  // virtual
  uint32_t event;   // SchedEvent
  uint64_t slice;
  uint64_t drained_ns;  // CLOCK_MONOTONIC
};

// Weight of the client `pid` (when > 0), else of every client of `tenant`, until the
// client leaves or the config is reloaded. Only the broker's own user (or root) may.
struct SetWeight {
  int32_t pid;
  char tenant[64];
  double weight;
};

// A collective communicator (NCCL or RCCL) one of the client's ranks joined or left.
// Ranks of one communicator send the same `comm_id` (a hash of its unique id, or of
// the parent's and the split colour), so the broker can gather its members.
enum class CommEvent : uint32_t {
  kJoined = 1,  // this rank's init succeeded
  kLeft = 2,    // ncclCommDestroy / ncclCommAbort
};
struct Comm {
  uint32_t event;  // CommEvent
  uint32_t nranks;
  int32_t rank;      // in the communicator
  uint32_t device;   // virtual GPU the rank uses
  uint64_t comm_id;  // the same for every rank of the communicator
  uint64_t handle;   // this process's communicator (pairs kLeft with kJoined)
};

// Asked on a connection of its own before the client's driver starts (issue 20): an
// MPS client's SM share is fixed when its context is made, so it must be known first.
enum class MpsClass : uint32_t { kNone = 0, kCompute = 1, kMemory = 2 };
struct MpsAsk {
  char tenant[64];
  char program[64];  // the process's name: the broker remembers each program's class
  uint32_t hint;     // MpsClass the client says it is (GPUSHARE_CLASS); kNone: unknown
};
struct MpsTerms {
  uint32_t percent;           // CUDA_MPS_ACTIVE_THREAD_PERCENTAGE; 0: stay out of MPS (time-sliced)
  char pipe_directory[108];   // CUDA_MPS_PIPE_DIRECTORY
  char reason[128];           // why not co-located, or on which class's share
};

// A payload of text (JSON, a reply line): any length up to kMaxPayload.
using Text = std::string;

// One decoded message, or why the bytes are not one.
struct Message {
  Type type;
  std::vector<uint8_t> payload;
};

// Encodes a header and a payload struct.
template <typename T>
std::vector<uint8_t> Encode(Type type, const T& payload) {
  static_assert(std::is_trivially_copyable_v<T>, "a fixed-size payload is copied as bytes");
  std::vector<uint8_t> out(sizeof(Header) + sizeof(T));
  Header h{kMagic, kVersion, static_cast<uint16_t>(type), static_cast<uint32_t>(sizeof(T))};
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, &payload, sizeof(T));
  return out;
}
std::vector<uint8_t> EncodeText(Type type, const std::string& text);
// A Hello as the oldest broker that can take it reads it: without a profile, in its
// older, shorter form, so that a client without a profile still registers with a
// broker that predates profiles.
std::vector<uint8_t> EncodeHello(const Hello& hello);
inline std::vector<uint8_t> Encode(Type type, const Text& payload) { return EncodeText(type, payload); }

// Splits one message off the front of `buffer` (bytes received so far). Returns the
// message and consumes its bytes; nullopt with `error` empty if more bytes are needed;
// nullopt with `error` set if the bytes can never form a message (the peer is to be
// dropped): bad magic or version, unknown type, wrong size for the type, oversize.
std::optional<Message> Split(std::vector<uint8_t>* buffer, std::string* error);

// A payload as its struct, with every string made NUL-terminated and every count
// clamped, so nothing a peer sends can be read past its bounds.
template <typename T>
T As(const Message& m) {
  T out{};  // what an older peer's shorter payload lacks reads as zeros
  std::memcpy(&out, m.payload.data(), std::min(sizeof(T), m.payload.size()));
  return out;
}
Hello Sanitized(Hello h);
Welcome Sanitized(Welcome w);
Take Sanitized(Take t);
TakeReply Sanitized(TakeReply r);
inline Give Sanitized(Give g) { return g; }  // numbers only: each is checked where it is used
Lease Sanitized(Lease l);
LeaseReply Sanitized(LeaseReply r);
Sched Sanitized(Sched s);
SetWeight Sanitized(SetWeight s);
Comm Sanitized(Comm c);
MpsAsk Sanitized(MpsAsk a);
MpsTerms Sanitized(MpsTerms t);

// A message's payload as the type messages.def gives it, sanitized: what the broker's
// dispatch hands each handler (T is the payload named there).
template <typename T>
T Decode(const Message& m) {
  return Sanitized(As<T>(m));
}
template <>
inline Text Decode<Text>(const Message& m) {
  return Text(m.payload.begin(), m.payload.end());
}

// The payload type of a message type, from messages.def (PayloadOf<Type::kWelcome> is
// Welcome, PayloadOf<Type::kToolReply> Text): the broker's handlers are typed by it.
template <Type>
struct PayloadType;
#define GS_REQUEST(name, number, payload, route, reply) \
  template <>                                           \
  struct PayloadType<Type::k##name> {                   \
    using type = payload;                               \
  };
#define GS_NOTICE(name, number, payload, route) GS_REQUEST(name, number, payload, route, none)
#define GS_REPLY(name, number, payload) GS_REQUEST(name, number, payload, kReply, none)
#include "messages.def"
#undef GS_REQUEST
#undef GS_NOTICE
#undef GS_REPLY
template <Type T>
using PayloadOf = typename PayloadType<T>::type;

// Copies a string into a fixed array, truncating, NUL-terminated.
template <size_t N>
void SetString(char (&dst)[N], const std::string& s) {
  std::memset(dst, 0, N);
  std::memcpy(dst, s.data(), std::min(s.size(), N - 1));
}

}  // namespace gpushare::protocol
