// libgpushare.so in standalone mode on simgpu, in real processes: virtual devices,
// memory caps on every route into the driver, the memory views, threads racing to a
// cap, and malformed settings.
#include <gtest/gtest.h>

#include "simgpu_control.h"
#include "subprocess.h"

using testing_support::Field;
using testing_support::RunToEnd;
using testing_support::SimNode;

namespace {

constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

const char* kNode = R"({"gpus": [{"name": "alpha", "memory": 4294967296}, {"name": "beta", "memory": 2147483648}],
                        "links": [[0, 1, "pcie"]]})";

testing_support::RunResult Client(const SimNode& node, std::vector<std::string> args,
                                  std::map<std::string, std::string> env = {}) {
  auto all = node.Env();
  all["LD_PRELOAD"] = GPUSHARE_LIB;
  for (auto& [k, v] : env) all[k] = v;
  args.insert(args.begin(), CLIENT_PATH);
  return RunToEnd(args, all);
}

class ShimRoutes : public ::testing::TestWithParam<std::string> {};

TEST_P(ShimRoutes, WithoutSettingsTheNodeIsSeenAsItIs) {
  SimNode node(kNode);
  auto r = Client(node, {GetParam(), "info"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "count"), 2u) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_totalmem"), 4 * kGiB);
  EXPECT_EQ(Field(r.out, "dev1_total"), 2 * kGiB);
  EXPECT_NE(r.out.find("dev1_name=beta"), std::string::npos) << r.out;
}

TEST_P(ShimRoutes, CapHoldsAndRefusalIsTheApisOutOfMemory) {
  SimNode node(kNode);
  auto r = Client(node, {GetParam(), "fill", "0", std::to_string(256 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 1 * kGiB) << r.out;
  EXPECT_NE(r.out.find("stopped_by=CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cuMemAlloc: out of memory on virtual GPU 0 (physical 0)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after_free=CUDA_SUCCESS"), std::string::npos) << r.out;
}

TEST_P(ShimRoutes, MemoryViewsShowTheCap) {
  SimNode node(kNode);
  auto r = Client(node, {GetParam(), "info"}, {{"GPUSHARE_MEMORY_LIMIT", "0=1GiB,1=512MiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_totalmem"), 1 * kGiB);
  EXPECT_EQ(Field(r.out, "dev0_total"), 1 * kGiB);
  EXPECT_EQ(Field(r.out, "dev0_free"), 1 * kGiB);
  EXPECT_EQ(Field(r.out, "dev1_totalmem"), 512 * kMiB);
  EXPECT_EQ(Field(r.out, "dev1_free"), 512 * kMiB);
}

// simgpu itself fails a call the shim hooks (control interface): the application gets
// the driver's error as it is, and the shim's ledger holds nothing for it.
TEST_P(ShimRoutes, AFailureOfTheDriverUnderAHookReachesTheApplication) {
  SimNode node(kNode);
  ASSERT_EQ(simgpuControlOpen(node.config_path().c_str(), node.name().c_str()), 0);
  ASSERT_EQ(simgpuControlFailCall("cuMemAlloc", 700 /* CUDA_ERROR_ILLEGAL_ADDRESS */, 1, 0), 0);
  auto r = Client(node, {GetParam(), "fill", "0", std::to_string(256 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 0u) << r.out;
  EXPECT_NE(r.out.find("stopped_by=CUDA_ERROR_ILLEGAL_ADDRESS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dev0_free=" + std::to_string(kGiB) + " "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after_free=CUDA_SUCCESS"), std::string::npos) << r.out;
  EXPECT_EQ(simgpuControlFaultHits(), 1);
}

// The driver reports an entry point as absent (an older driver, a stripped one): the
// shim's cuGetProcAddress passes the answer on rather than handing out its hook.
TEST(Shim, AnEntryPointTheDriverDoesNotFindIsNotFoundThroughTheShim) {
  SimNode node(kNode);
  ASSERT_EQ(simgpuControlOpen(node.config_path().c_str(), node.name().c_str()), 0);
  ASSERT_EQ(simgpuControlHideProc("cuMemAllocPitch", 0), 0);
  auto r = Client(node, {"getproc", "info"});
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("lookup failed cuMemAllocPitch"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(EveryRoute, ShimRoutes, ::testing::Values("link", "dlsym", "getproc"));

// The driver refuses an allocation the cap allows (the device is full of others' memory
// the shim cannot see, or the driver fails): the application gets the API's own
// out-of-memory error, the shim's ledger gives the reservation back, and the node's
// memory shows nothing held for it.
TEST(Shim, ADriverRefusalUnderTheCapIsTheApisOutOfMemoryAndTheLedgerStaysRight) {
  SimNode node(kNode);
  ASSERT_EQ(simgpuControlOpen(node.config_path().c_str(), node.name().c_str()), 0);
  ASSERT_EQ(simgpuControlFailAllocations(0, 1, SIMGPU_CONTROL_ANY_PROCESS), 0);
  auto r = Client(node, {"link", "fill", "0", std::to_string(256 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 0u) << r.out;
  EXPECT_NE(r.out.find("stopped_by=CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("out of memory on virtual GPU"), std::string::npos) << r.out;  // not the cap's refusal
  EXPECT_NE(r.out.find("dev0_free=" + std::to_string(kGiB) + " "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after_free=CUDA_SUCCESS"), std::string::npos) << r.out;
  EXPECT_EQ(simgpuControlFaultHits(), 1);
  // Stream-ordered allocation too: the refused cuMemAllocAsync leaves the ledger as it was.
  ASSERT_EQ(simgpuControlFailAllocations(0, 1, SIMGPU_CONTROL_ANY_PROCESS), 0);
  r = Client(node, {"link", "families", "0"}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  EXPECT_NE(r.out.find("async=CUDA_ERROR_OUT_OF_MEMORY free=1024\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pool=CUDA_SUCCESS pool_alloc=CUDA_SUCCESS free=896"), std::string::npos) << r.out;
  EXPECT_EQ(simgpuControlUsedBytes(0), 0);  // the clients are gone, and so is what they held
}

// ---- The shim on simgpu's driver variants (build/simgpu/variants/<name>/libcuda.so.1) ----

// The variant's libcuda.so.1 first; NVML and the rest from the standard simgpu.
std::map<std::string, std::string> OnVariant(const std::string& variant, std::map<std::string, std::string> env = {}) {
  env["LD_LIBRARY_PATH"] = std::string(SIMGPU_DIR) + "/variants/" + variant + ":" + SIMGPU_DIR;
  return env;
}

// A CUDA 11.x driver has cuGetProcAddress and no _v2. A runtime of that era looks the
// driver up through cuGetProcAddress: the shim must still hand out its hooks there, and
// must not invent a cuGetProcAddress_v2 the driver lacks.
TEST(ShimOnDriverVariants, WithoutGetProcAddressV2TheRuntimesLookupStillReachesTheHooks) {
  SimNode node(kNode);
  const auto cap = OnVariant("no_getprocaddress_v2", {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  auto r = Client(node, {"getproc_v1", "fill", "0", std::to_string(256 * kMiB)}, cap);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "has_v2"), 0u) << r.out;
  EXPECT_EQ(Field(r.out, "cuMemAlloc_hooked"), 1u) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 1 * kGiB) << r.out;
  EXPECT_NE(r.out.find("cuMemAlloc: out of memory on virtual GPU 0 (physical 0)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after_free=CUDA_SUCCESS"), std::string::npos) << r.out;
  r = Client(node, {"getproc", "info"}, cap);  // a CUDA 12 runtime's first step finds nothing, as without the shim
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("missing symbol cuGetProcAddress_v2"), std::string::npos) << r.out;
  r = Client(node, {"link", "info"}, OnVariant("no_getprocaddress_v2", {{"GPUSHARE_VISIBLE_DEVICES", "1"}}));
  EXPECT_EQ(Field(r.out, "count"), 1u) << r.out;
  EXPECT_NE(r.out.find("dev0_name=beta"), std::string::npos) << r.out;
  // The same lookups on the standard driver, which has both.
  r = Client(node, {"getproc_v1", "fill", "0", std::to_string(256 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  EXPECT_EQ(Field(r.out, "has_v2"), 1u) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 1 * kGiB) << r.out;
}

TEST(ShimOnDriverVariants, TheVariantWithoutGetProcAddressV2IsWhatItSays) {
  SimNode node(kNode);
  auto env = node.Env();
  env["LD_LIBRARY_PATH"] = OnVariant("no_getprocaddress_v2")["LD_LIBRARY_PATH"];
  auto r = testing_support::RunToEnd({CLIENT_PATH, "getproc_v1", "info"}, env);  // no shim
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "has_v2"), 0u) << r.out;
  EXPECT_EQ(Field(r.out, "cuMemAlloc_hooked"), 0u) << r.out;
  EXPECT_EQ(Field(r.out, "count"), 2u) << r.out;
}

// Without memory pools (CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 0) the pool family
// is CUDA_ERROR_NOT_SUPPORTED: the shim passes that on, gives back what it reserved for
// the refused calls, and every other family is charged as usual.
TEST(ShimOnDriverVariants, WithoutMemoryPoolsTheShimPassesTheRefusalOnAndKeepsItsLedger) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "families", "0"}, OnVariant("no_mempools", {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}}));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "pools_supported"), 0u) << r.out;
  EXPECT_NE(r.out.find("async=CUDA_ERROR_NOT_SUPPORTED free=1024\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("async_freed free=1024"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pool=CUDA_ERROR_NOT_SUPPORTED pool_alloc=CUDA_ERROR_NOT_SUPPORTED free=1024"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("pool_too_big=CUDA_ERROR_NOT_SUPPORTED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vmm=CUDA_SUCCESS free=512 vmm_too_big=CUDA_ERROR_OUT_OF_MEMORY vmm_released free=1024"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("array=CUDA_SUCCESS free=960 array_destroyed free=1024"), std::string::npos) << r.out;
  r = Client(node, {"getproc", "fill", "0", std::to_string(256 * kMiB)},
             OnVariant("no_mempools", {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}}));
  EXPECT_EQ(Field(r.out, "allocated"), 1 * kGiB) << r.out;
}

TEST(Shim, FreeMemoryFollowsAllocationsAndFrees) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "fill", "1", std::to_string(192 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  EXPECT_EQ(Field(r.out, "allocated"), 960 * kMiB) << r.out;  // five chunks fit, a sixth would pass 1 GiB
  // After the fill: 64 MiB left of the cap; after freeing: the whole cap.
  EXPECT_NE(r.out.find("dev1_free=" + std::to_string(64 * kMiB) + " dev1_total=" + std::to_string(kGiB)),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("dev1_free=" + std::to_string(kGiB) + " "), std::string::npos) << r.out;
}

TEST(Shim, CapNeverShowsMoreFreeThanTheDeviceHas) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "info"}, {{"GPUSHARE_MEMORY_LIMIT", "8GiB"}});
  EXPECT_EQ(Field(r.out, "dev1_free"), 2 * kGiB) << r.out;  // beta has 2 GiB
  EXPECT_EQ(Field(r.out, "dev1_totalmem"), 2 * kGiB) << r.out;
}

TEST(Shim, ContextMemoryCountsAgainstTheCap) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 4294967296, "context_memory": 268435456}]})");
  auto r = Client(node, {"link", "fill", "0", std::to_string(128 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  EXPECT_EQ(Field(r.out, "allocated"), 768 * kMiB) << r.out;  // 256 MiB of the cap is the context
  EXPECT_NE(r.out.find("dev0_free=" + std::to_string(768 * kMiB) + " "), std::string::npos) << r.out;
}

TEST(Shim, ThreadsRacingToTheCapNeverOvershootIt) {
  SimNode node(kNode);
  for (int round = 0; round < 3; ++round) {
    auto r = Client(node, {"link", "race", "0", std::to_string(16 * kMiB), "8"}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
    EXPECT_EQ(Field(r.out, "allocated"), 1 * kGiB) << r.out;
  }
}

TEST(Shim, PitchedAndManagedAllocationsAreCharged) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "pitch", "0"}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_NE(r.out.find("pitch=CUDA_SUCCESS"), std::string::npos) << r.out;
  ASSERT_NE(r.out.find("managed=CUDA_SUCCESS"), std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "pitch_bytes"), 1024u);
  EXPECT_EQ(Field(r.out, "dev0_free"), 1 * kGiB - 1 * kMiB - 64 * kMiB) << r.out;
}

TEST(Shim, StreamOrderedVmmAndArrayAllocationsAreCharged) {
  SimNode node(kNode);
  for (const char* visible : {"0,1", "1,0"}) {  // also with the pool's and VMM's device remapped
    auto r = Client(node, {"link", "families", "0"},
                    {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}, {"GPUSHARE_VISIBLE_DEVICES", visible}});
    EXPECT_EQ(Field(r.out, "pools_supported"), 1u) << r.out;
    EXPECT_NE(r.out.find("async=CUDA_SUCCESS free=768\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("async_freed free=1024"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("pool=CUDA_SUCCESS pool_alloc=CUDA_SUCCESS free=896"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("pool_too_big=CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("vmm=CUDA_SUCCESS free=512 vmm_too_big=CUDA_ERROR_OUT_OF_MEMORY vmm_released free=1024"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("array=CUDA_SUCCESS free=960 array_destroyed free=1024"), std::string::npos) << r.out;
  }
}

TEST(Shim, VisibleDevicesPickAndReorder) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "info"}, {{"GPUSHARE_VISIBLE_DEVICES", "1,0"}});
  EXPECT_EQ(Field(r.out, "count"), 2u);
  EXPECT_NE(r.out.find("dev0_name=beta"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dev1_name=alpha"), std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "dev0_free"), 2 * kGiB) << r.out;  // the context really is on beta
  r = Client(node, {"getproc", "info"}, {{"GPUSHARE_VISIBLE_DEVICES", "1"}});
  EXPECT_EQ(Field(r.out, "count"), 1u);
  EXPECT_NE(r.out.find("dev0_name=beta"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("get_out_of_range=CUDA_ERROR_INVALID_DEVICE"), std::string::npos) << r.out;
}

TEST(Shim, OrdinalsGoingOutOfTheDriverAreVirtual) {
  SimNode node(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824},
                            {"name": "c", "memory": 1073741824}], "links": [[1, 2, "nvlink"]]})");
  auto r = Client(node, {"link", "peer", "0"}, {{"GPUSHARE_VISIBLE_DEVICES", "2,1"}});
  EXPECT_NE(r.out.find("can_access=1 p2p_access=1 pointer_ordinal=1 ctx_device=1 bus_roundtrip=1"), std::string::npos)
      << r.out;
  // Peer access between the virtual GPUs' contexts, and a peer copy that moves the bytes.
  EXPECT_NE(r.out.find("enable_peer=CUDA_SUCCESS peer_copy=CUDA_SUCCESS same_bytes=1"), std::string::npos) << r.out;
  r = Client(node, {"link", "peer", "0"}, {{"GPUSHARE_VISIBLE_DEVICES", "0,2"}});  // no link between 0 and 2
  EXPECT_NE(r.out.find("can_access=0 p2p_access=0 pointer_ordinal=1 ctx_device=1 bus_roundtrip=1"), std::string::npos)
      << r.out;
  // Without P2P the driver refuses peer access, as a real one does; the copy still works (staged).
  EXPECT_NE(r.out.find("enable_peer=CUDA_ERROR_PEER_ACCESS_UNSUPPORTED peer_copy=CUDA_SUCCESS same_bytes=1"),
            std::string::npos)
      << r.out;
}

TEST(Shim, NvmlSpeaksOfVirtualGpusAndShowsTheCap) {
  SimNode node(kNode);
  auto r = Client(node, {"any", "nvml"}, {{"GPUSHARE_VISIBLE_DEVICES", "1"}, {"GPUSHARE_MEMORY_LIMIT", "512MiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "nvml_count"), 1u) << r.out;
  EXPECT_NE(r.out.find("nvml0_name=beta nvml0_index=0"), std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "nvml0_total"), 512 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "nvml0_free"), 512 * kMiB) << r.out;
  EXPECT_EQ(Field(r.out, "nvml_beyond"), 2u) << r.out;  // NVML_ERROR_INVALID_ARGUMENT
  r = Client(node, {"any", "nvml"});                    // without settings: the node as it is
  EXPECT_EQ(Field(r.out, "nvml_count"), 2u) << r.out;
  EXPECT_EQ(Field(r.out, "nvml1_total"), 2 * kGiB) << r.out;
}

TEST(Shim, EveryLookupOfTheCuda13RuntimeIsAnsweredAndHooksAreHandedOut) {
  SimNode node(kNode);
  auto r = Client(node, {"any", "replay", CUDART13_LOOKUPS});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "lookups"), 439u) << r.out;
  EXPECT_EQ(Field(r.out, "failed"), 0u) << r.out;
  EXPECT_GE(Field(r.out, "hooked"), 40u) << r.out;
  for (const char* name : {"cuMemAlloc", "cuMemFree", "cuMemGetInfo", "cuDeviceGetCount", "cuMemCreate"})
    EXPECT_EQ(Field(r.out, std::string(name) + "_hooked"), 1u) << name << "\n" << r.out;
}

// Nothing the shim throws reaches the application: with no host memory left, the
// allocation answers the API's out-of-memory error, the cap keeps no bytes for it, the
// reason is logged once, and the process goes on.
TEST_P(ShimRoutes, AnExceptionInsideTheShimIsTheApisErrorAndTheProcessLives) {
  SimNode node(kNode);
  auto r = Client(node, {GetParam(), "nomem", "0"}, {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("nomem_alloc=CUDA_ERROR_OUT_OF_MEMORY nomem_again=CUDA_ERROR_OUT_OF_MEMORY after=CUDA_SUCCESS"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(Field(r.out, "dev0_free"), 1 * kGiB - 1 * kMiB) << r.out;  // only the allocation that succeeded
  const std::string logged = "out of memory inside the shim";
  const size_t at = r.out.find(logged);
  EXPECT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(logged, at + 1), std::string::npos) << r.out;  // once
}

TEST(Shim, OutOfMemoryBacktraceOnRequest) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "fill", "0", std::to_string(512 * kMiB)},
                  {{"GPUSHARE_MEMORY_LIMIT", "1GiB"}, {"GPUSHARE_OOM_BACKTRACE", "1"}});
  EXPECT_NE(r.out.find("cuMemAlloc: out of memory on virtual GPU 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" cuMemAlloc_v2+0x"), std::string::npos) << r.out;  // a frame of the stack
}

TEST(Shim, RtldNextLookupsStayRelativeToTheirCaller) {
  SimNode node(kNode);
  auto env = node.Env();
  env["LD_PRELOAD"] = GPUSHARE_LIB;
  env["GS_PROBE_VALUE"] = "found";
  auto r = RunToEnd({RTLD_NEXT_CLIENT}, env);
  EXPECT_NE(r.out.find("rtld_next=found"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("rtld_next=self"), std::string::npos) << r.out;
}

TEST(Shim, MalformedSettingsAreNamedAndTheSafestReadingHolds) {
  SimNode node(kNode);
  auto r = Client(node, {"link", "fill", "0", std::to_string(64 * kMiB)}, {{"GPUSHARE_MEMORY_LIMIT", "lots"}});
  EXPECT_NE(r.out.find("GPUSHARE_MEMORY_LIMIT=\"lots\": not a size"), std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "allocated"), 0u) << r.out;
  r = Client(node, {"link", "info"}, {{"GPUSHARE_VISIBLE_DEVICES", "0,7"}});
  EXPECT_NE(r.out.find("GPUSHARE_VISIBLE_DEVICES names GPU 7 but the node has 2"), std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "count"), 1u) << r.out;
}

}  // namespace
