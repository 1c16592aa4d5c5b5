#!/usr/bin/env bash
# Scheduling figures (issue 5) from sched_bench: the launch hot path at a granted gate,
# the broker's record consumption (pinned to one core with taskset when there is one),
# and grant-to-resume latency (thread and process). Builds nothing; prints markdown
# tables, each figure the median over the repetitions with the range beside it.
# Usage: tests/bench/run_sched_bench.sh [BUILD_DIR] [REPETITIONS]
set -euo pipefail
BUILD=${1:-build}
REPS=${2:-5}
BENCH="$BUILD/bin/sched_bench"
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/machine_line.sh"

args=(--benchmark_repetitions="$REPS" --benchmark_format=json)
"$BENCH" "${args[@]}" --benchmark_filter='^BM_(CrossCoreRoundTrip|LaunchPath|LaunchPart)' > "$out/launch.json"
"${PIN[@]}" "$BENCH" "${args[@]}" --benchmark_filter='^BM_(BrokerConsume|BrokerConsume_Metered|DrainRingOnly)$' > "$out/consume.json"
"$BENCH" "${args[@]}" --benchmark_filter='^BM_BrokerConsume_RemoteFill$' > "$out/remote.json"  # pins itself
"$BENCH" "${args[@]}" --benchmark_filter='^BM_GrantWakeLatency' > "$out/wake.json"

python3 - "$out" "${#PIN[@]}" <<'PY'
import json, statistics, sys
out, pinned = sys.argv[1], sys.argv[2] != "0"
def runs(*names):
    by = {}
    for name in names:
        for b in json.load(open(f"{out}/{name}.json"))["benchmarks"]:
            if b.get("run_type") == "iteration" and "error_occurred" not in b:
                by.setdefault(b["run_name"], []).append(b)
    return by
def fig(values, fmt="{:.1f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
def col(rs, key):
    return [r.get(key, 0) for r in rs]
def share(rs, key):  # of the launches, median over repetitions
    return f"{statistics.median(r.get(key, 0) / r['iterations'] for r in rs):.2%}" if key in rs[0] else ""

r = runs("launch")
rows = [
    ("BM_LaunchPath_Standalone", "not attached (no broker): the `attached()` check only"),
    ("BM_LaunchPath_Held", "**granted, 1 thread** (NameSlot + Pass + Record); tail advanced every 1024, timer paused"),
    ("BM_LaunchPart_NameSlot", "part: `NameSlot`, a function seen before"),
    ("BM_LaunchPart_Pass", "part: `Pass` constructed and destroyed (gate held)"),
    ("BM_LaunchPart_Record", "part: `Record` (ring not full)"),
    ("BM_LaunchPart_CoarseClock", "part of Record: `clock_gettime(CLOCK_MONOTONIC_COARSE)`"),
    ("BM_LaunchPath_Held_LiveConsumer/100/real_time", "granted, 1 thread; a consumer on the other core drains every 100 µs"),
    ("BM_LaunchPath_Held_LiveConsumer/10/real_time", "granted, 1 thread; a consumer on the other core drains every 10 µs"),
    ("BM_LaunchPath_Held_LiveConsumer/0/real_time", "granted, 1 thread; a consumer on the other core drains non-stop"),
    ("BM_LaunchPath_Held_MultiThread/real_time/threads:2", "granted, 2 threads launching on one GPU at once (as each thread sees it)"),
    ("BM_CrossCoreRoundTrip/real_time", "calibration: one cache line core 0 → core 1 → core 0"),
]
print("\n| launch hot path | ns per launch | ring full: dropped | consumer skipped as stalled |")
print("|---|---:|---:|---:|")
for name, what in rows:
    if name in r:
        rs = r[name]
        # Google Benchmark divides a multi-threaded run's wall time by all threads' launches.
        per_launch = [x["real_time"] * x.get("threads", 1) for x in rs]
        print(f"| {what} | {fig(per_launch)} | {share(rs, 'dropped')} | {share(rs, 'broker_skipped')} |")

r = runs("consume", "remote")
rows = [
    ("BM_BrokerConsume", f"`BrokerCore::Poll` on a full ring (4096 records, 8 names, 2 streams) in this core's cache"),
    ("BM_BrokerConsume_Metered", "the same, the meter attached to a database"),
    ("BM_DrainRingOnly", "`DrainRing` alone (empty callback), same ring"),
    ("BM_BrokerConsume_RemoteFill", "`BrokerCore::Poll`, the ring filled through `LaunchGate` by a thread on the other core"),
]
print(f"\n| broker consumption | ns per record | records/s |")
print("|---|---:|---:|")
for name, what in rows:
    if name in r:
        ips = col(r[name], "items_per_second")
        where = " (taskset -c 0)" if pinned and name != "BM_BrokerConsume_RemoteFill" else ""
        print(f"| {what}{where} | {fig([1e9 / x for x in ips], '{:.2f}')} | {fig([x / 1e6 for x in ips])} M |")

r = runs("wake")
print("\n| grant → launch resumes (`SetGate` held → `Pass` returns) | placement | samples | p50 (µs) | p90 (µs) | p99 (µs) | max (µs) |")
print("|---|---|---:|---:|---:|---:|---:|")
for kind, what in (("Thread", "waiting launch in another thread"), ("Process", "waiting launch in another process")):
    for arg, placement in ((0, "free"), (1, "same core"), (2, "two cores")):
        name = f"BM_GrantWakeLatency_{kind}/{arg}/iterations:2000/manual_time"
        if name in r:
            rs = r[name]
            n = sum(int(x["iterations"]) for x in rs)
            print(f"| {what} | {placement} | {n} | {fig(col(rs, 'p50_us'))} | {fig(col(rs, 'p90_us'))} "
                  f"| {fig(col(rs, 'p99_us'))} | {max(col(rs, 'max_us')):.0f} |")
PY
