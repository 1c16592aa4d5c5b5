// simgpu's control interface (tests/simgpu/control/simgpu_control.h): what it shows of
// the node and the faults it injects, seen from this process (linked to simgpu's
// libcuda.so.1) and from simgpu_worker processes on the same node.
#define __CUDA_API_VERSION_INTERNAL 1  // name every versioned symbol explicitly
#include <cuda.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "simgpu_control.h"
#include "subprocess.h"

using testing_support::Child;
using testing_support::SimNode;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

#define ASSERT_CU(call) ASSERT_EQ((call), CUDA_SUCCESS) << #call

// One node for the whole run: this process's driver attaches to its environment's
// node once. Every test leaves no fault armed.
SimNode* g_node = nullptr;

class NodeEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    g_node = new SimNode(R"({"gpus": [{"name": "a", "memory": 1073741824}, {"name": "b", "memory": 1073741824}]})");
    for (const auto& [key, value] : g_node->Env()) setenv(key.c_str(), value.c_str(), 1);
    ASSERT_CU(cuInit(0));
  }
  void TearDown() override { delete g_node; }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new NodeEnvironment);

class Control : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_CU(cuDevicePrimaryCtxRetain(&ctx_, 0));
    ASSERT_CU(cuCtxSetCurrent(ctx_));
  }
  void TearDown() override {
    EXPECT_EQ(simgpuControlClearFaults(), 0) << "a test left a fault armed";
    cuCtxSynchronize();
    cuDevicePrimaryCtxRelease_v2(0);
  }
  static std::vector<simgpuControlProcess> Processes(int gpu) {
    std::vector<simgpuControlProcess> out(64);
    const int n = simgpuControlProcesses(gpu, out.data(), static_cast<int>(out.size()));
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }
  static const simgpuControlProcess* Find(const std::vector<simgpuControlProcess>& all, int pid) {
    for (const auto& p : all)
      if (p.pid == pid) return &p;
    return nullptr;
  }
  CUcontext ctx_ = nullptr;
};

TEST_F(Control, ShowsTheNodeAsItsProcessesSeeIt) {
  EXPECT_EQ(simgpuControlGpuCount(), 2);
  EXPECT_EQ(simgpuControlCapacityBytes(1), 1ll << 30);
  EXPECT_EQ(simgpuControlUsedBytes(2), SIMGPU_CONTROL_ERROR_INVALID);
  Child worker({WORKER_PATH, "hold", "1", std::to_string(256 * kMiB)}, g_node->Env());
  ASSERT_EQ(worker.ReadLine(), "allocated");
  EXPECT_EQ(simgpuControlUsedBytes(1), static_cast<long long>(256 * kMiB));
  auto procs = Processes(1);
  const simgpuControlProcess* w = Find(procs, worker.pid());
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->used_bytes, 256 * kMiB);
  EXPECT_NE(Find(procs, getpid()), nullptr);  // this process holds a slot too, since cuInit
  worker.CloseStdin();
  worker.Wait();
  EXPECT_EQ(simgpuControlUsedBytes(1), 0);  // what the dead held is reclaimed
  const auto after = Processes(1);
  EXPECT_EQ(Find(after, worker.pid()), nullptr);
}

TEST_F(Control, UtilizationCountersFollowTheProcesssKernels) {
  const std::string ptx =
      ".version 7.8\n.target sm_70\n.address_size 64\n.visible .entry simgpu_compute_3000us() { ret; }\n";
  CUmodule m;
  CUfunction f;
  ASSERT_CU(cuModuleLoadData(&m, ptx.c_str()));
  ASSERT_CU(cuModuleGetFunction(&f, m, "simgpu_compute_3000us"));
  const auto procs_before = Processes(0);
  const simgpuControlProcess* before = Find(procs_before, getpid());
  const uint64_t busy_before = before ? before->sm_busy_ns : 0;
  ASSERT_CU(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr));
  ASSERT_CU(cuCtxSynchronize());
  const auto procs = Processes(0);
  const simgpuControlProcess* self = Find(procs, getpid());
  ASSERT_NE(self, nullptr);
  EXPECT_GE(self->sm_busy_ns - busy_before, 3000000u);
  cuModuleUnload(m);
}

TEST_F(Control, FailedAllocationsAreOutOfMemoryThenTheDeviceServesAgain) {
  const long long hits = simgpuControlFaultHits();
  const long long used = simgpuControlUsedBytes(0);
  ASSERT_EQ(simgpuControlFailAllocations(0, 2, SIMGPU_CONTROL_ANY_PROCESS), 0);
  CUdeviceptr p;
  EXPECT_EQ(cuMemAlloc_v2(&p, kMiB), CUDA_ERROR_OUT_OF_MEMORY);
  CUstream s;
  ASSERT_CU(cuStreamCreate(&s, 0));
  EXPECT_EQ(cuMemAllocAsync(&p, kMiB, s), CUDA_ERROR_OUT_OF_MEMORY);              // every family counts
  EXPECT_EQ(simgpuControlUsedBytes(0), used);                                     // nothing was charged
  ASSERT_CU(cuMemAlloc_v2(&p, kMiB));                                             // two, then no more
  EXPECT_EQ(simgpuControlUsedBytes(0), used + static_cast<long long>(2 * kMiB));  // 2 MiB pages
  EXPECT_EQ(simgpuControlFaultHits(), hits + 2);
  ASSERT_CU(cuMemFree_v2(p));
  ASSERT_CU(cuStreamDestroy_v2(s));
}

TEST_F(Control, AFaultAimsAtAGpuAndAProcess) {
  ASSERT_EQ(simgpuControlFailAllocations(1, 1, SIMGPU_CONTROL_ANY_PROCESS), 0);
  CUdeviceptr p;
  ASSERT_CU(cuMemAlloc_v2(&p, kMiB));  // GPU 0: not aimed at
  ASSERT_CU(cuMemFree_v2(p));
  // Aimed at another process: this one allocates, the worker is refused.
  auto worker = testing_support::RunToEnd({WORKER_PATH, "alloc", "1", std::to_string(kMiB)}, g_node->Env());
  EXPECT_NE(worker.out.find("result=oom"), std::string::npos) << worker.out;
  ASSERT_EQ(simgpuControlFailAllocations(SIMGPU_CONTROL_ANY_GPU, 1, getpid() + 100000), 0);
  ASSERT_CU(cuMemAlloc_v2(&p, kMiB));
  ASSERT_CU(cuMemFree_v2(p));
  EXPECT_EQ(simgpuControlClearFaults(), 1);
}

TEST_F(Control, ANamedEntryPointReturnsTheArmedError) {
  ASSERT_EQ(simgpuControlFailCall("cuStreamCreate", CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, 1, 0), 0);
  CUstream s;
  EXPECT_EQ(cuStreamCreate(&s, 0), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
  ASSERT_CU(cuStreamCreate(&s, 0));
  ASSERT_CU(cuStreamDestroy_v2(s));
  // An API name covers its versioned symbols, until cleared.
  ASSERT_EQ(simgpuControlFailCall("cuMemAlloc", CUDA_ERROR_UNKNOWN, SIMGPU_CONTROL_UNTIL_CLEARED, 0), 0);
  CUdeviceptr p;
  EXPECT_EQ(cuMemAlloc_v2(&p, kMiB), CUDA_ERROR_UNKNOWN);
  EXPECT_EQ(cuMemAlloc_v2(&p, kMiB), CUDA_ERROR_UNKNOWN);
  size_t pitch;
  ASSERT_CU(cuMemAllocPitch_v2(&p, &pitch, 512, 4, 4));  // another entry point
  ASSERT_CU(cuMemFree_v2(p));
  EXPECT_EQ(simgpuControlClearFaults(), 1);
  ASSERT_CU(cuMemAlloc_v2(&p, kMiB));
  ASSERT_CU(cuMemFree_v2(p));
  // An exact ABI symbol; a mere prefix names nothing.
  ASSERT_EQ(simgpuControlFailCall("cuMemFree_v2", CUDA_ERROR_INVALID_CONTEXT, 1, 0), 0);
  ASSERT_EQ(simgpuControlFailCall("cuMemA", CUDA_ERROR_INVALID_CONTEXT, 1, 0), 0);
  ASSERT_CU(cuMemAlloc_v2(&p, kMiB));
  EXPECT_EQ(cuMemFree_v2(p), CUDA_ERROR_INVALID_CONTEXT);
  ASSERT_CU(cuMemFree_v2(p));
  EXPECT_EQ(simgpuControlClearFaults(), 1);  // "cuMemA" never fired
}

TEST_F(Control, AHiddenEntryPointIsNotFoundByGetProcAddress) {
  ASSERT_EQ(simgpuControlHideProc("cuMemAlloc", 0), 0);
  void* fn = reinterpret_cast<void*>(1);
  CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
  EXPECT_EQ(cuGetProcAddress_v2("cuMemAlloc", &fn, 13000, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(fn, nullptr);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  EXPECT_EQ(cuGetProcAddress("cuMemAlloc", &fn, 13000, 0), CUDA_ERROR_NOT_FOUND);
  ASSERT_CU(cuGetProcAddress_v2("cuMemFree", &fn, 13000, 0, &status));  // others are still found
  EXPECT_EQ(simgpuControlClearFaults(), 1);
  ASSERT_CU(cuGetProcAddress_v2("cuMemAlloc", &fn, 13000, 0, &status));
  EXPECT_EQ(fn, reinterpret_cast<void*>(&cuMemAlloc_v2));
}

TEST_F(Control, MalformedRequestsAreRefusedAndTheTableIsBounded) {
  EXPECT_EQ(simgpuControlFailAllocations(5, 1, 0), SIMGPU_CONTROL_ERROR_INVALID);
  EXPECT_EQ(simgpuControlFailAllocations(0, 0, 0), SIMGPU_CONTROL_ERROR_INVALID);
  EXPECT_EQ(simgpuControlFailCall("cuMemAlloc", 0, 1, 0), SIMGPU_CONTROL_ERROR_INVALID);  // 0 is success
  EXPECT_EQ(simgpuControlFailCall(nullptr, 1, 1, 0), SIMGPU_CONTROL_ERROR_INVALID);
  EXPECT_EQ(simgpuControlHideProc(std::string(80, 'x').c_str(), 0), SIMGPU_CONTROL_ERROR_INVALID);
  EXPECT_EQ(simgpuControlProcesses(0, nullptr, 4), SIMGPU_CONTROL_ERROR_INVALID);
  for (int i = 0; i < SIMGPU_CONTROL_MAX_FAULTS; ++i) ASSERT_EQ(simgpuControlHideProc("cuNothing", 0), 0);
  EXPECT_EQ(simgpuControlHideProc("cuNothing", 0), SIMGPU_CONTROL_ERROR_TABLE_FULL);
  EXPECT_EQ(simgpuControlClearFaults(), SIMGPU_CONTROL_MAX_FAULTS);
}

TEST(ControlOpen, ANodeThatCannotBeOpenedIsSaid) {
  EXPECT_EQ(simgpuControlOpen("/nonexistent/simgpu.json", nullptr), SIMGPU_CONTROL_ERROR_NO_NODE);
  EXPECT_EQ(simgpuControlGpuCount(), 2);  // still the node used so far
}

}  // namespace
