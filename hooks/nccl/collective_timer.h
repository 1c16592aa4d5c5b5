// How long the GPU spends in a process's collectives (NCCL), measured on the GPU: a
// collective call only enqueues work, so its host duration says nothing. A CUDA event
// is recorded on the collective's stream just before NCCL enqueues it (it completes
// when the work queued before it is done) and another just after (it completes when the
// collective's kernels are); their elapsed time, once the second has completed, is the
// time the stream spent in the collective, waiting for the other ranks included, as a
// profiler's timeline shows it. Completed pairs are read at the next collective or
// communicator end and added to the client's channel (LaunchGate::AddCollectiveTime).
// CUDA only: with RCCL (HIP streams) nothing is timed.
#pragma once

#include <cstdint>

namespace gpushare::nccl {

// One stream's bracket: opaque handles of the start event (null: not timed).
struct CollectiveMark {
  uintptr_t stream = 0;
  int device = -1;  // virtual
  uintptr_t context = 0;
  uintptr_t start = 0;
};

// Records the start event on `stream` (CUstream) for virtual GPU `device`; first reads
// the pairs that completed since the last call.
CollectiveMark BeginCollective(uintptr_t stream, int device);
// Records the end event of `mark` on its stream: the pair is read once it completes.
void EndCollective(const CollectiveMark& mark);
// Reads the pairs that have completed (a communicator's end: its last collectives).
void ReadCompletedCollectives();

}  // namespace gpushare::nccl
