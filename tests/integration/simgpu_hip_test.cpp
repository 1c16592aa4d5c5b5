// simgpu's HIP front (build/simgpu/libamdhip64.so.5) through the real HIP API: device
// queries from the config, memory shared with CUDA processes, out-of-memory codes,
// copies of real bytes, stream order and event timing, CU masks (time and concurrency,
// in one process and across processes), kernel names, modules and graphs. Times are
// simulated (events) wherever they can be; wall-clock bounds are generous.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <hip/hip_ext.h>
#include <hip/hip_runtime_api.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "monotonic_clock.h"
#include "simgpu_control.h"
#include "subprocess.h"

// Kernels as a g++ HIP program declares them for simgpu: exported host functions that
// simgpu names by their symbol (the binary links with -rdynamic).
#define SIM_KERNEL extern "C" __attribute__((visibility("default"), noinline))
SIM_KERNEL void simgpu_compute_1000us() {}
SIM_KERNEL void simgpu_memory_1000us() {}
SIM_KERNEL void host_stub_registered_later() {}
SIM_KERNEL void simgpu_memory_10000us() {}

// What hipcc's start-up code calls to name a kernel (not in the public headers).
extern "C" void** __hipRegisterFatBinary(const void* data);
extern "C" void __hipRegisterFunction(void** modules, const void* host_function, char* device_function,
                                      const char* device_name, unsigned int thread_limit, void* tid, void* bid,
                                      void* block_dim, void* grid_dim, int* warp_size);

using testing_support::MonotonicNs;

namespace {

using testing_support::Child;
using testing_support::Field;
using testing_support::RunToEnd;
using testing_support::SimNode;

constexpr uint64_t kGiB = 1ull << 30, kMiB = 1ull << 20;
constexpr int kCus = 104;  // gpus[0].cus in the node below; memory saturates at 26 CUs

// GPU 0 as an MI250X-like device: 104 CUs, memory saturating at 26.
const std::string kGpus = R"("gpus": [
    {"name": "simgpu MI250X 0", "memory": 8589934592, "sms": 110, "cus": 104, "memory_saturation_cus": 26,
     "pci_bus_id": "0000:c1:00.0", "gcn_arch": "gfx90a:sramecc+:xnack-"},
    {"name": "simgpu MI250X 1", "memory": 4294967296, "cus": 104},
    {"name": "simgpu MI250X 2", "memory": 4294967296}],
  "links": [[0, 1, "pcie"]])";
// This process's node has long time slices: each kernel is then one sleep of its
// executor, which keeps a starved host thread (2 cores, several builds) from adding
// much to the simulated times. The client processes' node time-slices as usual.
const std::string kNodeConfig = "{" + kGpus + R"(, "timeslice_us": 20000})";
const std::string kClientsConfig = "{" + kGpus + "}";

SimNode* g_node = nullptr;     // this process's node (CUDA workers join it too)
SimNode* g_clients = nullptr;  // the CU-mask client processes' node
std::string g_self;            // this binary, run again as a CU-mask client

#define ASSERT_HIP(call) ASSERT_EQ((call), hipSuccess) << #call
#define EXPECT_HIP(call) EXPECT_EQ((call), hipSuccess) << #call

// Mask words enabling CUs [first, first + count).
std::vector<uint32_t> CuMask(int first, int count) {
  std::vector<uint32_t> words((kCus + 31) / 32, 0);
  for (int cu = first; cu < first + count; ++cu) words[cu / 32] |= 1u << (cu % 32);
  return words;
}

const void* Fn(void (*f)()) { return reinterpret_cast<const void*>(f); }

// Simulated time never runs short of the model (events read an ideal clock that only
// moves forward); a host thread the machine starves of CPU can only add to it, a few
// ms per late wake-up on a loaded 2-core machine. So the lower bound is tight.
void ExpectModeledMs(float ms, double modeled) {
  EXPECT_GE(ms, modeled * 0.99 - 0.02);
  EXPECT_LE(ms, modeled * 1.25 + 4.0);
}

// A kernel in front of timed work keeps the stream busy while the host queues the rest:
// otherwise a host thread that a loaded machine deschedules leaves gaps the events see.
hipError_t Gate(hipStream_t s) { return hipLaunchKernel(Fn(&simgpu_memory_10000us), dim3(1), dim3(32), nullptr, 0, s); }

class SimgpuHip : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_HIP(hipSetDevice(0)); }
  void TearDown() override {
    (void)hipDeviceSynchronize();
    (void)hipGetLastError();
  }

  // Simulated milliseconds that `n` launches of `kernel` take on `stream`, by events.
  static float TimedLaunches(hipStream_t stream, const void* kernel, int n) {
    hipEvent_t a, b;
    EXPECT_HIP(hipEventCreate(&a));
    EXPECT_HIP(hipEventCreate(&b));
    EXPECT_HIP(Gate(stream));
    EXPECT_HIP(hipEventRecord(a, stream));
    for (int i = 0; i < n; ++i) EXPECT_HIP(hipLaunchKernel(kernel, dim3(64), dim3(256), nullptr, 0, stream));
    EXPECT_HIP(hipEventRecord(b, stream));
    EXPECT_HIP(hipEventSynchronize(b));
    float ms = -1;
    EXPECT_HIP(hipEventElapsedTime(&ms, a, b));
    EXPECT_HIP(hipEventDestroy(a));
    EXPECT_HIP(hipEventDestroy(b));
    return ms;
  }

  static size_t FreeBytes() {
    size_t free_b = 0, total = 0;
    EXPECT_HIP(hipMemGetInfo(&free_b, &total));
    return free_b;
  }
};

TEST_F(SimgpuHip, DeviceQueriesFollowTheConfigWithoutNvml) {
  int count = 0;
  ASSERT_HIP(hipGetDeviceCount(&count));
  EXPECT_EQ(count, 3);
  hipDeviceProp_t prop;
  ASSERT_HIP(hipGetDeviceProperties(&prop, 0));
  EXPECT_STREQ(prop.name, "simgpu MI250X 0");
  EXPECT_EQ(prop.totalGlobalMem, 8 * kGiB);
  EXPECT_EQ(prop.multiProcessorCount, kCus);  // CUs, not the CUDA front's SM count
  EXPECT_EQ(prop.pciBusID, 0xc1);
  EXPECT_STREQ(prop.gcnArchName, "gfx90a:sramecc+:xnack-");
  EXPECT_EQ(prop.warpSize, 64);
  ASSERT_HIP(hipGetDeviceProperties(&prop, 2));
  EXPECT_EQ(prop.multiProcessorCount, 132);  // cus defaults to sms, whose default is 132

  int value = 0;
  ASSERT_HIP(hipDeviceGetAttribute(&value, hipDeviceAttributeMultiprocessorCount, 1));
  EXPECT_EQ(value, kCus);
  ASSERT_HIP(hipDeviceGetAttribute(&value, hipDeviceAttributePciBusId, 0));
  EXPECT_EQ(value, 0xc1);
  char name[64], bus[32];
  ASSERT_HIP(hipDeviceGetName(name, sizeof name, 1));
  EXPECT_STREQ(name, "simgpu MI250X 1");
  ASSERT_HIP(hipDeviceGetPCIBusId(bus, sizeof bus, 0));
  EXPECT_STREQ(bus, "0000:c1:00.0");
  size_t total = 0;
  ASSERT_HIP(hipDeviceTotalMem(&total, 1));
  EXPECT_EQ(total, 4 * kGiB);
  hipDevice_t dev = -1;
  ASSERT_HIP(hipDeviceGet(&dev, 2));
  EXPECT_EQ(dev, 2);

  int can = -1;
  ASSERT_HIP(hipDeviceCanAccessPeer(&can, 0, 1));
  EXPECT_EQ(can, 1);
  ASSERT_HIP(hipDeviceCanAccessPeer(&can, 0, 2));
  EXPECT_EQ(can, 0);
  ASSERT_HIP(hipDeviceEnablePeerAccess(1, 0));
  EXPECT_EQ(hipDeviceEnablePeerAccess(1, 0), hipErrorPeerAccessAlreadyEnabled);
  EXPECT_EQ(hipDeviceEnablePeerAccess(2, 0), hipErrorPeerAccessUnsupported);
  ASSERT_HIP(hipDeviceDisablePeerAccess(1));
  EXPECT_EQ(hipDeviceDisablePeerAccess(1), hipErrorPeerAccessNotEnabled);

  EXPECT_EQ(hipSetDevice(3), hipErrorInvalidDevice);
  int current = -1;
  ASSERT_HIP(hipGetDevice(&current));
  EXPECT_EQ(current, 0);
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, ErrorsAreRememberedUntilRead) {
  (void)hipGetLastError();
  EXPECT_EQ(hipSetDevice(-1), hipErrorInvalidDevice);
  int count;
  ASSERT_HIP(hipGetDeviceCount(&count));  // a later success does not clear it
  EXPECT_EQ(hipPeekAtLastError(), hipErrorInvalidDevice);
  EXPECT_EQ(hipGetLastError(), hipErrorInvalidDevice);
  EXPECT_EQ(hipGetLastError(), hipSuccess);
  EXPECT_STREQ(hipGetErrorName(hipErrorOutOfMemory), "hipErrorOutOfMemory");
  EXPECT_STREQ(hipGetErrorName(hipErrorInvalidDevice), "hipErrorInvalidDevice");
  EXPECT_STREQ(hipGetErrorString(hipErrorOutOfMemory), "out of memory");
}

TEST_F(SimgpuHip, OutOfMemoryIsHipErrorOutOfMemoryAndFreeReturnsIt) {
  ASSERT_HIP(hipSetDevice(1));  // 4 GiB
  const size_t before = FreeBytes();
  void* p = nullptr;
  EXPECT_EQ(hipMalloc(&p, 5 * kGiB), hipErrorOutOfMemory);
  EXPECT_EQ(hipGetLastError(), hipErrorOutOfMemory);
  EXPECT_EQ(FreeBytes(), before);
  std::vector<void*> blocks;
  for (;;) {
    void* b = nullptr;
    hipError_t r = hipMalloc(&b, kGiB);
    if (r != hipSuccess) {
      EXPECT_EQ(r, hipErrorOutOfMemory);
      break;
    }
    blocks.push_back(b);
  }
  EXPECT_EQ(blocks.size(), 4u);
  EXPECT_EQ(FreeBytes(), 0u);
  EXPECT_EQ(hipMallocManaged(&p, 64 * kMiB), hipErrorOutOfMemory);
  EXPECT_EQ(hipMallocAsync(&p, kMiB, nullptr), hipErrorOutOfMemory);
  for (void* b : blocks) ASSERT_HIP(hipFree(b));
  EXPECT_EQ(FreeBytes(), before);
  (void)hipGetLastError();
}

// Faults armed through the control interface (which libamdhip64.so.5 exports too)
// come back as HIP errors and stay the thread's last error like any other failure.
TEST_F(SimgpuHip, InjectedFaultsAreHipErrorsAndTheLastError) {
  (void)hipGetLastError();
  ASSERT_EQ(simgpuControlFailAllocations(0, 1, SIMGPU_CONTROL_ANY_PROCESS), 0);
  void* p = nullptr;
  EXPECT_EQ(hipMalloc(&p, kMiB), hipErrorOutOfMemory);
  EXPECT_EQ(hipGetLastError(), hipErrorOutOfMemory);
  ASSERT_EQ(simgpuControlFailCall("hipMemcpyHtoD", hipErrorIllegalAddress, 1, SIMGPU_CONTROL_ANY_PROCESS), 0);
  ASSERT_HIP(hipMalloc(&p, kMiB));
  char bytes[64] = {};
  EXPECT_EQ(hipMemcpyHtoD(p, bytes, sizeof bytes), hipErrorIllegalAddress);  // through a shared helper
  EXPECT_EQ(hipGetLastError(), hipErrorIllegalAddress);
  EXPECT_HIP(hipMemcpyHtoD(p, bytes, sizeof bytes));
  ASSERT_HIP(hipFree(p));
  EXPECT_EQ(simgpuControlClearFaults(), 0);
}

TEST_F(SimgpuHip, EveryAllocationFamilyIsCharged) {
  const size_t before = FreeBytes();
  void *plain, *fine, *managed, *pitched;
  size_t pitch = 0;
  ASSERT_HIP(hipMalloc(&plain, 3 * kMiB));
  ASSERT_HIP(hipExtMallocWithFlags(&fine, 2 * kMiB, hipDeviceMallocFinegrained));
  ASSERT_HIP(hipMallocManaged(&managed, 2 * kMiB, hipMemAttachGlobal));
  ASSERT_HIP(hipMallocPitch(&pitched, &pitch, 1000, 1024));
  EXPECT_EQ(pitch, 1024u);  // rounded up to 512 bytes
  hipPitchedPtr p3;
  ASSERT_HIP(hipMalloc3D(&p3, hipExtent{100, 64, 64}));
  EXPECT_EQ(p3.pitch, 512u);
  hipArray* array = nullptr;
  hipChannelFormatDesc desc{32, 0, 0, 0, hipChannelFormatKindFloat};
  ASSERT_HIP(hipMallocArray(&array, &desc, 1024, 1024, 0));
  EXPECT_EQ(array->width, 1024u);
  hipArray* darray = nullptr;
  HIP_ARRAY_DESCRIPTOR ad{2048, 512, HIP_AD_FORMAT_UNSIGNED_INT8, 4};
  ASSERT_HIP(hipArrayCreate(&darray, &ad));
  hipArray* a3 = nullptr;
  ASSERT_HIP(hipMalloc3DArray(&a3, &desc, hipExtent{64, 64, 64}, 0));
  // Each rounded up to whole 2 MiB pages: 3 MiB -> 4, 1 MiB pitched -> 2, 1 MiB 3D array -> 2.
  EXPECT_EQ(before - FreeBytes(), (4 + 2 + 2 + 2 + 2 + 4 + 4 + 2) * kMiB);
  void* host = nullptr;
  ASSERT_HIP(hipHostMalloc(&host, kMiB, 0));
  hipPointerAttribute_t attr;
  ASSERT_HIP(hipPointerGetAttributes(&attr, managed));
  EXPECT_EQ(attr.memoryType, hipMemoryTypeDevice);
  EXPECT_EQ(attr.isManaged, 1);
  EXPECT_EQ(attr.device, 0);
  ASSERT_HIP(hipPointerGetAttributes(&attr, host));
  EXPECT_EQ(attr.memoryType, hipMemoryTypeHost);
  ASSERT_HIP(hipHostFree(host));
  for (void* p : {plain, fine, managed, pitched, p3.ptr}) ASSERT_HIP(hipFree(p));
  ASSERT_HIP(hipFreeArray(array));
  ASSERT_HIP(hipArrayDestroy(darray));
  ASSERT_HIP(hipFreeArray(a3));
  EXPECT_EQ(hipFreeArray(a3), hipErrorInvalidValue);
  EXPECT_EQ(FreeBytes(), before);

  // Stream-ordered: a created pool's blocks come back to the device when trimmed.
  hipMemPoolProps props{};
  props.allocType = hipMemAllocationTypePinned;
  props.location = {hipMemLocationTypeDevice, 0};
  hipMemPool_t pool;
  ASSERT_HIP(hipMemPoolCreate(&pool, &props));
  void* pooled = nullptr;
  ASSERT_HIP(hipMallocFromPoolAsync(&pooled, 8 * kMiB, pool, nullptr));
  EXPECT_EQ(before - FreeBytes(), 8 * kMiB);
  ASSERT_HIP(hipFreeAsync(pooled, nullptr));
  ASSERT_HIP(hipDeviceSynchronize());
  ASSERT_HIP(hipMemPoolDestroy(pool));
  EXPECT_EQ(FreeBytes(), before);

  // Virtual memory: charged at hipMemCreate, until released and unmapped.
  hipMemAllocationProp vp{};
  vp.type = hipMemAllocationTypePinned;
  vp.location = {hipMemLocationTypeDevice, 0};
  size_t gran = 0;
  ASSERT_HIP(hipMemGetAllocationGranularity(&gran, &vp, hipMemAllocationGranularityMinimum));
  hipMemGenericAllocationHandle_t h;
  ASSERT_HIP(hipMemCreate(&h, 2 * gran, &vp, 0));
  EXPECT_EQ(before - FreeBytes(), 2 * gran);
  void* va = nullptr;
  ASSERT_HIP(hipMemAddressReserve(&va, 2 * gran, 0, nullptr, 0));
  ASSERT_HIP(hipMemMap(va, 2 * gran, 0, h, 0));
  hipMemAccessDesc access{{hipMemLocationTypeDevice, 0}, hipMemAccessFlagsProtReadWrite};
  std::vector<char> bytes(4096, 7), back(4096, 0);
  EXPECT_EQ(hipMemcpy(va, bytes.data(), bytes.size(), hipMemcpyHostToDevice), hipErrorInvalidValue);  // no access yet
  ASSERT_HIP(hipMemSetAccess(va, 2 * gran, &access, 1));
  ASSERT_HIP(hipMemcpy(va, bytes.data(), bytes.size(), hipMemcpyHostToDevice));
  ASSERT_HIP(hipMemcpy(back.data(), va, back.size(), hipMemcpyDeviceToHost));
  EXPECT_EQ(back, bytes);
  ASSERT_HIP(hipMemRelease(h));
  EXPECT_EQ(before - FreeBytes(), 2 * gran);  // still mapped
  ASSERT_HIP(hipMemUnmap(va, 2 * gran));
  ASSERT_HIP(hipMemAddressFree(va, 2 * gran));
  EXPECT_EQ(FreeBytes(), before);
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, CopiesAndMemsetsMoveRealBytes) {
  const size_t n = 1 << 20;
  std::vector<uint8_t> src(n), back(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(i * 7 + 3);
  void *a, *b, *peer;
  ASSERT_HIP(hipMalloc(&a, n));
  ASSERT_HIP(hipMalloc(&b, n));
  ASSERT_HIP(hipSetDevice(1));
  ASSERT_HIP(hipMalloc(&peer, n));
  ASSERT_HIP(hipSetDevice(0));
  ASSERT_HIP(hipMemcpyHtoD(a, src.data(), n));
  ASSERT_HIP(hipMemcpyDtoD(b, a, n));
  ASSERT_HIP(hipMemcpyPeer(peer, 1, b, 0, n));
  ASSERT_HIP(hipMemcpy(back.data(), peer, n, hipMemcpyDeviceToHost));
  EXPECT_EQ(back, src);

  // Async copies on a stream, in order, through pinned memory.
  hipStream_t s;
  ASSERT_HIP(hipStreamCreate(&s));
  void* pinned;
  ASSERT_HIP(hipHostMalloc(&pinned, n, 0));
  ASSERT_HIP(hipMemsetAsync(a, 0xab, n, s));
  ASSERT_HIP(hipMemcpyDtoDAsync(b, a, n, s));
  ASSERT_HIP(hipMemcpyAsync(pinned, b, n, hipMemcpyDeviceToHost, s));
  ASSERT_HIP(hipStreamSynchronize(s));
  EXPECT_EQ(static_cast<uint8_t*>(pinned)[0], 0xab);
  EXPECT_EQ(static_cast<uint8_t*>(pinned)[n - 1], 0xab);
  ASSERT_HIP(hipMemsetD32(a, 0x01020304, n / 4));
  ASSERT_HIP(hipMemcpyDtoH(back.data(), a, n));
  uint32_t word;
  std::memcpy(&word, back.data() + 4 * 1000, 4);
  EXPECT_EQ(word, 0x01020304u);

  // The kind is checked against the pointers, and copies past an allocation fail.
  EXPECT_EQ(hipMemcpy(back.data(), src.data(), n, hipMemcpyHostToDevice), hipErrorInvalidValue);
  EXPECT_EQ(hipMemcpy(a, src.data(), n + 1, hipMemcpyHostToDevice), hipErrorInvalidValue);
  EXPECT_EQ(hipMemcpy(a, b, n, static_cast<hipMemcpyKind>(9)), hipErrorInvalidMemcpyDirection);
  ASSERT_HIP(hipMemcpy(a, src.data(), n, hipMemcpyDefault));  // inferred from the addresses

  ASSERT_HIP(hipStreamDestroy(s));
  ASSERT_HIP(hipHostFree(pinned));
  for (void* p : {a, b, peer}) ASSERT_HIP(hipFree(p));
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, PitchedCopiesRegisteredHostMemoryAndCallbacks) {
  void* dev = nullptr;
  size_t pitch = 0;
  ASSERT_HIP(hipMallocPitch(&dev, &pitch, 100, 8));
  ASSERT_HIP(hipMemset2D(dev, pitch, 0x5a, 100, 8));
  std::vector<uint8_t> host(100 * 8, 0);
  ASSERT_HIP(hipHostRegister(host.data(), host.size(), 0));
  EXPECT_EQ(hipHostRegister(host.data(), host.size(), 0), hipErrorHostMemoryAlreadyRegistered);
  void* mapped = nullptr;
  ASSERT_HIP(hipHostGetDevicePointer(&mapped, host.data(), 0));
  EXPECT_EQ(mapped, host.data());
  hipStream_t s;
  ASSERT_HIP(hipStreamCreate(&s));
  ASSERT_HIP(hipMemcpy2DAsync(host.data(), 100, dev, pitch, 100, 8, hipMemcpyDeviceToHost, s));
  int seen = 0;
  ASSERT_HIP(hipStreamAddCallback(
      s, [](hipStream_t, hipError_t status, void* p) { *static_cast<int*>(p) = status == hipSuccess ? 1 : 2; }, &seen,
      0));
  ASSERT_HIP(hipStreamSynchronize(s));
  EXPECT_EQ(seen, 1);  // ran after the copy, in stream order
  EXPECT_EQ(std::count(host.begin(), host.end(), 0x5a), 800);
  EXPECT_EQ(hipGetStreamDeviceId(s), 0);
  hipDeviceptr_t base = nullptr;
  size_t size = 0;
  ASSERT_HIP(hipMemGetAddressRange(&base, &size, static_cast<char*>(dev) + pitch + 3));
  EXPECT_EQ(base, dev);
  EXPECT_EQ(size, pitch * 8);
  ASSERT_HIP(hipMemsetD16(dev, 0xbeef, 4));
  uint16_t half[4];
  ASSERT_HIP(hipMemcpy(half, dev, sizeof half, hipMemcpyDeviceToHost));
  EXPECT_EQ(half[3], 0xbeef);
  ASSERT_HIP(hipHostUnregister(host.data()));
  EXPECT_EQ(hipHostUnregister(host.data()), hipErrorHostMemoryNotRegistered);
  ASSERT_HIP(hipStreamDestroy(s));
  ASSERT_HIP(hipFree(dev));
  int rank = -1;
  ASSERT_HIP(hipDeviceGetP2PAttribute(&rank, hipDevP2PAttrAccessSupported, 0, 1));
  EXPECT_EQ(rank, 1);
  ASSERT_HIP(hipDeviceGetP2PAttribute(&rank, hipDevP2PAttrAccessSupported, 0, 2));
  EXPECT_EQ(rank, 0);
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, KernelsRunInStreamOrderAndEventsTimeThem) {
  hipStream_t s;
  ASSERT_HIP(hipStreamCreateWithFlags(&s, hipStreamNonBlocking));
  hipEvent_t a, b;
  ASSERT_HIP(hipEventCreate(&a));
  ASSERT_HIP(hipEventCreate(&b));
  ASSERT_HIP(Gate(s));
  ASSERT_HIP(hipEventRecord(a, s));
  for (int i = 0; i < 5; ++i) ASSERT_HIP(hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(8), dim3(64), nullptr, 0, s));
  ASSERT_HIP(hipEventRecord(b, s));
  float ms = 0;
  EXPECT_EQ(hipEventElapsedTime(&ms, a, b), hipErrorNotReady);
  EXPECT_EQ(hipEventQuery(b), hipErrorNotReady);
  EXPECT_EQ(hipStreamQuery(s), hipErrorNotReady);
  ASSERT_HIP(hipEventSynchronize(b));
  ASSERT_HIP(hipEventElapsedTime(&ms, a, b));
  ExpectModeledMs(ms, 5.0);
  EXPECT_HIP(hipStreamQuery(s));

  // hipExtLaunchKernel records its own start and stop events around the kernel.
  ASSERT_HIP(Gate(s));
  ASSERT_HIP(hipExtLaunchKernel(Fn(&simgpu_memory_1000us), dim3(1), dim3(32), nullptr, 0, s, a, b, 0));
  ASSERT_HIP(hipStreamSynchronize(s));
  ASSERT_HIP(hipEventElapsedTime(&ms, a, b));
  ExpectModeledMs(ms, 1.0);

  // Another stream waits for an event of the first.
  hipStream_t t;
  ASSERT_HIP(hipStreamCreateWithPriority(&t, 0, -1));
  int priority = 0;
  ASSERT_HIP(hipStreamGetPriority(t, &priority));
  EXPECT_EQ(priority, -1);
  ASSERT_HIP(hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(1), dim3(32), nullptr, 0, s));
  ASSERT_HIP(hipEventRecord(a, s));
  ASSERT_HIP(hipStreamWaitEvent(t, a, 0));
  ASSERT_HIP(hipEventRecord(b, t));
  ASSERT_HIP(hipEventSynchronize(b));
  EXPECT_HIP(hipEventQuery(a));

  hipEvent_t untimed;
  ASSERT_HIP(hipEventCreateWithFlags(&untimed, hipEventDisableTiming));
  ASSERT_HIP(hipEventRecord(untimed, s));
  ASSERT_HIP(hipEventSynchronize(untimed));
  EXPECT_EQ(hipEventElapsedTime(&ms, a, untimed), hipErrorInvalidHandle);
  for (hipEvent_t e : {a, b, untimed}) ASSERT_HIP(hipEventDestroy(e));
  ASSERT_HIP(hipStreamDestroy(s));
  ASSERT_HIP(hipStreamDestroy(t));
  EXPECT_EQ(hipStreamSynchronize(s), hipErrorInvalidHandle);
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, KernelNamesComeFromDladdrOrRegistration) {
  EXPECT_STREQ(hipKernelNameRefByPtr(Fn(&simgpu_compute_1000us), nullptr), "simgpu_compute_1000us");
  void** handle = __hipRegisterFatBinary(nullptr);
  __hipRegisterFunction(handle, Fn(&host_stub_registered_later), nullptr, "simgpu_memory_2000us", 0, nullptr, nullptr,
                        nullptr, nullptr, nullptr);
  EXPECT_STREQ(hipKernelNameRefByPtr(Fn(&host_stub_registered_later), nullptr), "simgpu_memory_2000us");
  hipStream_t s;
  ASSERT_HIP(hipStreamCreate(&s));
  // The registered name, not the symbol, decides the cost.
  ExpectModeledMs(TimedLaunches(s, Fn(&host_stub_registered_later), 2), 4.0);
  hipFuncAttributes attr;
  ASSERT_HIP(hipFuncGetAttributes(&attr, Fn(&simgpu_compute_1000us)));
  EXPECT_EQ(attr.maxThreadsPerBlock, 1024);
  // Code that is no exported symbol is no kernel.
  static const char not_code[16] = {};
  EXPECT_EQ(hipLaunchKernel(not_code + 3, dim3(1), dim3(1), nullptr, 0, s), hipErrorInvalidDeviceFunction);
  EXPECT_EQ(hipKernelNameRefByPtr(not_code + 3, nullptr), nullptr);
  EXPECT_EQ(hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(0), dim3(1), nullptr, 0, s), hipErrorInvalidConfiguration);
  ASSERT_HIP(hipStreamDestroy(s));
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, ModulesResolveNamesLikeTheCudaFront) {
  const char ptx[] =
      ".version 7.8\n.target sm_70\n.address_size 64\n"
      ".visible .entry simgpu_memory_300us(.param .u64 p) { ret; }\n"
      ".visible .entry other_kernel() { ret; }\n";
  hipModule_t m;
  ASSERT_HIP(hipModuleLoadData(&m, ptx));
  hipFunction_t f, g;
  ASSERT_HIP(hipModuleGetFunction(&f, m, "simgpu_memory_300us"));
  ASSERT_HIP(hipModuleGetFunction(&g, m, "other_kernel"));
  EXPECT_EQ(hipModuleGetFunction(&g, m, "missing"), hipErrorNotFound);
  EXPECT_STREQ(hipKernelNameRef(f), "simgpu_memory_300us");
  hipStream_t s;
  ASSERT_HIP(hipStreamCreate(&s));
  hipEvent_t a, b;
  ASSERT_HIP(hipEventCreate(&a));
  ASSERT_HIP(hipEventCreate(&b));
  ASSERT_HIP(Gate(s));
  ASSERT_HIP(hipEventRecord(a, s));
  for (int i = 0; i < 4; ++i) ASSERT_HIP(hipModuleLaunchKernel(f, 4, 1, 1, 64, 1, 1, 0, s, nullptr, nullptr));
  ASSERT_HIP(hipEventRecord(b, s));
  ASSERT_HIP(hipEventSynchronize(b));
  float ms = 0;
  ASSERT_HIP(hipEventElapsedTime(&ms, a, b));
  ExpectModeledMs(ms, 1.2);
  // Work sizes in work items: 1024 x 1 x 1 items in groups of 256 is a grid of 4.
  ASSERT_HIP(Gate(s));
  ASSERT_HIP(hipExtModuleLaunchKernel(f, 1024, 1, 1, 256, 1, 1, 0, s, nullptr, nullptr, a, b, 0));
  ASSERT_HIP(hipEventSynchronize(b));
  ASSERT_HIP(hipEventElapsedTime(&ms, a, b));
  ExpectModeledMs(ms, 0.3);
  // A binary code object is not parsed: any name resolves.
  const char elf[] =
      "\x7f"
      "ELF binary code object";
  hipModule_t bin;
  ASSERT_HIP(hipModuleLoadData(&bin, elf));
  ASSERT_HIP(hipModuleGetFunction(&g, bin, "anything_at_all"));
  EXPECT_STREQ(hipKernelNameRef(g), "anything_at_all");
  ASSERT_HIP(hipModuleUnload(m));
  EXPECT_EQ(hipModuleLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, nullptr, nullptr), hipErrorInvalidHandle);
  EXPECT_EQ(hipKernelNameRef(f), nullptr);
  EXPECT_EQ(hipModuleLoad(&m, "/nonexistent/module.co"), hipErrorFileNotFound);
  ASSERT_HIP(hipModuleUnload(bin));
  ASSERT_HIP(hipStreamDestroy(s));
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, CapturedStreamReplaysAsAGraph) {
  hipStream_t s;
  ASSERT_HIP(hipStreamCreate(&s));
  ASSERT_HIP(hipStreamBeginCapture(s, hipStreamCaptureModeGlobal));
  hipStreamCaptureStatus status;
  ASSERT_HIP(hipStreamIsCapturing(s, &status));
  EXPECT_EQ(status, hipStreamCaptureStatusActive);
  for (int i = 0; i < 3; ++i) ASSERT_HIP(hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(1), dim3(64), nullptr, 0, s));
  EXPECT_HIP(hipStreamQuery(s));  // captured work does not run
  hipGraph_t graph;
  ASSERT_HIP(hipStreamEndCapture(s, &graph));
  ASSERT_HIP(hipStreamIsCapturing(s, &status));
  EXPECT_EQ(status, hipStreamCaptureStatusNone);
  hipGraphExec_t exec;
  ASSERT_HIP(hipGraphInstantiate(&exec, graph, nullptr, nullptr, 0));
  hipEvent_t a, b;
  ASSERT_HIP(hipEventCreate(&a));
  ASSERT_HIP(hipEventCreate(&b));
  for (int run = 0; run < 2; ++run) {
    ASSERT_HIP(Gate(s));
    ASSERT_HIP(hipEventRecord(a, s));
    ASSERT_HIP(hipGraphLaunch(exec, s));
    ASSERT_HIP(hipEventRecord(b, s));
    ASSERT_HIP(hipEventSynchronize(b));
    float ms = 0;
    ASSERT_HIP(hipEventElapsedTime(&ms, a, b));
    SCOPED_TRACE(run);
    ExpectModeledMs(ms, 3.0);
  }
  ASSERT_HIP(hipGraphExecDestroy(exec));
  ASSERT_HIP(hipGraphDestroy(graph));
  EXPECT_EQ(hipGraphDestroy(graph), hipErrorInvalidValue);
  EXPECT_EQ(hipStreamEndCapture(s, &graph), hipErrorIllegalState);
  ASSERT_HIP(hipStreamDestroy(s));
  (void)hipGetLastError();
}

TEST_F(SimgpuHip, CuMaskScalesKernelTimeByEnabledCus) {
  const std::vector<uint32_t> quarter = CuMask(0, 26), eighth = CuMask(26, 13);
  hipStream_t q, e;
  ASSERT_HIP(hipExtStreamCreateWithCUMask(&q, static_cast<uint32_t>(quarter.size()), quarter.data()));
  ASSERT_HIP(hipExtStreamCreateWithCUMask(&e, static_cast<uint32_t>(eighth.size()), eighth.data()));
  std::vector<uint32_t> got(4, 0xffffffffu);
  ASSERT_HIP(hipExtStreamGetCUMask(q, static_cast<uint32_t>(got.size()), got.data()));
  EXPECT_EQ(got, quarter);
  ASSERT_HIP(hipExtStreamGetCUMask(nullptr, static_cast<uint32_t>(got.size()), got.data()));
  EXPECT_EQ(got, CuMask(0, kCus));  // the null stream has every CU

  // Compute-bound: t * N / k. Memory-bound: t * max(1, S / k) with S = 26.
  ExpectModeledMs(TimedLaunches(q, Fn(&simgpu_compute_1000us), 2), 2 * 4.0);
  ExpectModeledMs(TimedLaunches(q, Fn(&simgpu_memory_1000us), 2), 2 * 1.0);
  ExpectModeledMs(TimedLaunches(e, Fn(&simgpu_memory_1000us), 2), 2 * 2.0);

  const std::vector<uint32_t> none(4, 0);
  hipStream_t bad;
  EXPECT_EQ(hipExtStreamCreateWithCUMask(&bad, 4, none.data()), hipErrorInvalidValue);
  ASSERT_HIP(hipStreamDestroy(q));
  ASSERT_HIP(hipStreamDestroy(e));
  (void)hipGetLastError();
}

// Simulated span from the first start to the last stop of two streams, each running
// `n` memory-bound 10 ms kernels on 52 CUs (twice the saturation: 10 ms each).
float TwoStreamSpanMs(const std::vector<uint32_t>& mask_a, const std::vector<uint32_t>& mask_b, int n) {
  hipStream_t a, b;
  EXPECT_HIP(hipExtStreamCreateWithCUMask(&a, static_cast<uint32_t>(mask_a.size()), mask_a.data()));
  EXPECT_HIP(hipExtStreamCreateWithCUMask(&b, static_cast<uint32_t>(mask_b.size()), mask_b.data()));
  hipEvent_t start_a, start_b, stop_a, stop_b;
  for (hipEvent_t* ev : {&start_a, &start_b, &stop_a, &stop_b}) EXPECT_HIP(hipEventCreate(ev));
  EXPECT_HIP(hipEventRecord(start_a, a));
  EXPECT_HIP(hipEventRecord(start_b, b));
  for (int i = 0; i < n; ++i) {
    EXPECT_HIP(hipLaunchKernel(Fn(&simgpu_memory_10000us), dim3(64), dim3(256), nullptr, 0, a));
    EXPECT_HIP(hipLaunchKernel(Fn(&simgpu_memory_10000us), dim3(64), dim3(256), nullptr, 0, b));
  }
  EXPECT_HIP(hipEventRecord(stop_a, a));
  EXPECT_HIP(hipEventRecord(stop_b, b));
  EXPECT_HIP(hipDeviceSynchronize());  // waits for the masked queues too
  EXPECT_HIP(hipEventQuery(stop_a));
  EXPECT_HIP(hipEventQuery(stop_b));
  float aa = 0, ab = 0, ba = 0, bb = 0;
  EXPECT_HIP(hipEventElapsedTime(&aa, start_a, stop_a));
  EXPECT_HIP(hipEventElapsedTime(&ab, start_a, stop_b));
  EXPECT_HIP(hipEventElapsedTime(&ba, start_b, stop_a));
  EXPECT_HIP(hipEventElapsedTime(&bb, start_b, stop_b));
  for (hipEvent_t ev : {start_a, start_b, stop_a, stop_b}) EXPECT_HIP(hipEventDestroy(ev));
  EXPECT_HIP(hipStreamDestroy(a));
  EXPECT_HIP(hipStreamDestroy(b));
  return std::max(std::max(aa, ab), std::max(ba, bb));  // the first start to the last stop
}

TEST_F(SimgpuHip, StreamsWithDisjointCuMasksRunAtTheSameTime) {
  const int n = 4;  // 40 ms of work per stream; one at a time, the two take at least 80
  const float disjoint = TwoStreamSpanMs(CuMask(0, 52), CuMask(52, 52), n);
  const float overlapping = TwoStreamSpanMs(CuMask(0, 52), CuMask(26, 52), n);
  EXPECT_GE(disjoint, 10.0f * n * 0.99f);
  EXPECT_LT(disjoint, 0.8f * 20 * n) << "disjoint masks should run side by side (alone: " << 10 * n << " ms each)";
  EXPECT_GE(overlapping, 0.99f * 20 * n) << "masks sharing CUs take turns";
}

// A client in another process: CU-masked (count > 0) or unmasked, running `kernels`
// 1 ms kernels of one class from an agreed start time. Prints its simulated span.
int CuChild(int first_cu, int count, const std::string& kind, int kernels, uint64_t start_at_ns) {
  if (hipSetDevice(0) != hipSuccess) return 3;
  hipStream_t s;
  const std::vector<uint32_t> mask = CuMask(first_cu, count);
  hipError_t r = count > 0 ? hipExtStreamCreateWithCUMask(&s, static_cast<uint32_t>(mask.size()), mask.data())
                           : hipStreamCreate(&s);
  if (r != hipSuccess) return 4;
  const void* kernel = kind == "memory" ? Fn(&simgpu_memory_1000us) : Fn(&simgpu_compute_1000us);
  hipEvent_t a, b;
  if (hipEventCreate(&a) != hipSuccess || hipEventCreate(&b) != hipSuccess) return 5;
  timespec ts{time_t(start_at_ns / 1000000000ull), long(start_at_ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
  const uint64_t wall_start = MonotonicNs();
  if (Gate(s) != hipSuccess || hipEventRecord(a, s) != hipSuccess) return 5;
  for (int i = 0; i < kernels; ++i)
    if (hipLaunchKernel(kernel, dim3(64), dim3(256), nullptr, 0, s) != hipSuccess) return 6;
  if (hipEventRecord(b, s) != hipSuccess) return 5;
  if (hipEventSynchronize(b) != hipSuccess) return 7;
  float ms = 0;
  if (hipEventElapsedTime(&ms, a, b) != hipSuccess) return 8;
  std::printf("span_us=%llu wall_start=%llu wall_end=%llu\n", static_cast<unsigned long long>(ms * 1000),
              static_cast<unsigned long long>(wall_start), static_cast<unsigned long long>(MonotonicNs()));
  return 0;
}

// A masked and an unmasked stream of one process waiting on each other's events: a
// queue that waits must not keep the engine the other queue needs. Prints "done".
int CrossWaitChild() {
  if (hipSetDevice(0) != hipSuccess) return 3;
  hipStream_t plain, masked;
  const std::vector<uint32_t> mask = CuMask(0, 52);
  if (hipStreamCreate(&plain) != hipSuccess ||
      hipExtStreamCreateWithCUMask(&masked, static_cast<uint32_t>(mask.size()), mask.data()) != hipSuccess)
    return 4;
  hipEvent_t from_masked, from_plain;
  if (hipEventCreate(&from_masked) != hipSuccess || hipEventCreate(&from_plain) != hipSuccess) return 5;
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 3; ++i)
      if (hipLaunchKernel(Fn(&simgpu_memory_1000us), dim3(1), dim3(32), nullptr, 0, masked) != hipSuccess) return 6;
    if (hipEventRecord(from_masked, masked) != hipSuccess) return 7;
    if (hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(1), dim3(32), nullptr, 0, plain) != hipSuccess) return 6;
    if (hipStreamWaitEvent(plain, from_masked, 0) != hipSuccess) return 8;
    if (hipLaunchKernel(Fn(&simgpu_compute_1000us), dim3(1), dim3(32), nullptr, 0, plain) != hipSuccess) return 6;
    if (hipEventRecord(from_plain, plain) != hipSuccess) return 7;
    if (hipStreamWaitEvent(masked, from_plain, 0) != hipSuccess) return 8;
  }
  if (hipDeviceSynchronize() != hipSuccess) return 9;
  std::printf("done\n");
  return 0;
}

TEST_F(SimgpuHip, QueuesWaitingOnEachOtherDoNotDeadlock) {
  Child child({g_self, "--cross-wait-child"}, g_node->Env());
  child.CloseStdin();
  const std::string line = child.ReadLine(20000);
  if (line != "done") child.Kill(SIGKILL);  // deadlocked (or failed): do not wait forever
  EXPECT_EQ(line, "done");
  EXPECT_EQ(child.Wait(), 0);
}

struct ChildSpan {
  uint64_t span_us, wall_start, wall_end;
};

// Runs two clients at once (A: memory-bound, B: compute-bound), 30 kernels each.
std::pair<ChildSpan, ChildSpan> RunPair(int a_first, int a_count, int b_first, int b_count) {
  const uint64_t start_at = MonotonicNs() + 1500000000ull;  // both are up and waiting by then
  auto args = [&](int first, int count, const char* kind) {
    return std::vector<std::string>{g_self, "--cu-child", std::to_string(first),   std::to_string(count),
                                    kind,   "30",         std::to_string(start_at)};
  };
  Child a(args(a_first, a_count, "memory"), g_clients->Env());
  Child b(args(b_first, b_count, "compute"), g_clients->Env());
  a.CloseStdin();
  b.CloseStdin();
  const std::string out_a = a.ReadAll(), out_b = b.ReadAll();
  EXPECT_EQ(a.Wait(), 0) << out_a;
  EXPECT_EQ(b.Wait(), 0) << out_b;
  auto parse = [](const std::string& out) {
    return ChildSpan{Field(out, "span_us"), Field(out, "wall_start"), Field(out, "wall_end")};
  };
  return {parse(out_a), parse(out_b)};
}

TEST_F(SimgpuHip, MemoryBoundClientOnFewCusLetsAComputeBoundOneRunBesideIt) {
  // A on the 26 CUs that saturate memory (1 ms per kernel), B on the other 78
  // (compute: 104 / 78 ms per kernel). Disjoint: side by side, about 30 and 40 ms.
  auto [a, b] = RunPair(0, 26, 26, 78);
  ASSERT_NE(a.span_us, UINT64_MAX);
  ASSERT_NE(b.span_us, UINT64_MAX);
  EXPECT_LT(std::max(a.wall_start, b.wall_start), std::min(a.wall_end, b.wall_end)) << "the clients did not overlap";
  // Never shorter than alone; well short of taking turns (B's work and A's together).
  EXPECT_GE(a.span_us, 29900u);
  EXPECT_LT(a.span_us, 50000u);
  EXPECT_GE(b.span_us, 39900u);
  EXPECT_LT(b.span_us, 59000u);
  // Unmasked, the two processes are time-sliced: the later one to finish waited for
  // the other's work (60 ms together), whatever the host's load.
  auto [ua, ub] = RunPair(0, 0, 0, 0);
  ASSERT_NE(ua.span_us, UINT64_MAX);
  ASSERT_NE(ub.span_us, UINT64_MAX);
  EXPECT_GT(std::max(ua.span_us, ub.span_us), 45000u);
}

TEST_F(SimgpuHip, MemoryIsSharedWithCudaProcesses) {
  const size_t before = FreeBytes();
  {  // A CUDA process holds 1 GiB on GPU 0: HIP sees it.
    Child cuda({WORKER_PATH, "hold", "0", std::to_string(kGiB)}, g_node->Env());
    ASSERT_EQ(cuda.ReadLine(), "allocated");
    EXPECT_EQ(FreeBytes(), before - kGiB);
    cuda.CloseStdin();
    EXPECT_EQ(cuda.Wait(), 0);
  }
  for (int i = 0; i < 100 && FreeBytes() != before; ++i) usleep(20000);
  EXPECT_EQ(FreeBytes(), before);
  // HIP holds 2 GiB: a CUDA process sees it, and cannot take more than what is left.
  void* p;
  ASSERT_HIP(hipMalloc(&p, 2 * kGiB));
  auto r = RunToEnd({WORKER_PATH, "alloc", "0", std::to_string(before - kGiB)}, g_node->Env());
  EXPECT_EQ(Field(r.out, "free"), before - 2 * kGiB) << r.out;
  EXPECT_NE(r.out.find("result=oom"), std::string::npos) << r.out;
  ASSERT_HIP(hipFree(p));
}

TEST_F(SimgpuHip, SamplesLinkedAgainstTheRealLibraryRunOnSimgpu) {
  auto add = RunToEnd({std::string(SAMPLES_DIR) + "/hip_vector_add", "--n", "100000"}, g_node->Env());
  EXPECT_EQ(add.exit_code, 0) << add.out;
  EXPECT_NE(add.out.find("vector_add: PASS (round trip on simulator, 100000 elements)"), std::string::npos) << add.out;
  auto probe =
      RunToEnd({std::string(SAMPLES_DIR) + "/hip_alloc_probe", "--device", "2", "--chunk", "1GiB"}, g_node->Env());
  EXPECT_EQ(probe.exit_code, 0) << probe.out;
  EXPECT_EQ(Field(probe.out, "allocated_bytes"), 4 * kGiB) << probe.out;
  EXPECT_NE(probe.out.find("oom_error=hipErrorOutOfMemory"), std::string::npos) << probe.out;
  EXPECT_EQ(Field(probe.out, "free_final"), 4 * kGiB) << probe.out;
}

TEST(SimgpuHipExports, EveryListedEntryPointIsExportedAndOthersAreStubs) {
  const char* modeled[] = {
#define SIM_HIP(name) #name,
#define SIM_HIP_CXX(name)
#include "hip_procs.def"
#undef SIM_HIP
#undef SIM_HIP_CXX
  };
  void* lib = dlopen("libamdhip64.so.5", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(lib, nullptr);
  for (const char* name : modeled) EXPECT_NE(dlsym(lib, name), nullptr) << name;
  // Under the real library's symbol versions, as programs linked against it ask.
  EXPECT_NE(dlvsym(lib, "hipMalloc", "hip_4.2"), nullptr);
  EXPECT_NE(dlvsym(lib, "hipMallocAsync", "hip_5.1"), nullptr);
  auto stub = reinterpret_cast<int (*)()>(dlsym(lib, "hipBindTexture"));  // not modeled
  ASSERT_NE(stub, nullptr);
  EXPECT_EQ(stub(), hipErrorNotSupported);
  dlclose(lib);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::string(argv[1]) == "--cu-child")
    return CuChild(std::atoi(argv[2]), std::atoi(argv[3]), argv[4], std::atoi(argv[5]),
                   std::strtoull(argv[6], nullptr, 10));
  if (argc == 2 && std::string(argv[1]) == "--cross-wait-child") return CrossWaitChild();
  ::testing::InitGoogleTest(&argc, argv);
  g_self = "/proc/self/exe";
  char path[4096];
  if (ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1); n > 0) g_self.assign(path, static_cast<size_t>(n));
  SimNode node(kNodeConfig), clients(kClientsConfig);
  g_node = &node;
  g_clients = &clients;
  for (const auto& [key, value] : node.Env())
    if (key != "LD_LIBRARY_PATH") setenv(key.c_str(), value.c_str(), 1);  // this process: linked to simgpu directly
  return RUN_ALL_TESTS();
}
