#!/usr/bin/env bash
# The real-GPU suite: on a machine with an NVIDIA GPU, runs every check of
# tests/gpu/README.md with and without libgpushare.so, prints a pass/fail table and
# writes OUTDIR/results.json and OUTDIR/logs/. Without a GPU it says so and exits 0.
# --simulated runs the same script end to end on simgpu (CI's dry run): every row that
# needs only our samples, broker and tools takes the path it takes on a GPU; rows that
# need a framework or NVIDIA's own tools report SKIP with the reason.
#   tests/gpu/run.sh [--simulated] [OUTDIR]   (GPUSHARE_BUILD=DIR: a carried build, default ./build)
# The whole suite has a budget (GPUSHARE_SUITE_BUDGET_S, default 360 s): each check runs
# under a timeout cut to what is left, so a hang is that check's failure, and a check
# the budget cannot reach any more fails as "not run".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODE=gpu
if [ "${1:-}" = --simulated ]; then MODE=sim; shift; fi
OUT=$(mkdir -p "${1:-$ROOT/gpu-results}" && cd "${1:-$ROOT/gpu-results}" && pwd)
BUILD=$(cd "${GPUSHARE_BUILD:-$ROOT/build}" 2>/dev/null && pwd || echo "${GPUSHARE_BUILD:-$ROOT/build}")
BUDGET_S=${GPUSHARE_SUITE_BUDGET_S:-360}
LOGS="$OUT/logs"
rm -rf "$LOGS" && mkdir -p "$LOGS"
: > "$OUT/results.tsv"
GIB=$((1 << 30))
CAP=$((4 * GIB))
HERE="$ROOT/tests/gpu"

summary() {  # results.tsv + environment -> results.json, and the table
  python3 - "$OUT" "$MODE" "$SECONDS" "$@" <<'PY'
import json, os, subprocess, sys, datetime
out, mode, wall_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
def cmd(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""
env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode, "wall_s": wall_s}
if mode == "gpu":
    env["gpu"] = cmd("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    env["nvcc"] = cmd("nvcc", "--version").splitlines()[-1:]
    for mod in ("torch", "cupy", "jax"):
        env[mod] = cmd("python3", "-c", f"import {mod}; print({mod}.__version__)") or "not installed"
else:
    env["gpu"] = "simgpu: " + (os.environ.get("SIMGPU_CONFIG") or "two 16 GiB GPUs (default)")
results = []
for line in open(os.path.join(out, "results.tsv")):
    name, status, detail = line.rstrip("\n").split("\t", 2)
    results.append({"check": name, "status": status, "detail": detail})
doc = {"environment": env, "results": results}
if len(sys.argv) > 4:
    doc["skipped"] = True
    doc["reason"] = sys.argv[4]
json.dump(doc, open(os.path.join(out, "results.json"), "w"), indent=2)
if results:
    width = max(len(r["check"]) for r in results)
    print(f"{'check':<{width}}  status  detail")
    for r in results:
        print(f"{r['check']:<{width}}  {r['status']:<6}  {r['detail']}")
    counts = {s: sum(r["status"] == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"suite ({mode}, {wall_s} s): {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
}

if [ $MODE = gpu ]; then
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
  NGPUS=$(nvidia-smi -L | grep -c '^GPU ')
  # shellcheck source=tests/gpu/nccl_lib.sh
  . "$HERE/nccl_lib.sh"
  LOOP_S=4
else
  [ -f "$BUILD/simgpu/libcuda.so.1" ] || { echo "tests/gpu: --simulated needs a build with simgpu in $BUILD/simgpu"; exit 1; }
  export LD_LIBRARY_PATH="$BUILD/simgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export SIMGPU_NODE="gpushare-suite-$$"
  trap 'rm -f "/dev/shm/$SIMGPU_NODE"' EXIT
  NGPUS=$(python3 -c 'import json, os, sys; p = os.environ.get("SIMGPU_CONFIG"); print(len(json.load(open(p))["gpus"]) if p else 2)')
  LOOP_S=3
fi
SHIM="$BUILD/lib/libgpushare.so"
S="$BUILD/samples"
B="$BUILD/bin"
SHIMMED=(env LD_PRELOAD="$SHIM")
# Libraries carried next to a build made elsewhere (e.g. libunwind.so.8).
[ -d "$BUILD/deps" ] && export LD_LIBRARY_PATH="$BUILD/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "tests/gpu: $MODE mode, $NGPUS GPU(s), budget ${BUDGET_S} s, logs in $LOGS"

record() {
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$OUT/results.tsv"
  printf '  [%3d s] %-4s %s: %s\n' "$SECONDS" "$2" "$1" "$3"
}
# The time a check may take: its own limit, cut to what is left of the suite's budget.
limit() { local left=$((BUDGET_S - SECONDS)); echo $(($1 < left ? $1 : left)); }
# run NAME TIMEOUT_S CMD...: runs CMD (a program, not a shell function) with its output
# in logs/NAME.log under a timeout; sets $LOG, $RC and $WHY (what went wrong, for a FAIL).
run() {
  local name=$1 t
  t=$(limit "$2")
  shift 2
  LOG="$LOGS/$name.log"
  if [ "$t" -lt 5 ]; then
    echo "not run: the suite's ${BUDGET_S} s budget is spent" > "$LOG"
    RC=125 WHY="not run: the suite's ${BUDGET_S} s budget is spent"
    return
  fi
  timeout -k 5 "$t" "$@" > "$LOG" 2>&1
  RC=$?
  case $RC in
    0) WHY="" ;;
    124 | 137) WHY="timed out after ${t} s (logs/$name.log)" ;;
    *) WHY="rc=$RC (logs/$name.log)" ;;
  esac
}
# start NAME TIMEOUT_S CMD...: the same in the background; sets $PID (of the timeout).
start() {
  local name=$1 t
  t=$(limit "$2")
  shift 2
  [ "$t" -ge 5 ] || t=5
  timeout -k 5 "$t" "$@" > "$LOGS/$name.log" 2>&1 &
  PID=$!
}
# broker_up NAME TOML: a broker of its own for one check; sets $SOCK, $BPID and GR
# (gpushare-run for it). broker_down stops it.
broker_up() {
  printf '%s\n' "$2" > "$OUT/$1.toml"
  SOCK="$OUT/$1.sock"
  rm -f "$SOCK"
  # Its meter's database (docs/metering.md) beside its config, not in the user's state directory.
  STATE_DIRECTORY="$OUT/$1.state" start "$1_broker" 150 "$B/gpushare-broker" --config "$OUT/$1.toml" --socket "$SOCK"
  BPID=$PID
  GR=("$B/gpushare-run" --socket "$SOCK")
  for _ in $(seq 200); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
  return 1
}
broker_down() { kill "$BPID" 2> /dev/null; wait "$BPID" 2> /dev/null; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "${2:-$LOG}" | tail -n 1; }
has_python() { python3 -c "import $1" > /dev/null 2>&1; }
# py EXPR...: a figure or a verdict computed by Python (empty on a bad input).
py() { python3 -c "$1" 2> /dev/null; }
skip_sim() { record "$1" SKIP "${2:-simulated node: needs a real GPU}"; }

# --- samples, driver API and runtime API (static cudart) ---
for mode in native shim; do
  pre=(); [ $mode = shim ] && pre=("${SHIMMED[@]}")
  run "vector_add_$mode" 60 "${pre[@]}" "$S/vector_add"
  if grep -q "vector_add: PASS" "$LOG"; then record "driver vector_add ($mode)" PASS "$(grep -o 'PASS.*' "$LOG")"; else record "driver vector_add ($mode)" FAIL "$WHY"; fi
  if [ $MODE = sim ]; then
    skip_sim "runtime vector_add, static cudart ($mode)" "simulated node: the static cudart needs the real driver's private export tables"
  elif [ -x "$S/runtime_vector_add" ]; then
    run "runtime_vector_add_$mode" 60 "${pre[@]}" "$S/runtime_vector_add"
    if grep -q "runtime_vector_add: PASS" "$LOG"; then record "runtime vector_add, static cudart ($mode)" PASS "total=$(field total)"; else record "runtime vector_add, static cudart ($mode)" FAIL "$WHY"; fi
  else
    record "runtime vector_add, static cudart ($mode)" SKIP "not built (no nvcc at build time)"
  fi
done

# --- NCCL: the sample on every GPU of this machine (one rank each), natively and under
# the shim (its NCCL hooks in the path); the 2-rank job under a broker needs 2 GPUs ---
if [ -x "$S/nccl_allreduce" ]; then
  for mode in native shim; do
    pre=(); [ $mode = shim ] && pre=("${SHIMMED[@]}" GPUSHARE_LOG=info)
    run "nccl_allreduce_$mode" 120 "${pre[@]}" "$S/nccl_allreduce" --rounds 20
    ranks=$(grep -c "sum ok" "$LOG")
    if [ "$RC" = 0 ] && [ "$ranks" -ge 1 ]; then record "NCCL all-reduce, one process ($mode)" PASS "$ranks rank(s), sums checked"
    else record "NCCL all-reduce, one process ($mode)" FAIL "$WHY ranks=$ranks"; fi
  done
  if [ "$NGPUS" -ge 2 ]; then
    broker_up nccl ""
    rm -f "$OUT/nccl.id"; rank_pids=()
    for r in 0 1; do
      start "nccl_rank$r" 120 env GPUSHARE_SOCKET="$SOCK" GPUSHARE_JOB=gpu-suite LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 \
        LD_PRELOAD="$SHIM" "$S/nccl_allreduce" --rank $r --nranks 2 --id-file "$OUT/nccl.id"
      rank_pids+=("$PID")
    done
    wait "${rank_pids[@]}"; broker_down
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
if [ $MODE = sim ]; then
  skip_sim "cap 4GiB: cudaMemGetInfo and cudaMalloc" "simulated node: the static cudart needs the real driver"
else
  run runtime_cap 60 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" "$S/runtime_vector_add"
  if [ "$(field total)" = "$CAP" ] && grep -q "oversized cudaMalloc -> cudaErrorMemoryAllocation" "$LOG" && grep -q PASS "$LOG"; then
    record "cap 4GiB: cudaMemGetInfo and cudaMalloc" PASS "total=$(field total)"
  else record "cap 4GiB: cudaMemGetInfo and cudaMalloc" FAIL "total=$(field total) $WHY"; fi
fi

run alloc_probe_cap 120 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" "$S/alloc_probe" --chunk 256MiB
got=$(field allocated_bytes)
if [ -n "$got" ] && [ "$got" -le "$CAP" ] && [ "$got" -ge $((CAP - GIB)) ] && grep -q "oom_error=CUDA_ERROR_OUT_OF_MEMORY" "$LOG"; then
  record "cap 4GiB: alloc_probe" PASS "allocated=$got total=$(field total_bytes)"
else record "cap 4GiB: alloc_probe" FAIL "allocated=$got $WHY"; fi

if [ $MODE = sim ]; then
  skip_sim "cap 4GiB: nvidia-smi memory.total" "simulated node: nvidia-smi is NVIDIA's tool"
  skip_sim "NVML view: visible devices" "simulated node: nvidia-smi is NVIDIA's tool"
else
  run nvidia_smi_cap 30 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits
  if grep -qx " *4096" "$LOG"; then record "cap 4GiB: nvidia-smi memory.total" PASS "$(head -n1 "$LOG") MiB"; else record "cap 4GiB: nvidia-smi memory.total" FAIL "$(head -n1 "$LOG") $WHY"; fi
  run nvml_view 30 env GPUSHARE_VISIBLE_DEVICES=0 LD_PRELOAD="$SHIM" nvidia-smi -L
  if [ "$(grep -c '^GPU ' "$LOG")" = 1 ]; then record "NVML view: visible devices" PASS "1 GPU listed"; else record "NVML view: visible devices" FAIL "$(wc -l < "$LOG") lines $WHY"; fi
fi

torch_rows=("cap 4GiB: PyTorch" "cap 4GiB: PyTorch (expandable_segments:True)" "PyTorch MLP training: identical losses"
  "cuBLAS GEMM: identical result" "overhead: tiny-kernel launch (us)" "overhead: PyTorch training step (ms)")
if [ $MODE = sim ]; then
  for c in "${torch_rows[@]}"; do skip_sim "$c" "simulated node: PyTorch needs a real GPU"; done
elif has_python torch; then
  TORCH=(python3 "$HERE/torch_checks.py")
  for alloc_conf in "" "expandable_segments:True"; do
    label="cap 4GiB: PyTorch${alloc_conf:+ ($alloc_conf)}"
    run "torch_memcap${alloc_conf:+_expandable}" 90 env PYTORCH_CUDA_ALLOC_CONF="$alloc_conf" GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" "${TORCH[@]}" memcap "$CAP"
    if [ "$(field total)" = "$CAP" ] && [ "$(field oom)" = OutOfMemoryError ] && [ "$(field after_oom_sum)" = $((CAP / 4)) ]; then
      record "$label" PASS "mem_get_info total=$(field total), OOM raised, process went on"
    else record "$label" FAIL "total=$(field total) oom=$(field oom) after_oom_sum=$(field after_oom_sum) $WHY"; fi
  done
  run torch_train_native 90 "${TORCH[@]}" train; a=$(field losses)
  run torch_train_shim 90 "${SHIMMED[@]}" "${TORCH[@]}" train; b=$(field losses)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then record "PyTorch MLP training: identical losses" PASS "50 steps, last ${a##*,}"; else record "PyTorch MLP training: identical losses" FAIL "native=${a##*,} shim=${b##*,} $WHY"; fi
  run torch_gemm_native 90 "${TORCH[@]}" gemm; a=$(field gemm_sha256)
  run torch_gemm_shim 90 "${SHIMMED[@]}" "${TORCH[@]}" gemm; b=$(field gemm_sha256)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then record "cuBLAS GEMM: identical result" PASS "sha256 ${a:0:12}"; else record "cuBLAS GEMM: identical result" FAIL "native=${a:0:12} shim=${b:0:12} $WHY"; fi
  run torch_launch_native 90 "${TORCH[@]}" launches 20000; a=$(field launch_us)
  run torch_launch_shim 90 "${SHIMMED[@]}" "${TORCH[@]}" launches 20000; b=$(field launch_us)
  record "overhead: tiny-kernel launch (us)" "$(py "print('PASS' if $b <= $a * 1.05 + 0.1 else 'FAIL')" || echo FAIL)" "native=$a shim=$b"
  run torch_step_native 90 "${TORCH[@]}" step 30; a=$(field step_ms)
  run torch_step_shim 90 "${SHIMMED[@]}" "${TORCH[@]}" step 30; b=$(field step_ms)
  record "overhead: PyTorch training step (ms)" "$(py "print('PASS' if $b <= $a * 1.05 else 'FAIL')" || echo FAIL)" "native=$a shim=$b"
else
  for c in "${torch_rows[@]}"; do record "$c" SKIP "PyTorch not installed"; done
fi

if [ $MODE = sim ]; then
  for c in "cap 4GiB: CuPy" "CuPy kernel: identical result" "cap 4GiB: JAX"; do skip_sim "$c" "simulated node: CuPy and JAX need a real GPU"; done
else
  if has_python cupy; then
    run cupy_memcap 90 env GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" python3 "$HERE/cupy_jax_checks.py" cupy_memcap "$CAP"
    if [ "$(field total)" = "$CAP" ] && [ "$(field oom)" = OutOfMemoryError ] && [ "$(field after_oom_sum)" = $((CAP / 4)) ]; then record "cap 4GiB: CuPy" PASS "memGetInfo total=$(field total), OOM raised, process went on"
    else record "cap 4GiB: CuPy" FAIL "total=$(field total) oom=$(field oom) after_oom_sum=$(field after_oom_sum) $WHY"; fi
    run cupy_kernel_native 90 python3 "$HERE/cupy_jax_checks.py" cupy_kernel; a=$(field cupy_sha256)
    run cupy_kernel_shim 90 "${SHIMMED[@]}" python3 "$HERE/cupy_jax_checks.py" cupy_kernel; b=$(field cupy_sha256)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then record "CuPy kernel: identical result" PASS "sha256 ${a:0:12}"; else record "CuPy kernel: identical result" FAIL "native=${a:0:12} shim=${b:0:12} $WHY"; fi
  else
    for c in "cap 4GiB: CuPy" "CuPy kernel: identical result"; do record "$c" SKIP "CuPy not installed"; done
  fi
  if has_python jax; then
    run jax_memcap 90 env XLA_PYTHON_CLIENT_PREALLOCATE=false GPUSHARE_MEMORY_LIMIT=4GiB LD_PRELOAD="$SHIM" python3 "$HERE/cupy_jax_checks.py" jax_memcap "$CAP"
    if [ "$(field oom)" = RESOURCE_EXHAUSTED ] && [ "$(field after_oom_sum)" = $((CAP / 8)) ]; then record "cap 4GiB: JAX" PASS "RESOURCE_EXHAUSTED past the cap, process went on"
    else record "cap 4GiB: JAX" FAIL "oom=$(field oom) after_oom_sum=$(field after_oom_sum) $WHY"; fi
  else record "cap 4GiB: JAX" SKIP "JAX not installed"; fi
fi

# --- monitoring: gpushare-doctor against a broker, and one /metrics scrape (docs/monitoring.md) ---
if [ -x "$B/gpushare-doctor" ] && [ -x "$B/gpushare-broker" ]; then
  MPORT=$(py "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  if broker_up monitoring "$(printf '[metering]\nenabled = false\n[metrics]\nlisten = "127.0.0.1:%s"\nrefresh = 0.2\n' "$MPORT")"; then
    run doctor 60 "$B/gpushare-doctor" --socket "$SOCK" --lib "$SHIM" --json
    verdicts=$(py "import json; d = json.load(open('$LOG')); print(' '.join(c['check'] + '=' + c['verdict'] for c in d['checks']))")
    needed=$(py "import json; d = {c['check']: c['verdict'] for c in json.load(open('$LOG'))['checks']}; print('ok' if all(d.get(k) == 'pass' for k in ('driver', 'broker', 'preload', 'memory')) else 'no')")
    if [ "$needed" = ok ]; then record "gpushare-doctor: driver, broker, preload, memory" PASS "$verdicts"
    else record "gpushare-doctor: driver, broker, preload, memory" FAIL "${verdicts:-no JSON} $WHY"; fi
    sleep 0.5
    run metrics_scrape 30 python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$MPORT/metrics', timeout=10).read().decode())"
    util=$(grep -m1 '^gpushare_gpu_utilization_ratio{' "$LOG" | awk '{print $2}')
    link="gen $(grep -m1 '^gpushare_gpu_pcie_link_generation{' "$LOG" | awk '{print $2}') x$(grep -m1 '^gpushare_gpu_pcie_link_width{' "$LOG" | awk '{print $2}')"
    checked="promtool not installed"
    if command -v promtool > /dev/null 2>&1; then
      if promtool check metrics < "$LOG" > "$LOGS/metrics_promtool.log" 2>&1; then checked="promtool check metrics: ok"; else checked="promtool check metrics: FAILED"; fi
    fi
    if [ -n "$util" ] && [ "$checked" != "promtool check metrics: FAILED" ]; then record "/metrics scraped once" PASS "utilization=$util PCIe $link; $checked"
    else record "/metrics scraped once" FAIL "utilization=${util:-none} $checked $WHY"; fi
    # NCCL: the time its collectives took on the GPU (events on their streams), per job,
    # beside the job's GPU time, while one process all-reduces across the GPUs.
    if [ -x "$S/nccl_allreduce" ]; then
      start nccl_collective_time 60 env GPUSHARE_SOCKET="$SOCK" GPUSHARE_JOB=nccl LD_PRELOAD="$SHIM" "$S/nccl_allreduce" --rounds 100000
      NPID=$PID
      run nccl_collective_status 30 python3 - "$B/gpushare-smi" "$SOCK" <<'PY'
import json, subprocess, sys, time
for _ in range(200):
    status = json.loads(subprocess.run([sys.argv[1], "--socket", sys.argv[2], "--json"], capture_output=True, text=True).stdout or "{}")
    jobs = [j for j in status.get("jobs", []) if j["job"] == "nccl" and j["collectives"] >= 20]
    if jobs:
        print(json.dumps(jobs[0]))
        j = jobs[0]
        gpu, share = j["gpu_time_ms"], j["collective_share"]
        print(f"collectives={j['collectives']} collective_ms={j['collective_ms']:.1f} "
              f"gpu_time_ms={'none' if gpu is None else round(gpu, 1)} share={'none' if share is None else round(share, 3)}")
        sys.exit(0 if j["collective_ms"] > 0 and j["collective_share"] is not None else 1)
    time.sleep(0.1)
print("no job 'nccl' with 20 timed collectives in 20 s")
sys.exit(1)
PY
      kill "$NPID" 2> /dev/null; wait "$NPID" 2> /dev/null
      if [ "$RC" = 0 ]; then record "NCCL: collective time measured on the GPU" PASS "$(field collectives) collectives, $(field collective_ms) ms of $(field gpu_time_ms) ms GPU time, share $(field share)"
      else record "NCCL: collective time measured on the GPU" FAIL "$(tail -n 1 "$LOG") $WHY (logs/nccl_collective_time.log)"; fi
    else
      record "NCCL: collective time measured on the GPU" SKIP "nccl_allreduce not built (no NCCL in the toolkit)"
    fi
    broker_down
  else
    record "gpushare-doctor: driver, broker, preload, memory" FAIL "the broker did not start (logs/monitoring_broker.log)"
    record "/metrics scraped once" FAIL "the broker did not start (logs/monitoring_broker.log)"
    broker_down
  fi
else
  record "gpushare-doctor and /metrics" SKIP "gpushare-doctor or gpushare-broker not built"
fi

# --- sharing through the broker ---
if [ -x "$B/gpushare-broker" ]; then
  # shellcheck source=tests/gpu/sharing.sh
  . "$HERE/sharing.sh"
else
  record "sharing" SKIP "gpushare-broker not built"
fi

summary
grep -q "	FAIL	" "$OUT/results.tsv" && exit 1
exit 0
