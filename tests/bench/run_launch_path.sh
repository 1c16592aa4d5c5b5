#!/usr/bin/env bash
# What the shim adds per launch and per cuMemAlloc+cuMemFree against a no-op driver
# (issue 21): launch_path_bench plainly, under the shim standalone, and under the shim
# with a broker (one GPU, and two GPUs), in ROUNDS interleaved rounds; prints the
# median of each figure over the rounds and what the shim adds over the plain run
# (launches of several threads at once: the time one launch costs its thread, and its
# ratio to the one-thread figure).
# The brokers see a simgpu node (its NVML) of one or two GPUs; the client's driver is
# build/noopcuda's. Usage: tests/bench/run_launch_path.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROUNDS=${2:-7}
BENCH="$BUILD/bin/launch_path_bench"
SHIM="$BUILD/lib/libgpushare.so"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$tmp"; rm -f /dev/shm/gs-lp-$$-*' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/machine_line.sh"

broker() {  # broker NAME GPUS
  local gpus='{"name": "g0", "memory": 17179869184}'
  [ "$2" = 2 ] && gpus="$gpus, {\"name\": \"g1\", \"memory\": 17179869184}"
  echo "{\"gpus\": [$gpus], \"links\": []}" > "$tmp/$1.json"
  SIMGPU_CONFIG="$tmp/$1.json" SIMGPU_NODE="gs-lp-$$-$1" LD_LIBRARY_PATH="$BUILD/simgpu" STATE_DIRECTORY="$tmp" \
    "$BUILD/bin/gpushare-broker" --config "$tmp/empty.toml" --socket "$tmp/$1.sock" 2> "$tmp/$1.log" &
  for _ in $(seq 100); do [ -S "$tmp/$1.sock" ] && return; sleep 0.05; done
  echo "broker $1 did not start" >&2
  exit 1
}
: > "$tmp/empty.toml"
broker one 1
broker two 2

run() {  # run LABEL ROUND [ENV...]: one bench run, its JSON kept
  local label=$1 round=$2
  shift 2
  env LD_LIBRARY_PATH="$BUILD/noopcuda" "$@" "$BENCH" --benchmark_min_time=0.5 --benchmark_format=json \
    > "$tmp/$label.$round.json" 2> "$tmp/$label.$round.err"
}
for r in $(seq "$ROUNDS"); do
  run native "$r"
  run standalone "$r" LD_PRELOAD="$SHIM" GPUSHARE_MEMORY_LIMIT=8GiB
  run broker1 "$r" LD_PRELOAD="$SHIM" GPUSHARE_SOCKET="$tmp/one.sock"
  run native2 "$r" NOOPCUDA_GPUS=2
  run broker2 "$r" LD_PRELOAD="$SHIM" GPUSHARE_SOCKET="$tmp/two.sock" NOOPCUDA_GPUS=2
done
# Accounting at a flat-out launch rate: the broker's count for the client against the
# driver's (3 s of launches on one thread, one GPU).
LD_LIBRARY_PATH="$BUILD/noopcuda" LD_PRELOAD="$SHIM" GPUSHARE_SOCKET="$tmp/one.sock" GPUSHARE_SMI="$BUILD/bin/gpushare-smi" \
  "$BENCH" --count 3 > "$tmp/count.out" 2> "$tmp/count.err"
python3 - "$tmp/count.out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().split("\n", 1)
fields = dict(f.split("=") for f in lines[0].split())
me = [c for c in json.loads(lines[1])["clients"] if c["pid"] == int(fields["pid"])][0]
n = int(fields["launches"])
print(f"flat out: {n} launches in {fields['seconds']} s ({n / float(fields['seconds']) / 1e6:.1f} M/s); "
      f"the broker counted {me['records']} ({me['kernels']} kernels), {me['records_dropped']} records dropped")
PY
python3 - "$tmp" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def figures(label):
    per = {}
    for r in range(1, rounds + 1):
        for b in json.load(open(f"{tmp}/{label}.{r}.json"))["benchmarks"]:
            # Google Benchmark divides a multi-threaded run's wall time by the launches of
            # all its threads: times the threads, it is what one launch costs its thread.
            per.setdefault(b["name"], []).append(b["real_time"] * b.get("threads", 1))
    return {k: statistics.median(v) for k, v in per.items()}
rows = [("native", "native"), ("standalone", "native"), ("broker1", "native"), ("native2", "native2"), ("broker2", "native2")]
names = {"BM_Launch/real_time": "launch, 1 thread", "BM_Launch/real_time/threads:2": "launch, 2 threads (per thread)",
         "BM_Launch/real_time/threads:4": "launch, 4 threads (per thread)",
         "BM_AllocFree/real_time": "cuMemAlloc+cuMemFree 1 MiB"}
f = {label: figures(label) for label, _ in rows}
print(f"| run | " + " | ".join(f"{n} (ns) | added" for n in names.values()) + " | 2 threads / 1 | 4 threads / 1 |")
print("|---|" + "---:|---:|" * len(names) + "---:|---:|")
for label, base in rows:
    cells = []
    for key in names:
        v = f[label][key]
        cells.append(f"{v:.1f} | {v - f[base][key]:+.1f}" if label != base else f"{v:.1f} | ")
    for n in (2, 4):
        cells.append(f"{f[label][f'BM_Launch/real_time/threads:{n}'] / f[label]['BM_Launch/real_time']:.2f}x")
    print(f"| {label} | " + " | ".join(cells) + " |")
PY
