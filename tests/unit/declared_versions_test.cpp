// Every (name, version, ABI symbol) that gpushare declares in its CUDA lists must be
// what the toolkit's own headers say: a PFN_<name>_v<version> typedef exists, and
// per-thread variants carry the matching _ptds/_ptsz suffix.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

namespace {

std::string ToolkitTypedefs() {
  std::stringstream all;
  for (const char* h : {"cudaTypedefs.h", "cudaProfilerTypedefs.h"}) {
    std::ifstream in(std::string(CUDA_INCLUDE_DIR) + "/" + h);
    all << in.rdbuf();
  }
  return all.str();
}

// Checks each line of `def` that `entry` matches (groups: name, version, symbol).
int CheckList(const std::string& def, const std::regex& entry) {
  static const std::string headers = ToolkitTypedefs();
  std::ifstream in(def);
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, entry)) continue;
    const std::string symbol = m[3];
    std::string pfn = "PFN_" + m[1].str() + "_v" + m[2].str();
    if (symbol.size() > 5 && (symbol.ends_with("_ptds") || symbol.ends_with("_ptsz")))
      pfn += symbol.substr(symbol.size() - 5);
    EXPECT_NE(headers.find(pfn + ")"), std::string::npos) << def << ": " << line;
    ++checked;
  }
  return checked;
}

TEST(DeclaredVersions, SimgpuProcTableMatchesTheToolkit) {
  EXPECT_GT(CheckList(SIMGPU_PROCS_DEF, std::regex(R"(^SIM_PROC(?:_PT)?\((\w+), (\d+), (\w+))")), 200);
}

TEST(DeclaredVersions, ShimHookListMatchesTheToolkit) {
  EXPECT_GT(CheckList(SHIM_HOOKS_DEF, std::regex(R"(^GS_CUDA_(?:HOOK|HOOK_PT|REAL|DEVICE_HOOK)\((\w+), (\d+), (\w+))")),
            70);
}

}  // namespace
