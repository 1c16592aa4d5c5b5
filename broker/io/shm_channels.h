// Per-client shared-memory channels (protocol/channel.h) made with Boost.Interprocess:
// one POSIX shared-memory object per client, mode 0600 and, when the broker runs as
// root, owned by the client's uid, so only that client and the broker can map it.
// What a client writes there is read defensively: ring indices are checked against
// the broker's own copy, never trusted.
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "broker/core/channel_host.h"
#include "common/protocol/channel.h"

namespace gpushare::broker {

// The broker's own position in a client's ring.
struct RingCursor {
  uint64_t tail = 0;               // records consumed
  uint64_t dropped = 0;            // records lost: overwritten, malformed, never published
  uint64_t stuck_at = UINT64_MAX;  // a position found claimed but unpublished…
  uint64_t stuck_since_ns = 0;     // …since then
  size_t last_backlog = 0;         // records waiting when the last drain began
};

// How long a claimed record may stay unpublished before it is skipped: far longer
// than a preempted writer needs, short against the broker's windows.
inline constexpr uint64_t kRingStallNs = 10'000'000;

// Reads a client's launch ring (at most a ring's worth). A record claimed but not yet
// published stops the drain until a later one; one that stays unpublished for
// kRingStallNs (its writer died, or scribbles) is skipped and counted as dropped, as
// are records whose fields are out of range. Nothing in the ring is trusted.
size_t DrainRing(protocol::Channel* channel, RingCursor* cursor, uint64_t now_ns,
                 const std::function<void(const protocol::RecordData&)>& on_record);
// The same at the current CLOCK_MONOTONIC time.
size_t DrainRing(protocol::Channel* channel, RingCursor* cursor,
                 const std::function<void(const protocol::RecordData&)>& on_record);

// The broker's last look at a client's launch tallies: per entry, its key, stream,
// count and bytes as last read.
struct TallyCursor {
  struct Seen {
    uint64_t key = 0, stream = 0, count = 0, bytes = 0;
  };
  Seen seen[protocol::kTallySlots * protocol::kTallyEntries];
};

// Reports the growth of every valid tally entry since `cursor`'s last look (a new
// entry: all of it) and moves the cursor. An entry whose key, GPU, kind or name is
// out of range is skipped; one whose key or stream changed, or whose count went
// back, is taken as it now is without growth (a client scribbling over its channel
// hurts only its own accounting). Returns the launches reported.
uint64_t ReadTallies(const protocol::Channel* channel, TallyCursor* cursor,
                     const std::function<void(const protocol::RecordData&, uint64_t count)>& on_growth);

// The text of kernel name `name` (1 + its slot) once the client completed it, "" if
// none; bounded and NUL-safe whatever the client wrote.
std::string ReadKernelName(const protocol::Channel* channel, uint16_t name);

// Sets a client's gate and wakes its waiters (grant) or its drain thread (revoke).
void SetGate(protocol::Channel* channel, int device, uint32_t state, uint64_t slice);

// Publishes the CU mask of a client's virtual GPU (`count` words; 0: no mask) under the
// slot's sequence lock. Streams the client creates from then on use it.
void SetCuMask(protocol::Channel* channel, int device, const uint32_t* words, uint32_t count);

class ShmChannels : public ChannelHost {
 public:
  // `prefix` starts every segment name (the broker's pid keeps brokers apart).
  explicit ShmChannels(std::string prefix);
  ~ShmChannels() override;

  std::string Create(ClientId id, const PeerCredentials& peer) override;
  void Publish(ClientId id, const Grants& grants) override;
  void Destroy(ClientId id) override;

  void SetGate(ClientId id, int device, uint32_t state, uint64_t slice) override;
  void SetCuMask(ClientId id, int device, const std::optional<CuMask>& mask) override;
  size_t Drain(ClientId id, const std::function<void(const protocol::RecordData&)>& on_record) override;
  std::string KernelName(ClientId id, uint16_t name) override;
  RingCounts Counts(ClientId id) override;
  CollectiveCounts Collectives(ClientId id) override;
  void Tallies(ClientId id, const std::function<void(const protocol::RecordData&, uint64_t count)>& on_growth) override;
  std::optional<uint64_t> ReportedUsed(ClientId id, int device) override;
  void Recall(ClientId id) override;
  // An open descriptor of the client's segment (owned by the segment; -1 if none), for
  // the daemon to pass over the client's socket: a client in another IPC namespace (a
  // container) cannot open the segment by its name.
  int Descriptor(ClientId id) const;
  // Removes segments left by brokers that are no longer running (after a crash).
  static void RemoveStale();

 private:
  struct Segment {
    ~Segment();
    std::string name;
    int fd = -1;  // kept open to be handed to the client over its socket (Descriptor)
    boost::interprocess::mapped_region region;
    protocol::Channel* channel = nullptr;
    RingCursor cursor;
    TallyCursor tallies;
  };
  std::string prefix_;
  std::map<ClientId, std::unique_ptr<Segment>> segments_;
};

}  // namespace gpushare::broker
