// hip_alloc_probe: how much device memory this process can hold, the HIP twin of
// alloc_probe. Allocates --chunk sized blocks until hipMalloc reports
// hipErrorOutOfMemory (or --limit is reached), then halves the chunk down to 2 MiB to
// fill the rest. Prints key=value lines, holds the memory for --hold seconds, frees all.
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "hip_common.h"

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--device", "--chunk", "--limit", "--hold"},
                     "[--chunk SIZE (default 256MiB)] [--limit BYTES (stop there; default none)] [--device D]\n"
                     "[--hold SECONDS (keep the memory that long before freeing; default 0)]\n"
                     "sizes: 1048576, 512KiB, 256MiB, 1GiB (binary) or 512MB, 1GB (decimal)");
  const uint64_t chunk = args.Bytes("--chunk", 256ull << 20);
  const uint64_t limit = args.Bytes("--limit", 0);  // 0: until out of memory
  if (chunk == 0) args.Fail("--chunk: expected a positive size");
  const uint64_t kMinChunk = 2ull << 20;

  samples::HipDevice d = samples::OpenHipDevice(args.Int("--device", 0));
  size_t total = 0, free_before = 0, free_after = 0, free_final = 0, unused = 0;
  HIP_CHECK(hipDeviceTotalMem(&total, d.ordinal));
  HIP_CHECK(hipMemGetInfo(&free_before, &unused));
  std::printf("device=%d name=%s\ntotal_bytes=%zu\nfree_before=%zu\n", d.ordinal, d.name.c_str(), total, free_before);

  std::vector<void*> blocks;
  uint64_t allocated = 0;
  hipError_t oom = hipSuccess;
  for (uint64_t size = chunk;; size /= 2) {
    while (limit == 0 || allocated + size <= limit) {
      void* p = nullptr;
      const hipError_t r = hipMalloc(&p, size);
      if (r == hipErrorOutOfMemory) {
        oom = r;
        (void)hipGetLastError();  // the expected failure is not left as the thread's error
        break;
      }
      samples::HipCheck(r, "hipMalloc", __FILE__, __LINE__);
      blocks.push_back(p);
      allocated += size;
    }
    if (size / 2 < std::min(kMinChunk, chunk)) break;
  }
  HIP_CHECK(hipMemGetInfo(&free_after, &unused));
  std::printf("allocated_bytes=%llu\nallocations=%zu\nfree_after=%zu\noom_error=%s\n",
              static_cast<unsigned long long>(allocated), blocks.size(), free_after,
              oom == hipSuccess ? "none" : hipGetErrorName(oom));

  std::fflush(stdout);
  if (const double hold = args.Double("--hold", 0); hold > 0) usleep(static_cast<useconds_t>(hold * 1e6));
  for (void* p : blocks) HIP_CHECK(hipFree(p));
  HIP_CHECK(hipMemGetInfo(&free_final, &unused));
  std::printf("free_final=%zu\n", free_final);
  return 0;
}
