#!/usr/bin/env bash
# Ceilings (issue 16): how closely clients held to a max_compute get it, on simgpu. For
# each case a broker with that config and saturating sched_worker clients (500 us
# kernels) run RUN seconds; each client's kernels completed in consecutive 5 s windows
# (after 1 s of start-up) over what one worker completes alone without a ceiling is
# its fraction of the GPU; printed as a markdown table: target, mean over the windows,
# and the largest error of any window. Builds nothing.
# Usage: tests/bench/run_ceiling_bench.sh [BUILD_DIR] [RUN_SECONDS]
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
RUN=${2:-21}
WORKER="$BUILD/bin/sched_worker"
BROKER="$BUILD/bin/gpushare-broker"
SHIM="$BUILD/lib/libgpushare.so"
tmp=$(mktemp -d)
node="gs-ceiling-bench-$$"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"; rm -f "/dev/shm/$node"' EXIT
echo '{"gpus": [{"name": "sim0", "memory": 34359738368}], "links": []}' > "$tmp/node.json"
export LD_LIBRARY_PATH="$BUILD/simgpu" SIMGPU_CONFIG="$tmp/node.json" SIMGPU_NODE="$node"

source "$(dirname "${BASH_SOURCE[0]}")/machine_line.sh"

# run NAME CONFIG TENANT... : one broker with CONFIG, one worker per tenant, together.
run() {
  local name=$1 config=$2
  shift 2
  printf '%s' "$config" > "$tmp/$name.toml"
  STATE_DIRECTORY="$tmp" "$BROKER" --config "$tmp/$name.toml" --socket "$tmp/$name.sock" 2> "$tmp/$name.broker.log" &
  local broker=$!
  for _ in $(seq 100); do [ -S "$tmp/$name.sock" ] && break; sleep 0.05; done
  local mono
  mono=$(python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 1000000000)')
  local i=0 pids=()
  for tenant in "$@"; do
    LD_PRELOAD="$SHIM" GPUSHARE_SOCKET="$tmp/$name.sock" GPUSHARE_TENANT="$tenant" \
      "$WORKER" --kind compute --us 500 --seconds "$RUN" --start-at "$mono" > "$tmp/$name.$i.out" 2>&1 < /dev/null &
    pids+=($!)
    i=$((i + 1))
  done
  wait "${pids[@]}"
  kill "$broker"
  wait "$broker" 2> /dev/null || true
}

run solo "" solo
run lone25 $'[tenants.a]\nmax_compute = 0.25\n' a
run lone50 $'[tenants.a]\nmax_compute = 0.5\n' a
run lone90 $'[tenants.a]\nmax_compute = 0.9\n' a
run pair $'[profiles.big]\nmemory = "8GiB"\ncompute = 0.5\nmax_compute = 0.66\n[profiles.small]\nmemory = "8GiB"\ncompute = 0.33\nmax_compute = 0.33\n[tenants.big]\nprofile = "big"\n[tenants.small]\nprofile = "small"\n' big small
run weighted $'[tenants.a]\nweight = 3\nmax_compute = 0.5\n[tenants.b]\nweight = 1\n' a b

python3 - "$tmp" "$RUN" <<'PY'
import re, sys
tmp, run = sys.argv[1], float(sys.argv[2])
def timeline(path):
    pts = [(float(t), float(d)) for t, d in re.findall(r"^t_ms=([0-9.]+) done=([0-9]+)$", open(path).read(), re.M)]
    def at(t):
        if not pts or t <= pts[0][0]: return pts[0][1] if pts else 0
        for (t0, d0), (t1, d1) in zip(pts, pts[1:]):
            if t <= t1: return d0 + (d1 - d0) * (t - t0) / (t1 - t0)
        return pts[-1][1]
    return at
windows = [(1000 + 5000 * i, 6000 + 5000 * i) for i in range(int((run * 1000 - 1500) // 5000))]
solo = timeline(f"{tmp}/solo.0.out")
solo_rate = sum(solo(b) - solo(a) for a, b in windows) / sum(b - a for a, b in windows)
print(f"\nsolo rate: {solo_rate * 1000:.0f} kernels/s (500 us kernels), {len(windows)} windows of 5 s\n")
print("| case | client | target | mean over the windows | largest window error |")
print("|---|---|---:|---:|---:|")
cases = [("lone25", "lone client, max_compute 0.25", [("a", 0.25)]),
         ("lone50", "lone client, max_compute 0.5", [("a", 0.5)]),
         ("lone90", "lone client, max_compute 0.9", [("a", 0.9)]),
         ("pair", "ceilings 0.66 / 0.33 (guarantees 0.5 / 0.33)", [("big", 0.66), ("small", 0.33)]),
         ("weighted", "weights 3:1, A's ceiling 0.5", [("A", 0.5), ("B", 0.5)])]
for name, what, clients in cases:
    for i, (client, target) in enumerate(clients):
        t = timeline(f"{tmp}/{name}.{i}.out")
        fr = [(t(b) - t(a)) / (b - a) / solo_rate for a, b in windows]
        mean = sum(fr) / len(fr)
        worst = max(fr, key=lambda f: abs(f - target))
        print(f"| {what} | {client} | {target:.2f} | {mean:.3f} | {worst - target:+.3f} |")
PY
