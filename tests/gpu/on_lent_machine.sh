#!/usr/bin/env bash
# One run on a lent GPU machine (minutes of device time, start included): the real-GPU
# suite and the README's main job on a build carried from the development machine,
# with their logs packed into one tarball (the device tool brings few files back).
#   tests/gpu/on_lent_machine.sh BUILD_DIR OUT_DIR
# BUILD_DIR: a Release build (-DGPUSHARE_BUILD_TESTS=OFF is enough) with the libraries
# the machine lacks in BUILD_DIR/deps (ldd shows which: libunwind, toml++; the broker's
# SQLite, prometheus-cpp and civetweb where the image lacks them).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$1" && pwd)
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
W=$(mktemp -d)  # everything here; OUT gets the tarball and three small files
export LD_LIBRARY_PATH="$BUILD/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NCCL for the demo's samples, as the suite finds it.
# shellcheck source=tests/gpu/nccl_lib.sh
. "$ROOT/tests/gpu/nccl_lib.sh"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  ldd "$BUILD/lib/libgpushare.so" "$BUILD/bin/gpushare-broker" | grep -i "not found" || echo "ldd: nothing missing"
} > "$W/machine.txt" 2>&1

start=$SECONDS
GPUSHARE_BUILD="$BUILD" "$ROOT/tests/gpu/run.sh" "$W/suite" > "$W/suite.txt" 2>&1
echo "suite: exit $? in $((SECONDS - start)) s" | tee -a "$W/machine.txt"

start=$SECONDS
timeout -k 5 180 "$ROOT/tools/demo.sh" "$BUILD" > "$W/demo.txt" 2>&1
echo "demo: exit $? in $((SECONDS - start)) s" | tee -a "$W/machine.txt"

tar czf "$OUT/logs.tar.gz" --exclude='*.sock' -C "$W" suite suite.txt demo.txt machine.txt
cp "$W/suite/results.tsv" "$W/machine.txt" "$W/suite.txt" "$OUT/"
tail -n 40 "$W/suite.txt"
tail -n 5 "$W/demo.txt"
cat "$W/machine.txt"
