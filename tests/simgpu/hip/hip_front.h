// Shared helpers of simgpu's HIP runtime front (hip_*.cpp): lazy start, the per-thread
// current device and last error, status mapping, stream resolution, and the kernel
// registry that names host-function kernels (by __hipRegisterFunction or dladdr).
#pragma once

#include <hip/hip_ext.h>
#include <hip/hip_runtime_api.h>

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "process.h"

namespace simgpu::hip {

// HIP has no explicit init: the first call brings the node up. Null if it cannot
// start (the reason is printed once) or in a child forked after start.
Process* Proc();

inline thread_local int t_device = 0;
inline thread_local hipError_t t_last_error = hipSuccess;

// Every entry point returns through here: a failure stays as the thread's last error
// until hipGetLastError reads it (as CUDA does, and as HIP documents).
inline hipError_t Ret(hipError_t e) {
  if (e != hipSuccess) t_last_error = e;
  return e;
}

inline hipError_t ToHip(Status s) {
  switch (s) {
    case Status::kOk: return hipSuccess;
    case Status::kInvalidValue: return hipErrorInvalidValue;
    case Status::kOutOfMemory: return hipErrorOutOfMemory;
    case Status::kNotFound: return hipErrorNotFound;
    case Status::kInvalidHandle: return hipErrorInvalidHandle;
    case Status::kNotReady: return hipErrorNotReady;
    case Status::kNotSupported: return hipErrorNotSupported;
    case Status::kPeerUnsupported: return hipErrorPeerAccessUnsupported;
    case Status::kPeerAlreadyEnabled: return hipErrorPeerAccessAlreadyEnabled;
    case Status::kPeerNotEnabled: return hipErrorPeerAccessNotEnabled;
    case Status::kNoDevice: return hipErrorNoDevice;
  }
  return hipErrorUnknown;
}

// The error a test armed for entry point `entry` (control/simgpu_control.h), else
// hipSuccess. One relaxed load of shared memory while nothing is armed.
inline hipError_t InjectedError(Process* p, const char* entry) {
  int error = 0;
  if (!p->node().AnyFaultArmed() || !p->node().TakeFault(FaultKind::kCall, entry, -1, &error)) return hipSuccess;
  return static_cast<hipError_t>(error);
}

// `entry` names the entry point for injected faults: __func__; helpers shared by
// several entry points take their caller's (__builtin_FUNCTION()).
#define HIP_INIT_AS(entry)                           \
  Process* proc = Proc();                            \
  if (proc == nullptr) return Ret(hipErrorNoDevice); \
  if (hipError_t injected_ = InjectedError(proc, entry); injected_ != hipSuccess) return Ret(injected_)
#define HIP_INIT() HIP_INIT_AS(__func__)

#define HIP_TRY(expr)                     \
  do {                                    \
    hipError_t r_ = (expr);               \
    if (r_ != hipSuccess) return Ret(r_); \
  } while (0)

inline bool ValidDevice(Process* p, int d) { return d >= 0 && d < p->device_count(); }

// The current device, its primary context made active (charging context memory once).
inline hipError_t ActiveDevice(Process* p, int* device) {
  if (!ValidDevice(p, t_device)) return hipErrorInvalidDevice;
  if (Status s = p->ActivatePrimary(t_device); s != Status::kOk) return ToHip(s);
  *device = t_device;
  return hipSuccess;
}

#define HIP_DEVICE_AS(entry) \
  HIP_INIT_AS(entry);        \
  int device = 0;            \
  HIP_TRY(ActiveDevice(proc, &device))
#define HIP_DEVICE() HIP_DEVICE_AS(__func__)

// The null stream and hipStreamPerThread are the current device's default stream
// (simgpu runs each device's unmasked work in one ordered queue).
inline hipError_t ResolveStream(Process* p, hipStream_t h, Stream** out) {
  if (h == nullptr || h == hipStreamPerThread) {
    int device = 0;
    if (hipError_t e = ActiveDevice(p, &device); e != hipSuccess) return e;
    *out = &p->PrimaryContext(device)->default_stream;
    return hipSuccess;
  }
  auto* s = reinterpret_cast<Stream*>(h);
  if (!p->Valid(s, Tag::kStream)) return hipErrorInvalidHandle;
  *out = s;
  return hipSuccess;
}

#define HIP_STREAM(h)       \
  Stream* stream = nullptr; \
  HIP_TRY(ResolveStream(proc, (h), &stream))

inline uint64_t Ptr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// Kernels known by their host function (hipLaunchKernel's function_address). The name
// is the one __hipRegisterFunction gave, else the symbol dladdr finds at that address
// (programs link with -rdynamic); null when neither names it.
Function* KernelForHostFunction(Process* p, const void* host_function);

// Stream capture (hipStreamBeginCapture): while a stream captures, its launches and
// async copies are recorded here instead of running; hipGraphLaunch replays them.
using CapturedOp = std::function<hipError_t(Process*, Stream*)>;
// Appends `op` if `stream` is capturing (returns true: the caller must not run it).
bool Capture(Stream* stream, CapturedOp op);

}  // namespace simgpu::hip
