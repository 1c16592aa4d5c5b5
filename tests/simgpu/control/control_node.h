// simgpu-internal side of the control interface: the node a process's control calls
// act on, and the node its environment names, for the fronts' checks of armed faults
// before the driver is initialized (cuGetProcAddress runs before cuInit).
#pragma once

#include "node.h"

namespace simgpu {

// The node of SIMGPU_CONFIG / SIMGPU_NODE, attached without a process slot on first
// use; null if it cannot be opened (the front reports the reason when it starts).
Node* EnvironmentNode();

// The node simgpuControlOpen chose, else EnvironmentNode().
Node* ControlNode();

}  // namespace simgpu
