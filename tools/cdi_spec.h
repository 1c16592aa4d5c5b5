// The CDI spec (Container Device Interface) that hands a container its vGPU: which
// devices exist (a tenant's socket, its profiles' instances per GPU, fixed caps) and
// what each puts in the container (the shim, the tenant's socket read-only, the
// preload, GPUSHARE_* variables). Pure: gpushare-cdi reads the config and writes the
// result (docs/containers.md).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "broker/policy/config.h"

namespace gpushare::tools {

// Where things are inside a container (fixed, so that images need not know).
inline constexpr const char* kContainerLibDir = "/usr/lib/gpushare";
inline constexpr const char* kContainerSocket = "/run/gpushare/broker.sock";

struct CdiOptions {
  std::string library;               // host path of libgpushare.so
  std::string socket_dir;            // host folder of the main socket (tenants/ is in it)
  int gpu_count = 0;                 // GPUs of the node: profile devices are per GPU
  std::vector<std::string> tenants;  // those to describe; empty: every tenant with `socket = true`
  std::vector<std::string> caps;     // e.g. "4GiB": a device per tenant and cap
  // How the shim is preloaded: "file" mounts `preload_file` (holding the shim's path)
  // on /etc/ld.so.preload, which images that reset the environment still obey; "env"
  // sets LD_PRELOAD only.
  std::string preload = "file";
  std::string preload_file;
  std::string driver_dir;                // host folder of driver libraries to mount (simgpu's); "" : none
  std::vector<std::string> driver_libs;  // their file names in driver_dir
};

// The spec as a JSON tree (cdiVersion 0.5.0, kind gpushare.io/vgpu); nullopt with the
// reason in `error` if a tenant asked for has no socket or names are not CDI's.
std::optional<nlohmann::json> BuildCdiSpec(const broker::BrokerConfig& config, const CdiOptions& options,
                                           std::string* error);

// The tree as block-style YAML, every string double-quoted (also what JSON quotes).
std::string ToYaml(const nlohmann::json& tree);

}  // namespace gpushare::tools
