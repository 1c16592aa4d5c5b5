// A small driver-API client that integration tests run as separate processes on
// simgpu: it allocates, saturates a GPU, or reports what it sees, one job per run.
#include <cuda.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/vendor/nvml_api.h"

namespace {

#define CHECK(call)                                                          \
  do {                                                                       \
    CUresult r_ = (call);                                                    \
    if (r_ != CUDA_SUCCESS) {                                                \
      const char* n_ = "?";                                                  \
      cuGetErrorName(r_, &n_);                                               \
      std::printf("error %s at %s:%d: %s\n", n_, __FILE__, __LINE__, #call); \
      std::exit(2);                                                          \
    }                                                                        \
  } while (0)

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void SleepUntilRealtime(uint64_t ns) {
  timespec ts{time_t(ns / 1000000000ull), long(ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

void Setup(int device) {
  CHECK(cuInit(0));
  CUdevice d;
  CHECK(cuDeviceGet(&d, device));
  CUcontext ctx;
  CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
  CHECK(cuCtxSetCurrent(ctx));
}

void WaitForStdinClose() {
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
}

// hold DEVICE BYTES: allocate and keep it until stdin closes.
int Hold(int device, size_t bytes) {
  Setup(device);
  CUdeviceptr p;
  CUresult r = cuMemAlloc(&p, bytes);
  std::printf("%s\n", r == CUDA_SUCCESS ? "allocated" : r == CUDA_ERROR_OUT_OF_MEMORY ? "oom" : "error");
  std::fflush(stdout);
  WaitForStdinClose();
  return 0;
}

// alloc DEVICE BYTES: report free/total, try one allocation, report the outcome.
int Alloc(int device, size_t bytes) {
  Setup(device);
  size_t free_b, total_b;
  CHECK(cuMemGetInfo(&free_b, &total_b));
  CUdeviceptr p;
  CUresult r = cuMemAlloc(&p, bytes);
  std::printf("free=%zu total=%zu result=%s\n", free_b, total_b,
              r == CUDA_SUCCESS               ? "ok"
              : r == CUDA_ERROR_OUT_OF_MEMORY ? "oom"
                                              : "error");
  return 0;
}

// saturate DEVICE START_REALTIME_NS SECONDS KERNEL_US: keep the GPU busy with
// simgpu_compute_<K>us kernels over [start, start+seconds]; print GPU time obtained.
int Saturate(int device, uint64_t start_ns, double seconds, int kernel_us) {
  Setup(device);
  std::string name = "simgpu_compute_" + std::to_string(kernel_us) + "us";
  std::string ptx = ".version 7.8\n.target sm_70\n.address_size 64\n.visible .entry " + name + "() { ret; }\n";
  CUmodule m;
  CHECK(cuModuleLoadData(&m, ptx.c_str()));
  CUfunction f;
  CHECK(cuModuleGetFunction(&f, m, name.c_str()));
  constexpr int kInFlight = 4;
  CUevent done[kInFlight];
  for (auto& e : done) CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
  SleepUntilRealtime(start_ns);
  const uint64_t end_ns = start_ns + uint64_t(seconds * 1e9);
  long launched = 0;
  while (RealtimeNs() < end_ns) {
    CUevent& slot = done[launched % kInFlight];
    if (launched >= kInFlight) CHECK(cuEventSynchronize(slot));
    if (RealtimeNs() >= end_ns) break;
    CHECK(cuLaunchKernel(f, 1, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr));
    CHECK(cuEventRecord(slot, nullptr));
    ++launched;
  }
  CHECK(cuCtxSynchronize());
  std::printf("launched=%ld gpu_us=%ld window_us=%.0f\n", launched, launched * kernel_us, seconds * 1e6);
  return 0;
}

// topo: peer-access matrix from the driver and P2P status from NVML.
int Topo() {
  CHECK(cuInit(0));
  int n;
  CHECK(cuDeviceGetCount(&n));
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      int can = 0;
      CHECK(cuDeviceCanAccessPeer(&can, a, b));
      std::printf("cuda %d %d %d\n", a, b, can);
    }
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
  if (lib == nullptr) return 3;
  auto init = reinterpret_cast<nvmlReturn_t (*)()>(dlsym(lib, "nvmlInit_v2"));
  auto handle =
      reinterpret_cast<nvmlReturn_t (*)(unsigned, nvmlDevice_t*)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto p2p = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, nvmlDevice_t, nvmlGpuP2PCapsIndex_t, nvmlGpuP2PStatus_t*)>(
      dlsym(lib, "nvmlDeviceGetP2PStatus"));
  if (init() != NVML_SUCCESS) return 4;
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      nvmlDevice_t da, db;
      handle(a, &da);
      handle(b, &db);
      nvmlGpuP2PStatus_t read, nvlink;
      p2p(da, db, NVML_P2P_CAPS_INDEX_READ, &read);
      p2p(da, db, NVML_P2P_CAPS_INDEX_NVLINK, &nvlink);
      std::printf("nvml %d %d %d %d\n", a, b, read == NVML_P2P_STATUS_OK, nvlink == NVML_P2P_STATUS_OK);
    }
  return 0;
}

// roundtrip BYTES: host -> GPU0 -> GPU0 -> GPU1 (peer) -> host, bytes compared.
int RoundTrip(size_t bytes) {
  Setup(0);
  std::vector<unsigned char> src(bytes), back(bytes, 0);
  for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>(i * 131 + 7);
  CUdeviceptr a, b, c;
  CHECK(cuMemAlloc(&a, bytes));
  CHECK(cuMemAlloc(&b, bytes));
  CUcontext ctx0, ctx1;
  CHECK(cuCtxGetCurrent(&ctx0));
  CHECK(cuDevicePrimaryCtxRetain(&ctx1, 1));
  CHECK(cuCtxSetCurrent(ctx1));
  CHECK(cuMemAlloc(&c, bytes));
  CHECK(cuCtxSetCurrent(ctx0));
  CHECK(cuMemcpyHtoD(a, src.data(), bytes));
  CHECK(cuMemcpyDtoD(b, a, bytes));
  CHECK(cuMemcpyPeer(c, ctx1, b, ctx0, bytes));
  CHECK(cuMemcpyDtoH(back.data(), c, bytes));
  std::printf("roundtrip %s\n", std::memcmp(src.data(), back.data(), bytes) == 0 ? "ok" : "mismatch");
  return 0;
}

// forkcheck: allocate, fork a child that exits normally, then check the parent still
// holds its memory; the child's CUDA calls fail as on a real driver.
int ForkCheck() {
  Setup(0);
  CUdeviceptr p;
  CHECK(cuMemAlloc(&p, 64 << 20));
  size_t before, after, total;
  CHECK(cuMemGetInfo(&before, &total));
  pid_t child = fork();
  if (child == 0) {
    CUresult r = cuInit(0);
    std::exit(r == CUDA_ERROR_NOT_INITIALIZED ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(cuMemGetInfo(&after, &total));
  std::printf("child_ok=%d before=%zu after=%zu\n", WIFEXITED(status) && WEXITSTATUS(status) == 0, before, after);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "hold" && argc == 4) return Hold(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  if (cmd == "alloc" && argc == 4) return Alloc(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  if (cmd == "saturate" && argc == 6)
    return Saturate(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10), std::atof(argv[4]), std::atoi(argv[5]));
  if (cmd == "topo") return Topo();
  if (cmd == "forkcheck") return ForkCheck();
  if (cmd == "roundtrip" && argc == 3) return RoundTrip(std::strtoull(argv[2], nullptr, 10));
  if (cmd == "init") {
    CUresult r = cuInit(0);
    const char* n = "?";
    cuGetErrorName(r, &n);
    std::printf("cuInit=%s\n", n);
    return 0;
  }
  std::fprintf(stderr, "usage: simgpu_worker hold|alloc|saturate|topo|roundtrip|init ...\n");
  return 64;
}
