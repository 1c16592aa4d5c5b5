// vGPU profiles: the config's [profiles] and reservations with errors naming file:line,
// instance admission (which GPUs have room, and why the others have not) and the
// inventory counts gpushare-smi vgpu shows.
#include <gtest/gtest.h>

#include "broker/policy/config.h"
#include "broker/policy/profiles.h"
#include "config_errors.h"

namespace gpushare::broker {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

using config_test::ErrorOf;

Profile Q8g() {
  Profile p;
  p.memory_bytes = 8 * kGiB;
  p.compute = 0.25;
  return p;
}

Instance Granted(int gpu, const Profile& p, const std::string& name = "q8g") {
  Instance i;
  i.profile = name;
  i.gpu = gpu;
  i.compute = p.compute;
  i.memory_bytes = p.memory_bytes;
  return i;
}

TEST(ProfileConfig, ParsesProfilesReservationAndTenantKeys) {
  std::string error;
  auto c = ParseBrokerConfig(R"(
[node]
reserved_instances = 1

[profiles.q8g]
memory = "8GiB"
compute = 0.25
max_compute = 0.5

[profiles.half]
memory = 17179869184
compute = 0.5

[tenants.render]
profile = "q8g"
max_compute = 0.3
)",
                             "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  ASSERT_EQ(c->profiles.size(), 2u);
  EXPECT_EQ(c->profiles.at("q8g").memory_bytes, 8 * kGiB);
  EXPECT_DOUBLE_EQ(c->profiles.at("q8g").compute, 0.25);
  EXPECT_EQ(c->profiles.at("q8g").max_compute, 0.5);
  EXPECT_EQ(c->profiles.at("q8g").where, "broker.toml:5");
  EXPECT_EQ(c->profiles.at("half").memory_bytes, 16 * kGiB);
  EXPECT_FALSE(c->profiles.at("half").max_compute);
  EXPECT_EQ(c->reserved.instances, 1);
  EXPECT_EQ(c->tenants.at("render").profile, "q8g");
  EXPECT_EQ(c->tenants.at("render").max_compute, 0.3);
}

TEST(ProfileConfig, ErrorsNameFileAndLine) {
  EXPECT_EQ(ErrorOf("[profiles.a]\nmemory = \"1GiB\"\ncompute = 1.5\n"),
            "broker.toml:3: profiles.a.compute: expected a fraction of a GPU in (0, 1]");
  EXPECT_EQ(ErrorOf("[profiles.a]\nmemory = \"1GiB\"\ncompute = 0\n"),
            "broker.toml:3: profiles.a.compute: expected a fraction of a GPU in (0, 1]");
  EXPECT_EQ(
      ErrorOf("[profiles.a]\nmemory = \"1GiB\"\ncompute = 0.5\nmax_compute = 0.25\n"),
      "broker.toml:4: profiles.a.max_compute: below its compute (0.500000): a ceiling under the guaranteed share");
  EXPECT_EQ(ErrorOf("[profiles.a]\nmemory = \"lots\"\ncompute = 0.5\n"),
            "broker.toml:2: profiles.a.memory: expected a size such as \"8GiB\" or a byte count");
  EXPECT_EQ(ErrorOf("[profiles.a]\ncompute = 0.5\n"),
            "broker.toml:1: profiles.a: expected a memory and a compute fraction");
  EXPECT_EQ(ErrorOf("[profiles.a]\nmemory = 1\ncompute = 0.5\ncores = 3\n"),
            "broker.toml:4: profiles.a.cores: unknown key");
  EXPECT_EQ(ErrorOf("[tenants.x]\nprofile = \"nope\"\n"),
            "broker.toml:2: tenants.x.profile: no profile \"nope\" in [profiles]");
  EXPECT_EQ(ErrorOf("[tenants.x]\nmax_compute = 2\n"),
            "broker.toml:2: tenants.x.max_compute: expected a fraction of a GPU in (0, 1]");
  EXPECT_EQ(ErrorOf("[node]\nreserved_instances = 1\nreserved_fraction = 0.1\n"),
            "broker.toml:3: node.reserved_fraction: give reserved_instances or reserved_fraction, not both");
  EXPECT_EQ(ErrorOf("[node]\nreserved_fraction = 1\n"),
            "broker.toml:2: node.reserved_fraction: expected a fraction in [0, 1)");
  EXPECT_EQ(ErrorOf("[node]\nreserved_instances = -1\n"),
            "broker.toml:2: node.reserved_instances: expected an integer from 0 to 1024");
}

TEST(ProfileConfig, AProfileThatFitsNoGpuIsNamedWithItsLine) {
  std::string error;
  auto c = ParseBrokerConfig("\n[profiles.big]\nmemory = \"48GiB\"\ncompute = 0.5\n", "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  const std::string unfit = ProfilesUnfit(*c, {32 * kGiB, 16 * kGiB});
  EXPECT_EQ(unfit.rfind("broker.toml:2: profiles.big: not one instance fits", 0), 0u) << unfit;
  EXPECT_EQ(ProfilesUnfit(*c, {64 * kGiB}), "");
  // With one instance held back per GPU, a half-GPU profile still fits (1 + 1 halves);
  // a whole-GPU one no longer does.
  c = ParseBrokerConfig(
      "[node]\nreserved_instances = 1\n[profiles.half]\nmemory = 1\ncompute = 0.5\n"
      "[profiles.whole]\nmemory = 1\ncompute = 1\n",
      "broker.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(ProfilesUnfit(*c, {kGiB}).rfind("broker.toml:6: profiles.whole:", 0), 0u);
}

TEST(InstanceAdmission, FourQuartersFillAGpuThenTheNextGpuTakesThem) {
  const Profile p = Q8g();
  const std::vector<InstanceGpu> gpus = {{32 * kGiB, 0}, {32 * kGiB, 0}};
  std::vector<Instance> granted;
  for (int i = 0; i < 4; ++i) {
    InstanceFit fit = FitInstance("q8g", p, gpus, granted, {}, {0, 1});
    EXPECT_EQ(fit.gpus, (std::vector<int>{0, 1}));
    granted.push_back(Granted(0, p));
  }
  InstanceFit fit = FitInstance("q8g", p, gpus, granted, {}, {0, 1});
  EXPECT_EQ(fit.gpus, (std::vector<int>{1}));
  for (int i = 0; i < 4; ++i) granted.push_back(Granted(1, p));
  fit = FitInstance("q8g", p, gpus, granted, {}, {0, 1});
  EXPECT_TRUE(fit.gpus.empty());
  EXPECT_EQ(fit.refusal,
            "no instance of profile \"q8g\" (8.00 GiB, compute 0.25) is free on the GPUs it may use: "
            "GPU 0: compute 1.00 of 1.00 granted, memory 32.00 GiB granted to instances and 0 B promised to others of "
            "32.00 GiB; GPU 1: compute 1.00 of 1.00 granted, memory 32.00 GiB granted to instances and 0 B promised "
            "to others of 32.00 GiB");
}

TEST(InstanceAdmission, MemoryAndComputeAreEachLimits) {
  Profile p = Q8g();
  // 20 GiB holds two 8 GiB instances though compute would allow four.
  std::vector<InstanceGpu> gpus = {{20 * kGiB, 0}};
  std::vector<Instance> granted = {Granted(0, p), Granted(0, p)};
  InstanceFit fit = FitInstance("q8g", p, gpus, granted, {}, {0});
  EXPECT_TRUE(fit.gpus.empty());
  EXPECT_NE(fit.refusal.find("GPU 0: memory 16.00 GiB granted"), std::string::npos) << fit.refusal;
  // Memory promised to clients without an instance counts too.
  gpus = {{32 * kGiB, 20 * kGiB}};
  EXPECT_EQ(FitInstance("q8g", p, gpus, {}, {}, {0}).gpus, (std::vector<int>{0}));
  EXPECT_TRUE(FitInstance("q8g", p, gpus, {Granted(0, p)}, {}, {0}).gpus.empty());
  // Thirds: three fit (0.33 x 3 <= 1 with the slack), a fourth does not.
  Profile third;
  third.memory_bytes = 1;
  third.compute = 1.0 / 3;
  granted = {Granted(0, third, "t"), Granted(0, third, "t")};
  EXPECT_EQ(FitInstance("t", third, {{kGiB, 0}}, granted, {}, {0}).gpus, (std::vector<int>{0}));
  granted.push_back(Granted(0, third, "t"));
  EXPECT_TRUE(FitInstance("t", third, {{kGiB, 0}}, granted, {}, {0}).gpus.empty());
}

TEST(InstanceAdmission, ReservationsHoldInstancesBack) {
  const Profile p = Q8g();
  const std::vector<InstanceGpu> gpus = {{32 * kGiB, 0}};
  std::vector<Instance> granted = {Granted(0, p), Granted(0, p)};
  // One reserved: the third would leave no room for the reserved one.
  EXPECT_EQ(FitInstance("q8g", p, gpus, granted, {1, 0}, {0}).gpus, (std::vector<int>{0}));
  granted.push_back(Granted(0, p));
  InstanceFit fit = FitInstance("q8g", p, gpus, granted, {1, 0}, {0});
  EXPECT_TRUE(fit.gpus.empty());
  EXPECT_NE(fit.refusal.find("(1 instance(s) reserved)"), std::string::npos) << fit.refusal;
  // A quarter reserved: three quarters for instances.
  granted.pop_back();
  EXPECT_EQ(FitInstance("q8g", p, gpus, granted, {0, 0.25}, {0}).gpus, (std::vector<int>{0}));
  granted.push_back(Granted(0, p));
  EXPECT_TRUE(FitInstance("q8g", p, gpus, granted, {0, 0.25}, {0}).gpus.empty());
}

TEST(InstanceAdmission, OnlyCandidatesAreConsidered) {
  const Profile p = Q8g();
  const std::vector<InstanceGpu> gpus = {{32 * kGiB, 0}, {32 * kGiB, 0}, {32 * kGiB, 0}};
  EXPECT_EQ(FitInstance("q8g", p, gpus, {}, {}, {2, 0}).gpus, (std::vector<int>{2, 0}));
  EXPECT_EQ(FitInstance("q8g", p, gpus, {}, {}, {7}).gpus, (std::vector<int>{}));
}

TEST(InstanceInventory, CountsTotalReservedAllocatedAndAvailable) {
  const Profile p = Q8g();
  const InstanceGpu gpu{32 * kGiB, 0};
  std::vector<Instance> granted = {Granted(0, p), Granted(0, p), Granted(1, p)};
  ProfileCount c = CountInstances("q8g", p, gpu, 0, granted, {1, 0});
  EXPECT_EQ(c.total, 4);
  EXPECT_EQ(c.reserved, 1);
  EXPECT_EQ(c.allocated, 2);
  EXPECT_EQ(c.available, 1);
  c = CountInstances("q8g", p, gpu, 0, granted, {});
  EXPECT_EQ(c.reserved, 0);
  EXPECT_EQ(c.available, 2);
  // Another profile's instance takes room from this one's count.
  Profile half;
  half.memory_bytes = 16 * kGiB;
  half.compute = 0.5;
  granted = {Granted(0, half, "half")};
  c = CountInstances("q8g", p, gpu, 0, granted, {});
  EXPECT_EQ(c.allocated, 0);
  EXPECT_EQ(c.available, 2);
  c = CountInstances("q8g", p, gpu, 0, granted, {0, 0.5});
  EXPECT_EQ(c.reserved, 2);
  EXPECT_EQ(c.available, 0);
}

}  // namespace
}  // namespace gpushare::broker
