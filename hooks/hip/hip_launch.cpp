// Launch hooks of the HIP family: every kernel launch (by host function, by module
// function, cooperative, extended), graph launch, async copy and async memset passes
// its virtual GPU's gate (it waits there while the broker has given the GPU's time to
// another client) and is counted for the broker's classifier (LaunchGate::Launch:
// the thread's tally, else a ring record).
#include <algorithm>
#include <string>

#include "hip/hip_hooks.h"

using namespace gpushare;
using namespace gpushare::hip;
namespace proto = gpushare::protocol;

namespace {

using Kind = proto::RecordKind;

// Kernel names, asked once per function (LaunchGate::NameSlot caches them).
std::string HostFunctionName(uintptr_t function) {
  const char* name = real::hipKernelNameRefByPtr
                         ? real::hipKernelNameRefByPtr(reinterpret_cast<const void*>(function), nullptr)
                         : nullptr;
  return name != nullptr ? name : "";
}

std::string ModuleFunctionName(uintptr_t function) {
  const char* name =
      real::hipKernelNameRef ? real::hipKernelNameRef(reinterpret_cast<hipFunction_t>(function)) : nullptr;
  return name != nullptr ? name : "";
}

// What a launch or copy was, as the hook saw it: its kernel (0 for none) and how to
// name it, and its shape for a record (formed into one only when the launch cannot
// be tallied).
struct Shape {
  uintptr_t function = 0;
  KernelNameFn name = nullptr;
  LaunchShape launch;
};

// The virtual GPU a launch goes to: its stream's. A client with one GPU needs no lookup.
int LaunchDevice(Client* c, hipStream_t stream) {
  if (c->devices().count() <= 1) return 0;
  return std::max(0, StreamDevice(c, stream));
}

// Passes the gate, calls the real function, counts what it launched.
template <typename Real, typename... Args>
hipError_t Gated(Kind kind, hipStream_t stream, const Shape& shape, Real& real, Args... args) {
  if (!LoadRealRuntime() || real == nullptr) return hipErrorNotSupported;
  Client* c = ReadyClient();
  if (c == nullptr || !c->gate().attached()) return real(args...);  // standalone: nothing to count
  LaunchGate::Launch launch(c->gate(), LaunchDevice(c, stream), kind, reinterpret_cast<uint64_t>(stream),
                            shape.function, shape.name, shape.launch);
  const hipError_t r = real(args...);
  if (r == hipSuccess) launch.Taken();
  return r;
}

Shape KernelShape(const void* f, dim3 grid, dim3 block, size_t shared) {
  return {reinterpret_cast<uintptr_t>(f), HostFunctionName, {{grid.x, grid.y, grid.z}, {block.x, block.y, block.z},
                                                             shared, 0}};
}

Shape ModuleShape(hipFunction_t f, uint64_t gx, uint64_t gy, uint64_t gz, uint64_t bx, uint64_t by, uint64_t bz,
                  size_t shared) {
  return {reinterpret_cast<uintptr_t>(f), ModuleFunctionName, {{gx, gy, gz}, {bx, by, bz}, shared, 0}};
}

uint64_t Blocks(uint64_t work, uint64_t block) { return block == 0 ? 0 : (work + block - 1) / block; }

Shape Bytes(uint64_t bytes) { return {0, nullptr, {{0, 0, 0}, {0, 0, 0}, 0, bytes}}; }

Kind CopyKind(hipMemcpyKind kind) {
  if (kind == hipMemcpyHostToDevice) return Kind::kCopyHtoD;
  if (kind == hipMemcpyDeviceToHost) return Kind::kCopyDtoH;
  return Kind::kCopyDtoD;
}

Kind CopyKind(hipMemoryType src, hipMemoryType dst) {
  if (src == hipMemoryTypeHost) return Kind::kCopyHtoD;
  if (dst == hipMemoryTypeHost) return Kind::kCopyDtoH;
  return Kind::kCopyDtoD;
}

}  // namespace

// C++ linkage: HIP 5.2's hip_ext.h declares it so (its ABI symbol is mangled).
hipError_t hipExtModuleLaunchKernel(hipFunction_t f, uint32_t gx, uint32_t gy, uint32_t gz, uint32_t lx, uint32_t ly,
                                    uint32_t lz, size_t shared, hipStream_t stream, void** params, void** extra,
                                    hipEvent_t start, hipEvent_t stop, uint32_t flags) {
  return GS_GUARDED(HipApi, {
    return Gated(
        Kind::kKernel, stream, ModuleShape(f, Blocks(gx, lx), Blocks(gy, ly), Blocks(gz, lz), lx, ly, lz, shared),
        real::hipExtModuleLaunchKernel, f, gx, gy, gz, lx, ly, lz, shared, stream, params, extra, start, stop, flags);
  });
}

extern "C" {

hipError_t hipLaunchKernel(const void* f, dim3 grid, dim3 block, void** args, size_t shared, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kKernel, stream, KernelShape(f, grid, block, shared), real::hipLaunchKernel, f, grid, block,
                 args, shared, stream);
  });
}

hipError_t hipExtLaunchKernel(const void* f, dim3 grid, dim3 block, void** args, size_t shared, hipStream_t stream,
                              hipEvent_t start, hipEvent_t stop, int flags) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kKernel, stream, KernelShape(f, grid, block, shared), real::hipExtLaunchKernel, f, grid, block,
                 args, shared, stream, start, stop, flags);
  });
}

hipError_t hipLaunchCooperativeKernel(const void* f, dim3 grid, dim3 block, void** args, unsigned int shared,
                                      hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kCooperative, stream, KernelShape(f, grid, block, shared), real::hipLaunchCooperativeKernel, f,
                 grid, block, args, shared, stream);
  });
}

hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                 unsigned int by, unsigned int bz, unsigned int shared, hipStream_t stream,
                                 void** params, void** extra) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kKernel, stream, ModuleShape(f, gx, gy, gz, bx, by, bz, shared), real::hipModuleLaunchKernel, f,
                 gx, gy, gz, bx, by, bz, shared, stream, params, extra);
  });
}

hipError_t hipGraphLaunch(hipGraphExec_t graph, hipStream_t stream) {
  return GS_GUARDED(HipApi, { return Gated(Kind::kGraph, stream, Shape{}, real::hipGraphLaunch, graph, stream); });
}

// ---- async copies and memsets ----

hipError_t hipMemcpyAsync(void* dst, const void* src, size_t bytes, hipMemcpyKind kind, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(CopyKind(kind), stream, Bytes(bytes), real::hipMemcpyAsync, dst, src, bytes, kind, stream);
  });
}

hipError_t hipMemcpyHtoDAsync(hipDeviceptr_t dst, void* src, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kCopyHtoD, stream, Bytes(bytes), real::hipMemcpyHtoDAsync, dst, src, bytes, stream);
  });
}

hipError_t hipMemcpyDtoHAsync(void* dst, hipDeviceptr_t src, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kCopyDtoH, stream, Bytes(bytes), real::hipMemcpyDtoHAsync, dst, src, bytes, stream);
  });
}

hipError_t hipMemcpyDtoDAsync(hipDeviceptr_t dst, hipDeviceptr_t src, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kCopyDtoD, stream, Bytes(bytes), real::hipMemcpyDtoDAsync, dst, src, bytes, stream);
  });
}

hipError_t hipMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                            hipMemcpyKind kind, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(CopyKind(kind), stream, Bytes(uint64_t{width} * height), real::hipMemcpy2DAsync, dst, dpitch, src,
                 spitch, width, height, kind, stream);
  });
}

hipError_t hipMemcpy3DAsync(const hipMemcpy3DParms* p, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    if (p == nullptr) return GS_HIP_CALL(hipMemcpy3DAsync, p, stream);
    return Gated(CopyKind(p->kind), stream, Bytes(uint64_t{p->extent.width} * p->extent.height * p->extent.depth),
                 real::hipMemcpy3DAsync, p, stream);
  });
}

hipError_t hipMemcpyParam2DAsync(const hip_Memcpy2D* p, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    if (p == nullptr) return GS_HIP_CALL(hipMemcpyParam2DAsync, p, stream);
    return Gated(CopyKind(p->srcMemoryType, p->dstMemoryType), stream, Bytes(uint64_t{p->WidthInBytes} * p->Height),
                 real::hipMemcpyParam2DAsync, p, stream);
  });
}

hipError_t hipMemcpyToSymbolAsync(const void* symbol, const void* src, size_t bytes, size_t offset, hipMemcpyKind kind,
                                  hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(CopyKind(kind), stream, Bytes(bytes), real::hipMemcpyToSymbolAsync, symbol, src, bytes, offset, kind,
                 stream);
  });
}

hipError_t hipMemcpyFromSymbolAsync(void* dst, const void* symbol, size_t bytes, size_t offset, hipMemcpyKind kind,
                                    hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(CopyKind(kind), stream, Bytes(bytes), real::hipMemcpyFromSymbolAsync, dst, symbol, bytes, offset, kind,
                 stream);
  });
}

// Device ordinals made physical, then gated as any copy on its stream.
hipError_t hipMemcpyPeerAsync(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    Client* c = ReadyClient();
    if (c == nullptr) return hipErrorNotInitialized;
    const int dst_physical = c->devices().Physical(dst_dev);
    const int src_physical = c->devices().Physical(src_dev);
    if (dst_physical < 0 || src_physical < 0) return hipErrorInvalidDevice;
    return Gated(Kind::kCopyDtoD, stream, Bytes(bytes), real::hipMemcpyPeerAsync, dst, dst_physical, src, src_physical,
                 bytes, stream);
  });
}

hipError_t hipMemsetAsync(void* dst, int value, size_t bytes, hipStream_t stream) {
  return GS_GUARDED(
      HipApi, { return Gated(Kind::kMemset, stream, Bytes(bytes), real::hipMemsetAsync, dst, value, bytes, stream); });
}

hipError_t hipMemsetD8Async(hipDeviceptr_t dst, unsigned char value, size_t count, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kMemset, stream, Bytes(count), real::hipMemsetD8Async, dst, value, count, stream);
  });
}

hipError_t hipMemsetD16Async(hipDeviceptr_t dst, unsigned short value, size_t count, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kMemset, stream, Bytes(uint64_t{count} * 2), real::hipMemsetD16Async, dst, value, count, stream);
  });
}

hipError_t hipMemsetD32Async(hipDeviceptr_t dst, int value, size_t count, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kMemset, stream, Bytes(uint64_t{count} * 4), real::hipMemsetD32Async, dst, value, count, stream);
  });
}

hipError_t hipMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kMemset, stream, Bytes(uint64_t{width} * height), real::hipMemset2DAsync, dst, pitch, value,
                 width, height, stream);
  });
}

hipError_t hipMemset3DAsync(hipPitchedPtr ptr, int value, hipExtent extent, hipStream_t stream) {
  return GS_GUARDED(HipApi, {
    return Gated(Kind::kMemset, stream, Bytes(uint64_t{extent.width} * extent.height * extent.depth),
                 real::hipMemset3DAsync, ptr, value, extent, stream);
  });
}

}  // extern "C"
