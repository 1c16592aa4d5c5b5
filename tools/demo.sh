#!/usr/bin/env bash
# The main job: processes sharing GPUs, shown with the samples. On a machine with an
# NVIDIA GPU it uses the real one; otherwise the simulated node (simgpu). It shows the
# node itself (capacity shared by processes, GPU time sliced between them), a client
# capped by libgpushare.so alone, then a broker with two tenants seen by gpushare-smi.
set -euo pipefail
BUILD=${1:-build}
S="$BUILD/samples"
[ -f "$BUILD/lib/libgpushare.so" ] || { echo "demo: $BUILD/lib/libgpushare.so is missing; build first" >&2; exit 1; }
for s in alloc_probe vector_add compute_loop memory_loop; do
  [ -x "$S/$s" ] || { echo "demo: $S/$s is missing; build first (see README.md)" >&2; exit 1; }
done

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "demo: running on the real GPUs of this machine"
  PROBE_LIMIT=(--limit 4GiB)
else
  echo "demo: no GPU found; running on the simulated node (two 16 GiB GPUs, build/simgpu)"
  export LD_LIBRARY_PATH="$BUILD/simgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export SIMGPU_NODE="gpushare-demo-$$"
  trap 'rm -f "/dev/shm/$SIMGPU_NODE"' EXIT
  PROBE_LIMIT=()
fi

rate() { sed -n 's/.*launches_per_s=\([0-9.]*\).*/\1/p' "$1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${SIMGPU_NODE:-}" ] && rm -f "/dev/shm/$SIMGPU_NODE"' EXIT

echo; echo "== 1. allocate until out of memory: what one process can hold on GPU 0"
"$S/alloc_probe" --device 0 "${PROBE_LIMIT[@]}"

echo; echo "== 2. vector add (checks results on a real GPU, data round trips on simgpu)"
"$S/vector_add"

echo; echo "== 3. one compute-bound process alone on GPU 0 for 2 s"
"$S/compute_loop" --seconds 2 | tee "$tmp/alone"

echo; echo "== 4. two compute-bound processes sharing GPU 0 for 2 s (time-sliced)"
"$S/compute_loop" --seconds 2 > "$tmp/a" & pa=$!
"$S/compute_loop" --seconds 2 > "$tmp/b" & pb=$!
wait $pa $pb
cat "$tmp/a" "$tmp/b"
python3 - "$(rate "$tmp/alone")" "$(rate "$tmp/a")" "$(rate "$tmp/b")" <<'PY'
import sys
alone, a, b = map(float, sys.argv[1:])
print(f"   shares of GPU 0: {a / alone:.0%} and {b / alone:.0%} of what one process gets alone")
PY

echo; echo "== 5. a memory-bound process on GPU 1 at the same time as a compute-bound one on GPU 0"
"$S/compute_loop" --device 0 --seconds 2 > "$tmp/c" & pc=$!
"$S/memory_loop" --device 1 --seconds 2 > "$tmp/m" & pm=$!
wait $pc $pm
cat "$tmp/c" "$tmp/m"
echo; echo "== 6. the same probe under libgpushare.so: a 4 GiB cap on virtual GPU 0, which is physical GPU 1"
LD_PRELOAD="$BUILD/lib/libgpushare.so" GPUSHARE_MEMORY_LIMIT=4GiB GPUSHARE_VISIBLE_DEVICES=1 \
  "$S/alloc_probe" --device 0 "${PROBE_LIMIT[@]}" 2> "$tmp/shim.log"
echo "   the shim's log, first of $(wc -l < "$tmp/shim.log") refusals:"
head -n 1 "$tmp/shim.log" | sed 's/^/   /'

echo; echo "== 7. a broker and two tenants: caps held across processes, shown by gpushare-smi"
B="$BUILD/bin"
cat > "$tmp/broker.toml" <<'TOML'
[tenants.team-a]
weight = 2
memory = "6GiB"     # per GPU, across all of team-a's processes
gpus = [0]          # team-a may use physical GPU 0 only

[tenants.guests]
max_memory = "2GiB"
TOML
export GPUSHARE_SOCKET="$tmp/broker.sock"
"$B/gpushare-broker" --config "$tmp/broker.toml" --socket "$GPUSHARE_SOCKET" 2> "$tmp/broker.log" & broker=$!
for _ in $(seq 100); do [ -S "$GPUSHARE_SOCKET" ] && break; sleep 0.05; done
# Two team-a processes on GPU 0 share one 6 GiB cap; a guest gets at most 2 GiB.
"$B/gpushare-run" --tenant team-a -- "$S/alloc_probe" --limit 4GiB --hold 3 > "$tmp/a1" 2>&1 & a1=$!
sleep 0.5
"$B/gpushare-run" --tenant team-a -- "$S/alloc_probe" --limit 4GiB --hold 3 > "$tmp/a2" 2>&1 & a2=$!
"$B/gpushare-run" --tenant guests --memory 8GiB -- "$S/alloc_probe" --hold 3 > "$tmp/g1" 2>&1 & g1=$!
sleep 1.5
"$B/gpushare-smi"
wait $a1 $a2 $g1 || true
for f in a1 a2 g1; do echo "   $f: $(grep -E '^allocated_bytes=' "$tmp/$f")"; done
echo "   (team-a's two processes add up to its 6 GiB cap; the guest asked 8 GiB and was bounded to 2 GiB)"
kill $broker; wait $broker 2>/dev/null || true
unset GPUSHARE_SOCKET

echo; echo "demo: done"
