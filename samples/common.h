// Shared helpers for the gpushare samples: CHECK for driver calls, a small option
// parser ("--name value" or "--name=value"), sizes like 256MiB, and opening a device
// through its primary context the way the CUDA runtime does.
#pragma once

#ifndef SAMPLES_NO_CUDA  // the HIP samples take only the API-neutral helpers
#include <cuda.h>
#endif
#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <string>

namespace samples {

#ifndef SAMPLES_NO_CUDA
// Runs a driver call; on failure prints the call, its CUresult name, file and line, and exits 1.
#define CHECK(call) ::samples::Check((call), #call, __FILE__, __LINE__)

inline const char* ErrorName(CUresult r) {
  const char* name = nullptr;
  return cuGetErrorName(r, &name) == CUDA_SUCCESS && name != nullptr ? name : "CUDA_ERROR_UNRECOGNIZED";
}

inline void Check(CUresult r, const char* call, const char* file, int line) {
  if (r == CUDA_SUCCESS) return;
  std::fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", file, line, call, ErrorName(r), static_cast<int>(r));
  std::exit(1);
}
#endif  // SAMPLES_NO_CUDA

// "4096", "512KiB", "256MiB", "1GiB", "2T": binary units (K, KiB = 1024); "512MB", "1GB": decimal (1000).
inline bool ParseBytes(const std::string& text, uint64_t* out) {
  static const std::map<std::string, uint64_t> kUnits = {{"", 1},
                                                         {"B", 1},
                                                         {"K", 1ull << 10},
                                                         {"KiB", 1ull << 10},
                                                         {"KB", 1000ull},
                                                         {"M", 1ull << 20},
                                                         {"MiB", 1ull << 20},
                                                         {"MB", 1000000ull},
                                                         {"G", 1ull << 30},
                                                         {"GiB", 1ull << 30},
                                                         {"GB", 1000000000ull},
                                                         {"T", 1ull << 40},
                                                         {"TiB", 1ull << 40},
                                                         {"TB", 1000000000000ull}};
  if (text.empty() || text[0] < '0' || text[0] > '9') return false;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  auto unit = kUnits.find(end);
  if (unit == kUnits.end() || n > UINT64_MAX / unit->second) return false;
  *out = n * unit->second;
  return true;
}

// Command-line options; only the names in `known` are accepted, --help prints usage.
class Args {
 public:
  Args(int argc, char** argv, std::initializer_list<const char*> known, const char* usage)
      : program_(argv[0]), usage_(usage) {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::printf("usage: %s %s\n", program_.c_str(), usage_.c_str());
        std::exit(0);
      }
      const size_t eq = arg.find('=');
      const std::string name = arg.substr(0, eq);
      bool ok = false;
      for (const char* k : known) ok = ok || name == k;
      if (!ok) Fail("unknown option " + arg);
      if (eq != std::string::npos)
        values_[name] = arg.substr(eq + 1);
      else if (i + 1 < argc)
        values_[name] = argv[++i];
      else
        Fail("missing value for " + name);
    }
  }

  std::string String(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }

  long long Int(const std::string& name, long long fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    char* end = nullptr;
    const long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0') Fail(name + ": expected an integer, got '" + it->second + "'");
    return v;
  }

  double Double(const std::string& name, double fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0' || !std::isfinite(v))
      Fail(name + ": expected a number, got '" + it->second + "'");
    return v;
  }

  uint64_t Bytes(const std::string& name, uint64_t fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    uint64_t v = 0;
    if (!ParseBytes(it->second, &v)) Fail(name + ": expected a size like 4096, 256MiB, 1GiB or 512MB");
    return v;
  }

  // Usage errors exit 2, apart from failures of the program itself (1).
  [[noreturn]] void Fail(const std::string& why) const {
    std::fprintf(stderr, "%s: %s\nusage: %s %s\n", program_.c_str(), why.c_str(), program_.c_str(), usage_.c_str());
    std::exit(2);
  }

 private:
  std::string program_, usage_;
  std::map<std::string, std::string> values_;
};

#ifndef SAMPLES_NO_CUDA
struct Device {
  int ordinal = 0;
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  std::string name;
};

// cuInit, then makes the device's primary context current, as the CUDA runtime does.
inline Device OpenDevice(long long ordinal) {
  Device d;
  d.ordinal = static_cast<int>(ordinal);
  CHECK(cuInit(0));
  CHECK(cuDeviceGet(&d.dev, d.ordinal));
  char name[256] = {};
  CHECK(cuDeviceGetName(name, static_cast<int>(sizeof name), d.dev));
  d.name = name;
  CHECK(cuDevicePrimaryCtxRetain(&d.ctx, d.dev));
  CHECK(cuCtxSetCurrent(d.ctx));
  return d;
}

inline void CloseDevice(const Device& d) {
  CHECK(cuCtxSetCurrent(nullptr));
  CHECK(cuDevicePrimaryCtxRelease(d.dev));
}

// On simgpu (tests/simgpu) kernels take modeled time but compute nothing, so samples
// check data movement instead of kernel results. The simulated driver says so by
// exporting simgpuCudaDriver, which no real driver has; a device's name proves nothing
// (a simulated GPU may be named anything, a real one "simgpu").
inline bool OnSimulator() { return dlsym(RTLD_DEFAULT, "simgpuCudaDriver") != nullptr; }

// Loads a PTX module; if the JIT refuses it, loads it again to print the JIT's log.
inline CUmodule LoadPtx(const char* ptx) {
  CUmodule module = nullptr;
  const CUresult r = cuModuleLoadData(&module, ptx);
  if (r != CUDA_SUCCESS) {
    char log[8192] = {};
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void* vals[] = {log, reinterpret_cast<void*>(uintptr_t{sizeof log})};
    if (cuModuleLoadDataEx(&module, ptx, 2, opts, vals) == CUDA_SUCCESS) CHECK(cuModuleUnload(module));
    std::fprintf(stderr, "PTX JIT log:\n%s\n", log);
    CHECK(r);
  }
  return module;
}

#endif  // SAMPLES_NO_CUDA

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct LoopResult {
  long long launches = 0;
  double elapsed_s = 0;
};

// Calls launch() back to back until `seconds` of wall time have passed, calling sync()
// every 16 launches (and at the end, so elapsed_s covers all the work).
template <class Launch, class Sync>
LoopResult LaunchLoop(double seconds, Launch launch, Sync sync) {
  LoopResult r;
  const double start = Now();
  do {
    for (int i = 0; i < 16; ++i) launch();
    r.launches += 16;
    sync();
    r.elapsed_s = Now() - start;
  } while (r.elapsed_s < seconds);
  return r;
}

#ifndef SAMPLES_NO_CUDA
template <class Launch>
LoopResult LaunchFor(double seconds, CUstream stream, Launch launch) {
  return LaunchLoop(seconds, launch, [&] { CHECK(cuStreamSynchronize(stream)); });
}
#endif

}  // namespace samples
