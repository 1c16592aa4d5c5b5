#!/usr/bin/env bash
# `systemd-analyze verify` on the installed gpushare-broker.service: no error and no
# warning (unknown keys and bad values only warn, so any output fails). Installed into a
# scratch prefix first: verify checks that ExecStart's program exists, and, with MANPATH
# pointing into the prefix, that Documentation's man page does.
# Usage: unit_verify_test.sh BUILD_DIR
set -euo pipefail
build=$1
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze not found (Debian package systemd, in tools/debian-packages.txt)"
  exit 77
fi
prefix=$(mktemp -d /tmp/gpushare-unit-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
unit=$prefix/lib/systemd/system/gpushare-broker.service
out=$(MANPATH=$prefix/share/man systemd-analyze verify "$unit" 2>&1) && status=0 || status=$?
if [[ $status -ne 0 || -n $out ]]; then
  echo "FAIL: systemd-analyze verify (status $status):"
  echo "$out"
  exit 1
fi
for key in Type=notify RuntimeDirectory=gpushare StateDirectory=gpushare Restart=on-failure \
           'ExecReload=/bin/kill -HUP $MAINPID'; do
  grep -qxF "$key" "$unit" || { echo "FAIL: the unit lacks $key"; exit 1; }
done
echo "systemd-analyze verify: $unit passes"
