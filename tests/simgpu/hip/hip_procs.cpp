// Takes the address of every C entry point hip_procs.def lists, so that a listed name
// without a definition fails the link (--no-undefined) instead of silently going
// missing from the exports. No HIP header here: it overloads some names with templates.
extern "C" {
#define SIM_HIP(name) void name();
#define SIM_HIP_CXX(name)
#include "hip_procs.def"
#undef SIM_HIP
#undef SIM_HIP_CXX

__attribute__((used)) const void* const simgpu_hip_modeled[] = {
#define SIM_HIP(name) reinterpret_cast<const void*>(&name),
#define SIM_HIP_CXX(name)
#include "hip_procs.def"
#undef SIM_HIP
#undef SIM_HIP_CXX
};
}
