// simgpu's control interface for tests: look inside the simulated node and inject
// faults into it. A C ABI that simgpu's libcuda.so.1 and libamdhip64.so.5 export (no
// real library has these names); tests link one of them or dlsym the functions.
//
// Everything here is node-wide, on purpose: the processes a test cares about are
// usually others (a client under the shim, a broker's clients), so both what is
// inspected and the faults armed live in the node's shared segment, and every process
// attached to that node sees them. A fault can still be aimed at one process by pid.
//
// Which node: the one simgpuControlOpen names; before any call to it, the node of
// this process's environment (SIMGPU_CONFIG, SIMGPU_NODE), i.e. the node its own
// driver uses. Functions returning int give 0 (or a count) on success and a negative
// SIMGPU_CONTROL_ERROR_* on failure.
#ifndef SIMGPU_CONTROL_H_
#define SIMGPU_CONTROL_H_

#ifdef __cplusplus
extern "C" {
#endif

#define SIMGPU_CONTROL_ERROR_NO_NODE (-1)    /* the node could not be opened (config, segment) */
#define SIMGPU_CONTROL_ERROR_INVALID (-2)    /* an argument is out of range */
#define SIMGPU_CONTROL_ERROR_TABLE_FULL (-3) /* SIMGPU_CONTROL_MAX_FAULTS faults are armed already */
#define SIMGPU_CONTROL_MAX_FAULTS 16
#define SIMGPU_CONTROL_ANY_PROCESS 0      /* pid argument: every process of the node */
#define SIMGPU_CONTROL_ANY_GPU (-1)       /* gpu argument: every GPU */
#define SIMGPU_CONTROL_UNTIL_CLEARED (-1) /* count argument: no limit */

/* Targets the node of `config_path` (a SIMGPU_CONFIG file; null: the default node)
   and `node_name` (a SIMGPU_NODE; null or empty: derived from the config, as the
   driver does). Replaces the node used so far by this process's control calls. */
int simgpuControlOpen(const char* config_path, const char* node_name);

/* ---- Inspection ---- */

int simgpuControlGpuCount(void);
/* Device memory in use on `gpu` as the node accounts it: every process's allocations
   and contexts, after reclaiming what dead processes held. */
long long simgpuControlUsedBytes(int gpu);
long long simgpuControlCapacityBytes(int gpu);

typedef struct simgpuControlProcess {
  int pid;
  unsigned long long used_bytes;  /* device memory charged to it on the GPU asked about */
  unsigned long long sm_busy_ns;  /* cumulative time its kernels ran there */
  unsigned long long mem_busy_ns; /* cumulative time device memory was busy for it there */
} simgpuControlProcess;

/* The live processes attached to the node (those that initialized a simgpu driver
   front), with their counters on `gpu`. Fills up to `max` entries and returns how
   many there are (which may be more than `max`). */
int simgpuControlProcesses(int gpu, simgpuControlProcess* out, int max);

/* ---- Fault injection (node-wide table; `pid` 0 = any process) ---- */

/* The next `count` device-memory allocations on `gpu` (SIMGPU_CONTROL_ANY_GPU: any)
   fail as if the device were full: CUDA_ERROR_OUT_OF_MEMORY / hipErrorOutOfMemory.
   Counts every allocation family (plain, pitched, managed, stream-ordered even when
   the pool could reuse a block, arrays, VMM handles); context memory does not count. */
int simgpuControlFailAllocations(int gpu, int count, int pid);

/* The next `count` calls of entry point `name` return `error` (a CUresult or
   hipError_t) without doing anything. `name` is an API name ("cuMemAlloc", which
   also matches cuMemAlloc_v2 and any later _vN) or an exact ABI symbol
   ("cuMemAlloc_v2"). Applies to the entry points that pass the front's
   initialization check; not to the version, error-name and last-error queries,
   cuInit, cuGetProcAddress*, hipGetDeviceCount (docs/simgpu.md lists them). */
int simgpuControlFailCall(const char* name, int error, int count, int pid);

/* cuGetProcAddress and cuGetProcAddress_v2 report `name` as not found
   (CUDA_ERROR_NOT_FOUND, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND) until cleared, as a
   driver that lacks the entry point would. dlsym is not affected. */
int simgpuControlHideProc(const char* name, int pid);

/* Disarms every fault; returns how many were still armed. */
int simgpuControlClearFaults(void);

/* How many times faults have fired on this node since it was created. */
long long simgpuControlFaultHits(void);

#ifdef __cplusplus
}
#endif

#endif  // SIMGPU_CONTROL_H_
