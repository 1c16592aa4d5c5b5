// simgpu's CUDA driver and NVML fronts, exercised in one process through the real
// API: device queries, contexts, every allocation family, copies, streams, events,
// modules, launches and cuGetProcAddress.
#define __CUDA_API_VERSION_INTERNAL 1  // name every versioned symbol explicitly
#include <cuda.h>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "common/vendor/nvml_api.h"

namespace {

constexpr uint64_t kGiB = 1ull << 30, kMiB = 1ull << 20;
std::string g_node_name;

#define ASSERT_CU(call) ASSERT_EQ((call), CUDA_SUCCESS) << #call
#define EXPECT_CU(call) EXPECT_EQ((call), CUDA_SUCCESS) << #call

class SimEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    g_node_name = "simgpu-apitest-" + std::to_string(getpid());
    const std::string path = "/tmp/" + g_node_name + ".json";
    std::ofstream(path) << R"({"gpus": [
        {"name": "simgpu A", "memory": 4294967296, "sms": 100, "pci_bus_id": "0000:3b:00.0",
         "uuid": "GPU-00112233-4455-6677-8899-aabbccddeeff", "compute_capability": [8, 6]},
        {"name": "simgpu B", "memory": 4294967296}],
      "links": [[0, 1, "nvlink"]]})";
    setenv("SIMGPU_CONFIG", path.c_str(), 1);
    setenv("SIMGPU_NODE", g_node_name.c_str(), 1);
    shm_unlink(("/" + g_node_name).c_str());  // one left by a killed run whose pid was reused
    ASSERT_CU(cuInit(0));
  }
  void TearDown() override {
    shm_unlink(("/" + g_node_name).c_str());
    std::remove(("/tmp/" + g_node_name + ".json").c_str());
  }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new SimEnvironment);

class DriverApi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_CU(cuDevicePrimaryCtxRetain(&ctx_, 0));
    ASSERT_CU(cuCtxSetCurrent(ctx_));
  }
  void TearDown() override {
    cuCtxSynchronize();
    cuDevicePrimaryCtxRelease_v2(0);
  }
  size_t FreeBytes() {
    size_t free_b = 0, total_b = 0;
    EXPECT_CU(cuMemGetInfo_v2(&free_b, &total_b));
    return free_b;
  }
  CUfunction Kernel(const std::string& name) {
    std::string ptx = ".version 7.8\n.target sm_70\n.address_size 64\n.visible .entry " + name + "() { ret; }\n";
    CUmodule m;
    EXPECT_CU(cuModuleLoadData(&m, ptx.c_str()));
    CUfunction f = nullptr;
    EXPECT_CU(cuModuleGetFunction(&f, m, name.c_str()));
    return f;
  }
  CUcontext ctx_ = nullptr;
};

TEST_F(DriverApi, DeviceQueriesFollowTheConfig) {
  int count = 0;
  ASSERT_CU(cuDeviceGetCount(&count));
  EXPECT_EQ(count, 2);
  char name[64];
  ASSERT_CU(cuDeviceGetName(name, sizeof name, 0));
  EXPECT_STREQ(name, "simgpu A");
  size_t total = 0;
  ASSERT_CU(cuDeviceTotalMem_v2(&total, 1));
  EXPECT_EQ(total, 4 * kGiB);
  int v = 0;
  ASSERT_CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0));
  EXPECT_EQ(v, 100);
  ASSERT_CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0));
  EXPECT_EQ(v, 8);
  ASSERT_CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, 0));
  EXPECT_EQ(v, 0x3b);
  EXPECT_EQ(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 7), CUDA_ERROR_INVALID_DEVICE);
  CUuuid uuid;
  ASSERT_CU(cuDeviceGetUuid_v2(&uuid, 0));
  EXPECT_EQ(static_cast<unsigned char>(uuid.bytes[0]), 0x00);
  EXPECT_EQ(static_cast<unsigned char>(uuid.bytes[15]), 0xff);
  char bus[32];
  ASSERT_CU(cuDeviceGetPCIBusId(bus, sizeof bus, 0));
  EXPECT_STREQ(bus, "0000:3b:00.0");
  CUdevice d = -1;
  ASSERT_CU(cuDeviceGetByPCIBusId(&d, "0000:3b:00.0"));
  EXPECT_EQ(d, 0);
  int can = 0;
  ASSERT_CU(cuDeviceCanAccessPeer(&can, 0, 1));
  EXPECT_EQ(can, 1);
  ASSERT_CU(cuDeviceGetP2PAttribute(&v, CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED, 0, 1));
  EXPECT_EQ(v, 1);
  int version = 0;
  ASSERT_CU(cuDriverGetVersion(&version));
  EXPECT_EQ(version, 13000);
}

TEST_F(DriverApi, ContextStackPushPopAndCurrent) {
  CUcontext created = nullptr, cur = nullptr, popped = nullptr;
  ASSERT_CU(cuCtxCreate_v2(&created, 0, 1));
  ASSERT_CU(cuCtxGetCurrent(&cur));
  EXPECT_EQ(cur, created);
  CUdevice dev = -1;
  ASSERT_CU(cuCtxGetDevice(&dev));
  EXPECT_EQ(dev, 1);
  ASSERT_CU(cuCtxPopCurrent_v2(&popped));
  EXPECT_EQ(popped, created);
  ASSERT_CU(cuCtxGetCurrent(&cur));
  EXPECT_EQ(cur, ctx_);
  ASSERT_CU(cuCtxPushCurrent_v2(created));
  ASSERT_CU(cuCtxDestroy_v2(created));
  ASSERT_CU(cuCtxGetCurrent(&cur));
  EXPECT_EQ(cur, ctx_);  // destroying the current context pops it
  EXPECT_EQ(cuCtxPushCurrent_v2(created), CUDA_ERROR_INVALID_CONTEXT);
  unsigned flags = 0;
  int active = 0;
  ASSERT_CU(cuDevicePrimaryCtxGetState(0, &flags, &active));
  EXPECT_EQ(active, 1);
}

TEST_F(DriverApi, AllocationsAreChargedAndFreed) {
  const size_t before = FreeBytes();
  CUdeviceptr a, b, m;
  size_t pitch = 0;
  ASSERT_CU(cuMemAlloc_v2(&a, 64 * kMiB));
  EXPECT_EQ(FreeBytes(), before - 64 * kMiB);
  ASSERT_CU(cuMemAllocPitch_v2(&b, &pitch, 1000, 1024, 4));
  EXPECT_EQ(pitch, 1024u);
  EXPECT_EQ(FreeBytes(), before - 66 * kMiB);  // 1 MiB rounded to a 2 MiB page
  ASSERT_CU(cuMemAllocManaged(&m, 16 * kMiB, CU_MEM_ATTACH_GLOBAL));
  EXPECT_EQ(FreeBytes(), before - 82 * kMiB);
  CUdeviceptr base = 0;
  size_t size = 0;
  ASSERT_CU(cuMemGetAddressRange_v2(&base, &size, a + 12345));
  EXPECT_EQ(base, a);
  EXPECT_EQ(size, 64 * kMiB);
  unsigned type = 0;
  ASSERT_CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a));
  EXPECT_EQ(type, unsigned(CU_MEMORYTYPE_DEVICE));
  ASSERT_CU(cuMemFree_v2(a));
  ASSERT_CU(cuMemFree_v2(b));
  ASSERT_CU(cuMemFree_v2(m));
  EXPECT_EQ(FreeBytes(), before);
  EXPECT_EQ(cuMemFree_v2(a), CUDA_ERROR_INVALID_VALUE);  // double free
  CUdeviceptr huge;
  EXPECT_EQ(cuMemAlloc_v2(&huge, 5 * kGiB), CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(cuMemAlloc_v2(&huge, 0), CUDA_ERROR_INVALID_VALUE);
}

TEST_F(DriverApi, ArraysAreCharged) {
  const size_t before = FreeBytes();
  CUDA_ARRAY3D_DESCRIPTOR d{1024, 1024, 4, CU_AD_FORMAT_FLOAT, 4, 0};  // 64 MiB
  CUarray arr;
  ASSERT_CU(cuArray3DCreate_v2(&arr, &d));
  EXPECT_EQ(FreeBytes(), before - 64 * kMiB);
  CUDA_ARRAY3D_DESCRIPTOR back;
  ASSERT_CU(cuArray3DGetDescriptor_v2(&back, arr));
  EXPECT_EQ(back.Depth, 4u);
  ASSERT_CU(cuArrayDestroy(arr));
  EXPECT_EQ(FreeBytes(), before);
}

TEST_F(DriverApi, CopiesAndMemsetsRoundTrip) {
  const size_t n = 1 << 20;
  std::vector<uint32_t> src(n), back(n);
  for (size_t i = 0; i < n; ++i) src[i] = uint32_t(i * 2654435761u);
  CUdeviceptr a, b;
  ASSERT_CU(cuMemAlloc_v2(&a, n * 4));
  ASSERT_CU(cuMemAlloc_v2(&b, n * 4));
  ASSERT_CU(cuMemcpyHtoD_v2(a, src.data(), n * 4));
  ASSERT_CU(cuMemcpyDtoD_v2(b, a, n * 4));
  ASSERT_CU(cuMemcpyDtoH_v2(back.data(), b, n * 4));
  EXPECT_EQ(src, back);

  CUstream s;
  ASSERT_CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  ASSERT_CU(cuMemsetD32Async(a, 0xdeadbeef, n, s));
  ASSERT_CU(cuMemcpyDtoHAsync_v2(back.data(), a, n * 4, s));
  ASSERT_CU(cuStreamSynchronize(s));
  EXPECT_EQ(back[0], 0xdeadbeefu);
  EXPECT_EQ(back[n - 1], 0xdeadbeefu);
  ASSERT_CU(cuMemsetD16_v2(a, 0x1234, 3));
  ASSERT_CU(cuMemsetD8_v2(a + 6, 0x56, 1));
  unsigned char bytes[8];
  ASSERT_CU(cuMemcpyDtoH_v2(bytes, a, 8));
  EXPECT_EQ(bytes[0], 0x34);
  EXPECT_EQ(bytes[5], 0x12);
  EXPECT_EQ(bytes[6], 0x56);
  EXPECT_EQ(bytes[7], 0xde);

  // 2D: a 3x4 block out of a pitched host buffer.
  unsigned char host[4][16] = {}, out[4][8] = {};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 16; ++c) host[r][c] = static_cast<unsigned char>(r * 16 + c);
  CUDA_MEMCPY2D c2{};
  c2.srcMemoryType = CU_MEMORYTYPE_HOST;
  c2.srcHost = host;
  c2.srcPitch = 16;
  c2.srcXInBytes = 2;
  c2.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  c2.dstDevice = b;
  c2.dstPitch = 8;
  c2.WidthInBytes = 3;
  c2.Height = 4;
  ASSERT_CU(cuMemcpy2D_v2(&c2));
  ASSERT_CU(cuMemcpyDtoH_v2(out, b, sizeof out));
  EXPECT_EQ(out[0][0], 2);
  EXPECT_EQ(out[3][2], 3 * 16 + 4);

  EXPECT_EQ(cuMemcpyHtoD_v2(a + n * 4 - 4, src.data(), 8), CUDA_ERROR_INVALID_VALUE);  // past the end
  EXPECT_EQ(cuMemcpyHtoD_v2(CUdeviceptr(src.data()), src.data(), 8), CUDA_ERROR_INVALID_VALUE);
  ASSERT_CU(cuStreamDestroy_v2(s));
  ASSERT_CU(cuMemFree_v2(a));
  ASSERT_CU(cuMemFree_v2(b));
}

TEST_F(DriverApi, KernelsTakeModeledTimeInStreamOrder) {
  CUfunction f = Kernel("simgpu_compute_3000us");
  CUevent start, end;
  ASSERT_CU(cuEventCreate(&start, 0));
  ASSERT_CU(cuEventCreate(&end, 0));
  CUstream s;
  ASSERT_CU(cuStreamCreate(&s, 0));
  ASSERT_CU(cuEventRecord(start, s));
  for (int i = 0; i < 4; ++i) ASSERT_CU(cuLaunchKernel(f, 64, 1, 1, 256, 1, 1, 0, s, nullptr, nullptr));
  ASSERT_CU(cuEventRecord(end, s));
  float ms = 0;
  EXPECT_EQ(cuEventElapsedTime_v2(&ms, start, end), CUDA_ERROR_NOT_READY);
  EXPECT_EQ(cuEventQuery(end), CUDA_ERROR_NOT_READY);
  ASSERT_CU(cuEventSynchronize(end));
  ASSERT_CU(cuEventElapsedTime_v2(&ms, start, end));
  // Four 3 ms kernels one after another: 12 ms, never less (four at once would be 3 ms).
  // Kernels run in wall time, so a loaded machine (a parallel ctest) wakes the engine
  // late, by 3.25 ms once: the upper bound only says that no kernel was counted twice
  // (eight kernels' worth), not how promptly a starved engine wakes.
  EXPECT_GE(ms, 11.9);
  EXPECT_LT(ms, 24.0);
  EXPECT_CU(cuEventQuery(end));
  EXPECT_CU(cuStreamQuery(s));
  // Host callbacks run in stream order, after the work before them.
  int seen = -1;
  ASSERT_CU(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, nullptr, nullptr));
  ASSERT_CU(cuLaunchHostFunc(
      s, [](void* p) { *static_cast<int*>(p) = 1; }, &seen));
  ASSERT_CU(cuStreamSynchronize(s));
  EXPECT_EQ(seen, 1);
  CUevent untimed;
  ASSERT_CU(cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING));
  ASSERT_CU(cuEventRecord(untimed, s));
  ASSERT_CU(cuEventSynchronize(untimed));
  EXPECT_EQ(cuEventElapsedTime_v2(&ms, start, untimed), CUDA_ERROR_INVALID_HANDLE);
}

TEST_F(DriverApi, LaunchChecksHandlesAndGeometry) {
  CUfunction f = Kernel("scale");
  EXPECT_CU(cuLaunchKernel(f, 1, 1, 1, 1024, 1, 1, 0, nullptr, nullptr, nullptr));
  EXPECT_EQ(cuLaunchKernel(f, 1, 1, 1, 1025, 1, 1, 0, nullptr, nullptr, nullptr), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(cuLaunchKernel(f, 0, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 64 * 1024, nullptr, nullptr, nullptr), CUDA_ERROR_INVALID_VALUE);
  ASSERT_CU(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 100 * 1024));
  EXPECT_CU(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 64 * 1024, nullptr, nullptr, nullptr));
  int bogus = 0;
  EXPECT_EQ(cuLaunchKernel(reinterpret_cast<CUfunction>(&bogus), 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr),
            CUDA_ERROR_INVALID_HANDLE);
  CUlaunchConfig cfg{2, 1, 1, 128, 1, 1, 0, CU_STREAM_PER_THREAD, nullptr, 0};
  EXPECT_CU(cuLaunchKernelEx(&cfg, f, nullptr, nullptr));
  const char* name = nullptr;
  ASSERT_CU(cuFuncGetName(&name, f));
  EXPECT_STREQ(name, "scale");
}

TEST_F(DriverApi, ModulesAndLibrariesResolveKernelNames) {
  const char* ptx =
      ".version 7.8\n.target sm_70\n.address_size 64\n"
      ".visible .entry first(.param .u64 a) { ret; }\n.visible .entry second() { ret; }\n";
  CUmodule m;
  ASSERT_CU(cuModuleLoadData(&m, ptx));
  CUfunction f;
  EXPECT_CU(cuModuleGetFunction(&f, m, "second"));
  EXPECT_EQ(cuModuleGetFunction(&f, m, "third"), CUDA_ERROR_NOT_FOUND);
  ASSERT_CU(cuModuleUnload(m));
  EXPECT_EQ(cuModuleGetFunction(&f, m, "first"), CUDA_ERROR_INVALID_HANDLE);

  const unsigned char cubin[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};  // binary: names not checked
  CUlibrary lib;
  ASSERT_CU(cuLibraryLoadData(&lib, cubin, nullptr, nullptr, 0, nullptr, nullptr, 0));
  CUkernel k;
  ASSERT_CU(cuLibraryGetKernel(&k, lib, "simgpu_memory_100us"));
  const char* name = nullptr;
  ASSERT_CU(cuKernelGetName(&name, k));
  EXPECT_STREQ(name, "simgpu_memory_100us");
  ASSERT_CU(cuKernelGetFunction(&f, k));
  EXPECT_CU(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr));
  ASSERT_CU(cuLibraryUnload(lib));
}

TEST_F(DriverApi, StreamOrderedAllocationReleasesAtSynchronize) {
  const size_t before = FreeBytes();
  CUstream s;
  ASSERT_CU(cuStreamCreate(&s, 0));
  CUdeviceptr p, q;
  ASSERT_CU(cuMemAllocAsync(&p, 32 * kMiB, s));
  EXPECT_EQ(FreeBytes(), before - 32 * kMiB);
  ASSERT_CU(cuMemFreeAsync(p, s));
  ASSERT_CU(cuStreamSynchronize(s));  // release threshold 0: given back at sync
  EXPECT_EQ(FreeBytes(), before);

  CUmemoryPool pool;
  ASSERT_CU(cuDeviceGetDefaultMemPool(&pool, 0));
  cuuint64_t threshold = 1 * kGiB;
  ASSERT_CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
  ASSERT_CU(cuMemAllocAsync(&p, 32 * kMiB, s));
  ASSERT_CU(cuMemFreeAsync(p, s));
  ASSERT_CU(cuStreamSynchronize(s));
  EXPECT_EQ(FreeBytes(), before - 32 * kMiB);  // kept by the pool
  cuuint64_t reserved = 0, used = 1;
  ASSERT_CU(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved));
  ASSERT_CU(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
  EXPECT_EQ(reserved, 32 * kMiB);
  EXPECT_EQ(used, 0u);
  ASSERT_CU(cuMemAllocFromPoolAsync(&q, 30 * kMiB, pool, s));
  EXPECT_EQ(q, p);  // the cached block is reused
  ASSERT_CU(cuMemFreeAsync(q, s));
  ASSERT_CU(cuStreamSynchronize(s));
  ASSERT_CU(cuMemPoolTrimTo(pool, 0));
  EXPECT_EQ(FreeBytes(), before);
  threshold = 0;
  ASSERT_CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));

  CUmemPoolProps props{};
  props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  props.location = {CU_MEM_LOCATION_TYPE_DEVICE, 1};
  CUmemoryPool own;
  ASSERT_CU(cuMemPoolCreate(&own, &props));
  ASSERT_CU(cuMemAllocFromPoolAsync(&q, 8 * kMiB, own, s));
  int dev = -1;
  ASSERT_CU(cuPointerGetAttribute(&dev, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, q));
  EXPECT_EQ(dev, 1);
  ASSERT_CU(cuMemFreeAsync(q, s));
  ASSERT_CU(cuStreamSynchronize(s));
  ASSERT_CU(cuMemPoolDestroy(own));
  EXPECT_EQ(cuMemFreeAsync(12345, s), CUDA_ERROR_INVALID_VALUE);
}

TEST_F(DriverApi, VirtualMemoryMapsPhysicalHandles) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0};
  size_t gran = 0;
  ASSERT_CU(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  EXPECT_EQ(gran, 2 * kMiB);
  const size_t before = FreeBytes();
  CUmemGenericAllocationHandle h1, h2;
  EXPECT_EQ(cuMemCreate(&h1, gran + 1, &prop, 0), CUDA_ERROR_INVALID_VALUE);
  ASSERT_CU(cuMemCreate(&h1, 4 * gran, &prop, 0));
  ASSERT_CU(cuMemCreate(&h2, 4 * gran, &prop, 0));
  EXPECT_EQ(FreeBytes(), before - 8 * gran);
  CUdeviceptr va;
  ASSERT_CU(cuMemAddressReserve(&va, 8 * gran, 0, 0, 0));
  ASSERT_CU(cuMemMap(va, 4 * gran, 0, h1, 0));
  ASSERT_CU(cuMemMap(va + 4 * gran, 4 * gran, 0, h2, 0));
  std::vector<unsigned char> data(8 * gran), back(8 * gran);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i % 251);
  EXPECT_EQ(cuMemcpyHtoD_v2(va, data.data(), 16), CUDA_ERROR_INVALID_VALUE);  // no access yet
  CUmemAccessDesc access{{CU_MEM_LOCATION_TYPE_DEVICE, 0}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  ASSERT_CU(cuMemSetAccess(va, 8 * gran, &access, 1));
  ASSERT_CU(cuMemcpyHtoD_v2(va, data.data(), data.size()));  // one copy across both handles
  ASSERT_CU(cuMemcpyDtoH_v2(back.data(), va, back.size()));
  EXPECT_EQ(data, back);
  CUmemGenericAllocationHandle retained;
  ASSERT_CU(cuMemRetainAllocationHandle(&retained, reinterpret_cast<void*>(va + 4 * gran)));
  EXPECT_EQ(retained, h2);
  ASSERT_CU(cuMemRelease(retained));
  ASSERT_CU(cuMemRelease(h1));  // still mapped: capacity stays charged
  EXPECT_EQ(FreeBytes(), before - 8 * gran);
  ASSERT_CU(cuMemUnmap(va, 8 * gran));
  EXPECT_EQ(FreeBytes(), before - 4 * gran);  // h1 gone; h2 still held
  ASSERT_CU(cuMemRelease(h2));
  EXPECT_EQ(FreeBytes(), before);
  ASSERT_CU(cuMemAddressFree(va, 8 * gran));
}

TEST_F(DriverApi, PeerAccessFollowsLinks) {
  CUcontext other;
  ASSERT_CU(cuDevicePrimaryCtxRetain(&other, 1));
  EXPECT_CU(cuCtxEnablePeerAccess(other, 0));
  EXPECT_EQ(cuCtxEnablePeerAccess(other, 0), CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED);
  EXPECT_CU(cuCtxDisablePeerAccess(other));
  EXPECT_EQ(cuCtxDisablePeerAccess(other), CUDA_ERROR_PEER_ACCESS_NOT_ENABLED);
  EXPECT_EQ(cuCtxEnablePeerAccess(ctx_, 0), CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);  // itself
  ASSERT_CU(cuDevicePrimaryCtxRelease_v2(1));
}

TEST_F(DriverApi, ErrorNamesAndStrings) {
  const char* s = nullptr;
  ASSERT_CU(cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &s));
  EXPECT_STREQ(s, "CUDA_ERROR_OUT_OF_MEMORY");
  ASSERT_CU(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &s));
  EXPECT_STREQ(s, "out of memory");
  ASSERT_CU(cuGetErrorName(CUDA_ERROR_NVLINK_UNCORRECTABLE, &s));
  EXPECT_STREQ(s, "CUDA_ERROR_NVLINK_UNCORRECTABLE");
  EXPECT_EQ(cuGetErrorName(static_cast<CUresult>(123456), &s), CUDA_ERROR_INVALID_VALUE);
}

// --- cuGetProcAddress ---

struct Lookup {
  std::string name;
  int version;
  unsigned long long flags;
};

std::vector<Lookup> RuntimeLookups() {
  std::ifstream in(CUDART13_LOOKUPS);
  std::vector<Lookup> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    Lookup l;
    if (line[0] == ' ')
      l.name = "";
    else
      ls >> l.name;
    ls >> l.version >> l.flags;
    out.push_back(l);
  }
  return out;
}

TEST(GetProcAddress, AnswersEveryLookupOfTheCuda13Runtime) {
  auto lookups = RuntimeLookups();
  ASSERT_EQ(lookups.size(), 440u);
  int found = 0;
  for (const auto& l : lookups) {
    void* fn = nullptr;
    CUdriverProcAddressQueryResult status;
    CUresult r = cuGetProcAddress_v2(l.name.c_str(), &fn, l.version, l.flags, &status);
    if (l.name.empty()) {
      EXPECT_EQ(r, CUDA_ERROR_NOT_FOUND);
      continue;
    }
    EXPECT_EQ(r, CUDA_SUCCESS) << l.name << " " << l.version << " " << l.flags;
    EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SUCCESS) << l.name;
    EXPECT_NE(fn, nullptr) << l.name;
    found += r == CUDA_SUCCESS;
  }
  EXPECT_EQ(found, 439);
}

TEST(GetProcAddress, PicksTheVersionedAndPerThreadSymbols) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(lib, nullptr);
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status;
  ASSERT_CU(cuGetProcAddress_v2("cuMemAlloc", &fn, 12000, 0, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuMemAlloc_v2"));
  ASSERT_CU(cuGetProcAddress_v2("cuCtxCreate", &fn, 12000, 0, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuCtxCreate_v3"));
  ASSERT_CU(cuGetProcAddress_v2("cuCtxCreate", &fn, 13000, 0, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuCtxCreate_v4"));
  ASSERT_CU(cuGetProcAddress_v2("cuLaunchKernel", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuLaunchKernel_ptsz"));
  ASSERT_CU(cuGetProcAddress_v2("cuMemcpyHtoD", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuMemcpyHtoD_v2_ptds"));
  ASSERT_CU(cuGetProcAddress_v2("cuGetProcAddress", &fn, 12000, 0, &status));
  EXPECT_EQ(fn, dlsym(lib, "cuGetProcAddress_v2"));
  EXPECT_EQ(cuGetProcAddress_v2("cuMemAllocAsync", &fn, 11000, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
  EXPECT_EQ(cuGetProcAddress_v2("cuNoSuchThing", &fn, 13000, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  // A real entry point simgpu does not model resolves and reports NOT_SUPPORTED.
  ASSERT_CU(cuGetProcAddress_v2("cuGraphCreate", &fn, 12000, 0, &status));
  EXPECT_EQ(reinterpret_cast<CUresult (*)()>(fn)(), CUDA_ERROR_NOT_SUPPORTED);
  auto exported = reinterpret_cast<CUresult (*)()>(dlsym(lib, "cuGraphCreate"));
  ASSERT_NE(exported, nullptr);
  EXPECT_EQ(exported(), CUDA_ERROR_NOT_SUPPORTED);
}

// --- NVML sees what the driver does ---

class Nvml : public DriverApi {
 protected:
  void SetUp() override {
    DriverApi::SetUp();
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    ASSERT_NE(lib_, nullptr) << dlerror();
    ASSERT_EQ(Fn<nvmlReturn_t (*)()>("nvmlInit_v2")(), NVML_SUCCESS);
    ASSERT_EQ(Fn<nvmlReturn_t (*)(unsigned, nvmlDevice_t*)>("nvmlDeviceGetHandleByIndex_v2")(0, &dev_), NVML_SUCCESS);
  }
  void TearDown() override {
    Fn<nvmlReturn_t (*)()>("nvmlShutdown")();
    DriverApi::TearDown();
  }
  template <typename F>
  F Fn(const char* name) {
    return reinterpret_cast<F>(dlsym(lib_, name));
  }
  void* lib_ = nullptr;
  nvmlDevice_t dev_ = nullptr;
};

TEST_F(Nvml, MemoryAndProcessesMatchTheDriverView) {
  CUdeviceptr p;
  ASSERT_CU(cuMemAlloc_v2(&p, 256 * kMiB));
  size_t free_b, total_b;
  ASSERT_CU(cuMemGetInfo_v2(&free_b, &total_b));
  nvmlMemory_t mem;
  ASSERT_EQ(Fn<nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*)>("nvmlDeviceGetMemoryInfo")(dev_, &mem), NVML_SUCCESS);
  EXPECT_EQ(mem.total, total_b);
  EXPECT_EQ(mem.free, free_b);
  nvmlMemory_v2_t mem2{};
  mem2.version = nvmlMemory_v2;
  ASSERT_EQ(Fn<nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_v2_t*)>("nvmlDeviceGetMemoryInfo_v2")(dev_, &mem2),
            NVML_SUCCESS);
  EXPECT_EQ(mem2.used, total_b - free_b);
  auto procs =
      Fn<nvmlReturn_t (*)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*)>("nvmlDeviceGetComputeRunningProcesses_v3");
  unsigned count = 0;
  EXPECT_EQ(procs(dev_, &count, nullptr), NVML_ERROR_INSUFFICIENT_SIZE);
  ASSERT_GE(count, 1u);
  std::vector<nvmlProcessInfo_t> infos(count);
  ASSERT_EQ(procs(dev_, &count, infos.data()), NVML_SUCCESS);
  bool found = false;
  for (unsigned i = 0; i < count; ++i)
    if (infos[i].pid == unsigned(getpid())) found = infos[i].usedGpuMemory >= 256 * kMiB;
  EXPECT_TRUE(found);
  char name[96];
  ASSERT_EQ(Fn<nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned)>("nvmlDeviceGetName")(dev_, name, sizeof name),
            NVML_SUCCESS);
  EXPECT_STREQ(name, "simgpu A");
  ASSERT_CU(cuMemFree_v2(p));
}

TEST_F(Nvml, ProcessUtilizationReflectsSimulatedWork) {
  CUfunction compute = Kernel("simgpu_compute_1000us");
  CUstream s;
  ASSERT_CU(cuStreamCreate(&s, 0));
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const unsigned long long since_us = uint64_t(ts.tv_sec) * 1000000ull + uint64_t(ts.tv_nsec) / 1000;
  for (int i = 0; i < 400; ++i) ASSERT_CU(cuLaunchKernel(compute, 1, 1, 1, 32, 1, 1, 0, s, nullptr, nullptr));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto util = Fn<nvmlReturn_t (*)(nvmlDevice_t, nvmlProcessUtilizationSample_t*, unsigned*, unsigned long long)>(
      "nvmlDeviceGetProcessUtilization");
  nvmlProcessUtilizationSample_t samples[8];
  unsigned n = 8;
  ASSERT_EQ(util(dev_, samples, &n, since_us), NVML_SUCCESS);
  bool found = false;
  for (unsigned i = 0; i < n; ++i) {
    if (samples[i].pid != unsigned(getpid())) continue;
    found = true;
    EXPECT_GE(samples[i].smUtil, 80u);
    EXPECT_LE(samples[i].memUtil, 30u);  // compute-bound work
  }
  EXPECT_TRUE(found);
  nvmlUtilization_t rates;
  ASSERT_EQ(Fn<nvmlReturn_t (*)(nvmlDevice_t, nvmlUtilization_t*)>("nvmlDeviceGetUtilizationRates")(dev_, &rates),
            NVML_SUCCESS);
  EXPECT_GE(rates.gpu, 20u);
  ASSERT_CU(cuStreamSynchronize(s));
}

}  // namespace
