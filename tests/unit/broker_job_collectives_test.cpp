// CollectiveJobs: clients' collective time (their channels) grouped per job and set over
// the GPU time the scheduler charged them.
#include <gtest/gtest.h>

#include <map>

#include "broker/core/job_collectives.h"

namespace gpushare::broker {
namespace {

// Collective counters per client, as a client's channel would hold them.
class Channels : public ChannelHost {
 public:
  std::string Create(ClientId, const PeerCredentials&) override { return ""; }
  void Publish(ClientId, const Grants&) override {}
  void Destroy(ClientId) override {}
  CollectiveCounts Collectives(ClientId id) override { return counts[id]; }
  std::map<ClientId, CollectiveCounts> counts;
};

constexpr uint64_t kMs = 1'000'000;

class JobCollectivesTest : public ::testing::Test {
 protected:
  ClientRecord& Client(ClientId id, int32_t pid, const std::string& tenant, const std::string& job,
                       std::vector<int> gpus) {
    ClientRecord& c = clients_.Add(id);
    c.peer.pid = pid;
    c.tenant = tenant;
    c.job = job;
    c.physical = std::move(gpus);
    return c;
  }
  // The scheduler charges client `id`'s virtual GPU `device` (on `gpu`) `held_ns`: a grant given back.
  void Charge(ClientId id, int device, int gpu, uint64_t held_ns) {
    scheduler_.AddFlow(id, device, gpu, 1.0);
    scheduler_.Want(id, device, now_);
    const auto actions = scheduler_.Tick(now_);
    ASSERT_EQ(actions.size(), 1u);
    now_ += held_ns;
    scheduler_.Released(id, device, actions[0].slice, now_, now_);
  }
  std::vector<JobCollectives> Jobs() { return CollectiveJobs(clients_, scheduler_, &channels_, now_); }

  ClientRegistry clients_;
  Scheduler scheduler_{Scheduler::Params{}};
  Channels channels_;
  uint64_t now_ = 1'000'000'000;
};

TEST_F(JobCollectivesTest, AJobsRanksAddUpOverTheGpuTimeTheyWereCharged) {
  Client(1, 101, "t", "pair", {0});
  Client(2, 102, "t", "pair", {1});
  Charge(1, 0, 0, 100 * kMs);
  Charge(2, 0, 1, 100 * kMs);
  channels_.counts[1] = {{30 * kMs}, 3};
  channels_.counts[2] = {{50 * kMs}, 3};
  const auto jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].tenant, "t");
  EXPECT_EQ(jobs[0].job, "pair");
  EXPECT_EQ(jobs[0].pids, (std::vector<int32_t>{101, 102}));
  EXPECT_EQ(jobs[0].gpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(jobs[0].collectives, 6u);
  EXPECT_EQ(jobs[0].collective_ns, 80 * kMs);
  EXPECT_EQ(jobs[0].gpu_ns, 200 * kMs);
  ASSERT_TRUE(jobs[0].share());
  EXPECT_DOUBLE_EQ(*jobs[0].share(), 0.4);
}

TEST_F(JobCollectivesTest, JobsAreKeptApartByTenantAndAClientWithoutAJobIsItsOwn) {
  Client(1, 101, "a", "train", {0});
  Client(2, 102, "b", "train", {0});
  Client(3, 103, "a", "", {1});
  Client(4, 104, "a", "train-quiet", {1});  // timed nothing: no job line
  for (ClientId id : {1, 2, 3}) channels_.counts[id] = {{kMs}, 1};
  const auto jobs = Jobs();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].tenant + "/" + jobs[0].job, "a/pid 103");
  EXPECT_EQ(jobs[1].tenant + "/" + jobs[1].job, "a/train");
  EXPECT_EQ(jobs[2].tenant + "/" + jobs[2].job, "b/train");
}

TEST_F(JobCollectivesTest, WithoutChargedGpuTimeThereIsNoShare) {
  Client(1, 101, "t", "pair", {0});
  channels_.counts[1] = {{10 * kMs}, 1};
  const auto jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_FALSE(jobs[0].scheduled);
  EXPECT_FALSE(jobs[0].share());
  EXPECT_EQ(jobs[0].collective_ns, 10 * kMs);
}

TEST_F(JobCollectivesTest, AClientsFiguresCountOnlyForItsGpusSaturateAndTheShareIsAtMostOne) {
  Client(1, 101, "t", "pair", {0});
  Client(2, 102, "t", "pair", {1});
  Charge(1, 0, 0, 10 * kMs);
  channels_.counts[1] = {{UINT64_MAX - 5, 7 * kMs, 9 * kMs}, 2};  // devices 1 and 2: not its own
  channels_.counts[2] = {{UINT64_MAX}, 1};
  const auto jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].collective_ns, UINT64_MAX);
  ASSERT_TRUE(jobs[0].share());
  EXPECT_EQ(*jobs[0].share(), 1.0);
  const ClientCollectives one = CollectivesOf(1, clients_.at(1), &channels_);
  EXPECT_EQ(one.ns, (std::vector<uint64_t>{UINT64_MAX - 5}));
}

}  // namespace
}  // namespace gpushare::broker
