# The sharing section of the real-GPU suite, sourced by run.sh (its run/start/record
# and broker_up/broker_down helpers, $MODE, $S, $B, $OUT, $LOOP_S): clients of a broker on GPU 0, each row
# printing its figures and asserting its bound (figures.py does the arithmetic).
# On simgpu the same rows run; the GPU is modeled in wall-clock time on a CI machine
# that may be loaded (at a load average of 3-4 from parallel builds, 8 points failed
# once), so the bounds there only say that weights and classes act: 12 points keep an
# equal split (0.5) and a swapped one out. The dry run proves the harness; the real GPU
# proves the figures.

TOL=0.03
[ "$MODE" = sim ] && TOL=${SIM_TOL:-0.12}
MIN_SUM=0.95
[ "$MODE" = sim ] && MIN_SUM=0.75
FIG=(python3 "$HERE/figures.py")

rate() { field launches_per_s "$LOGS/$1.log"; }
# verdict ROW: records the STATUS<TAB>DETAIL line figures.py printed into $V.
verdict() { record "$1" "${V%%	*}" "${V#*	}"; }
# wait_all PID...: 0 when every one exited 0.
wait_all() { local rc=0 p; for p in "$@"; do wait "$p" || rc=1; done; return $rc; }
# Both tenants of a row on GPU 0, whatever the node's size: the rows are about one GPU.
two_tenants() { printf '[tenants.%s]\nweight = %s\ngpus = [0]\n\n[tenants.%s]\nweight = %s\ngpus = [0]\n' "$@"; }
T_LOOP=$((LOOP_S + 60))

# Solo rates: what one compute-bound and one memory-bound client do alone on GPU 0.
run solo_compute $T_LOOP "$S/compute_loop" --seconds "$LOOP_S"
solo_c=$(rate solo_compute) why_c=$WHY
run solo_memory $T_LOOP "$S/memory_loop" --seconds "$LOOP_S"
solo_m=$(rate solo_memory) why_m=$WHY

row="sharing: two compute loops, no gpushare (time-sliced)"
start pair_native_a $T_LOOP "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
start pair_native_b $T_LOOP "$S/compute_loop" --seconds "$LOOP_S"; pb=$PID
if wait_all $pa $pb && [ -n "$solo_c" ]; then
  V=$("${FIG[@]}" pair "$(rate pair_native_a)" "$(rate pair_native_b)" "$solo_c"); verdict "$row"
else record "$row" FAIL "a client failed: logs/pair_native_*.log, solo: ${why_c:-ok}"; fi

row="sharing: two compute loops under a broker, weights 2:1"
if broker_up wfq "$(two_tenants heavy 2 light 1)"; then
  start wfq_heavy $T_LOOP "${GR[@]}" --tenant heavy -- "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
  start wfq_light $T_LOOP "${GR[@]}" --tenant light -- "$S/compute_loop" --seconds "$LOOP_S"; pb=$PID
  if wait_all $pa $pb && [ -n "$solo_c" ]; then
    V=$("${FIG[@]}" weights "$(rate wfq_heavy)" "$(rate wfq_light)" "$solo_c" 0.6667 $TOL $MIN_SUM); verdict "$row"
  else record "$row" FAIL "a client failed: logs/wfq_*.log, solo: ${why_c:-ok}"; fi
else record "$row" FAIL "the broker did not start: logs/wfq_broker.log"; fi
broker_down

row="sharing: compute + memory loop under a broker, equal weights"
if broker_up classes "$(two_tenants tc 1 tm 1)"; then
  start classes_compute $T_LOOP "${GR[@]}" --tenant tc -- "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
  start classes_memory $T_LOOP "${GR[@]}" --tenant tm -- "$S/memory_loop" --seconds "$LOOP_S"; pb=$PID
  if wait_all $pa $pb && [ -n "$solo_c" ] && [ -n "$solo_m" ]; then
    V=$("${FIG[@]}" classes "$(rate classes_compute)" "$(rate classes_memory)" "$solo_c" "$solo_m" 0.7 0.3 $TOL); verdict "$row"
  else record "$row" FAIL "a client failed: logs/classes_*.log, solo: ${why_c:-ok} ${why_m:-ok}"; fi
else record "$row" FAIL "the broker did not start: logs/classes_broker.log"; fi
broker_down

# MPS co-location (docs/scheduling.md): the same compute + memory pair, its tenants
# co-locating through an MPS daemon the broker starts (on simgpu, simgpu's own), each
# client saying its class so that its SM share (75 / 25 %) is set before its context.
# Against the pair time-sliced in the row above, in this same run. Then two compute-bound
# clients co-located: both on 75 % of the SMs, they overlap, so they still take turns
# by weight (together they do what 75 % of the SMs do: the bound here is the split).
MIN_COLOCATED=1.5
[ "$MODE" = sim ] && MIN_COLOCATED=${SIM_MIN_COLOCATED:-1.25}
mps_config() {
  printf '[scheduler]\nspatial = "mps"\n\n'
  [ "$MODE" = sim ] && printf '[mps]\ncontrol = "%s"\n\n' "$BUILD/simgpu/simgpu-mps-control"
  printf '[tenants.%s]\nweight = %s\ngpus = [0]\ncolocate = true\n\n[tenants.%s]\nweight = %s\ngpus = [0]\ncolocate = true\n' "$@"
}
row="sharing: compute + memory loop co-located through MPS"
if broker_up mps "$(mps_config tc 1 tm 1)"; then
  GPUSHARE_CLASS=compute start mps_compute $T_LOOP "${GR[@]}" --tenant tc -- "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
  GPUSHARE_CLASS=memory start mps_memory $T_LOOP "${GR[@]}" --tenant tm -- "$S/memory_loop" --seconds "$LOOP_S"; pb=$PID
  if wait_all $pa $pb && [ -n "$solo_c" ] && [ -n "$solo_m" ] && [ -n "$(rate classes_compute)" ]; then
    V=$("${FIG[@]}" colocated "$(rate mps_compute)" "$(rate mps_memory)" "$solo_c" "$solo_m" \
      "$(rate classes_compute)" "$(rate classes_memory)" $MIN_COLOCATED); verdict "$row"
  else record "$row" FAIL "a client failed, or the time-sliced pair above did not run: logs/mps_*.log, logs/classes_*.log"; fi
else record "$row" FAIL "the broker did not start: logs/mps_broker.log"; fi
broker_down

row="sharing: two compute loops co-located through MPS, weights 2:1"
if broker_up mps_wfq "$(mps_config heavy 2 light 1)"; then
  GPUSHARE_CLASS=compute start mps_heavy $T_LOOP "${GR[@]}" --tenant heavy -- "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
  GPUSHARE_CLASS=compute start mps_light $T_LOOP "${GR[@]}" --tenant light -- "$S/compute_loop" --seconds "$LOOP_S"; pb=$PID
  if wait_all $pa $pb && [ -n "$solo_c" ]; then
    V=$("${FIG[@]}" weights "$(rate mps_heavy)" "$(rate mps_light)" "$solo_c" 0.6667 $TOL 0.5); verdict "$row"
  else record "$row" FAIL "a client failed: logs/mps_heavy.log, logs/mps_light.log, solo: ${why_c:-ok}"; fi
else record "$row" FAIL "the broker did not start: logs/mps_wfq_broker.log"; fi
broker_down

row="sharing: a tenant's cap across two processes"
if broker_up cap "$(printf '[tenants.capped]\nmemory = "6GiB"\ngpus = [0]\n')"; then
  start cap_first 60 "${GR[@]}" --tenant capped -- "$S/alloc_probe" --limit 4GiB --hold 30; pa=$PID
  for _ in $(seq 600); do grep -q '^allocated_bytes=' "$LOGS/cap_first.log" && break; sleep 0.05; done
  run cap_second 60 "${GR[@]}" --tenant capped -- "$S/alloc_probe" --chunk 256MiB
  kill $pa 2> /dev/null; wait $pa 2> /dev/null
  first=$(field allocated_bytes "$LOGS/cap_first.log") second=$(field allocated_bytes) oom=$(field oom_error)
  detail="first holds ${first:-?} B, the second got ${second:-?} B then $oom (tenant cap 6 GiB on GPU 0)"
  if [ "${first:-0}" = $((4 * GIB)) ] && [ "${second:-0}" -gt 0 ] && [ $((first + second)) -le $((6 * GIB)) ] &&
    [ "$oom" = CUDA_ERROR_OUT_OF_MEMORY ]; then record "$row" PASS "$detail"
  else record "$row" FAIL "$detail ${WHY}"; fi
else record "$row" FAIL "the broker did not start: logs/cap_broker.log"; fi
broker_down

row="sharing: SIGKILL of a client holding 4 GiB"
if broker_up reclaim ""; then
  nvml=(); [ "$MODE" = sim ] && nvml=(--nvml)
  run reclaim 60 python3 "$HERE/reclaim.py" --smi "$B/gpushare-smi" --socket "$SOCK" "${nvml[@]}" -- \
    "${GR[@]}" --tenant victim -- "$S/alloc_probe" --limit 4GiB --hold 60
  ledger_ms=$(field ledger_ms) gpu_ms=$(field gpu_ms)
  where=nvidia-smi; [ "$MODE" = sim ] && where=NVML
  detail="gone from the broker's ledger in ${ledger_ms:-?} ms, from $where in ${gpu_ms:-?} ms ($(field used_before_mib) -> $(field used_after_mib) MiB)"
  if [ "$RC" = 0 ] && [ "$(py "print(int($ledger_ms <= 250 and $gpu_ms <= 1000))")" = 1 ]; then record "$row" PASS "$detail"
  else record "$row" FAIL "$detail ${WHY}"; fi
else record "$row" FAIL "the broker did not start: logs/reclaim_broker.log"; fi
broker_down

# Ceilings (docs/profiles.md): a client held to max_compute gets that fraction of its solo
# rate even alone (not work-conserving); two held to 0.66 and 0.33 get those, though
# their guarantees (0.5, 0.33) alone would give them 0.6 / 0.4.
row="ceilings: a lone compute loop held to max_compute 0.25"
if broker_up ceiling_lone "$(printf '[tenants.capped]\nmax_compute = 0.25\ngpus = [0]\n')"; then
  run ceiling_lone $T_LOOP "${GR[@]}" --tenant capped -- "$S/compute_loop" --seconds "$LOOP_S"
  if [ "$RC" = 0 ] && [ -n "$solo_c" ]; then
    V=$("${FIG[@]}" fractions "$solo_c" $TOL "$(rate ceiling_lone):0.25"); verdict "$row"
  else record "$row" FAIL "the client failed: ${WHY:-} solo: ${why_c:-ok}"; fi
else record "$row" FAIL "the broker did not start: logs/ceiling_lone_broker.log"; fi
broker_down

row="ceilings: two compute loops held to 0.66 and 0.33"
profiles='[profiles.big]\nmemory = "1GiB"\ncompute = 0.5\nmax_compute = 0.66\n\n[profiles.small]\nmemory = "1GiB"\ncompute = 0.33\nmax_compute = 0.33\n\n'
if broker_up ceiling_pair "$(printf "$profiles"'[tenants.big]\nprofile = "big"\ngpus = [0]\n\n[tenants.small]\nprofile = "small"\ngpus = [0]\n')"; then
  start ceiling_big $T_LOOP "${GR[@]}" --tenant big -- "$S/compute_loop" --seconds "$LOOP_S"; pa=$PID
  start ceiling_small $T_LOOP "${GR[@]}" --tenant small -- "$S/compute_loop" --seconds "$LOOP_S"; pb=$PID
  if wait_all $pa $pb && [ -n "$solo_c" ]; then
    V=$("${FIG[@]}" fractions "$solo_c" $TOL "$(rate ceiling_big):0.66" "$(rate ceiling_small):0.33"); verdict "$row"
  else record "$row" FAIL "a client failed: logs/ceiling_*.log, solo: ${why_c:-ok}"; fi
else record "$row" FAIL "the broker did not start: logs/ceiling_pair_broker.log"; fi
broker_down

# torch_ready ROW: true where the row can run; otherwise records why it is skipped.
torch_ready() {
  if [ "$MODE" = sim ]; then skip_sim "$1" "simulated node: PyTorch needs a real GPU"; return 1; fi
  if ! has_python torch; then record "$1" SKIP "PyTorch not installed"; return 1; fi
}

row="sharing: two PyTorch trainers under a broker, weights 2:1"
if torch_ready "$row"; then
  if broker_up trainers "$(two_tenants heavy 2 light 1)"; then
    start trainer_heavy 120 "${GR[@]}" --tenant heavy -- python3 "$HERE/torch_checks.py" trainer 10; pa=$PID
    start trainer_light 120 "${GR[@]}" --tenant light -- python3 "$HERE/torch_checks.py" trainer 10; pb=$PID
    if wait_all $pa $pb; then
      V=$("${FIG[@]}" window "$LOGS/trainer_heavy.log" "$LOGS/trainer_light.log" 0.6667 $TOL); verdict "$row"
    else record "$row" FAIL "a trainer failed: logs/trainer_*.log"; fi
  else record "$row" FAIL "the broker did not start: logs/trainers_broker.log"; fi
  broker_down
fi

row="sharing: PyTorch CUDA graph under a broker beside another client"
if torch_ready "$row"; then
  if broker_up graph "$(two_tenants graph 1 other 1)"; then
    start graph_beside 90 "${GR[@]}" --tenant other -- "$S/compute_loop" --seconds 60; pb=$PID
    run torch_graph 90 "${GR[@]}" --tenant graph -- python3 "$HERE/torch_checks.py" graph
    beside=$(py "import json, subprocess; print(len(json.loads(subprocess.run(['$B/gpushare-smi', '--socket', '$SOCK', '--json'], capture_output=True, text=True).stdout)['clients']))")
    kill $pb 2> /dev/null; wait $pb 2> /dev/null
    if [ "$(field graph_equal)" = True ] && [ "$(field replays)" = 100 ] && [ "${beside:-0}" -ge 1 ]; then
      record "$row" PASS "100 replays equal to eager (max diff $(field max_abs_diff)); the other client still running"
    else record "$row" FAIL "graph_equal=$(field graph_equal) max_abs_diff=$(field max_abs_diff) clients=${beside:-?} $WHY"; fi
  else record "$row" FAIL "the broker did not start: logs/graph_broker.log"; fi
  broker_down
fi
