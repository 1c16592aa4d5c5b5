// vector_add: c[i] = a[i] + b[i] with a hand-written PTX kernel, timed with CUDA events.
// On a real GPU it checks every element; on simgpu (kernels take time but compute nothing)
// it checks that copies round-trip instead. Both check cuMemsetD32 on readback.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

const char kPtx[] = R"PTX(
.version 7.8
.target sm_70
.address_size 64

.visible .entry vector_add(
    .param .u64 vector_add_param_a,
    .param .u64 vector_add_param_b,
    .param .u64 vector_add_param_c,
    .param .u32 vector_add_param_n
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<11>;

    ld.param.u64 %rd1, [vector_add_param_a];
    ld.param.u64 %rd2, [vector_add_param_b];
    ld.param.u64 %rd3, [vector_add_param_c];
    ld.param.u32 %r1, [vector_add_param_n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd1;
    cvta.to.global.u64 %rd5, %rd2;
    cvta.to.global.u64 %rd6, %rd3;
    mul.wide.u32 %rd7, %r5, 4;
    add.s64 %rd8, %rd4, %rd7;
    add.s64 %rd9, %rd5, %rd7;
    add.s64 %rd10, %rd6, %rd7;
    ld.global.f32 %f1, [%rd8];
    ld.global.f32 %f2, [%rd9];
    add.rn.f32 %f3, %f1, %f2;
    st.global.f32 [%rd10], %f3;
DONE:
    ret;
}
)PTX";

}  // namespace

int main(int argc, char** argv) {
  samples::Args args(argc, argv, {"--n", "--device"}, "[--n ELEMENTS (default 1048576)] [--device D]");
  const long long n_arg = args.Int("--n", 1 << 20);
  if (n_arg <= 0 || n_arg > UINT32_MAX) args.Fail("--n: expected 1 to 4294967295 elements");
  unsigned n = static_cast<unsigned>(n_arg);  // the kernel's u32 parameter
  const size_t bytes = size_t{n} * sizeof(float);

  samples::Device d = samples::OpenDevice(args.Int("--device", 0));
  const bool sim = samples::OnSimulator();

  std::vector<float> a(n), b(n), c(n);
  for (size_t i = 0; i < n; ++i) {  // exactly representable, so a + b is exact too
    a[i] = static_cast<float>(i % 1024) * 0.25f;
    b[i] = static_cast<float>(i % 4096) * 0.5f;
  }
  CUdeviceptr da = 0, db = 0, dc = 0;
  CHECK(cuMemAlloc(&da, bytes));
  CHECK(cuMemAlloc(&db, bytes));
  CHECK(cuMemAlloc(&dc, bytes));
  CHECK(cuMemcpyHtoD(da, a.data(), bytes));
  CHECK(cuMemcpyHtoD(db, b.data(), bytes));

  // cuMemsetD32 on c, read back, before the kernel overwrites it.
  const uint32_t kPattern = 0xDEADBEEF;
  CHECK(cuMemsetD32(dc, kPattern, n));
  std::vector<uint32_t> words(n);
  CHECK(cuMemcpyDtoH(words.data(), dc, bytes));
  bool pass = std::all_of(words.begin(), words.end(), [&](uint32_t w) { return w == kPattern; });
  std::string verdict = pass ? "" : "cuMemsetD32 pattern not read back";

  CUmodule module = samples::LoadPtx(kPtx);
  CUfunction fn = nullptr;
  CHECK(cuModuleGetFunction(&fn, module, "vector_add"));
  CUevent start = nullptr, stop = nullptr;
  CHECK(cuEventCreate(&start, CU_EVENT_DEFAULT));
  CHECK(cuEventCreate(&stop, CU_EVENT_DEFAULT));
  const unsigned block = 256, grid = n / block + (n % block != 0);
  void* params[] = {&da, &db, &dc, &n};
  CHECK(cuEventRecord(start, nullptr));
  CHECK(cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, nullptr, params, nullptr));
  CHECK(cuEventRecord(stop, nullptr));
  CHECK(cuEventSynchronize(stop));
  float ms = 0;
  CHECK(cuEventElapsedTime(&ms, start, stop));
  std::printf("vector_add: device=%d name=%s kernel_ms=%.3f\n", d.ordinal, d.name.c_str(), ms);
  CHECK(cuMemcpyDtoH(c.data(), dc, bytes));

  if (pass && !sim) {  // real GPU: every element of c must be a + b
    for (size_t i = 0; i < n && pass; ++i) {
      if (c[i] != a[i] + b[i]) {
        pass = false;
        verdict =
            "c[" + std::to_string(i) + "] = " + std::to_string(c[i]) + ", expected " + std::to_string(a[i] + b[i]);
      }
    }
  } else if (pass) {  // simgpu: a reads back as written, and a -> c on the device -> host is a
    CHECK(cuMemcpyDtoH(c.data(), da, bytes));
    pass = std::memcmp(c.data(), a.data(), bytes) == 0;
    if (!pass) verdict = "device-to-host copy of a differs from what was written";
    CHECK(cuMemcpyDtoD(dc, da, bytes));
    std::fill(c.begin(), c.end(), 0.0f);
    CHECK(cuMemcpyDtoH(c.data(), dc, bytes));
    if (pass && std::memcmp(c.data(), a.data(), bytes) != 0) {
      pass = false;
      verdict = "device-to-device copy a -> c differs from a";
    }
  }

  CHECK(cuEventDestroy(start));
  CHECK(cuEventDestroy(stop));
  CHECK(cuModuleUnload(module));
  CHECK(cuMemFree(da));
  CHECK(cuMemFree(db));
  CHECK(cuMemFree(dc));
  samples::CloseDevice(d);

  if (!pass) {
    std::printf("vector_add: FAIL (%s)\n", verdict.c_str());
    return 1;
  }
  if (sim)
    std::printf("vector_add: PASS (round trip on simulator, %u elements)\n", n);
  else
    std::printf("vector_add: PASS (%u elements)\n", n);
  return 0;
}
