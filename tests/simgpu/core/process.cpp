// Process: the simulated node as one process sees it (see process.h).
#include "process.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>

namespace simgpu {
namespace {

uint64_t PageRound(uint64_t n) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// Parses the N of "<prefix>N us" anywhere in `name`; 0 if absent.
double MicrosAfter(const std::string& name, const char* prefix) {
  size_t at = name.find(prefix);
  if (at == std::string::npos) return 0;
  size_t i = at + std::strlen(prefix), start = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == start || name.compare(i, 2, "us") != 0) return 0;
  return std::strtod(name.c_str() + start, nullptr);
}

uint64_t NsForBytes(uint64_t bytes, double gbps) { return static_cast<uint64_t>(bytes / gbps); }

}  // namespace

uint64_t ChargedSize(uint64_t size) {
  const uint64_t unit = size >= (1ull << 20) ? (2ull << 20) : 512;
  return (size + unit - 1) / unit * unit;
}

KernelCostResult CostOfKernel(const NodeConfig& config, const GpuConfig& gpu, const std::string& name,
                              const LaunchGeometry& geo) {
  if (double us = MicrosAfter(name, "simgpu_compute_"); us > 0)
    return {static_cast<uint64_t>(us * 1000), WorkClass::kCompute};
  if (double us = MicrosAfter(name, "simgpu_memory_"); us > 0)
    return {static_cast<uint64_t>(us * 1000), WorkClass::kMemory};
  if (auto it = config.kernels.find(name); it != config.kernels.end())
    return {static_cast<uint64_t>(it->second.us * 1000), it->second.work_class};
  // Default: one cost unit per wave of resident blocks (2048 threads, 32 blocks per SM).
  const uint64_t blocks = uint64_t{geo.grid[0]} * geo.grid[1] * geo.grid[2];
  const uint64_t threads = std::max<uint64_t>(1, uint64_t{geo.block[0]} * geo.block[1] * geo.block[2]);
  const uint64_t per_sm = std::clamp<uint64_t>(2048 / threads, 1, 32);
  const uint64_t waves = std::max<uint64_t>(1, (blocks + per_sm * gpu.sms - 1) / (per_sm * gpu.sms));
  return {static_cast<uint64_t>(config.default_kernel_us * 1000 * waves), WorkClass::kCompute};
}

thread_local std::vector<Context*> Process::context_stack;

Process* Process::Get(std::string* error) {
  static std::once_flag once;
  static Process* instance = nullptr;
  static std::string init_error;
  std::call_once(once, [] {
    auto* p = new Process();
    if (p->Init(&init_error)) {
      instance = p;
      std::atexit([] { instance->Detach(); });
    } else {
      delete p;
      std::fprintf(stderr, "simgpu: %s\n", init_error.c_str());
    }
  });
  if (instance == nullptr && error) *error = init_error;
  return instance;
}

bool Process::Init(std::string* error) {
  auto cfg = LoadConfigFromEnv(error);
  if (!cfg) return false;
  config_ = std::move(*cfg);
  const char* name = std::getenv("SIMGPU_NODE");
  node_ = Node::Attach(config_, name ? name : "", /*claim_slot=*/true, error);
  if (!node_) return false;
  for (int d = 0; d < device_count(); ++d) {
    primary_[d] = std::make_unique<Context>();
    primary_[d]->device = d;
    primary_[d]->primary = true;
    primary_[d]->id = next_context_id_++;
    primary_[d]->default_stream.ctx = primary_[d].get();
    primary_[d]->default_stream.device = d;
    Track(primary_[d].get());
    default_pools_[d] = std::make_unique<MemPool>();
    default_pools_[d]->device = d;
    default_pools_[d]->is_default = true;
    current_pool_[d] = default_pools_[d].get();
    pools_.insert(default_pools_[d].get());
    Track(default_pools_[d].get());
  }
  return true;
}

void Process::Detach() { node_->Detach(); }

Executor& Process::executor(int device) {
  std::call_once(mps_once_, [this] { JoinMps(); });
  std::lock_guard<std::mutex> lock(exec_mu_);
  if (!executors_[device]) {
    int queue = -1;
    if (mps_on_.load()) {
      const int cus = gpu(device).cus;
      const int share = std::clamp((mps_percent_ * cus + 99) / 100, 1, cus);
      queue = node_->ClaimMpsQueue(device, cus, share);
      if (queue >= 0) {
        mps_queue_[device] = queue + 1;
        mps_cus_[device].store(share);
      }
    }
    executors_[device] = std::make_unique<Executor>(node_.get(), device, queue);
  }
  return *executors_[device];
}

namespace {

// The simulated control daemon (tests/simgpu/mps) holds this lock while it runs.
bool MpsDaemonAlive(const std::string& lock_path) {
  const int fd = open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

}  // namespace

void Process::JoinMps() {
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  mps_lock_path_ = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp/nvidia-mps") + "/control.lock";
  if (!MpsDaemonAlive(mps_lock_path_)) return;
  if (const char* p = std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"); p != nullptr && *p != '\0') {
    const int v = std::atoi(p);
    if (v >= 1 && v <= 100) mps_percent_ = v;
  }
  mps_checked_ns_.store(MonotonicNs());
  mps_on_.store(true);
}

int Process::MpsCus(int device) {
  if (!mps_on_.load(std::memory_order_relaxed)) return 0;
  constexpr uint64_t kCheckEveryNs = 10'000'000;  // how soon a dead daemon's clients go back to time slices
  const uint64_t now = MonotonicNs();
  uint64_t checked = mps_checked_ns_.load();
  if (now - checked >= kCheckEveryNs && mps_checked_ns_.compare_exchange_strong(checked, now) &&
      !MpsDaemonAlive(mps_lock_path_)) {
    std::lock_guard<std::mutex> lock(exec_mu_);
    mps_on_.store(false);
    for (int d = 0; d < kMaxGpus; ++d) {
      if (mps_queue_[d] > 0) node_->WidenMaskedQueue(d, mps_queue_[d] - 1);
      mps_cus_[d].store(0);
    }
    return 0;
  }
  return mps_cus_[device].load();
}

void Process::Track(void* p) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  handles_.insert(p);
}

void Process::Untrack(void* p) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  handles_.erase(p);
}

// ---- contexts ----

Status Process::ActivatePrimary(int device) {
  std::lock_guard<std::mutex> lock(primary_[device]->mu);
  if (primary_charged_[device]) return Status::kOk;
  const uint64_t bytes = gpu(device).context_memory_bytes;
  if (bytes && !node_->TryCharge(device, bytes)) return Status::kOutOfMemory;
  primary_[device]->charged_bytes = bytes;
  primary_charged_[device] = true;
  return Status::kOk;
}

Status Process::ReleasePrimary(int device) {
  if (primary_refs_[device].load() <= 0) return Status::kInvalidValue;
  if (--primary_refs_[device] == 0) {
    SyncDevice(device);
    std::lock_guard<std::mutex> lock(primary_[device]->mu);
    if (primary_charged_[device] && primary_[device]->charged_bytes)
      node_->Uncharge(device, primary_[device]->charged_bytes);
    primary_charged_[device] = false;
    primary_[device]->charged_bytes = 0;
  }
  return Status::kOk;
}

Status Process::CreateContext(int device, unsigned flags, Context** out) {
  const uint64_t bytes = gpu(device).context_memory_bytes;
  if (bytes && !node_->TryCharge(device, bytes)) return Status::kOutOfMemory;
  auto* c = new Context();
  c->device = device;
  c->flags = flags;
  c->id = next_context_id_++;
  c->charged_bytes = bytes;
  c->default_stream.ctx = c;
  c->default_stream.device = device;
  Track(c);
  *out = c;
  return Status::kOk;
}

bool Process::ValidContext(Context* c) { return Valid(c, Tag::kContext); }

Status Process::DestroyContext(Context* c) {
  if (!ValidContext(c) || c->primary) return Status::kInvalidHandle;
  SyncDevice(c->device);
  if (c->charged_bytes) node_->Uncharge(c->device, c->charged_bytes);
  std::erase(context_stack, c);  // destroying a current context pops it
  Retire(c);                     // streams created in it may still name it
  return Status::kOk;
}

// ---- device memory ----

Status Process::ChargeRange(int device, uint64_t size, MemKind kind, MemPool* pool, OutAddress* address) {
  const uint64_t charged = ChargedSize(size);
  if (!node_->TryCharge(device, charged)) return Status::kOutOfMemory;
  void* p = mmap(nullptr, PageRound(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    node_->Uncharge(device, charged);
    return Status::kOutOfMemory;
  }
  *address = reinterpret_cast<uint64_t>(p);
  std::unique_lock lock(mem_mu_);
  ranges_[*address] = Range{size, device, kind, charged, pool, 0, true};
  return Status::kOk;
}

void Process::ReleaseRange(uint64_t address) {
  Range r;
  {
    std::unique_lock lock(mem_mu_);
    auto it = ranges_.find(address);
    if (it == ranges_.end()) return;
    r = it->second;
    ranges_.erase(it);
  }
  munmap(reinterpret_cast<void*>(address), PageRound(r.size));
  node_->Uncharge(r.device, r.charged);
}

bool Process::AllocationFault(int device) {
  int unused;
  return node_->AnyFaultArmed() && node_->TakeFault(FaultKind::kAllocation, nullptr, device, &unused);
}

Status Process::Allocate(int device, uint64_t size, MemKind kind, OutAddress* address) {
  if (size == 0) return Status::kInvalidValue;
  if (AllocationFault(device)) return Status::kOutOfMemory;
  return ChargeRange(device, size, kind, nullptr, address);
}

Status Process::Free(uint64_t address) {
  if (address == 0) return Status::kOk;
  MemKind kind;
  {
    std::shared_lock lock(mem_mu_);
    auto it = ranges_.find(address);
    if (it == ranges_.end()) return Status::kInvalidValue;
    kind = it->second.kind;
  }
  if (kind == MemKind::kPooled) {  // cuMemFree of stream-ordered memory: synchronous free
    Status s = PoolFree(address, nullptr);
    TrimPoolsAtSync();
    return s;
  }
  if (kind != MemKind::kDevice && kind != MemKind::kManaged && kind != MemKind::kArray) return Status::kInvalidValue;
  ReleaseRange(address);
  return Status::kOk;
}

void Process::ReleaseDeviceMemory(int device) {
  std::vector<uint64_t> drop;
  {
    std::shared_lock lock(mem_mu_);
    for (const auto& [address, r] : ranges_)
      if (r.device == device &&
          (r.kind == MemKind::kDevice || r.kind == MemKind::kManaged || r.kind == MemKind::kArray))
        drop.push_back(address);
  }
  for (uint64_t a : drop) ReleaseRange(a);
  std::vector<MemPool*> pools;
  {
    std::lock_guard<std::mutex> lock(mem_mu_pool_);
    for (MemPool* p : pools_)
      if (p->device == device) pools.push_back(p);
  }
  for (MemPool* p : pools) PoolTrim(p, 0);
}

bool Process::Lookup(uint64_t address, uint64_t* base, Range* range) {
  std::shared_lock lock(mem_mu_);
  auto it = ranges_.upper_bound(address);
  if (it == ranges_.begin()) return false;
  --it;
  if (address >= it->first + it->second.size) return false;
  if (base) *base = it->first;
  if (range) *range = it->second;
  return true;
}

bool Process::DeviceSpan(uint64_t address, uint64_t bytes, int* device) {
  std::shared_lock lock(mem_mu_);
  uint64_t cur = address, end = address + bytes;
  int dev = -1;
  while (cur < end) {  // contiguous ranges (VMM mappings side by side) form one span
    auto it = ranges_.upper_bound(cur);
    if (it == ranges_.begin()) return false;
    --it;
    const Range& r = it->second;
    if (cur >= it->first + r.size || !r.accessible || (dev >= 0 && r.device != dev)) return false;
    dev = r.device;
    cur = it->first + r.size;
  }
  if (device) *device = dev;
  return dev >= 0;
}

void Process::AddPinned(uint64_t address, uint64_t size) {
  std::unique_lock lock(mem_mu_);
  pinned_[address] = size;
}

bool Process::RemovePinned(uint64_t address) {
  std::unique_lock lock(mem_mu_);
  return pinned_.erase(address) > 0;
}

bool Process::IsPinned(uint64_t address) {
  std::shared_lock lock(mem_mu_);
  auto it = pinned_.upper_bound(address);
  if (it == pinned_.begin()) return false;
  --it;
  return address < it->first + it->second;
}

// ---- stream-ordered allocation ----

Status Process::CreatePool(int device, MemPool** out) {
  auto* p = new MemPool();
  p->device = device;
  std::lock_guard<std::mutex> lock(mem_mu_pool_);
  pools_.insert(p);
  Track(p);
  *out = p;
  return Status::kOk;
}

bool Process::ValidPool(MemPool* pool) { return Valid(pool, Tag::kPool); }

Status Process::DestroyPool(MemPool* pool) {
  if (!ValidPool(pool) || pool->is_default) return Status::kInvalidValue;
  {
    std::lock_guard<std::mutex> lock(mem_mu_pool_);
    pools_.erase(pool);
    for (int d = 0; d < device_count(); ++d)
      if (current_pool_[d] == pool) current_pool_[d] = default_pools_[d].get();
  }
  PoolTrim(pool, 0);
  Retire(pool);  // blocks still in use keep pointing at it
  return Status::kOk;
}

Status Process::PoolAllocate(MemPool* pool, uint64_t size, OutAddress* address) {
  if (size == 0) return Status::kInvalidValue;
  if (AllocationFault(pool->device)) return Status::kOutOfMemory;
  std::lock_guard<std::mutex> lock(mem_mu_pool_);
  auto it = pool->cached.lower_bound(size);
  uint64_t block_size = size;
  if (it != pool->cached.end() && it->first <= 2 * size) {  // reuse a freed block
    block_size = it->first;
    *address = it->second;
    pool->cached.erase(it);
  } else {
    Status s = ChargeRange(pool->device, size, MemKind::kPooled, pool, address);
    if (s != Status::kOk) {
      // Give back what this pool keeps cached and try once more.
      std::vector<uint64_t> drop;
      for (auto& [sz, addr] : pool->cached) drop.push_back(addr), pool->reserved -= sz;
      pool->cached.clear();
      for (uint64_t a : drop) ReleaseRange(a);
      s = ChargeRange(pool->device, size, MemKind::kPooled, pool, address);
      if (s != Status::kOk) return s;
    }
    pool->reserved += size;
    pool->reserved_high = std::max(pool->reserved_high, pool->reserved);
  }
  pool->used += block_size;
  pool->used_high = std::max(pool->used_high, pool->used);
  return Status::kOk;
}

Status Process::PoolFree(uint64_t address, Stream* stream) {
  Range r;
  uint64_t base;
  if (!Lookup(address, &base, &r) || base != address || r.kind != MemKind::kPooled) return Status::kInvalidValue;
  MemPool* pool = r.pool;
  auto give_back = [this, pool, address, size = r.size](uint64_t) {
    std::lock_guard<std::mutex> lock(mem_mu_pool_);
    pool->cached.emplace(size, address);
    pool->used -= size;
  };
  if (stream == nullptr) {
    give_back(0);
  } else {
    Work w;
    w.effect = give_back;
    Submit(stream, std::move(w));
  }
  return Status::kOk;
}

void Process::PoolTrim(MemPool* pool, uint64_t keep_bytes) {
  std::vector<uint64_t> drop;
  {
    std::lock_guard<std::mutex> lock(mem_mu_pool_);
    while (pool->reserved > keep_bytes && !pool->cached.empty()) {
      auto it = std::prev(pool->cached.end());  // largest first
      pool->reserved -= it->first;
      drop.push_back(it->second);
      pool->cached.erase(it);
    }
  }
  for (uint64_t a : drop) ReleaseRange(a);
}

void Process::TrimPoolsAtSync() {
  std::vector<MemPool*> pools;
  {
    std::lock_guard<std::mutex> lock(mem_mu_pool_);
    pools.assign(pools_.begin(), pools_.end());
  }
  for (MemPool* p : pools)
    if (p->reserved > p->release_threshold) PoolTrim(p, p->release_threshold);
}

// ---- virtual memory management ----

Status Process::VmmCreate(int device, uint64_t size, OutAddress* handle) {
  if (size == 0 || size % kVmmGranularity) return Status::kInvalidValue;
  if (AllocationFault(device) || !node_->TryCharge(device, size)) return Status::kOutOfMemory;
  int fd = memfd_create("simgpu-vmm", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (fd >= 0) close(fd);
    node_->Uncharge(device, size);
    return Status::kOutOfMemory;
  }
  std::unique_lock lock(mem_mu_);
  auto phys = std::make_unique<PhysAlloc>();
  phys->device = device;
  phys->size = size;
  phys->fd = fd;
  *handle = next_phys_++;
  phys_[*handle] = std::move(phys);
  return Status::kOk;
}

// Caller holds mem_mu_ exclusively.
void Process::ReleasePhys(uint64_t handle) {
  auto it = phys_.find(handle);
  PhysAlloc& p = *it->second;
  close(p.fd);
  node_->Uncharge(p.device, p.size);
  phys_.erase(it);
}

Status Process::VmmRelease(uint64_t handle) {
  std::unique_lock lock(mem_mu_);
  auto it = phys_.find(handle);
  if (it == phys_.end() || it->second->refs <= 0) return Status::kInvalidValue;
  if (--it->second->refs == 0 && it->second->mappings == 0) ReleasePhys(handle);
  return Status::kOk;
}

bool Process::VmmInfo(uint64_t handle, int* device, uint64_t* size) {
  std::shared_lock lock(mem_mu_);
  auto it = phys_.find(handle);
  if (it == phys_.end()) return false;
  *device = it->second->device;
  *size = it->second->size;
  return true;
}

Status Process::VmmReserve(uint64_t size, uint64_t alignment, OutAddress* address) {
  if (size == 0 || size % kVmmGranularity) return Status::kInvalidValue;
  alignment = std::max(alignment, kVmmGranularity);
  if (alignment & (alignment - 1)) return Status::kInvalidValue;
  const uint64_t span = size + alignment;
  void* p = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::kOutOfMemory;
  uint64_t start = reinterpret_cast<uint64_t>(p);
  uint64_t aligned = (start + alignment - 1) / alignment * alignment;
  if (aligned > start) munmap(p, aligned - start);
  if (start + span > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), start + span - aligned - size);
  std::unique_lock lock(mem_mu_);
  reserved_[aligned] = size;
  *address = aligned;
  return Status::kOk;
}

Status Process::VmmFree(uint64_t address, uint64_t size) {
  std::unique_lock lock(mem_mu_);
  auto it = reserved_.find(address);
  if (it == reserved_.end() || it->second != size) return Status::kInvalidValue;
  auto m = ranges_.lower_bound(address);
  if (m != ranges_.end() && m->first < address + size) return Status::kInvalidValue;  // still mapped
  reserved_.erase(it);
  munmap(reinterpret_cast<void*>(address), size);
  return Status::kOk;
}

Status Process::VmmMap(uint64_t address, uint64_t size, uint64_t offset, uint64_t handle) {
  if (size == 0 || size % kVmmGranularity || address % kVmmGranularity || offset % kVmmGranularity)
    return Status::kInvalidValue;
  std::unique_lock lock(mem_mu_);
  auto res = reserved_.upper_bound(address);
  if (res == reserved_.begin()) return Status::kInvalidValue;
  --res;
  if (address + size > res->first + res->second) return Status::kInvalidValue;
  auto ph = phys_.find(handle);
  if (ph == phys_.end() || offset + size > ph->second->size) return Status::kInvalidHandle;
  auto next = ranges_.lower_bound(address);
  if (next != ranges_.end() && next->first < address + size) return Status::kInvalidValue;
  if (next != ranges_.begin() && std::prev(next)->first + std::prev(next)->second.size > address)
    return Status::kInvalidValue;
  void* p = mmap(reinterpret_cast<void*>(address), size, PROT_NONE, MAP_SHARED | MAP_FIXED, ph->second->fd,
                 static_cast<off_t>(offset));
  if (p == MAP_FAILED) return Status::kOutOfMemory;
  ranges_[address] = Range{size, ph->second->device, MemKind::kVmmMapping, 0, nullptr, handle, false};
  ++ph->second->mappings;
  return Status::kOk;
}

Status Process::VmmUnmap(uint64_t address, uint64_t size) {
  std::unique_lock lock(mem_mu_);
  auto it = ranges_.find(address);
  if (it == ranges_.end() || it->second.kind != MemKind::kVmmMapping) return Status::kInvalidValue;
  while (it != ranges_.end() && it->first < address + size) {
    if (it->second.kind != MemKind::kVmmMapping) return Status::kInvalidValue;
    mmap(reinterpret_cast<void*>(it->first), it->second.size, PROT_NONE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    auto ph = phys_.find(it->second.vmm_handle);
    if (ph != phys_.end() && --ph->second->mappings == 0 && ph->second->refs == 0) ReleasePhys(ph->first);
    it = ranges_.erase(it);
  }
  return Status::kOk;
}

Status Process::VmmSetAccess(uint64_t address, uint64_t size, bool read_write) {
  std::unique_lock lock(mem_mu_);
  uint64_t cur = address;
  auto it = ranges_.find(address);
  while (cur < address + size) {
    if (it == ranges_.end() || it->first != cur || it->second.kind != MemKind::kVmmMapping)
      return Status::kInvalidValue;
    cur += it->second.size;
    ++it;
  }
  for (it = ranges_.find(address); it != ranges_.end() && it->first < address + size; ++it) {
    mprotect(reinterpret_cast<void*>(it->first), it->second.size, read_write ? PROT_READ | PROT_WRITE : PROT_NONE);
    it->second.accessible = read_write;
  }
  return Status::kOk;
}

Status Process::VmmRetain(uint64_t address, OutAddress* handle) {
  std::unique_lock lock(mem_mu_);
  auto it = ranges_.find(address);
  if (it == ranges_.end() || it->second.kind != MemKind::kVmmMapping) return Status::kInvalidValue;
  auto ph = phys_.find(it->second.vmm_handle);
  if (ph == phys_.end()) return Status::kInvalidValue;
  ++ph->second->refs;
  *handle = ph->first;
  return Status::kOk;
}

// ---- modules ----

namespace {

void ScanImage(const void* image, Module* m) {
  const char* text = static_cast<const char*>(image);
  if (text == nullptr || std::strncmp(text,
                                      "\x7f"
                                      "ELF",
                                      4) == 0)
    return;
  uint32_t magic;
  std::memcpy(&magic, text, sizeof magic);
  if (magic == 0xBA55ED50u || magic == 0x466243B1u) return;             // CUDA fatbin containers
  if (std::strncmp(text, "__CLANG_OFFLOAD_BUNDLE__", 24) == 0) return;  // HIP code object bundle
  std::string s(text, strnlen(text, 64 << 20));
  if (s.find(".version") == std::string::npos && s.find(".entry") == std::string::npos) return;
  static const std::regex entry(R"(\.entry\s+([A-Za-z_$][A-Za-z0-9_$]*))");
  for (auto it = std::sregex_iterator(s.begin(), s.end(), entry); it != std::sregex_iterator(); ++it)
    m->entries.insert((*it)[1].str());
  m->any_name = false;
}

}  // namespace

Module* Process::LoadModule(const void* image) {
  auto* m = new Module();
  ScanImage(image, m);
  Track(m);
  return m;
}

Status Process::ModuleFunction(Module* m, const std::string& name, Function** out) {
  if (!Valid(m, Tag::kModule)) return Status::kInvalidHandle;
  if (!m->any_name && !m->entries.count(name)) return Status::kNotFound;
  std::lock_guard<std::mutex> lock(m->mu);
  auto& slot = m->functions[name];
  if (!slot) {
    slot = std::make_unique<Function>();
    slot->name = name;
    slot->module = m;
    Track(slot.get());
  }
  *out = slot.get();
  return Status::kOk;
}

// ---- work ----

// A CU-masked stream that leaves some CUs free gets a queue of its own, which the node
// lets run beside other processes' queues with disjoint masks. With every CU enabled it
// is an ordinary stream; when the node's masked queues are all taken it stays on the
// main queue (kernels still take the masked time).
void Process::AttachStream(Stream* s) {
  if (s->cus_enabled == 0 || s->cus_enabled >= gpu(s->device).cus) return;
  uint64_t cus[kCuWords] = {};
  for (int cu = 0; cu < gpu(s->device).cus && cu / 32 < static_cast<int>(s->cu_mask.size()); ++cu)
    if (s->cu_mask[cu / 32] >> (cu % 32) & 1) cus[cu / 64] |= 1ull << (cu % 64);
  std::vector<uint64_t> key(cus, cus + kCuWords);
  std::lock_guard<std::mutex> lock(exec_mu_);
  auto& slot = masked_executors_[s->device][key];
  if (!slot) {
    const int q = node_->ClaimMaskedQueue(s->device, cus);
    if (q < 0) {
      masked_executors_[s->device].erase(key);
      return;
    }
    slot = std::make_unique<Executor>(node_.get(), s->device, q);
  }
  s->queue = slot.get();
}

bool Process::StreamIdle(Stream* s) { return QueueOf(s).Done(s->last_seq.load()); }

void Process::DestroyStream(Stream* s) {
  Untrack(s);
  s->tag = Tag::kDead;
  Work w;
  w.effect = [s](uint64_t) { delete s; };
  QueueOf(s).Submit(std::move(w));
}

bool Process::EventDone(Event* e) {
  const uint64_t seq = e->seq.load();
  Executor* q = e->queue.load();
  return seq == 0 || (q ? *q : executor(e->device)).Done(seq);
}

void Process::SyncEvent(Event* e) {
  if (const uint64_t seq = e->seq.load()) {
    Executor* q = e->queue.load();
    (q ? *q : executor(e->device)).Wait(seq);
  }
  TrimPoolsAtSync();
}

void Process::DestroyEvent(Event* e) {
  Untrack(e);
  e->tag = Tag::kDead;
  Work w;  // pending records still write to it: free it behind them
  w.effect = [e](uint64_t) { delete e; };
  Executor* q = e->queue.load();
  (q ? *q : executor(e->device)).Submit(std::move(w));
}

uint64_t Process::Submit(Stream* stream, Work work) {
  uint64_t seq = QueueOf(stream).Submit(std::move(work));
  stream->last_seq.store(seq);
  return seq;
}

void Process::SyncStream(Stream* s) {
  QueueOf(s).Wait(s->last_seq.load());
  TrimPoolsAtSync();
}

void Process::SyncDevice(int device) {
  std::vector<Executor*> queues{&executor(device)};
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    for (auto& [mask, e] : masked_executors_[device]) queues.push_back(e.get());
  }
  for (Executor* e : queues) e->Wait(e->submitted());
  TrimPoolsAtSync();
}

Status Process::Copy(Stream* stream, uint64_t dst, uint64_t src, uint64_t bytes, bool async) {
  return Copy2D(stream, dst, bytes, src, bytes, bytes, 1, async);
}

Status Process::Copy2D(Stream* stream, uint64_t dst, uint64_t dst_pitch, uint64_t src, uint64_t src_pitch,
                       uint64_t width, uint64_t height, bool async) {
  if (width == 0 || height == 0) return Status::kOk;
  if (height > 1 && (dst_pitch < width || src_pitch < width)) return Status::kInvalidValue;
  const uint64_t dst_span = dst_pitch * (height - 1) + width, src_span = src_pitch * (height - 1) + width;
  int ddev = -1, sdev = -1;
  const bool dst_is_dev = DeviceSpan(dst, dst_span, &ddev);
  const bool src_is_dev = DeviceSpan(src, src_span, &sdev);
  // A pointer that starts in device memory but runs past its allocation is an error.
  if ((!dst_is_dev && Lookup(dst, nullptr, nullptr)) || (!src_is_dev && Lookup(src, nullptr, nullptr)))
    return Status::kInvalidValue;
  const uint64_t bytes = width * height;
  if (dst_is_dev != src_is_dev)
    node_->CountPcie(dst_is_dev ? ddev : sdev, dst_is_dev ? bytes : 0, dst_is_dev ? 0 : bytes);
  double gbps = config_.pcie_bandwidth_gbps;
  if (dst_is_dev && src_is_dev) {
    if (ddev == sdev) {
      gbps = gpu(ddev).memory_bandwidth_gbps / 2;  // read and write the same memory
    } else {
      LinkKind link = config_.link(sdev, ddev);
      gbps = link == LinkKind::kNvlink ? config_.nvlink_bandwidth_gbps
             : link == LinkKind::kPcie ? config_.pcie_bandwidth_gbps
                                       : config_.pcie_bandwidth_gbps / 2;  // staged through host
    }
  }
  // Pageable host source of an async copy: the API lets the caller reuse it on return.
  std::shared_ptr<std::vector<char>> staged;
  if (async && !src_is_dev && !IsPinned(src)) {
    staged = std::make_shared<std::vector<char>>(bytes);
    for (uint64_t row = 0; row < height; ++row)
      std::memcpy(staged->data() + row * width, reinterpret_cast<const void*>(src + row * src_pitch), width);
  }
  Work w;
  w.duration_ns = NsForBytes(bytes, gbps);
  w.mem_factor = dst_is_dev && src_is_dev ? 1.0 : 0.0;
  w.effect = [=](uint64_t) {
    for (uint64_t row = 0; row < height; ++row) {
      const void* from = staged ? static_cast<const void*>(staged->data() + row * width)
                                : reinterpret_cast<const void*>(src + row * src_pitch);
      std::memmove(reinterpret_cast<void*>(dst + row * dst_pitch), from, width);
    }
  };
  uint64_t seq = Submit(stream, std::move(w));
  // Synchronous copies, and async copies into pageable host memory, return when done.
  if (!async || (!dst_is_dev && !IsPinned(dst))) QueueOf(stream).Wait(seq);
  return Status::kOk;
}

Status Process::Memset(Stream* stream, uint64_t dst, uint64_t pitch, uint64_t value, unsigned element_bytes,
                       uint64_t width_elements, uint64_t height, bool async) {
  if (width_elements == 0 || height == 0) return Status::kOk;
  const uint64_t row_bytes = width_elements * element_bytes;
  if (height > 1 && pitch < row_bytes) return Status::kInvalidValue;
  if (dst % element_bytes) return Status::kInvalidValue;
  int dev;
  if (!DeviceSpan(dst, pitch * (height - 1) + row_bytes, &dev)) return Status::kInvalidValue;
  Work w;
  w.duration_ns = NsForBytes(row_bytes * height, gpu(dev).memory_bandwidth_gbps);
  w.mem_factor = 1.0;
  w.effect = [=](uint64_t) {
    for (uint64_t row = 0; row < height; ++row) {
      char* p = reinterpret_cast<char*>(dst + row * pitch);
      if (element_bytes == 1) {
        std::memset(p, static_cast<int>(value & 0xff), width_elements);
      } else if (element_bytes == 2) {
        auto v = static_cast<uint16_t>(value);
        for (uint64_t i = 0; i < width_elements; ++i) std::memcpy(p + 2 * i, &v, 2);
      } else {
        auto v = static_cast<uint32_t>(value);
        for (uint64_t i = 0; i < width_elements; ++i) std::memcpy(p + 4 * i, &v, 4);
      }
    }
  };
  uint64_t seq = Submit(stream, std::move(w));
  if (!async) QueueOf(stream).Wait(seq);
  return Status::kOk;
}

Status Process::Launch(Stream* stream, Function* f, const LaunchGeometry& geo) {
  for (int i = 0; i < 3; ++i)
    if (geo.grid[i] == 0 || geo.block[i] == 0) return Status::kInvalidValue;
  if (uint64_t{geo.block[0]} * geo.block[1] * geo.block[2] > 1024 || geo.block[2] > 64 || geo.grid[1] > 65535 ||
      geo.grid[2] > 65535 || geo.grid[0] > 0x7fffffffu)
    return Status::kInvalidValue;
  if (geo.shared_bytes > static_cast<unsigned>(f->max_dynamic_shared)) return Status::kInvalidValue;
  KernelCostResult cost = CostOfKernel(config_, gpu(stream->device), f->name, geo);
  Work w;
  w.duration_ns = cost.duration_ns;
  // An MPS client's share of the CUs holds its kernels as a CU mask does.
  const int cus_enabled = stream->cus_enabled > 0 ? stream->cus_enabled : MpsCus(stream->device);
  if (cus_enabled > 0) {  // k of N CUs: compute scales with N / k, memory only below saturation
    const GpuConfig& g = gpu(stream->device);
    const double k = cus_enabled;
    const double factor =
        cost.work_class == WorkClass::kCompute ? g.cus / k : std::max(1.0, g.memory_saturation_cus / k);
    w.duration_ns = static_cast<uint64_t>(static_cast<double>(cost.duration_ns) * factor);
  }
  w.needs_engine = true;
  w.sm_factor = cus_enabled > 0 ? std::min(1.0, double(cus_enabled) / gpu(stream->device).cus) : 1.0;
  w.mem_factor = cost.work_class == WorkClass::kMemory ? 0.9 : 0.2;
  Submit(stream, std::move(w));
  return Status::kOk;
}

Status Process::RecordEvent(Event* e, Stream* s) {
  e->device = s->device;
  e->queue.store(&QueueOf(s));
  Work w;
  w.effect = [e](uint64_t t) { e->time_ns.store(t); };
  e->seq.store(Submit(s, std::move(w)));
  return Status::kOk;
}

Status Process::WaitEvent(Stream* s, Event* e) {
  uint64_t seq = e->seq.load();
  Executor* other = e->queue.load();
  if (other == nullptr) other = &executor(e->device);
  if (seq == 0 || other == &QueueOf(s)) return Status::kOk;  // same queue: already ordered
  Work w;
  w.may_block = true;
  w.effect = [other, seq](uint64_t) { other->Wait(seq); };
  Submit(s, std::move(w));
  return Status::kOk;
}

}  // namespace simgpu
