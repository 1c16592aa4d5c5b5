// gpushare-run: starts a command under libgpushare.so with GPUSHARE_* settings taken
// from options, so users need not compose LD_PRELOAD and variables by hand. The rules
// are in run_args.cpp; this file finds the shim, sets the environment and execs.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/base/version.h"
#include "run_args.h"

namespace {

// <dir of this executable>/../lib/libgpushare.so: build/bin -> build/lib, and P/bin ->
// P/lib after `cmake --install`. $GPUSHARE_LIBRARY overrides it.
std::string ShimPath() {
  if (const char* lib = std::getenv("GPUSHARE_LIBRARY"); lib != nullptr && *lib != '\0') return lib;
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "libgpushare.so";  // reported as missing below
  std::string dir(exe, static_cast<size_t>(n));
  dir.erase(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/'));
  return dir + "/../lib/libgpushare.so";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpushare::tools;
  const RunArgs args = ParseRunArgs(std::vector<std::string>(argv + 1, argv + argc));
  if (args.help) {
    std::fputs(RunUsage().c_str(), stdout);
    return 0;
  }
  if (args.version) {
    gpushare::PrintVersion("gpushare-run");
    return 0;
  }
  if (!args.error.empty()) {
    std::fprintf(stderr, "gpushare-run: %s\n%s", args.error.c_str(), RunUsage().c_str());
    return 2;
  }

  // An absolute, clean path: the command may change directory, and ld.so ignores a
  // preload entry it cannot open without a word.
  const std::string wanted = ShimPath();
  char resolved[PATH_MAX];
  if (realpath(wanted.c_str(), resolved) == nullptr || access(resolved, R_OK) != 0) {
    std::fprintf(stderr, "gpushare-run: cannot use the shim %s: %s (set GPUSHARE_LIBRARY to its path)\n",
                 wanted.c_str(), std::strerror(errno));
    return 1;
  }

  for (const auto& [name, value] : args.env) setenv(name.c_str(), value.c_str(), 1);
  const char* preload = std::getenv("LD_PRELOAD");
  setenv("LD_PRELOAD", ComposePreload(resolved, preload ? preload : "").c_str(), 1);

  std::vector<char*> command;
  for (const std::string& a : args.command) command.push_back(const_cast<char*>(a.c_str()));
  command.push_back(nullptr);
  execvp(command[0], command.data());
  std::fprintf(stderr, "gpushare-run: cannot run %s: %s\n", command[0], std::strerror(errno));
  return 127;
}
