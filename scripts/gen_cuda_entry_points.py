#!/usr/bin/env python3
"""Generates the CUDA driver entry-point table from the toolkit's headers.

Every (name, version) pair cuGetProcAddress answers is a PFN_<name>_v<version>[_ptsz|_ptds]
typedef in cuda*Typedefs.h; which ABI symbol implements it follows from the order of a
name's versions (the first is <name>, the k-th <name>_v<k>), per-thread variants add
their suffix to the legacy symbol they stand beside. cuda.h is read to check each symbol
against what the driver header itself declares or #defines, so a toolkit that breaks
the rule stops the generator instead of producing a wrong table.

Outputs (checked in under hooks/cuda/generated/; the ctest cuda_entry_points_up_to_date
regenerates them and compares):
  cuda_entry_points.inc          GS_CUDA_ENTRY_POINT(name, version, symbol, per_thread)
  cuda_per_thread_aliases.ld     <per-thread symbol> = <legacy symbol>; for a driver that
                                 runs both alike (simgpu links with it)

Usage: gen_cuda_entry_points.py --include /usr/local/cuda/include --out DIR
Python 3 standard library only.
"""
import argparse
import os
import re
import sys

TYPEDEF_HEADERS = ["cudaTypedefs.h", "cudaProfilerTypedefs.h", "cudaGLTypedefs.h", "cudaEGLTypedefs.h",
                   "cudaVDPAUTypedefs.h"]
# The driver headers that declare those entry points (each typedef header's counterpart).
API_HEADERS = ["cuda.h", "cudaProfiler.h", "cudaGL.h", "cudaEGL.h", "cudaVDPAU.h"]
PFN = re.compile(r"\bPFN_(cu\w+?)_v(\d+)(_ptsz|_ptds)?\)")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def toolkit_version(cuda_h):
    m = re.search(r"^#define CUDA_VERSION (\d+)", cuda_h, re.M)
    if not m:
        sys.exit("gen_cuda_entry_points: no CUDA_VERSION in cuda.h")
    v = int(m.group(1))
    return f"{v // 1000}.{v % 1000 // 10}"


def declared_symbols(headers):
    """ABI symbols the driver headers name: declared functions and the targets of their
    #define name -> symbol lines (with the per-thread wrappers spelled out). Also, per
    API name, the symbol its #define picks (the newest version), where it picks one."""
    names = set(re.findall(r"\bCUDAAPI\s+(cu\w+)\s*\(", headers))
    newest = {}
    for api, target in re.findall(r"^[ \t]*#[ \t]*define[ \t]+(cu\w+)[ \t]+(\S.*?)[ \t]*$", headers, re.M):
        m = re.fullmatch(r"__CUDA_API_(PTDS|PTSZ)\((cu\w+)\)", target)
        symbol, wrapper = (m.group(2), "_" + m.group(1).lower()) if m else (target, None)
        if not re.fullmatch(r"cu\w+", symbol):
            continue
        names.add(symbol)
        if wrapper:
            names.add(symbol + wrapper)
        # A define that renames the API to a later version of itself says which version
        # is newest (cuGraphInstantiate names another function; cuStreamGetCtx only wraps).
        if re.fullmatch(re.escape(api) + r"_v\d+", symbol):
            newest[api] = (symbol, wrapper)
    return names, newest


def entry_points(include_dir):
    found = set()
    for header in TYPEDEF_HEADERS:
        path = os.path.join(include_dir, header)
        if os.path.exists(path):
            found.update((n, int(v), s or "") for n, v, s in PFN.findall(read(path)))
    legacy = {}
    for name, version, suffix in found:
        if not suffix:
            legacy.setdefault(name, []).append(version)
    table = []
    for name, versions in legacy.items():
        for k, version in enumerate(sorted(versions)):
            table.append((name, version, name if k == 0 else f"{name}_v{k + 1}", ""))
    symbol_of = {(n, v): s for n, v, s, _ in table}
    for name, version, suffix in found:
        if not suffix:
            continue
        below = [v for v in legacy.get(name, []) if v <= version]
        if not below:
            sys.exit(f"gen_cuda_entry_points: PFN_{name}_v{version}{suffix} has no legacy version at or below it")
        table.append((name, version, symbol_of[(name, max(below))] + suffix, suffix))
    return sorted(table, key=lambda e: (e[0], e[1], e[3]))


def check(table, headers):
    names, newest = declared_symbols(headers)
    problems = []
    last = {}
    for name, version, symbol, suffix in table:
        if symbol not in names:
            problems.append(f"{name} {version}{suffix}: {symbol} is not declared in the driver headers")
        last[(name, bool(suffix))] = (symbol, suffix)
    # The newest version of each name must be the symbol cuda.h maps the name to.
    for api, (target, wrapper) in newest.items():
        legacy = last.get((api, False))
        if legacy and wrapper is None and legacy[0] != target:
            problems.append(f"{api}: newest version is {legacy[0]} but cuda.h maps it to {target}")
        per_thread = last.get((api, True))
        if wrapper and per_thread and per_thread[0] != target + wrapper:
            problems.append(f"{api}: newest per-thread version is {per_thread[0]}, cuda.h says {target}{wrapper}")
    if problems:
        sys.exit("gen_cuda_entry_points: the toolkit breaks the naming rule:\n  " + "\n  ".join(problems))


def write(out_dir, version, table):
    head = (f"Generated by scripts/gen_cuda_entry_points.py from the CUDA {version} toolkit headers "
            "(cuda*Typedefs.h, cuda.h). Do not edit: rerun the script.")
    lines = [f"// {head}",
             "// Every driver entry point cuGetProcAddress answers, one line per (name, version,",
             "// per-thread or not): GS_CUDA_ENTRY_POINT(name, version, ABI symbol, per_thread).",
             "// Sorted by name, then version."]
    lines += [f"GS_CUDA_ENTRY_POINT({n}, {v}, {s}, {1 if x else 0})" for n, v, s, x in table]
    aliases = [f"/* {head} */",
               "/* Each per-thread-default-stream (_ptsz/_ptds) symbol as an alias of its legacy one, */",
               "/* for a driver whose streams behave alike under both (simgpu). */"]
    aliases += [f"{s} = {s[:-len(x)]};" for n, v, s, x in table if x]
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("cuda_entry_points.inc", lines), ("cuda_per_thread_aliases.ld", aliases)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write("\n".join(text) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--include", required=True, help="the CUDA toolkit's include directory")
    parser.add_argument("--out", required=True, help="directory to write the generated files to")
    args = parser.parse_args()
    cuda_h = read(os.path.join(args.include, "cuda.h"))
    table = entry_points(args.include)
    headers = "".join(read(os.path.join(args.include, h)) for h in API_HEADERS
                      if os.path.exists(os.path.join(args.include, h)))
    check(table, headers)
    write(args.out, toolkit_version(cuda_h), table)


if __name__ == "__main__":
    main()
