// An interactive driver-API client for the broker's integration tests: it reads one
// command per line on stdin and answers one line on stdout, so a test can hold
// several processes at chosen states (memory held, channel scribbled, killed).
//   init                 -> devices=N
//   alloc DEV BYTES      -> alloc=ok | alloc=CUDA_ERROR_...
//   freeall              -> freed=N
//   info DEV             -> free=X total=Y
//   scribble             -> scribbled=BYTES   (garbage over its own broker channel)
//   quit
#include <cuda.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char* Name(CUresult r) {
  const char* s = "CUDA_ERROR_UNKNOWN";
  cuGetErrorName(r, &s);
  return s;
}

bool UseDevice(int ordinal) {
  CUdevice dev;
  CUcontext ctx;
  return cuDeviceGet(&dev, ordinal) == CUDA_SUCCESS && cuDevicePrimaryCtxRetain(&ctx, dev) == CUDA_SUCCESS &&
         cuCtxSetCurrent(ctx) == CUDA_SUCCESS;
}

// Writes random bytes over every gpushare channel this process has mapped.
size_t Scribble() {
  std::ifstream maps("/proc/self/maps");
  size_t written = 0;
  std::mt19937_64 rng(42);
  for (std::string line; std::getline(maps, line);) {
    size_t at = line.find("/dev/shm/gpushare.");
    if (at == std::string::npos) continue;
    unsigned long begin = 0, end = 0;
    std::sscanf(line.c_str(), "%lx-%lx", &begin, &end);
    auto* p = reinterpret_cast<unsigned char*>(begin);
    for (unsigned long i = 0; i < end - begin; ++i) p[i] = static_cast<unsigned char>(rng());
    written += end - begin;
  }
  return written;
}

}  // namespace

int main() {
  std::vector<CUdeviceptr> held;
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "init") {
      int n = 0;
      CUresult r = cuInit(0);
      if (r == CUDA_SUCCESS) cuDeviceGetCount(&n);
      std::printf("devices=%d init=%s\n", n, Name(r));
    } else if (cmd == "alloc") {
      int dev = 0;
      unsigned long long bytes = 0;
      in >> dev >> bytes;
      CUdeviceptr p = 0;
      CUresult r = UseDevice(dev) ? cuMemAlloc(&p, bytes) : CUDA_ERROR_INVALID_DEVICE;
      if (r == CUDA_SUCCESS) held.push_back(p);
      std::printf("alloc=%s\n", r == CUDA_SUCCESS ? "ok" : Name(r));
    } else if (cmd == "freeall") {
      for (CUdeviceptr p : held) cuMemFree(p);
      std::printf("freed=%zu\n", held.size());
      held.clear();
    } else if (cmd == "info") {
      int dev = 0;
      in >> dev;
      size_t free_b = 0, total = 0;
      if (UseDevice(dev)) cuMemGetInfo(&free_b, &total);
      std::printf("free=%zu total=%zu\n", free_b, total);
    } else if (cmd == "scribble") {
      std::printf("scribbled=%zu\n", Scribble());
    } else if (cmd == "quit") {
      break;
    } else {
      std::printf("unknown=%s\n", cmd.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}
