#!/usr/bin/env bash
# The real-GPU suite: on a machine with an NVIDIA GPU, runs every check of
# tests/gpu/README.md with and without libgpushare.so, prints a pass/fail table and
# writes OUTDIR/results.json and OUTDIR/logs/. Without a GPU it says so and exits 0.
#   tests/gpu/run.sh [OUTDIR]          (GPUSHARE_BUILD=DIR: a carried build, default ./build)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/gpu-results}" && cd "${1:-$ROOT/gpu-results}" && pwd)
BUILD=${GPUSHARE_BUILD:-$ROOT/build}
LOGS="$OUT/logs"
mkdir -p "$LOGS"
: > "$OUT/results.tsv"
GIB=$((1 << 30))
CAP=$((4 * GIB))

summary() {  # results.tsv + environment -> results.json, and the table
  python3 - "$OUT" "$@" <<'PY'
import json, os, subprocess, sys, datetime
out = sys.argv[1]
def cmd(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""
env = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
       "gpu": cmd("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"),
       "nvcc": cmd("nvcc", "--version").splitlines()[-1:] }
for mod in ("torch", "cupy", "jax"):
    env[mod] = cmd("python3", "-c", f"import {mod}; print({mod}.__version__)") or "not installed"
results = []
for line in open(os.path.join(out, "results.tsv")):
    name, status, detail = line.rstrip("\n").split("\t", 2)
    results.append({"check": name, "status": status, "detail": detail})
doc = {"environment": env, "results": results}
if len(sys.argv) > 2:
    doc["skipped"] = True
    doc["reason"] = sys.argv[2]
json.dump(doc, open(os.path.join(out, "results.json"), "w"), indent=2)
if results:
    width = max(len(r["check"]) for r in results)
    print(f"{'check':<{width}}  status  detail")
    for r in results:
        print(f"{r['check']:<{width}}  {r['status']:<6}  {r['detail']}")
    counts = {s: sum(r["status"] == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
}

if ! command -v nvidia-smi > /dev/null 2>&1 || ! nvidia-smi -L > /dev/null 2>&1; then
  reason="no NVIDIA GPU here (nvidia-smi missing or lists no GPU)"
  echo "tests/gpu: SKIP: $reason"
  summary "$reason"
  exit 0
fi

if [ ! -f "$BUILD/lib/libgpushare.so" ]; then
  echo "tests/gpu: building gpushare in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGPUSHARE_BUILD_TESTS=OFF > "$LOGS/build.log" 2>&1 &&
    cmake --build "$BUILD" -j > "$LOGS/build.log" 2>&1 || { echo "build failed: $LOGS/build.log"; exit 1; }
fi
SHIM="$BUILD/lib/libgpushare.so"
S="$BUILD/samples"
# Libraries carried next to a build made elsewhere (e.g. libunwind.so.8).
[ -d "$BUILD/deps" ] && export LD_LIBRARY_PATH="$BUILD/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$OUT/results.tsv"; }
# run NAME TIMEOUT_S CMD...: runs with output in logs/NAME.log; sets $LOG and $RC.
run() {
  local name=$1 t=$2
  shift 2
  LOG="$LOGS/$name.log"
  timeout "$t" "$@" > "$LOG" 2>&1
  RC=$?
}
shimmed() { env LD_PRELOAD="$SHIM" "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$LOG" | tail -n 1; }
has_python() { python3 -c "import $1" > /dev/null 2>&1; }

# --- samples, driver API and runtime API (static cudart) ---
for mode in native shim; do
  pre=(); [ $mode = shim ] && pre=(env LD_PRELOAD="$SHIM")
  run "vector_add_$mode" 120 "${pre[@]}" "$S/vector_add"
  if grep -q "vector_add: PASS" "$LOG"; then record "driver vector_add ($mode)" PASS "results checked"; else record "driver vector_add ($mode)" FAIL "rc=$RC, see logs/vector_add_$mode.log"; fi
  if [ -x "$S/runtime_vector_add" ]; then
    run "runtime_vector_add_$mode" 120 "${pre[@]}" "$S/runtime_vector_add"
    if grep -q "runtime_vector_add: PASS" "$LOG"; then record "runtime vector_add, static cudart ($mode)" PASS "total=$(field total)"; else record "runtime vector_add, static cudart ($mode)" FAIL "rc=$RC"; fi
  else
    record "runtime vector_add, static cudart ($mode)" SKIP "not built (no nvcc at build time)"
  fi
done

# --- NCCL: the sample on every GPU of this machine (one rank each), natively and under
# the shim (its NCCL hooks in the path); the 2-rank job under a broker needs 2 GPUs ---
if [ -x "$S/nccl_allreduce" ]; then
  for mode in native shim; do
    pre=(); [ $mode = shim ] && pre=(env LD_PRELOAD="$SHIM" GPUSHARE_LOG=info)
    run "nccl_allreduce_$mode" 300 "${pre[@]}" "$S/nccl_allreduce" --rounds 20
    ranks=$(grep -c "sum ok" "$LOG")
    if [ "$RC" = 0 ] && [ "$ranks" -ge 1 ]; then record "NCCL all-reduce, one process ($mode)" PASS "$ranks rank(s), sums checked"
    else record "NCCL all-reduce, one process ($mode)" FAIL "rc=$RC, see logs/nccl_allreduce_$mode.log"; fi
  done
  if [ "$(nvidia-smi -L | grep -c '^GPU ')" -ge 2 ]; then
    sock="$OUT/broker.sock"; : > "$OUT/broker.toml"
    "$BUILD/bin/gpushare-broker" --config "$OUT/broker.toml" --socket "$sock" > "$LOGS/nccl_broker.log" 2>&1 & bpid=$!
    sleep 1; rm -f "$OUT/nccl.id"; rank_pids=()
    for r in 0 1; do
      env GPUSHARE_SOCKET="$sock" GPUSHARE_JOB=gpu-suite LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 LD_PRELOAD="$SHIM" \
        timeout 300 "$S/nccl_allreduce" --rank $r --nranks 2 --id-file "$OUT/nccl.id" > "$LOGS/nccl_rank$r.log" 2>&1 &
      rank_pids+=($!)
    done
    wait "${rank_pids[@]}"; kill $bpid 2>/dev/null; wait $bpid 2>/dev/null
    if grep -q "sum ok" "$LOGS/nccl_rank0.log" && grep -q "sum ok" "$LOGS/nccl_rank1.log"; then
      record "NCCL 2-rank job placed by the broker" PASS "$(grep -ho 'PCI [0-9a-fA-F:.]*' "$LOGS"/nccl_rank*.log | tr '\n' ' ')"
    else record "NCCL 2-rank job placed by the broker" FAIL "see logs/nccl_rank*.log"; fi
  else
    record "NCCL 2-rank job placed by the broker" SKIP "needs 2 GPUs"
  fi
else
  record "NCCL all-reduce" SKIP "nccl_allreduce not built (no NCCL in the toolkit)"
fi

# --- memory cap: our samples, nvidia-smi, frameworks ---
run runtime_cap 120 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" "$S/runtime_vector_add"
if [ "$(field total)" = "$CAP" ] && grep -q "oversized cudaMalloc -> cudaErrorMemoryAllocation" "$LOG" && grep -q PASS "$LOG"; then
  record "cap 4GiB: cudaMemGetInfo and cudaMalloc" PASS "total=$(field total)"
else record "cap 4GiB: cudaMemGetInfo and cudaMalloc" FAIL "total=$(field total) rc=$RC"; fi

run alloc_probe_cap 300 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" "$S/alloc_probe" --chunk 256MiB
got=$(field allocated_bytes)
if [ -n "$got" ] && [ "$got" -le "$CAP" ] && [ "$got" -ge $((CAP - GIB)) ] && grep -q "oom_error=CUDA_ERROR_OUT_OF_MEMORY" "$LOG"; then
  record "cap 4GiB: alloc_probe" PASS "allocated=$got total=$(field total_bytes)"
else record "cap 4GiB: alloc_probe" FAIL "allocated=$got rc=$RC"; fi

run nvidia_smi_cap 60 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits
if grep -qx " *4096" "$LOG"; then record "cap 4GiB: nvidia-smi memory.total" PASS "$(head -n1 "$LOG") MiB"; else record "cap 4GiB: nvidia-smi memory.total" FAIL "$(head -n1 "$LOG")"; fi

run nvml_view 60 env GPUSHARE_VISIBLE_DEVICES=0 LD_PRELOAD="$SHIM" nvidia-smi -L
if [ "$(grep -c '^GPU ' "$LOG")" = 1 ]; then record "NVML view: visible devices" PASS "1 GPU listed"; else record "NVML view: visible devices" FAIL "$(wc -l < "$LOG") lines"; fi

if has_python torch; then
  for alloc_conf in "" "expandable_segments:True"; do
    label="cap 4GiB: PyTorch${alloc_conf:+ ($alloc_conf)}"
    run "torch_memcap${alloc_conf:+_expandable}" 300 env PYTORCH_CUDA_ALLOC_CONF="$alloc_conf" GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" python3 "$ROOT/tests/gpu/torch_checks.py" memcap "$CAP"
    if [ "$(field total)" = "$CAP" ] && [ "$(field oom)" = OutOfMemoryError ] && [ "$(field after_oom_sum)" = $((CAP / 4)) ]; then
      record "$label" PASS "mem_get_info total=$(field total), OOM raised, process went on"
    else record "$label" FAIL "total=$(field total) oom=$(field oom) rc=$RC"; fi
  done
  run torch_train_native 300 python3 "$ROOT/tests/gpu/torch_checks.py" train; a=$(field losses)
  run torch_train_shim 300 shimmed python3 "$ROOT/tests/gpu/torch_checks.py" train; b=$(field losses)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then record "PyTorch MLP training: identical losses" PASS "50 steps, last ${a##*,}"; else record "PyTorch MLP training: identical losses" FAIL "native=${a##*,} shim=${b##*,}"; fi
  run torch_gemm_native 300 python3 "$ROOT/tests/gpu/torch_checks.py" gemm; a=$(field gemm_sha256)
  run torch_gemm_shim 300 shimmed python3 "$ROOT/tests/gpu/torch_checks.py" gemm; b=$(field gemm_sha256)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then record "cuBLAS GEMM: identical result" PASS "sha256 ${a:0:12}"; else record "cuBLAS GEMM: identical result" FAIL "native=${a:0:12} shim=${b:0:12}"; fi
  run torch_launch_native 300 python3 "$ROOT/tests/gpu/torch_checks.py" launches 20000; a=$(field launch_us)
  run torch_launch_shim 300 shimmed python3 "$ROOT/tests/gpu/torch_checks.py" launches 20000; b=$(field launch_us)
  record "overhead: tiny-kernel launch (us)" "$(python3 -c "print('PASS' if $b <= $a * 1.05 + 0.1 else 'FAIL')" 2>/dev/null || echo FAIL)" "native=$a shim=$b"
  run torch_step_native 600 python3 "$ROOT/tests/gpu/torch_checks.py" step 30; a=$(field step_ms)
  run torch_step_shim 600 shimmed python3 "$ROOT/tests/gpu/torch_checks.py" step 30; b=$(field step_ms)
  record "overhead: PyTorch training step (ms)" "$(python3 -c "print('PASS' if $b <= $a * 1.05 else 'FAIL')" 2>/dev/null || echo FAIL)" "native=$a shim=$b"
else
  for c in "cap 4GiB: PyTorch" "PyTorch MLP training: identical losses" "cuBLAS GEMM: identical result" "overhead: PyTorch"; do record "$c" SKIP "PyTorch not installed"; done
fi

if has_python cupy; then
  run cupy_memcap 300 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" python3 "$ROOT/tests/gpu/cupy_jax_checks.py" cupy_memcap "$CAP"
  if [ "$(field total)" = "$CAP" ] && [ "$(field oom)" = OutOfMemoryError ]; then record "cap 4GiB: CuPy" PASS "memGetInfo total=$(field total)"; else record "cap 4GiB: CuPy" FAIL "total=$(field total) oom=$(field oom) rc=$RC"; fi
  run cupy_kernel_native 300 python3 "$ROOT/tests/gpu/cupy_jax_checks.py" cupy_kernel; a=$(field cupy_sha256)
  run cupy_kernel_shim 300 shimmed python3 "$ROOT/tests/gpu/cupy_jax_checks.py" cupy_kernel; b=$(field cupy_sha256)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then record "CuPy kernel: identical result" PASS "sha256 ${a:0:12}"; else record "CuPy kernel: identical result" FAIL "native=${a:0:12} shim=${b:0:12}"; fi
else record "cap 4GiB: CuPy" SKIP "CuPy not installed"; fi

if has_python jax; then
  run jax_memcap 300 env XLA_PYTHON_CLIENT_PREALLOCATE=false GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" python3 "$ROOT/tests/gpu/cupy_jax_checks.py" jax_memcap "$CAP"
  if [ "$(field oom)" = RESOURCE_EXHAUSTED ] && [ -n "$(field after_oom_sum)" ]; then record "cap 4GiB: JAX" PASS "RESOURCE_EXHAUSTED past the cap, process went on"; else record "cap 4GiB: JAX" FAIL "oom=$(field oom) rc=$RC"; fi
else record "cap 4GiB: JAX" SKIP "JAX not installed"; fi

# --- sharing through the broker ---
if [ -x "$BUILD/bin/gpushare-broker" ]; then
  record "sharing: weights 2:1, tenant caps, SIGKILL reclaim" FAIL "broker present but its checks are not written yet"
else
  record "sharing: weights 2:1, tenant caps, SIGKILL reclaim" SKIP "gpushare-broker not built yet (issues 4 and 5)"
fi

summary
grep -q "	FAIL	" "$OUT/results.tsv" && exit 1
exit 0
