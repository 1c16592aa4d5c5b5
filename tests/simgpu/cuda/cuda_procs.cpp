// simgpu's CUDA driver front, part three: cuGetProcAddress (versioned lookup over the
// toolkit's entry points, cuda_entry_table.h) and the error name/string queries.
#include <span>

#include "cuda_entry_table.h"
#include "control_node.h"
#include "cuda_front.h"

using namespace simgpu;
using namespace simgpu::cuda;

namespace {

// An entry point this driver variant does not have (nor export: its version script).
bool Absent(const void* fn) {
  return !kVariant.get_proc_address_v2 && fn == reinterpret_cast<const void*>(&cuGetProcAddress_v2);
}

// A test hid `symbol` (simgpuControlHideProc). Lookups come before cuInit, so the
// node is the environment's until this process has its own.
bool Hidden(const char* symbol) {
  Process* proc = g_process.load(std::memory_order_acquire);
  Node* node = proc ? &proc->node() : EnvironmentNode();
  int unused;
  return node != nullptr && node->AnyFaultArmed() && node->TakeFault(FaultKind::kLookup, symbol, -1, &unused);
}

const char* ErrorString(CUresult e) {
  switch (e) {
    case CUDA_SUCCESS: return "no error";
    case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
    case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
    case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
    case CUDA_ERROR_DEINITIALIZED: return "driver shutting down";
    case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
    case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
    case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
    case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
    case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
    case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
    case CUDA_ERROR_NOT_READY: return "device not ready";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
    case CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED: return "peer access is already enabled";
    case CUDA_ERROR_PEER_ACCESS_NOT_ENABLED: return "peer access has not been enabled";
    case CUDA_ERROR_PEER_ACCESS_UNSUPPORTED: return "peer access is not supported between these two devices";
    case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
      return "part or all of the requested memory range is already mapped";
    case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED: return "pointer does not correspond to a registered memory region";
    case CUDA_ERROR_UNSUPPORTED_LIMIT: return "limit is not supported on this architecture";
    case CUDA_ERROR_FILE_NOT_FOUND: return "file not found";
    case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
    case CUDA_ERROR_UNKNOWN: return "unknown error";
    default: return nullptr;
  }
}

}  // namespace

extern "C" {

CUresult cuGetErrorName(CUresult error, const char** name) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (error) {
#define SIM_ERROR(e) \
  case e:            \
    *name = #e;      \
    return CUDA_SUCCESS;
#include "cuda_errors.inc"
#undef SIM_ERROR
    default: *name = nullptr; return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult cuGetErrorString(CUresult error, const char** str) {
  if (str == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const char* name = nullptr;
  if (cuGetErrorName(error, &name) != CUDA_SUCCESS) {
    *str = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
  }
  const char* s = ErrorString(error);
  *str = s ? s : name;  // codes without a short text read as their name
  return CUDA_SUCCESS;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  if (status) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (flags &
      ~static_cast<cuuint64_t>(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
    return CUDA_ERROR_INVALID_VALUE;
  *pfn = nullptr;
  if (Hidden(symbol)) return CUDA_ERROR_NOT_FOUND;
  const bool per_thread = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const ProcEntry* best = nullptr;
  bool named = false;
  for (const ProcEntry& e : std::span(kProcs, kProcCount)) {
    if (std::strcmp(e.name, symbol) != 0 || Absent(e.fn)) continue;
    named = true;
    if (e.version > version || (e.per_thread && !per_thread)) continue;
    // A per-thread variant beats any legacy one when asked for; then the highest version.
    const bool better =
        best == nullptr || (e.per_thread != best->per_thread ? e.per_thread : e.version > best->version);
    if (better) best = &e;
  }
  if (best != nullptr) {
    // An entry point simgpu does not model answers with its stub: callable, and says so.
    *pfn = best->fn;
    if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
  }
  if (!named) return CUDA_ERROR_NOT_FOUND;
  if (status) *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
  return CUDA_ERROR_NOT_FOUND;
}

CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, nullptr);
}

}  // extern "C"
