// A CUDA runtime-API program built by nvcc with the default static cudart: the path
// most CUDA programs and frameworks take into the driver (cudart resolves every driver
// function through cuGetProcAddress). It needs a real GPU (the runtime cannot start on
// simgpu) and belongs to the real-GPU suite: it checks its results and reports what
// cudaMemGetInfo shows, so a run under libgpushare.so shows the cap.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    cudaError_t e_ = (call);                                                                          \
    if (e_ != cudaSuccess) {                                                                          \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_)); \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)

__global__ void VectorAdd(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1 << 22;
  int devices = 0;
  CHECK(cudaGetDeviceCount(&devices));
  size_t free_b = 0, total_b = 0;
  CHECK(cudaMemGetInfo(&free_b, &total_b));
  std::printf("runtime_vector_add: devices=%d free=%zu total=%zu\n", devices, free_b, total_b);
  std::vector<float> a(n), b(n), c(n);
  for (int i = 0; i < n; ++i) a[i] = i * 0.5f, b[i] = 2.0f * i;
  float *da, *db, *dc;
  CHECK(cudaMalloc(&da, n * sizeof(float)));
  CHECK(cudaMalloc(&db, n * sizeof(float)));
  CHECK(cudaMalloc(&dc, n * sizeof(float)));
  CHECK(cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  VectorAdd<<<(n + 255) / 256, 256>>>(da, db, dc, n);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(c.data(), dc, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (c[i] != a[i] + b[i]) {
      std::printf("runtime_vector_add: FAIL at %d\n", i);
      return 1;
    }
  }
  // Past a cap the runtime must report its own out-of-memory error, and go on.
  void* big = nullptr;
  cudaError_t e = cudaMalloc(&big, total_b + (1ull << 30));
  std::printf("runtime_vector_add: oversized cudaMalloc -> %s\n", cudaGetErrorName(e));
  cudaGetLastError();
  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dc));
  std::printf("runtime_vector_add: PASS (%d elements)\n", n);
  return 0;
}
