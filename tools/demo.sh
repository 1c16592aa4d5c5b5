#!/usr/bin/env bash
# The main job: two tenants sharing GPUs through the gpushare broker. On a machine
# with an NVIDIA GPU it uses the real ones; otherwise the simulated node (simgpu).
#   1. the sharing demo: a broker and two tenants' clients for a few seconds, shown by
#      gpushare-smi (placement, classes, caps, measured shares), then the shares the
#      clients achieved, counted by the clients themselves;
#   1b. a 2-rank NCCL job placed by the broker on distinct GPUs, and why (on a one-GPU
#      node: the broker's answer, that the job needs two GPUs);
#   2. the node and the shim alone (what the broker builds on): capacity shared by
#      processes, GPU time sliced between them, a client capped by libgpushare.so.
# It adapts to the node it finds (one GPU, two or more, or simgpu with any
# SIMGPU_CONFIG) and exits 0 on each; a step that cannot run there says why.
set -euo pipefail
BUILD=${1:-build}
S="$BUILD/samples"
B="$BUILD/bin"
[ -f "$BUILD/lib/libgpushare.so" ] || { echo "demo: $BUILD/lib/libgpushare.so is missing; build first" >&2; exit 1; }
for s in alloc_probe vector_add compute_loop memory_loop; do
  [ -x "$S/$s" ] || { echo "demo: $S/$s is missing; build first (see README.md)" >&2; exit 1; }
done
for b in gpushare-broker gpushare-smi gpushare-run; do
  [ -x "$B/$b" ] || { echo "demo: $B/$b is missing; build first (see README.md)" >&2; exit 1; }
done

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "demo: running on the real GPUs of this machine"
  PROBE_LIMIT=(--limit 4GiB)
else
  echo "demo: no GPU found; running on the simulated node (build/simgpu; ${SIMGPU_CONFIG:-two 16 GiB GPUs})"
  export LD_LIBRARY_PATH="$BUILD/simgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export SIMGPU_NODE="gpushare-demo-$$"
  PROBE_LIMIT=()
fi

rate() { sed -n 's/.*launches_per_s=\([0-9.]*\).*/\1/p' "$1"; }
launches() { sed -n 's/.*launches=\([0-9]*\).*/\1/p' "$1"; }
tmp=$(mktemp -d)
broker=""
cleanup() {
  [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
  rm -rf "$tmp"
  [ -n "${SIMGPU_NODE:-}" ] && rm -f "/dev/shm/$SIMGPU_NODE"
  return 0
}
trap cleanup EXIT

echo; echo "== 1. two tenants share the node through the broker for 5 s"
cat > "$tmp/broker.toml" <<'TOML'
[tenants.team-a]      # a training team: twice the weight, 6 GiB per GPU across its processes
weight = 2
memory = "6GiB"
gpus = [0]

[tenants.team-b]      # everyone else: weight 1, at most 4 GiB per GPU
weight = 1
max_memory = "4GiB"

[billing]             # what the meter's usage costs (docs/metering.md)
base_rate = 2.0       # USD per GPU-hour
TOML
sed 's/^/   /' "$tmp/broker.toml"
export GPUSHARE_SOCKET="$tmp/broker.sock"
export STATE_DIRECTORY="$tmp"  # the broker's meter writes $tmp/metering.db
"$B/gpushare-broker" --config "$tmp/broker.toml" --socket "$GPUSHARE_SOCKET" 2> "$tmp/broker.log" & broker=$!
for _ in $(seq 100); do [ -S "$GPUSHARE_SOCKET" ] && break; sleep 0.05; done
# How many GPUs the broker found: everything below places by it.
gpus=$("$B/gpushare-smi" --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["gpus"]))')
[ "$gpus" -ge 1 ] || { echo "demo: the broker found no GPU" >&2; exit 1; }
# The memory-bound client and step 2e use a second GPU where there is one.
other=$((gpus >= 2 ? 1 : 0))
echo "   the broker found $gpus GPU(s)"
# team-a: a compute-bound job and a process holding memory, both on GPU 0.
"$B/gpushare-run" --tenant team-a -- "$S/compute_loop" --seconds 5 > "$tmp/a-compute" 2>&1 & p1=$!
"$B/gpushare-run" --tenant team-a -- "$S/alloc_probe" --limit 4GiB --hold 4 > "$tmp/a-probe" 2>&1 & p2=$!
# team-b: a compute-bound job on GPU 0 (sharing it with team-a), and a memory-bound
# one alone on GPU 1 (on a one-GPU node, beside the others on GPU 0: WFQ still splits
# the two compute loops 2:1); it asks for an 8 GiB cap and gets its tenant's bound.
"$B/gpushare-run" --tenant team-b --devices 0 -- "$S/compute_loop" --seconds 5 > "$tmp/b-compute" 2>&1 & p3=$!
"$B/gpushare-run" --tenant team-b --devices "$other" --memory 8GiB -- "$S/memory_loop" --seconds 5 > "$tmp/b-memory" 2>&1 &
p4=$!
sleep 3.5
"$B/gpushare-smi" | sed 's/^/   /'
status=0
wait $p1 $p2 $p3 $p4 || status=$?
echo
echo "   what the clients achieved (counted by themselves):"
for f in a-compute b-compute b-memory; do echo "   $f: $(tail -n 1 "$tmp/$f")"; done
echo "   a-probe: $(grep -E '^allocated_bytes=' "$tmp/a-probe") (team-a's cap is 6 GiB per GPU)"
python3 - "$(launches "$tmp/a-compute")" "$(launches "$tmp/b-compute")" <<'PY'
import sys
a, b = map(float, sys.argv[1:])
print(f"   GPU 0 time: team-a {a / (a + b):.1%}, team-b {b / (a + b):.1%} (weights 2:1, both compute-bound: 66.7/33.3)")
PY
[ "$status" = 0 ] || { echo "demo: a client of step 1 failed (exit $status)" >&2; exit 1; }

if [ -x "$S/nccl_allreduce" ]; then
  echo; echo "== 1b. a 2-rank NCCL job, started as torchrun starts one: the broker plans distinct GPUs"
  # On one GPU the broker refuses both ranks at start with its reason (NCCL refuses two
  # ranks on one GPU): shown below, and the job is not run.
  for r in 0 1; do
    GPUSHARE_JOB=demo-job LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 "$B/gpushare-run" --tenant team-b -- \
      "$S/nccl_allreduce" --rank $r --nranks 2 --id-file "$tmp/nccl.id" --count 65536 --rounds 2000 \
      > "$tmp/rank$r" 2>&1 &
    eval "rank${r}_pid=\$!"
  done
  if [ "$gpus" -ge 2 ]; then
    sleep 1
    "$B/gpushare-smi" --explain "$rank1_pid" | sed 's/^/   /' || true
  fi
  ranks_ok=0
  wait "$rank0_pid" && wait "$rank1_pid" && ranks_ok=1
  grep -h "nccl_allreduce: rank\|refused\|communicator" "$tmp/rank0" "$tmp/rank1" | sed 's/^/   /'
  if [ "$gpus" -lt 2 ]; then
    echo "   the 2-rank job needs two GPUs; this node has $gpus: the broker refused it at start, as shown"
  elif [ "$ranks_ok" != 1 ]; then
    echo "demo: the 2-rank NCCL job failed on a node with $gpus GPUs" >&2; exit 1
  fi
fi

echo; echo "== 1c. what the broker metered: usage by tenant, and the month's bill by formula and by GPU time"
"$B/gpushare-smi" usage --by tenant | sed 's/^/   /'
"$B/gpushare-smi" bill --period "$(date -u +%Y-%m)" | sed 's/^/   /'

kill "$broker"; wait "$broker" 2>/dev/null || true
broker=""
unset GPUSHARE_SOCKET STATE_DIRECTORY

echo; echo "== 2. the node and the shim alone (no broker)"
echo; echo "== 2a. allocate until out of memory: what one process can hold on GPU 0"
"$S/alloc_probe" --device 0 "${PROBE_LIMIT[@]}"

echo; echo "== 2b. vector add (checks results on a real GPU, data round trips on simgpu)"
"$S/vector_add"

echo; echo "== 2c. one compute-bound process alone on GPU 0 for 2 s"
"$S/compute_loop" --seconds 2 | tee "$tmp/alone"

echo; echo "== 2d. two compute-bound processes sharing GPU 0 for 2 s (time-sliced)"
"$S/compute_loop" --seconds 2 > "$tmp/a" & pa=$!
"$S/compute_loop" --seconds 2 > "$tmp/b" & pb=$!
wait $pa $pb
cat "$tmp/a" "$tmp/b"
python3 - "$(rate "$tmp/alone")" "$(rate "$tmp/a")" "$(rate "$tmp/b")" <<'PY'
import sys
alone, a, b = map(float, sys.argv[1:])
print(f"   shares of GPU 0: {a / alone:.0%} and {b / alone:.0%} of what one process gets alone")
PY

echo; echo "== 2e. a memory-bound process on GPU $other at the same time as a compute-bound one on GPU 0"
"$S/compute_loop" --device 0 --seconds 2 > "$tmp/c" & pc=$!
"$S/memory_loop" --device "$other" --seconds 2 > "$tmp/m" & pm=$!
wait $pc $pm
cat "$tmp/c" "$tmp/m"
echo; echo "== 2f. the same probe under libgpushare.so: a 4 GiB cap on virtual GPU 0, which is physical GPU $other"
LD_PRELOAD="$BUILD/lib/libgpushare.so" GPUSHARE_MEMORY_LIMIT=4GiB GPUSHARE_VISIBLE_DEVICES="$other" \
  "$S/alloc_probe" --device 0 "${PROBE_LIMIT[@]}" 2> "$tmp/shim.log"
echo "   the shim's log, first of $(wc -l < "$tmp/shim.log") refusals:"
head -n 1 "$tmp/shim.log" | sed 's/^/   /'

echo; echo "demo: done"
