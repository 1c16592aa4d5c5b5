// Collectives timed on the GPU by events on their streams (see collective_timer.h).
#include "nccl/collective_timer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include "cuda/cuda_hooks.h"

namespace gpushare::nccl {
namespace {

// Pairs not yet complete; past this many (a GPU far behind its host) new collectives go
// untimed rather than growing without bound.
constexpr size_t kMaxPending = 1024;

struct Pending {
  int device;
  CUcontext context;
  CUevent start;
  CUevent end;
};

std::mutex mu;
std::map<CUcontext, std::vector<CUevent>> spare;  // events to reuse, by context
std::vector<Pending> pending;

// An event recorded on `stream` in `context` (made current for it), or null. Under `mu`.
CUevent Record(CUstream stream, CUcontext context) {
  if (GS_CUDA_CALL(cuCtxPushCurrent_v2, context) != CUDA_SUCCESS) return nullptr;
  CUevent event = nullptr;
  auto& mine = spare[context];
  if (!mine.empty()) {
    event = mine.back();
    mine.pop_back();
  } else if (GS_CUDA_CALL(cuEventCreate, &event, CU_EVENT_DEFAULT) != CUDA_SUCCESS) {
    event = nullptr;
  }
  // An event that cannot be recorded (its context was destroyed and the handle reused) is dropped.
  if (event != nullptr && GS_CUDA_CALL(cuEventRecord, event, stream) != CUDA_SUCCESS) event = nullptr;
  CUcontext popped;
  GS_CUDA_CALL(cuCtxPopCurrent_v2, &popped);
  return event;
}

CUresult ElapsedMs(float* ms, CUevent start, CUevent end) {
  const CUresult r = GS_CUDA_CALL(cuEventElapsedTime_v2, ms, start, end);
  return r == CUDA_ERROR_NOT_SUPPORTED ? GS_CUDA_CALL(cuEventElapsedTime, ms, start, end) : r;
}

// Under `mu`.
void ReadCompleted() {
  auto done = std::remove_if(pending.begin(), pending.end(), [](const Pending& p) {
    const CUresult state = GS_CUDA_CALL(cuEventQuery, p.end);
    if (state == CUDA_ERROR_NOT_READY) return false;
    float ms = 0;
    if (state == CUDA_SUCCESS && ElapsedMs(&ms, p.start, p.end) == CUDA_SUCCESS) {
      if (ms > 0 && std::isfinite(ms))
        Client::Get().gate().AddCollectiveTime(p.device, static_cast<uint64_t>(std::llround(ms * 1e6)));
      spare[p.context].push_back(p.start);
      spare[p.context].push_back(p.end);
    }
    return true;  // read, or failed (its context is gone): either way not pending
  });
  pending.erase(done, pending.end());
}

}  // namespace

CollectiveMark BeginCollective(uintptr_t stream, int device) {
  // Standalone there is no broker to tell: nothing is timed.
  if (!Client::Get().gate().attached() || !cuda::LoadRealDriver()) return {};
  auto s = reinterpret_cast<CUstream>(stream);
  // A stream being captured into a CUDA graph (PyTorch captures collectives): an event
  // recorded there would become a node of the application's graph. Not timed.
  CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
  if (GS_CUDA_CALL(cuStreamIsCapturing, s, &capture) == CUDA_SUCCESS && capture != CU_STREAM_CAPTURE_STATUS_NONE)
    return {};
  CUcontext context = nullptr;
  if (GS_CUDA_CALL(cuStreamGetCtx, s, &context) != CUDA_SUCCESS || context == nullptr) return {};
  std::lock_guard<std::mutex> lock(mu);
  ReadCompleted();
  if (pending.size() >= kMaxPending) return {};
  CUevent start = Record(s, context);
  if (start == nullptr) return {};
  return {stream, device, reinterpret_cast<uintptr_t>(context), reinterpret_cast<uintptr_t>(start)};
}

void EndCollective(const CollectiveMark& mark) {
  if (mark.start == 0) return;
  auto context = reinterpret_cast<CUcontext>(mark.context);
  auto start = reinterpret_cast<CUevent>(mark.start);
  std::lock_guard<std::mutex> lock(mu);
  CUevent end = Record(reinterpret_cast<CUstream>(mark.stream), context);
  if (end == nullptr) {
    spare[context].push_back(start);
    return;
  }
  pending.push_back({mark.device, context, start, end});
}

void ReadCompletedCollectives() {
  std::lock_guard<std::mutex> lock(mu);
  ReadCompleted();
}

}  // namespace gpushare::nccl
