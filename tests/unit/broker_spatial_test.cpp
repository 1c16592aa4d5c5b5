// The spatial-sharing policy: CU masks as sets, which flow gets which CUs for its class,
// and which flows may hold one GPU at once. Exact results. Then BrokerCore's wiring with
// a fake channel host: masks published on class changes, co-held grants, status.
#include "broker/policy/spatial.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "broker/core/broker_core.h"

namespace gpushare::broker {
namespace {

using WC = WorkClass;

TEST(CuMask, RangeSetsExactlyThoseCusAcrossWords) {
  const CuMask m = CuMask::Range(30, 4);  // 30, 31 in word 0; 32, 33 in word 1
  EXPECT_EQ(m.words()[0], 0xc0000000u);
  EXPECT_EQ(m.words()[1], 0x3u);
  EXPECT_EQ(m.Count(), 4u);
  EXPECT_TRUE(m.Has(33));
  EXPECT_FALSE(m.Has(34));
  EXPECT_EQ(m.UsedWords(), 2u);
  EXPECT_EQ(m.Hex(), "0x3c0000000");
}

TEST(CuMask, RangeIsClippedAtTheLargestMask) {
  EXPECT_EQ(CuMask::Range(500, 100).Count(), 12u);
  EXPECT_EQ(CuMask::Range(0, kMaxCus).Count(), kMaxCus);
  EXPECT_EQ(CuMask::Range(0, 1000).UsedWords(), kCuMaskWords);
  EXPECT_TRUE(CuMask::Range(600, 4).Empty());
  EXPECT_EQ(CuMask().Hex(), "0x0");
}

TEST(CuMask, OverlapAndUnion) {
  const CuMask low = CuMask::Range(0, 15);
  const CuMask high = CuMask::Range(15, 45);
  EXPECT_FALSE(low.Overlaps(high));
  EXPECT_TRUE(low.Overlaps(CuMask::Range(14, 1)));
  CuMask both = low;
  both |= high;
  EXPECT_EQ(both, CuMask::Range(0, 60));
  EXPECT_EQ(CuMask::FromWords(both.words().data(), both.UsedWords()), both);
}

TEST(SpatialPolicy, MemoryCusIsThePercentRoundedAndLeavesComputeSome) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  EXPECT_EQ(p.MemoryCus(60), 15u);
  EXPECT_EQ(p.MemoryCus(104), 26u);
  EXPECT_EQ(p.MemoryCus(110), 28u);                                      // 27.5 rounds up
  EXPECT_EQ(p.MemoryCus(2), 1u);                                         // 0.5: at least one
  EXPECT_EQ(p.MemoryCus(3), 1u);                                         // 0.75 -> 1
  EXPECT_EQ(SpatialPolicy(SpatialMode::kCuMask, 99).MemoryCus(10), 9u);  // at most all but one
  EXPECT_EQ(SpatialPolicy(SpatialMode::kCuMask, 1).MemoryCus(10), 1u);
}

TEST(SpatialPolicy, MemoryBoundGetsTheLowCusAndComputeBoundTheRest) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kMemory}, {2, 0, WC::kCompute}});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], (SpatialAssignment{1, 0, CuMask::Range(0, 15), 0.25}));
  EXPECT_EQ(a[1], (SpatialAssignment{2, 0, CuMask::Range(15, 45), 0.75}));
  EXPECT_EQ(a[0].mask->Hex(), "0x7fff");
  EXPECT_EQ(a[1].mask->Hex(), "0xfffffffffff8000");
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[0].mask, a[1].mask));
}

TEST(SpatialPolicy, AComputeBoundFlowWithoutAMemoryBoundNeighbourKeepsTheWholeGpu) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kCompute}, {2, 0, WC::kCompute}});
  EXPECT_FALSE(a[0].mask.has_value());
  EXPECT_FALSE(a[1].mask.has_value());
  EXPECT_EQ(a[0].fraction, 1.0);
}

TEST(SpatialPolicy, AMemoryBoundFlowAloneIsStillHeldToItsCus) {
  // Its kernels are as fast there (those CUs saturate the bandwidth), and a compute-bound
  // client that comes later finds it already masked.
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(64, {{7, 1, WC::kMemory}});
  EXPECT_EQ(a[0], (SpatialAssignment{7, 1, CuMask::Range(0, 16), 0.25}));
}

TEST(SpatialPolicy, TwoMemoryBoundFlowsShareTheLowCusAndSoTakeTurns) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kMemory}, {2, 0, WC::kMemory}, {3, 0, WC::kCompute}});
  EXPECT_EQ(a[0].mask, a[1].mask);
  EXPECT_FALSE(SpatialPolicy::MayCoHold(a[0].mask, a[1].mask));
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[0].mask, a[2].mask));
  EXPECT_TRUE(SpatialPolicy::MayCoHold(a[1].mask, a[2].mask));
}

TEST(SpatialPolicy, CopyUnknownAndIdleFlowsAreNotMaskedAndShareWithNobody) {
  SpatialPolicy p(SpatialMode::kCuMask, 25);
  auto a = p.Assign(60, {{1, 0, WC::kCopy}, {2, 0, WC::kUnknown}, {3, 0, WC::kIdle}, {4, 0, WC::kMemory}});
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(a[i].mask.has_value()) << i;
    EXPECT_FALSE(SpatialPolicy::MayCoHold(a[i].mask, a[3].mask)) << i;
  }
  EXPECT_FALSE(SpatialPolicy::MayCoHold(std::nullopt, std::nullopt));
}

TEST(SpatialPolicy, OffOrUnknownCuCountMasksNobody) {
  const std::vector<SpatialFlow> flows = {{1, 0, WC::kMemory}, {2, 0, WC::kCompute}};
  for (const auto& a : SpatialPolicy(SpatialMode::kOff, 25).Assign(60, flows)) EXPECT_FALSE(a.mask.has_value());
  SpatialPolicy on(SpatialMode::kCuMask, 25);
  for (unsigned cus : {0u, 1u, kMaxCus + 1})
    for (const auto& a : on.Assign(cus, flows)) EXPECT_FALSE(a.mask.has_value()) << cus;
  EXPECT_TRUE(on.Assign(kMaxCus, flows)[0].mask.has_value());
}

TEST(SpatialPolicy, ThePercentIsHonoured) {
  SpatialPolicy p(SpatialMode::kCuMask, 50);
  auto a = p.Assign(120, {{1, 0, WC::kCompute}, {2, 0, WC::kMemory}});
  EXPECT_EQ(a[0], (SpatialAssignment{1, 0, CuMask::Range(60, 60), 0.5}));
  EXPECT_EQ(a[1], (SpatialAssignment{2, 0, CuMask::Range(0, 60), 0.5}));
}

namespace proto = gpushare::protocol;

// What the core publishes: CU masks (and how often) and gates, per flow.
class MaskChannels : public ChannelHost {
 public:
  std::string Create(ClientId id, const PeerCredentials&) override { return "fake." + std::to_string(id); }
  void Publish(ClientId, const Grants&) override {}
  void Destroy(ClientId) override {}
  void SetGate(ClientId id, int device, uint32_t state, uint64_t) override { gates[{id, device}] = state; }
  void SetCuMask(ClientId id, int device, const std::optional<CuMask>& mask) override {
    masks[{id, device}] = mask;
    ++mask_writes;
  }
  size_t Drain(ClientId id, const std::function<void(const proto::RecordData&)>& on_record) override {
    size_t n = 0;
    for (const proto::RecordData& r : pending[id]) on_record(r), ++n;
    pending[id].clear();
    return n;
  }
  std::string KernelName(ClientId id, uint16_t) override { return names[id]; }
  std::map<std::pair<ClientId, int>, std::optional<CuMask>> masks;
  int mask_writes = 0;
  std::map<std::pair<ClientId, int>, uint32_t> gates;
  std::map<ClientId, std::vector<proto::RecordData>> pending;
  std::map<ClientId, std::string> names;  // each client launches one kernel
};

class SpatialCoreTest : public ::testing::Test {
 protected:
  static BrokerConfig Config(SpatialMode mode) {
    BrokerConfig c;
    c.spatial = mode;
    return c;
  }
  explicit SpatialCoreTest(SpatialMode mode = SpatialMode::kCuMask)
      : core_(Config(mode), {{0, "g0", 16ull << 30, 60}}, &channels_) {
    core_.SetClock([this] { return now_; });
  }
  void Join(ClientId id, const std::string& kernel) {
    core_.Open(id, {static_cast<int32_t>(100 + id), 1000, 1000});
    proto::Hello h{};
    proto::SetString(h.tenant, std::to_string(id));  // one tenant each (not "t" + id: GCC 12's -Wrestrict)
    h.weight = 1;
    h.device_count = 1;
    for (int v = 0; v < proto::kMaxDevices; ++v) h.visible[v] = v == 0 ? 0 : -1;
    Input(id, proto::Encode(proto::Type::kHello, h));
    channels_.names[id] = kernel;
  }
  void Input(ClientId id, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t> in = bytes, out;
    std::string error;
    ASSERT_TRUE(core_.Input(id, &in, &out, &error)) << error;
  }
  void Want(ClientId id) {
    const proto::Sched want{0, static_cast<uint32_t>(proto::SchedEvent::kWant), 0, 0};
    Input(id, proto::Encode(proto::Type::kSched, want));
  }
  // Both clients launch their kernels for `rounds` evaluation periods.
  void Work(std::initializer_list<ClientId> ids, int rounds) {
    for (int round = 0; round < rounds; ++round) {
      for (ClientId id : ids)
        for (int i = 0; i < 20; ++i) {
          proto::RecordData r{};
          r.kind = proto::RecordKind::kKernel;
          r.name = 1;
          channels_.pending[id].push_back(r);
        }
      now_ += 100'000'000;
      core_.Poll();
    }
  }
  nlohmann::json Client(const nlohmann::json& status, int pid) {
    for (const auto& c : status["clients"])
      if (c["pid"] == pid) return c;
    return nullptr;
  }

  MaskChannels channels_;
  BrokerCore core_;
  uint64_t now_ = 1'000'000'000;
};

TEST_F(SpatialCoreTest, ClassesPublishDisjointMasksAndBothFlowsHoldTheGpu) {
  Join(1, "simgpu_memory_500us");
  Join(2, "simgpu_compute_500us");
  EXPECT_TRUE(channels_.masks.empty());  // unknown classes: no mask
  Work({1, 2}, 3);
  EXPECT_EQ((channels_.masks[{1, 0}]), CuMask::Range(0, 15));
  EXPECT_EQ((channels_.masks[{2, 0}]), CuMask::Range(15, 45));
  const int writes = channels_.mask_writes;
  Work({1, 2}, 3);
  EXPECT_EQ(channels_.mask_writes, writes);  // published on a change only
  Want(1);
  Want(2);
  EXPECT_EQ((channels_.gates[{1, 0}]), proto::kGateHeld);  // on disjoint CUs: both at once
  EXPECT_EQ((channels_.gates[{2, 0}]), proto::kGateHeld);
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(s["gpus"][0]["cu_count"], 60);
  EXPECT_EQ(Client(s, 101)["cu_mask"], "0x7fff");
  EXPECT_EQ(Client(s, 101)["cu_count"], 15);
  EXPECT_EQ(Client(s, 102)["devices"][0]["cu_mask"], "0xfffffffffff8000");
  EXPECT_EQ(Client(s, 102)["devices"][0]["cu_count"], 45);
  EXPECT_TRUE(Client(s, 101)["devices"][0]["holding"] && Client(s, 102)["devices"][0]["holding"]);
}

TEST_F(SpatialCoreTest, AComputeBoundClientGetsTheWholeGpuBackWhenTheMemoryBoundOneLeaves) {
  Join(1, "simgpu_memory_500us");
  Join(2, "simgpu_compute_500us");
  Work({1, 2}, 3);
  ASSERT_TRUE((channels_.masks[{2, 0}]).has_value());
  core_.Close(1);
  EXPECT_FALSE((channels_.masks[{2, 0}]).has_value());
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(Client(s, 102)["cu_mask"], "");
  EXPECT_EQ(Client(s, 102)["cu_count"], 60);
}

TEST_F(SpatialCoreTest, AMemoryBoundClientThatPausesKeepsItsMask) {
  Join(1, "simgpu_memory_500us");
  Work({1}, 3);
  ASSERT_EQ((channels_.masks[{1, 0}]), CuMask::Range(0, 15));
  Work({}, 20);  // 2 s without a launch: idle
  EXPECT_EQ(nlohmann::json::parse(core_.StatusJson())["clients"][0]["class"], "idle");
  EXPECT_EQ((channels_.masks[{1, 0}]), CuMask::Range(0, 15));
}

TEST_F(SpatialCoreTest, AReloadWithSpatialOffWithdrawsEveryMask) {
  Join(1, "simgpu_memory_500us");
  Join(2, "simgpu_compute_500us");
  Work({1, 2}, 3);
  core_.Reload(BrokerConfig{});
  Work({1, 2}, 1);
  EXPECT_FALSE((channels_.masks[{1, 0}]).has_value());
  EXPECT_FALSE((channels_.masks[{2, 0}]).has_value());
  Want(1);
  Want(2);
  EXPECT_NE((channels_.gates[{1, 0}]), (channels_.gates[{2, 0}]));  // one holds, one waits: exclusive again
}

class SpatialOffCoreTest : public SpatialCoreTest {
 protected:
  SpatialOffCoreTest() : SpatialCoreTest(SpatialMode::kOff) {}
};

TEST_F(SpatialOffCoreTest, NoMaskIsEverPublished) {
  Join(1, "simgpu_memory_500us");
  Join(2, "simgpu_compute_500us");
  Work({1, 2}, 3);
  EXPECT_EQ(channels_.mask_writes, 0);
  EXPECT_EQ(nlohmann::json::parse(core_.StatusJson())["clients"][0]["cu_mask"], "");
}

// Under MPS the plan is the shares clients were told before their contexts (MpsAsk),
// published to the scheduler only: the client's share is in its environment.
class MpsPlanCoreTest : public SpatialCoreTest {
 protected:
  MpsPlanCoreTest() : SpatialCoreTest(SpatialMode::kMps) {
    BrokerConfig c = Config(SpatialMode::kMps);
    for (const char* t : {"1", "2", "3"}) c.tenants[t].colocate = true;
    core_.Reload(c);
    core_.SetMpsPipe("/run/mps");
  }
  // Client `id` asks for a share as `cls` (its pid is 100 + id, as Join's), then joins.
  void AskAndJoin(ClientId id, proto::MpsClass cls, const std::string& kernel) {
    core_.Open(1000 + id, {static_cast<int32_t>(100 + id), 1000, 1000});
    proto::MpsAsk a{};
    proto::SetString(a.tenant, std::to_string(id));
    a.hint = static_cast<uint32_t>(cls);
    Input(1000 + id, proto::Encode(proto::Type::kMpsAsk, a));
    core_.Close(1000 + id);
    Join(id, kernel);
  }
};

TEST_F(MpsPlanCoreTest, AnUnlikePairCoHoldsOnItsSharesAndLikeKindsTakeTurns) {
  AskAndJoin(1, proto::MpsClass::kMemory, "simgpu_memory_500us");
  AskAndJoin(2, proto::MpsClass::kCompute, "simgpu_compute_500us");
  Want(1);
  Want(2);
  EXPECT_EQ((channels_.gates[{1, 0}]), proto::kGateHeld);  // 0-24 and 25-99: both at once
  EXPECT_EQ((channels_.gates[{2, 0}]), proto::kGateHeld);
  EXPECT_EQ(channels_.mask_writes, 0);  // nothing for the client's channel
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(Client(s, 101)["devices"][0]["mps_percent"], 25);
  EXPECT_EQ(Client(s, 102)["devices"][0]["mps_percent"], 75);
  // A second compute-bound client overlaps the first: it waits for its turn.
  AskAndJoin(3, proto::MpsClass::kCompute, "simgpu_compute_500us");
  Want(3);
  EXPECT_EQ((channels_.gates[{3, 0}]), proto::kGateWait);
}

TEST_F(MpsPlanCoreTest, AClassChangeKeepsTheShareUntilTheProgramRunsAgain) {
  AskAndJoin(1, proto::MpsClass::kNone, "simgpu_memory_500us");  // not known yet: out of MPS
  Work({1}, 3);                                                    // measured memory-bound
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(Client(s, 101)["class"], "memory");
  EXPECT_EQ(Client(s, 101)["devices"][0]["mps_percent"], 0);  // its context has no share
  core_.Close(1);
  AskAndJoin(1, proto::MpsClass::kNone, "simgpu_memory_500us");  // its next run
  Want(1);
  s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(Client(s, 101)["devices"][0]["mps_percent"], 25);
}

TEST_F(MpsPlanCoreTest, WhenTheDaemonIsGoneEveryFlowNeedsTheWholeGpu) {
  AskAndJoin(1, proto::MpsClass::kMemory, "simgpu_memory_500us");
  AskAndJoin(2, proto::MpsClass::kCompute, "simgpu_compute_500us");
  core_.SetMpsPipe("");
  Want(1);
  Want(2);
  EXPECT_NE((channels_.gates[{1, 0}]), (channels_.gates[{2, 0}]));  // one holds, one waits
  auto s = nlohmann::json::parse(core_.StatusJson());
  EXPECT_EQ(Client(s, 101)["devices"][0]["mps_percent"], 0);
  EXPECT_EQ(Client(s, 102)["devices"][0]["mps_percent"], 0);
}

}  // namespace
}  // namespace gpushare::broker
