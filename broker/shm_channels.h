// Per-client shared-memory channels (protocol/channel.h) made with Boost.Interprocess:
// one POSIX shared-memory object per client, mode 0600 and, when the broker runs as
// root, owned by the client's uid, so only that client and the broker can map it.
// What a client writes there is read defensively: ring indices are checked against
// the broker's own copy, never trusted.
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <functional>
#include <map>
#include <memory>

#include "broker_core.h"
#include "channel.h"

namespace gpushare::broker {

// Reads a client's launch ring. `tail` is the broker's own record of what it consumed.
// Returns the records read (at most a ring's worth); `dropped` counts records the
// client overwrote before they were read or that its indices cannot account for.
size_t DrainRing(protocol::Channel* channel, uint64_t* tail, uint64_t* dropped,
                 const std::function<void(const protocol::LaunchRecord&)>& on_record);

class ShmChannels : public ChannelHost {
 public:
  // `prefix` starts every segment name (the broker's pid keeps brokers apart).
  explicit ShmChannels(std::string prefix);
  ~ShmChannels() override;

  std::string Create(ClientId id, const PeerCredentials& peer) override;
  void Publish(ClientId id, const Grants& grants) override;
  void Destroy(ClientId id) override;

  // Drains every client's ring; returns the records read.
  size_t DrainAll(const std::function<void(ClientId, const protocol::LaunchRecord&)>& on_record);
  // Removes segments left by brokers that are no longer running (after a crash).
  static void RemoveStale();

 private:
  struct Segment {
    std::string name;
    boost::interprocess::mapped_region region;
    protocol::Channel* channel = nullptr;
    uint64_t tail = 0;
    uint64_t dropped = 0;
  };
  std::string prefix_;
  std::map<ClientId, std::unique_ptr<Segment>> segments_;
};

}  // namespace gpushare::broker
