// Fuzzes DrainRing, the broker's reader of a client-written launch ring: the client
// owns ring_head and the records, and may write anything at any time, so every call
// must read at most a ring's worth, pass on only records with fields in range, account
// for every record it consumes (passed on or dropped), never pass the client's head,
// and never be held up for long by a record that is claimed but never published.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include "broker/io/shm_channels.h"
#include "common/protocol/channel.h"
#include "fuzz_target.h"

namespace {

namespace proto = gpushare::protocol;

// The program's instructions, one byte each, operands after; DrainRing runs after each.
enum class Op : uint8_t {
  kSetHead,     // 8 bytes: ring_head
  kAdvance,     // 2 bytes: ring_head += n (the client publishes n records)
  kRewind,      // 2 bytes: ring_head -= n
  kWrite,       // 2 bytes index, sizeof(LaunchRecord) bytes: one record, raw
  kFillDevice,  // 1 byte: every record's device
  kSetTail,     // 8 bytes: the broker's tail (as after a broker restart)
  kPublish,     // 1 byte n: the client claims and publishes n well-formed records
  kOpCount,
};

using Reader = FuzzInput;

uint64_t g_now = 0;  // the broker's clock, advanced by the program

void Drain(proto::Channel* channel, gpushare::broker::RingCursor* cursor) {
  const uint64_t head = channel->ring_head.load();
  const uint64_t tail_before = cursor->tail, dropped_before = cursor->dropped;
  size_t passed = 0;
  const size_t read = gpushare::broker::DrainRing(channel, cursor, g_now, [&](const proto::RecordData& r) {
    FUZZ_CHECK(r.device < proto::kMaxDevices);
    FUZZ_CHECK(r.name <= proto::kNameSlots);
    FUZZ_CHECK(static_cast<uint8_t>(r.kind) >= 1 && static_cast<uint8_t>(r.kind) <= 7);
    ++passed;
  });
  FUZZ_CHECK(read == passed);
  FUZZ_CHECK(read <= proto::kRingRecords);
  FUZZ_CHECK(channel->ring_tail.load() == cursor->tail);
  if (head >= tail_before) {
    FUZZ_CHECK(cursor->tail <= head);
    // Every record consumed was passed on or counted as dropped (modulo 2^64: a client
    // that moves its head by ~2^64 wraps the broker's counter).
    FUZZ_CHECK(passed + (cursor->dropped - dropped_before) == cursor->tail - tail_before);
  } else {
    FUZZ_CHECK(read == 0 && cursor->tail == head && cursor->dropped == dropped_before);
  }
}

// Nothing the client leaves half-written holds the broker up: drains without any
// client action reach the head, a stall period per unpublished record at most.
void DrainUntilCaughtUp(proto::Channel* channel, gpushare::broker::RingCursor* cursor) {
  const uint64_t head = channel->ring_head.load();
  if (head < cursor->tail) return;
  const uint64_t behind = std::min<uint64_t>(head - cursor->tail, proto::kRingRecords);
  for (uint64_t i = 0; i < 2 * behind + 2 && cursor->tail < head; ++i) {
    Drain(channel, cursor);
    g_now += gpushare::broker::kRingStallNs;
  }
  FUZZ_CHECK(cursor->tail == head);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Heap-allocated at its exact size, so that ASan catches any read past the ring.
  auto channel = std::make_unique<proto::Channel>();
  std::memset(static_cast<void*>(channel.get()), 0, sizeof(proto::Channel));
  Reader r(data, size);
  gpushare::broker::RingCursor cursor;
  g_now = 0;
  cursor.tail = r.Raw(8);
  channel->ring_head.store(r.Raw(8));
  for (int steps = 0; !r.done() && steps < 256; ++steps) {
    switch (static_cast<Op>(r.Byte() % static_cast<uint8_t>(Op::kOpCount))) {
      case Op::kSetHead: channel->ring_head.store(r.Raw(8)); break;
      case Op::kAdvance: channel->ring_head.fetch_add(r.Raw(2)); break;
      case Op::kRewind: channel->ring_head.fetch_sub(r.Raw(2)); break;
      case Op::kWrite: {
        const uint64_t index = r.Raw(2) % proto::kRingRecords;
        r.Bytes(&channel->ring[index], sizeof(proto::LaunchRecord));
        break;
      }
      case Op::kFillDevice: {
        const uint8_t device = r.Byte();
        for (proto::LaunchRecord& rec : channel->ring) rec.device = device;
        break;
      }
      case Op::kSetTail: cursor.tail = r.Raw(8); break;
      case Op::kPublish: {
        const uint8_t n = r.Byte();
        for (uint8_t i = 0; i < n; ++i) {
          const uint64_t pos = channel->ring_head.fetch_add(1);
          proto::LaunchRecord& rec = channel->ring[pos % proto::kRingRecords];
          rec.device = static_cast<uint8_t>(i % proto::kMaxDevices);
          rec.kind = static_cast<uint8_t>(proto::RecordKind::kKernel);
          rec.name = 0;
          rec.seq.store(pos + 1);
        }
        break;
      }
      case Op::kOpCount: break;
    }
    g_now += r.Byte() * 100'000;  // up to 25.5 ms between drains
    Drain(channel.get(), &cursor);
  }
  if (size % 7 == 0) DrainUntilCaughtUp(channel.get(), &cursor);  // now and then: costly on a big backlog
  return 0;
}

std::vector<std::vector<uint8_t>> FuzzSeeds() {
  auto u64 = [](std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto op = [](std::vector<uint8_t>& out, Op o, std::vector<uint8_t> operands) {
    out.push_back(static_cast<uint8_t>(o));
    out.insert(out.end(), operands.begin(), operands.end());
  };
  std::vector<std::vector<uint8_t>> seeds;
  {  // a client publishing a few records at a time, one naming no device
    std::vector<uint8_t> s;
    u64(s, 0);
    u64(s, 0);
    op(s, Op::kAdvance, {3, 0});
    std::vector<uint8_t> record(sizeof(proto::LaunchRecord), 0);
    record[offsetof(proto::LaunchRecord, device)] = 0x40;  // device 64
    std::vector<uint8_t> write = {1, 0};
    write.insert(write.end(), record.begin(), record.end());
    op(s, Op::kWrite, write);
    op(s, Op::kAdvance, {2, 0});
    op(s, Op::kAdvance, {0, 16});  // 4096: a whole ring
    op(s, Op::kPublish, {5});
    seeds.push_back(s);
  }
  {  // overrun by far, then rewound
    std::vector<uint8_t> s;
    u64(s, 5);
    u64(s, 100000);
    op(s, Op::kFillDevice, {17});
    op(s, Op::kAdvance, {0xff, 0x07});
    op(s, Op::kRewind, {0xff, 0xff});
    op(s, Op::kFillDevice, {1});
    op(s, Op::kAdvance, {0x10, 0});
    seeds.push_back(s);
  }
  {  // indices next to overflow
    std::vector<uint8_t> s;
    u64(s, ~uint64_t{0} - 10);
    u64(s, ~uint64_t{0});
    std::vector<uint8_t> head;
    u64(head, 0);
    op(s, Op::kSetHead, head);
    std::vector<uint8_t> tail;
    u64(tail, ~uint64_t{0} - 2000);
    op(s, Op::kSetTail, tail);
    op(s, Op::kAdvance, {0xff, 0xff});
    seeds.push_back(s);
  }
  return seeds;
}
