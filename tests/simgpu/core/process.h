// One process's view of the simulated node, shared by the API fronts (CUDA driver now,
// HIP later): devices, device memory (plain, managed, pooled, VMM), host-pinned
// ranges, contexts, streams, events and modules. API-neutral: fronts translate handles
// and map Status to their own error codes.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "config.h"
#include "executor.h"
#include "node.h"

namespace simgpu {

enum class Status {
  kOk,
  kInvalidValue,
  kOutOfMemory,
  kNotFound,
  kInvalidHandle,
  kNotReady,
  kNotSupported,
  kPeerUnsupported,
  kPeerAlreadyEnabled,
  kPeerNotEnabled,
  kNoDevice,
};

enum class MemKind { kDevice, kManaged, kPooled, kVmmMapping, kArray };

// Object handles carry a tag so a stale or foreign pointer is refused, not followed blindly.
enum class Tag : uint32_t {
  kContext = 0x51c7c7c7,
  kStream = 0x51515151,
  kEvent = 0x51e7e7e7,
  kModule = 0x51303030,
  kFunction = 0x51f0f0f0,
  kPool = 0x51900190,
  kArray = 0x51a77a77,
  kDead = 0xdeaddead,
};

// Out-parameter type of addresses and handles: the width CUdeviceptr and HIP use.
using OutAddress = unsigned long long;

struct Context;
struct MemPool;

struct Stream {
  Tag tag = Tag::kStream;
  Context* ctx = nullptr;
  int device = 0;
  unsigned flags = 0;
  int priority = 0;
  std::atomic<uint64_t> last_seq{0};
  // HIP CU mask (hipExtStreamCreateWithCUMask): bit i of word i / 32 enables compute
  // unit i. Empty when unmasked; cus_enabled counts the enabled CUs the device has.
  std::vector<uint32_t> cu_mask;
  int cus_enabled = 0;
  Executor* queue = nullptr;  // the queue its work runs on; null: the device's main queue
};

struct Context {
  Tag tag = Tag::kContext;
  int device = 0;
  unsigned flags = 0;
  bool primary = false;
  uint64_t id = 0;
  Stream default_stream;
  std::mutex mu;
  std::set<Context*> peers;  // peer access enabled towards these contexts
  uint64_t charged_bytes = 0;
};

struct Event {
  Tag tag = Tag::kEvent;
  unsigned flags = 0;
  int device = -1;
  std::atomic<uint64_t> seq{0};  // executor sequence of the latest record; 0 = never recorded
  std::atomic<uint64_t> time_ns{0};
  std::atomic<uint64_t> completed_seq{0};
  std::atomic<Executor*> queue{nullptr};  // queue of the latest record
};

struct Function {
  Tag tag = Tag::kFunction;
  std::string name;
  struct Module* module = nullptr;
  int max_dynamic_shared = 48 * 1024;
};

struct Module {
  Tag tag = Tag::kModule;
  bool any_name = true;  // binary images we cannot parse accept any kernel name
  std::set<std::string> entries;
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Function>> functions;
};

struct Array {
  Tag tag = Tag::kArray;
  OutAddress address = 0;
  size_t width = 0, height = 0, depth = 0;
  unsigned format = 0, channels = 0, flags = 0;
  int levels = 1;
};

struct Range {
  uint64_t size = 0;
  int device = -1;
  MemKind kind = MemKind::kDevice;
  uint64_t charged = 0;     // capacity charged for this range (0 for VMM mappings)
  MemPool* pool = nullptr;  // kPooled
  uint64_t vmm_handle = 0;  // kVmmMapping
  bool accessible = true;   // VMM mappings become accessible through SetAccess
};

struct MemPool {
  Tag tag = Tag::kPool;
  int device = 0;
  bool is_default = false;
  uint64_t release_threshold = 0;
  uint64_t reserved = 0, reserved_high = 0, used = 0, used_high = 0;
  std::multimap<uint64_t, uint64_t> cached;  // size -> address, freed blocks kept for reuse
};

struct PhysAlloc {  // cuMemCreate handle
  int device = 0;
  uint64_t size = 0;
  int fd = -1;
  int mappings = 0;
  int refs = 1;  // cuMemCreate + cuMemRetainAllocationHandle, minus cuMemRelease
};

struct LaunchGeometry {
  unsigned grid[3];
  unsigned block[3];
  unsigned shared_bytes;
};

// Cost of one kernel under the model: `simgpu_compute_<N>us` / `simgpu_memory_<N>us`
// (anywhere in the name, so mangled C++ names work), then config overrides by exact
// name, then the default cost scaled by the number of waves the grid needs.
struct KernelCostResult {
  uint64_t duration_ns;
  WorkClass work_class;
};
KernelCostResult CostOfKernel(const NodeConfig& config, const GpuConfig& gpu, const std::string& name,
                              const LaunchGeometry& geo);

class Process {
 public:
  // The process-wide instance; null with `error` set if the node cannot be brought up.
  static Process* Get(std::string* error);

  const NodeConfig& config() const { return config_; }
  Node& node() { return *node_; }
  int device_count() const { return static_cast<int>(config_.gpus.size()); }
  const GpuConfig& gpu(int d) const { return config_.gpus[d]; }
  Executor& executor(int device);
  void Detach();  // at exit: give back this process's share of the node

  // Contexts.
  Context* PrimaryContext(int device) { return primary_[device].get(); }
  Status CreateContext(int device, unsigned flags, Context** out);
  Status DestroyContext(Context* ctx);
  bool ValidContext(Context* c);
  static thread_local std::vector<Context*> context_stack;
  Status ActivatePrimary(int device);  // charges context memory on first activation
  int PrimaryRefs(int device) const { return primary_refs_[device]; }
  void RetainPrimary(int device) { ++primary_refs_[device]; }
  Status ReleasePrimary(int device);

  // Device memory.
  Status Allocate(int device, uint64_t size, MemKind kind, OutAddress* address);
  Status Free(uint64_t address);
  void ReleaseDeviceMemory(int device);  // hipDeviceReset: free this process's memory on `device`
  bool Lookup(uint64_t address, uint64_t* base, Range* range);     // address inside a device range?
  bool DeviceSpan(uint64_t address, uint64_t bytes, int* device);  // whole span is device memory
  void AddPinned(uint64_t address, uint64_t size);
  bool RemovePinned(uint64_t address);
  bool IsPinned(uint64_t address);

  // Stream-ordered allocation.
  MemPool* DefaultPool(int device) { return default_pools_[device].get(); }
  MemPool* CurrentPool(int device) { return current_pool_[device]; }
  void SetCurrentPool(int device, MemPool* pool) { current_pool_[device] = pool; }
  Status CreatePool(int device, MemPool** out);
  Status DestroyPool(MemPool* pool);
  bool ValidPool(MemPool* pool);
  Status PoolAllocate(MemPool* pool, uint64_t size, OutAddress* address);
  Status PoolFree(uint64_t address, Stream* stream);  // returns the block at stream order
  void PoolTrim(MemPool* pool, uint64_t keep_bytes);
  void TrimPoolsAtSync();  // release memory above each pool's threshold
  std::mutex& pool_mutex() { return mem_mu_pool_; }

  // Virtual memory management.
  Status VmmCreate(int device, uint64_t size, OutAddress* handle);
  Status VmmRelease(uint64_t handle);
  Status VmmReserve(uint64_t size, uint64_t alignment, OutAddress* address);
  Status VmmFree(uint64_t address, uint64_t size);
  Status VmmMap(uint64_t address, uint64_t size, uint64_t offset, uint64_t handle);
  Status VmmUnmap(uint64_t address, uint64_t size);
  Status VmmSetAccess(uint64_t address, uint64_t size, bool read_write);
  Status VmmRetain(uint64_t address, OutAddress* handle);  // handle of the mapping at address, +1 ref
  bool VmmInfo(uint64_t handle, int* device, uint64_t* size);

  // Modules. A PTX image's `.entry` names are read and only those resolve; images we
  // cannot parse (ELF code objects, fatbins) accept any kernel name.
  Module* LoadModule(const void* image);
  Status ModuleFunction(Module* m, const std::string& name, Function** out);  // kNotFound, kInvalidHandle

  // Streams and events whose work may run on other queues than the device's main one.
  void AttachStream(Stream* s);  // picks the stream's queue (CU-masked streams get their own)
  Executor& QueueOf(Stream* s) { return s->queue ? *s->queue : executor(s->device); }
  bool StreamIdle(Stream* s);     // all work submitted to it has completed
  void DestroyStream(Stream* s);  // the handle dies now; the object is freed behind its queued work
  bool EventDone(Event* e);       // never recorded counts as done
  void SyncEvent(Event* e);
  void DestroyEvent(Event* e);

  // Work submission.
  uint64_t Submit(Stream* stream, Work work);
  Status Copy(Stream* stream, uint64_t dst, uint64_t src, uint64_t bytes, bool async);
  Status Copy2D(Stream* stream, uint64_t dst, uint64_t dst_pitch, uint64_t src, uint64_t src_pitch, uint64_t width,
                uint64_t height, bool async);
  Status Memset(Stream* stream, uint64_t dst, uint64_t pitch, uint64_t value, unsigned element_bytes,
                uint64_t width_elements, uint64_t height, bool async);
  Status Launch(Stream* stream, Function* f, const LaunchGeometry& geo);
  void SyncStream(Stream* s);
  void SyncDevice(int device);
  Status RecordEvent(Event* e, Stream* s);
  Status WaitEvent(Stream* s, Event* e);

  // Handle tracking so that a bad handle is refused rather than followed.
  template <typename T>
  bool Valid(T* p, Tag tag) {
    std::lock_guard<std::mutex> lock(handles_mu_);
    return p != nullptr && handles_.count(p) && p->tag == tag;
  }
  void Track(void* p);
  void Untrack(void* p);
  // A handle the application destroyed while work or other objects may still point
  // at it: it stops being valid but is kept (owned here) rather than freed.
  template <typename T>
  void Retire(T* p) {
    Untrack(p);
    p->tag = Tag::kDead;
    std::lock_guard<std::mutex> lock(handles_mu_);
    retired_.push_back(std::shared_ptr<void>(p));
  }

 private:
  Process() = default;
  bool Init(std::string* error);
  Status ChargeRange(int device, uint64_t size, MemKind kind, MemPool* pool, OutAddress* address);
  bool AllocationFault(int device);  // a test armed "the next allocations fail" (control interface)
  void ReleaseRange(uint64_t address);
  void ReleasePhys(uint64_t handle);

  NodeConfig config_;
  std::unique_ptr<Node> node_;
  std::mutex exec_mu_;
  std::unique_ptr<Executor> executors_[kMaxGpus];
  // One queue per distinct CU mask and device (streams with equal masks share it).
  std::map<std::vector<uint64_t>, std::unique_ptr<Executor>> masked_executors_[kMaxGpus];
  // MPS (docs/simgpu.md): whether a simulated MPS control daemon served
  // CUDA_MPS_PIPE_DIRECTORY when this process made its first queue; if so, each GPU's
  // main queue is a masked queue of CUDA_MPS_ACTIVE_THREAD_PERCENTAGE of its CUs,
  // co-running with other processes' on other CUs, until the daemon is seen gone.
  void JoinMps();
  int MpsCus(int device);  // the CUs the process's unmasked work is held to; 0: all, time-sliced
  std::once_flag mps_once_;
  std::string mps_lock_path_;
  int mps_percent_ = 100;
  std::atomic<bool> mps_on_{false};
  std::atomic<uint64_t> mps_checked_ns_{0};
  std::atomic<int> mps_cus_[kMaxGpus] = {};
  int mps_queue_[kMaxGpus] = {};  // the masked queue index + 1; 0: none
  std::unique_ptr<Context> primary_[kMaxGpus];
  std::atomic<int> primary_refs_[kMaxGpus] = {};
  bool primary_charged_[kMaxGpus] = {};
  std::atomic<uint64_t> next_context_id_{1};

  std::shared_mutex mem_mu_;
  std::map<uint64_t, Range> ranges_;                     // device ranges by start address
  std::map<uint64_t, uint64_t> pinned_;                  // host ranges: start -> size
  std::map<uint64_t, uint64_t> reserved_;                // VMM reservations: start -> size
  std::map<uint64_t, std::unique_ptr<PhysAlloc>> phys_;  // VMM handles by id
  uint64_t next_phys_ = 1;
  std::mutex mem_mu_pool_;
  std::unique_ptr<MemPool> default_pools_[kMaxGpus];
  MemPool* current_pool_[kMaxGpus] = {};
  std::set<MemPool*> pools_;

  std::mutex handles_mu_;
  std::set<void*> handles_;
  std::vector<std::shared_ptr<void>> retired_;
};

// Size charged against device capacity for an allocation of `size` bytes: large
// allocations take whole 2 MiB pages, small ones 512-byte granules.
uint64_t ChargedSize(uint64_t size);

inline constexpr uint64_t kVmmGranularity = 2ull << 20;

}  // namespace simgpu
