#!/usr/bin/env bash
# The installed unit under a real systemd: a throwaway podman container whose root is an
# overlay of this machine's (changes discarded), systemd as its PID 1, the product
# installed under /usr/local (DESTDIR staging, copied in). Checks that the hardened
# unit runs the broker on simgpu: `systemctl start` returns with the broker ready
# ("listening on ..." as its status), /run/gpushare and /var/lib/gpushare are made,
# gpushare-smi reaches it, a client under the installed shim joins it, a reload applies, a bad config's reload is refused while
# the service stays active, and a stop is clean.
# Skips (77) with the reason where podman cannot boot systemd (no podman, not root).
# Usage: systemd_service_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
command -v podman >/dev/null || skip "podman not found (Debian package podman)"
[[ $(id -u) == 0 ]] || skip "needs root (podman with this machine's root as an overlay)"
[[ -x /lib/systemd/systemd ]] || skip "no /lib/systemd/systemd (Debian package systemd)"

stage=$(mktemp -d /tmp/gpushare-sd-XXXXXX)
name=gpushare-sd-test-$$
trap 'podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$stage"' EXIT
DESTDIR=$stage cmake --install "$build" --prefix /usr/local >/dev/null

# runc and these limits: what a machine like CI's needs (docs/containers.md); /tmp and
# /run as fresh tmpfs without copying the host's (sockets there cannot be copied); the
# build tree mounted at its own path (simgpu and the sample client), wherever it is,
# /tmp included.
if ! podman run -d --name "$name" --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
     --systemd=always --tmpfs /tmp:rw,notmpcopyup --tmpfs /run:rw,notmpcopyup --tmpfs /run/lock:rw,notmpcopyup \
     -v "$stage:/stage:ro" -v "$build:$build:ro" --rootfs /:O /lib/systemd/systemd >"$stage.log" 2>&1; then
  skip "podman cannot start systemd in a container here: $(tail -1 "$stage.log")"
fi
rm -f "$stage.log"
for _ in $(seq 100); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 0.2
done
[[ $state == running || $state == degraded ]] || skip "systemd in the container did not come up (state '$state')"

# The sanitizer flavor's options (.ci/run) reach the service and the client too.
podman exec -i -e ASAN_OPTIONS="${ASAN_OPTIONS:-}" -e UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" "$name" bash -s "$build" <<'INSIDE'
set -euo pipefail
build=$1
fail() { echo "FAIL: $*"; journalctl -u gpushare-broker --no-pager | tail -20; exit 1; }
cp -a /stage/. /
mkdir -p /etc/systemd/system/gpushare-broker.service.d
printf '[Service]\nEnvironment=LD_LIBRARY_PATH=%s/simgpu "ASAN_OPTIONS=%s" "UBSAN_OPTIONS=%s"\n' \
  "$build" "$ASAN_OPTIONS" "$UBSAN_OPTIONS" >/etc/systemd/system/gpushare-broker.service.d/simgpu.conf
systemctl daemon-reload
timeout 60 systemctl start gpushare-broker || fail "systemctl start"
status=$(systemctl show -p StatusText --value gpushare-broker)
[[ $status == "listening on /run/gpushare/broker.sock" ]] || fail "status after start is '$status'"
[[ -S /run/gpushare/broker.sock ]] || fail "no socket in /run/gpushare"
[[ -f /var/lib/gpushare/metering.db ]] || fail "metering did not write /var/lib/gpushare/metering.db (StateDirectory)"
smi=$(GPUSHARE_SOCKET=/run/gpushare/broker.sock /usr/local/bin/gpushare-smi --json) || fail "gpushare-smi: $smi"
grep -q '"gpus"' <<<"$smi" || fail "gpushare-smi --json: $smi"
# A client under the installed shim joins the sandboxed broker (socket, /dev/shm channel).
export GPUSHARE_SOCKET=/run/gpushare/broker.sock
LD_LIBRARY_PATH=$build/simgpu /usr/local/bin/gpushare-run --tenant svc -- "$build/samples/compute_loop" --seconds 3 \
  >/tmp/client.log 2>&1 &
client=$!
joined=no
for _ in $(seq 100); do
  if /usr/local/bin/gpushare-smi --json | grep -qE '"tenant": ?"svc"'; then joined=yes; break; fi
  sleep 0.1
done
wait "$client" || fail "the client failed: $(cat /tmp/client.log)"
[[ $joined == yes ]] || fail "the client never showed in gpushare-smi as tenant svc: $(cat /tmp/client.log)"
timeout 60 systemctl reload gpushare-broker || fail "systemctl reload"
journalctl -u gpushare-broker --no-pager | grep -q 'reloaded /usr/local/etc/gpushare/broker.toml' || fail "no reload in the journal"
printf '[limits]\nbogus = 1\n' >>/usr/local/etc/gpushare/broker.toml
timeout 60 systemctl reload gpushare-broker || true
journalctl -u gpushare-broker --no-pager | grep -q 'reload refused, the running config stays' || fail "the bad reload was not refused"
systemctl is-active --quiet gpushare-broker || fail "inactive after a refused reload"
timeout 60 systemctl stop gpushare-broker || fail "systemctl stop"
[[ $(systemctl show -p Result --value gpushare-broker) == success ]] || fail "stop result $(systemctl show -p Result --value gpushare-broker)"
[[ ! -e /run/gpushare ]] || fail "/run/gpushare left after stop (RuntimeDirectory)"
echo "systemd: started (ready), served a client, reloaded, refused a bad reload, stopped"
INSIDE
