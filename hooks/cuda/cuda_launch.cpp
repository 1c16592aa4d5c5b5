// Launch hooks: every kernel launch (plain, Ex, cooperative), graph launch, async copy
// and async memset passes its virtual GPU's gate (it waits there while the broker has
// given the GPU's time to another client) and is counted for the broker's classifier
// (LaunchGate::Launch: the thread's tally, else a ring record). Also the drain the
// gate's thread runs when a grant is revoked.
#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/cuda_hooks.h"

using namespace gpushare;
using namespace gpushare::cuda;
namespace proto = gpushare::protocol;

namespace {

using Kind = proto::RecordKind;

std::string FunctionName(uintptr_t function) {
  const char* name = nullptr;
  if (GS_CUDA_CALL(cuFuncGetName, &name, reinterpret_cast<CUfunction>(function)) == CUDA_SUCCESS && name != nullptr)
    return name;
  // Since CUDA 12 a CUkernel may be passed where a CUfunction is expected.
  if (GS_CUDA_CALL(cuKernelGetName, &name, reinterpret_cast<CUkernel>(function)) == CUDA_SUCCESS && name != nullptr)
    return name;
  return "";
}

// What a launch or copy was, as the hook saw it: its kernel (0 for none) and its shape
// for a record (formed into one only when the launch cannot be tallied).
struct Shape {
  uintptr_t function = 0;
  LaunchShape launch;
};

// The virtual GPU a launch goes to: the current context's (0 when it cannot be told).
// A client with one GPU needs no lookup.
int LaunchDevice(Client* c) {
  if (c->devices().count() <= 1) return 0;
  int device;
  return CurrentVirtualDevice(c, &device) == CUDA_SUCCESS ? device : 0;
}

// Passes the gate, calls the real function, counts what it launched.
template <typename Real, typename... Args>
CUresult Gated(Kind kind, CUstream stream, const Shape& shape, Real real, Args... args) {
  if (real == nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  Client* c = ReadyClient();
  if (c == nullptr || !c->gate().attached()) return real(args...);  // standalone: nothing to count
  LaunchGate::Launch launch(c->gate(), LaunchDevice(c), kind, reinterpret_cast<uint64_t>(stream), shape.function,
                            FunctionName, shape.launch);
  const CUresult r = real(args...);
  if (r == CUDA_SUCCESS) launch.Taken();
  return r;
}

Shape KernelShape(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  unsigned shared) {
  return {reinterpret_cast<uintptr_t>(f), {{gx, gy, gz}, {bx, by, bz}, shared, 0}};
}

Shape ExShape(const CUlaunchConfig* config, CUfunction f, Kind* kind) {
  *kind = Kind::kKernel;
  if (config == nullptr) return {reinterpret_cast<uintptr_t>(f), {}};
  for (unsigned i = 0; config->attrs != nullptr && i < config->numAttrs; ++i)
    if (config->attrs[i].id == CU_LAUNCH_ATTRIBUTE_COOPERATIVE && config->attrs[i].value.cooperative != 0)
      *kind = Kind::kCooperative;
  return KernelShape(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                     config->blockDimZ, config->sharedMemBytes);
}

CUstream ExStream(const CUlaunchConfig* config) { return config != nullptr ? config->hStream : nullptr; }

Shape Bytes(uint64_t bytes) { return {0, {{0, 0, 0}, {0, 0, 0}, 0, bytes}}; }

Kind CopyKind(CUmemorytype src, CUmemorytype dst) {
  if (src == CU_MEMORYTYPE_HOST) return Kind::kCopyHtoD;
  if (dst == CU_MEMORYTYPE_HOST) return Kind::kCopyDtoH;
  return Kind::kCopyDtoD;
}

// Contexts the application created, per virtual GPU (not on any hot path).
std::mutex g_contexts_mu;
std::vector<std::pair<int, CUcontext>> g_contexts;

void ForgetContext(CUcontext ctx) {
  std::lock_guard<std::mutex> lock(g_contexts_mu);
  g_contexts.erase(std::remove_if(g_contexts.begin(), g_contexts.end(), [&](const auto& e) { return e.second == ctx; }),
                   g_contexts.end());
}

void SynchronizeContext(CUcontext ctx) {
  if (GS_CUDA_CALL(cuCtxPushCurrent_v2, ctx) != CUDA_SUCCESS) return;
  GS_CUDA_CALL(cuCtxSynchronize);
  CUcontext popped;
  GS_CUDA_CALL(cuCtxPopCurrent_v2, &popped);
}

}  // namespace

namespace gpushare::cuda {

void TrackContext(int device, CUcontext ctx) {
  std::lock_guard<std::mutex> lock(g_contexts_mu);
  g_contexts.emplace_back(device, ctx);
}

void DrainDevice(int device) {
  Client* c = ReadyClient();
  if (c == nullptr) return;
  const int physical = c->devices().Physical(device);
  if (physical < 0) return;
  // The primary context, if the application has it active (retained only to sync it).
  unsigned flags = 0;
  int active = 0;
  if (GS_CUDA_CALL(cuDevicePrimaryCtxGetState, physical, &flags, &active) == CUDA_SUCCESS && active) {
    CUcontext primary = nullptr;
    if (GS_CUDA_CALL(cuDevicePrimaryCtxRetain, &primary, physical) == CUDA_SUCCESS) {
      SynchronizeContext(primary);
      GS_CUDA_CALL(cuDevicePrimaryCtxRelease_v2, physical);
    }
  }
  std::vector<CUcontext> created;
  {
    std::lock_guard<std::mutex> lock(g_contexts_mu);
    for (const auto& [d, ctx] : g_contexts)
      if (d == device) created.push_back(ctx);
  }
  for (CUcontext ctx : created) SynchronizeContext(ctx);
}

}  // namespace gpushare::cuda

extern "C" {

CUresult cuCtxDestroy_v2(CUcontext ctx) {
  return GS_GUARDED(CudaApi, {
    ForgetContext(ctx);
    const CUresult r = GS_CUDA_CALL(cuCtxDestroy_v2, ctx);
    ContextsChanged();  // a thread that had it current must ask again
    return r;
  });
}

#define GS_KERNEL_LAUNCH(symbol)                                                                                       \
  CUresult symbol(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,          \
                  unsigned shared, CUstream stream, void** params, void** extra) {                                     \
    return GS_GUARDED(CudaApi, {                                                                                       \
      return Gated(Kind::kKernel, stream, KernelShape(f, gx, gy, gz, bx, by, bz, shared), real::symbol, f, gx, gy, gz, \
                   bx, by, bz, shared, stream, params, extra);                                                         \
    });                                                                                                                \
  }
GS_KERNEL_LAUNCH(cuLaunchKernel)
GS_KERNEL_LAUNCH(cuLaunchKernel_ptsz)

#define GS_COOPERATIVE_LAUNCH(symbol)                                                                               \
  CUresult symbol(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,       \
                  unsigned shared, CUstream stream, void** params) {                                                \
    return GS_GUARDED(CudaApi, {                                                                                    \
      return Gated(Kind::kCooperative, stream, KernelShape(f, gx, gy, gz, bx, by, bz, shared), real::symbol, f, gx, \
                   gy, gz, bx, by, bz, shared, stream, params);                                                     \
    });                                                                                                             \
  }
GS_COOPERATIVE_LAUNCH(cuLaunchCooperativeKernel)
GS_COOPERATIVE_LAUNCH(cuLaunchCooperativeKernel_ptsz)

#define GS_EX_LAUNCH(symbol)                                                                 \
  CUresult symbol(const CUlaunchConfig* config, CUfunction f, void** params, void** extra) { \
    return GS_GUARDED(CudaApi, {                                                             \
      Kind kind;                                                                             \
      const Shape shape = ExShape(config, f, &kind);                                         \
      return Gated(kind, ExStream(config), shape, real::symbol, config, f, params, extra);   \
    });                                                                                      \
  }
GS_EX_LAUNCH(cuLaunchKernelEx)
GS_EX_LAUNCH(cuLaunchKernelEx_ptsz)

CUresult cuGraphLaunch(CUgraphExec graph, CUstream stream) {
  return GS_GUARDED(CudaApi, { return Gated(Kind::kGraph, stream, Shape{}, real::cuGraphLaunch, graph, stream); });
}
CUresult cuGraphLaunch_ptsz(CUgraphExec graph, CUstream stream) {
  return GS_GUARDED(CudaApi, { return Gated(Kind::kGraph, stream, Shape{}, real::cuGraphLaunch_ptsz, graph, stream); });
}

#define GS_COPY(symbol, kind, dst_t, src_t)                                                                           \
  CUresult symbol(dst_t dst, src_t src, size_t bytes, CUstream stream) {                                              \
    return GS_GUARDED(CudaApi, { return Gated(kind, stream, Bytes(bytes), real::symbol, dst, src, bytes, stream); }); \
  }
GS_COPY(cuMemcpyHtoDAsync_v2, Kind::kCopyHtoD, CUdeviceptr, const void*)
GS_COPY(cuMemcpyHtoDAsync_v2_ptsz, Kind::kCopyHtoD, CUdeviceptr, const void*)
GS_COPY(cuMemcpyDtoHAsync_v2, Kind::kCopyDtoH, void*, CUdeviceptr)
GS_COPY(cuMemcpyDtoHAsync_v2_ptsz, Kind::kCopyDtoH, void*, CUdeviceptr)
GS_COPY(cuMemcpyDtoDAsync_v2, Kind::kCopyDtoD, CUdeviceptr, CUdeviceptr)
GS_COPY(cuMemcpyDtoDAsync_v2_ptsz, Kind::kCopyDtoD, CUdeviceptr, CUdeviceptr)
GS_COPY(cuMemcpyAsync, Kind::kCopyDtoD, CUdeviceptr, CUdeviceptr)
GS_COPY(cuMemcpyAsync_ptsz, Kind::kCopyDtoD, CUdeviceptr, CUdeviceptr)

#define GS_PEER_COPY(symbol)                                                                                        \
  CUresult symbol(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t bytes,             \
                  CUstream stream) {                                                                                \
    return GS_GUARDED(CudaApi, {                                                                                    \
      return Gated(Kind::kCopyDtoD, stream, Bytes(bytes), real::symbol, dst, dst_ctx, src, src_ctx, bytes, stream); \
    });                                                                                                             \
  }
GS_PEER_COPY(cuMemcpyPeerAsync)
GS_PEER_COPY(cuMemcpyPeerAsync_ptsz)

#define GS_COPY_2D(symbol)                                                                              \
  CUresult symbol(const CUDA_MEMCPY2D* p, CUstream stream) {                                            \
    return GS_GUARDED(CudaApi, {                                                                        \
      if (p == nullptr) return GS_CUDA_CALL(symbol, p, stream);                                         \
      return Gated(CopyKind(p->srcMemoryType, p->dstMemoryType), stream,                                \
                   Bytes(static_cast<uint64_t>(p->WidthInBytes) * p->Height), real::symbol, p, stream); \
    });                                                                                                 \
  }
GS_COPY_2D(cuMemcpy2DAsync_v2)
GS_COPY_2D(cuMemcpy2DAsync_v2_ptsz)

#define GS_COPY_3D(symbol)                                                                                         \
  CUresult symbol(const CUDA_MEMCPY3D* p, CUstream stream) {                                                       \
    return GS_GUARDED(CudaApi, {                                                                                   \
      if (p == nullptr) return GS_CUDA_CALL(symbol, p, stream);                                                    \
      return Gated(CopyKind(p->srcMemoryType, p->dstMemoryType), stream,                                           \
                   Bytes(static_cast<uint64_t>(p->WidthInBytes) * p->Height * p->Depth), real::symbol, p, stream); \
    });                                                                                                            \
  }
GS_COPY_3D(cuMemcpy3DAsync_v2)
GS_COPY_3D(cuMemcpy3DAsync_v2_ptsz)

#define GS_MEMSET(symbol, value_t, unit)                                                                       \
  CUresult symbol(CUdeviceptr dst, value_t value, size_t n, CUstream stream) {                                 \
    return GS_GUARDED(CudaApi, {                                                                               \
      return Gated(Kind::kMemset, stream, Bytes(static_cast<uint64_t>(n) * unit), real::symbol, dst, value, n, \
                   stream);                                                                                    \
    });                                                                                                        \
  }
GS_MEMSET(cuMemsetD8Async, unsigned char, 1)
GS_MEMSET(cuMemsetD8Async_ptsz, unsigned char, 1)
GS_MEMSET(cuMemsetD16Async, unsigned short, 2)
GS_MEMSET(cuMemsetD16Async_ptsz, unsigned short, 2)
GS_MEMSET(cuMemsetD32Async, unsigned int, 4)
GS_MEMSET(cuMemsetD32Async_ptsz, unsigned int, 4)

#define GS_MEMSET_2D(symbol, value_t, unit)                                                                       \
  CUresult symbol(CUdeviceptr dst, size_t pitch, value_t value, size_t width, size_t height, CUstream stream) {   \
    return GS_GUARDED(CudaApi, {                                                                                  \
      return Gated(Kind::kMemset, stream, Bytes(static_cast<uint64_t>(width) * height * unit), real::symbol, dst, \
                   pitch, value, width, height, stream);                                                          \
    });                                                                                                           \
  }
GS_MEMSET_2D(cuMemsetD2D8Async, unsigned char, 1)
GS_MEMSET_2D(cuMemsetD2D8Async_ptsz, unsigned char, 1)
GS_MEMSET_2D(cuMemsetD2D16Async, unsigned short, 2)
GS_MEMSET_2D(cuMemsetD2D16Async_ptsz, unsigned short, 2)
GS_MEMSET_2D(cuMemsetD2D32Async, unsigned int, 4)
GS_MEMSET_2D(cuMemsetD2D32Async_ptsz, unsigned int, 4)

}  // extern "C"
