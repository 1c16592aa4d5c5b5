// gpushare-run's command line as data: which GPUSHARE_* variables to set and which
// command to run. Pure (no environment, no files), so every rule has a unit test;
// gpushare_run.cpp does the I/O and the exec.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace gpushare::tools {

struct RunArgs {
  std::map<std::string, std::string> env;  // GPUSHARE_* variable -> value, only those given
  std::vector<std::string> command;        // what follows "--"; never empty when ok
  bool help = false;                       // --help: print the usage, run nothing
  bool version = false;                    // --version: print the version, run nothing
  std::string error;                       // "" when ok, else which option and why
};

// `args` is argv without the program name.
RunArgs ParseRunArgs(const std::vector<std::string>& args);

// LD_PRELOAD with `library` first and the entries of `existing` (separated by blanks
// or colons, as ld.so reads them) after it, minus any earlier copy of the shim: the
// same path, or another file named libgpushare.so (two shims would hook each other).
std::string ComposePreload(const std::string& library, const std::string& existing);

// The usage text, for --help and after an error.
std::string RunUsage();

}  // namespace gpushare::tools
