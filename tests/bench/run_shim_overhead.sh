#!/usr/bin/env bash
# Shim overhead on simgpu: runs shim_overhead_bench without and with libgpushare.so
# (memory cap set, so the cap path is exercised) and prints ns per call and the
# difference. Usage: tests/bench/run_shim_overhead.sh [BUILD_DIR] [REPETITIONS]
set -euo pipefail
BUILD=${1:-build}
REPS=${2:-5}
BENCH="$BUILD/bin/shim_overhead_bench"
export LD_LIBRARY_PATH="$BUILD/simgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SIMGPU_NODE="gpushare-bench-$$"
cfg=$(mktemp)
echo '{"gpus": [{"name": "bench", "memory": 17179869184}], "kernels": {"tiny": {"us": 0.05}}}' > "$cfg"
export SIMGPU_CONFIG="$cfg"
trap 'rm -f "$cfg" /tmp/gs-bench-$$-*.json "/dev/shm/$SIMGPU_NODE"' EXIT
args=(--benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true --benchmark_format=json)
"$BENCH" "${args[@]}" > /tmp/gs-bench-$$-plain.json
LD_PRELOAD="$BUILD/lib/libgpushare.so" GPUSHARE_MEMORY_LIMIT=8GiB "$BENCH" "${args[@]}" > /tmp/gs-bench-$$-shim.json
python3 - /tmp/gs-bench-$$-plain.json /tmp/gs-bench-$$-shim.json <<'PY'
import json, sys
def medians(path):
    out = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("aggregate_name") == "median":
            out[b["run_name"]] = b["real_time"]
    return out
plain, shim = medians(sys.argv[1]), medians(sys.argv[2])
print(f"{'call':<24} {'no shim (ns)':>14} {'shim (ns)':>12} {'added (ns)':>12}")
for name in plain:
    print(f"{name[3:]:<24} {plain[name]:>14.1f} {shim[name]:>12.1f} {shim[name] - plain[name]:>12.1f}")
PY
