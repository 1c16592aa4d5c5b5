#!/usr/bin/env python3
"""Generates the export side of simgpu's HIP front from the installed HIP runtime.

simgpu's libamdhip64.so.5 must load wherever the real one does: every name that
tests/simgpu/hip/hip_procs.def models is exported under the symbol version the real
library gives it (a program linked against Debian's libamdhip64 asks for
hipMalloc@hip_4.2), and every other C entry point of the real library is a stub that
returns hipErrorNotSupported (801). The lists come from the real library's dynamic
symbols (nm), so none is kept by hand. Run by tests/simgpu/hip/CMakeLists.txt at
configure time.

Outputs (in --out; a file is rewritten only when its text changes):
  hip.map          the version script: one node per symbol version of the real library
  hip_stubs.c      a weak stub for each C entry point hip_procs.def does not model
  hip_errors.inc   SIM_ERROR(name) for every hipError_t of the header, for hipGetErrorName

Usage: gen_simgpu_hip_exports.py --library libamdhip64.so.5 --procs hip_procs.def
                                 --header hip/hip_runtime_api.h --out DIR
Python 3 standard library and binutils' nm.
"""
import argparse
import os
import re
import subprocess
import sys

MODELED = re.compile(r"^SIM_HIP(?:_CXX)?\((\w+)\)", re.M)
EXPORT = re.compile(r"[TW] (\w+)@@(hip_[0-9.]+)")
MANGLED = re.compile(r"^_Z(\d+)(hip\w+)")  # a C++ entry point: _Z<length><name><parameters>
ERROR_ENUM = re.compile(r"^ *(hip(?:Success|Error[A-Za-z0-9]+)) *=", re.M)
# simgpu's own exports, not HIP symbols: the marker (hip/hip_api.cpp) and the control
# interface (control/simgpu_control.h). They go in the first version node.
OWN_EXPORTS = ["simgpuHipRuntime", "simgpuControl*"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_if_changed(path, text):
    if os.path.exists(path) and read(path) == text:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def exports(library):
    """(symbol, version node) of every function the library defines, in nm's order."""
    nm = subprocess.run(["nm", "-D", "--defined-only", "--with-symbol-versions", library],
                        capture_output=True, text=True)
    if nm.returncode != 0:
        sys.exit(f"gen_simgpu_hip_exports: cannot list the exports of {library} with nm: {nm.stderr.strip()}")
    return EXPORT.findall(nm.stdout)


def modeled_name(symbol, modeled):
    """The hip_procs.def name `symbol` implements, or None (C++ names by their demangled base)."""
    if symbol in modeled:
        return symbol
    m = MANGLED.match(symbol)
    if m:
        name = m.group(2)[: int(m.group(1))]
        if name in modeled:
            return name
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="the real libamdhip64")
    parser.add_argument("--procs", required=True, help="tests/simgpu/hip/hip_procs.def")
    parser.add_argument("--header", required=True, help="hip/hip_runtime_api.h")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    modeled = set(MODELED.findall(read(args.procs)))
    found = set()
    nodes = {}  # version node -> its symbols, in nm's order
    stubs = []
    for symbol, node in exports(args.library):
        name = modeled_name(symbol, modeled)
        if name is not None:
            found.add(name)
        elif not re.match(r"_*hip", symbol):
            continue  # C++ helpers, debugger hooks, half-float helpers: not the C API
        else:
            stubs.append(f"__attribute__((weak)) int {symbol}(void) {{ return 801; }}\n")
        nodes.setdefault(node, []).append(symbol)
    missing = sorted(modeled - found)
    if missing:
        sys.exit(f"gen_simgpu_hip_exports: hip_procs.def names {', '.join(missing)}, "
                 f"which {args.library} does not export")

    version_script = []
    for i, node in enumerate(sorted(nodes)):
        names = (OWN_EXPORTS if i == 0 else []) + nodes[node]
        lines = "".join(f"    {n};\n" for n in names)
        local = "  local: *;\n" if i == 0 else ""
        version_script.append(f"{node} {{\n  global:\n{lines}{local}}};\n")

    errors = "".join(f"SIM_ERROR({name})\n" for name in ERROR_ENUM.findall(read(args.header)))

    os.makedirs(args.out, exist_ok=True)
    write_if_changed(os.path.join(args.out, "hip.map"), "".join(version_script))
    write_if_changed(os.path.join(args.out, "hip_stubs.c"), "".join(stubs))
    write_if_changed(os.path.join(args.out, "hip_errors.inc"), errors)


if __name__ == "__main__":
    main()
