#!/usr/bin/env bash
# Broker figures on simgpu: runs broker_bench, which starts its own gpushare-broker on a
# private socket and simulated node (one GPU), drives it with up to 64 clients and
# prints a markdown table. Builds nothing. Usage: tests/bench/run_broker_bench.sh [BUILD_DIR]
# [BROKER_CONFIG] (a config for the broker, e.g. one with [metering] enabled = false).
set -euo pipefail
BUILD=${1:-build}
exec "$BUILD/bin/broker_bench" --broker "$BUILD/bin/gpushare-broker" --simgpu "$BUILD/simgpu" \
  ${2:+--broker-config "$2"}
