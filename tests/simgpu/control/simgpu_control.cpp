// The control interface of simgpu_control.h over the node's shared segment: inspection
// reads it as NVML does (no process slot), fault injection writes the segment's fault
// table, which every front consults (node.h: Node::TakeFault).
#include "simgpu_control.h"

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "control_node.h"

namespace simgpu {
namespace {

std::mutex g_mu;
std::unique_ptr<Node> g_opened;  // simgpuControlOpen's node; guarded by g_mu

// Null when the node cannot be opened. Catches everything: cuGetProcAddress calls this,
// and no exception may leave a driver entry point (a real driver never throws).
std::unique_ptr<Node> AttachTo(const char* config_path, const char* node_name) {
  try {
    std::string error;
    auto config = LoadConfig(config_path, &error);
    if (!config) return nullptr;
    return Node::Attach(*config, node_name ? node_name : "", /*claim_slot=*/false, &error);
  } catch (...) {
    return nullptr;
  }
}

bool ValidGpu(Node* n, int gpu) { return gpu >= 0 && gpu < n->gpu_count(); }

}  // namespace

Node* EnvironmentNode() {
  static std::once_flag once;
  static std::unique_ptr<Node> node;
  std::call_once(once, [] { node = AttachTo(std::getenv("SIMGPU_CONFIG"), std::getenv("SIMGPU_NODE")); });
  return node.get();
}

Node* ControlNode() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_opened) return g_opened.get();
  }
  return EnvironmentNode();
}

}  // namespace simgpu

using simgpu::ControlNode;
using simgpu::FaultKind;

extern "C" {

int simgpuControlOpen(const char* config_path, const char* node_name) {
  auto node = simgpu::AttachTo(config_path, node_name);
  if (!node) return SIMGPU_CONTROL_ERROR_NO_NODE;
  std::lock_guard<std::mutex> lock(simgpu::g_mu);
  simgpu::g_opened = std::move(node);  // tests open one node at a time: the previous one is done with
  return 0;
}

int simgpuControlGpuCount(void) {
  simgpu::Node* n = ControlNode();
  return n ? n->gpu_count() : SIMGPU_CONTROL_ERROR_NO_NODE;
}

long long simgpuControlUsedBytes(int gpu) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  return simgpu::ValidGpu(n, gpu) ? static_cast<long long>(n->Used(gpu)) : SIMGPU_CONTROL_ERROR_INVALID;
}

long long simgpuControlCapacityBytes(int gpu) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  return simgpu::ValidGpu(n, gpu) ? static_cast<long long>(n->capacity(gpu)) : SIMGPU_CONTROL_ERROR_INVALID;
}

int simgpuControlProcesses(int gpu, simgpuControlProcess* out, int max) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  if (!simgpu::ValidGpu(n, gpu) || max < 0 || (max > 0 && out == nullptr)) return SIMGPU_CONTROL_ERROR_INVALID;
  const auto attached = n->Attached(gpu);
  for (int i = 0; i < max && i < static_cast<int>(attached.size()); ++i)
    out[i] = {attached[i].pid, attached[i].used_bytes, attached[i].sm_busy_ns, attached[i].mem_busy_ns};
  return static_cast<int>(attached.size());
}

int simgpuControlFailAllocations(int gpu, int count, int pid) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  if ((gpu != SIMGPU_CONTROL_ANY_GPU && !simgpu::ValidGpu(n, gpu)) || count == 0 || count < -1 || pid < 0)
    return SIMGPU_CONTROL_ERROR_INVALID;
  return n->ArmFault(FaultKind::kAllocation, "", gpu, 0, count, pid) ? 0 : SIMGPU_CONTROL_ERROR_TABLE_FULL;
}

int simgpuControlFailCall(const char* name, int error, int count, int pid) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  if (name == nullptr || *name == '\0' || std::string(name).size() >= sizeof(simgpu::Fault::name) || error == 0 ||
      count == 0 || count < -1 || pid < 0)
    return SIMGPU_CONTROL_ERROR_INVALID;
  return n->ArmFault(FaultKind::kCall, name, -1, error, count, pid) ? 0 : SIMGPU_CONTROL_ERROR_TABLE_FULL;
}

int simgpuControlHideProc(const char* name, int pid) {
  simgpu::Node* n = ControlNode();
  if (n == nullptr) return SIMGPU_CONTROL_ERROR_NO_NODE;
  if (name == nullptr || *name == '\0' || std::string(name).size() >= sizeof(simgpu::Fault::name) || pid < 0)
    return SIMGPU_CONTROL_ERROR_INVALID;
  return n->ArmFault(FaultKind::kLookup, name, -1, 0, SIMGPU_CONTROL_UNTIL_CLEARED, pid)
             ? 0
             : SIMGPU_CONTROL_ERROR_TABLE_FULL;
}

int simgpuControlClearFaults(void) {
  simgpu::Node* n = ControlNode();
  return n ? n->ClearFaults() : SIMGPU_CONTROL_ERROR_NO_NODE;
}

long long simgpuControlFaultHits(void) {
  simgpu::Node* n = ControlNode();
  return n ? static_cast<long long>(n->FaultHits()) : SIMGPU_CONTROL_ERROR_NO_NODE;
}

}  // extern "C"
