#!/bin/bash
# A real ZooKeeper ensemble on loopback for the cluster tests: N servers (default 3),
# each with its own zoo.cfg, myid and data directory under DIR, started from the
# Debian package's jars. Used by tests/integration/cluster_test.cpp and by hand.
#
#   zk_ensemble.sh start DIR BASE_PORT [N]   start servers 1..N; wait until a quorum serves
#   zk_ensemble.sh stop DIR ID               stop server ID (SIGKILL, as a crash)
#   zk_ensemble.sh restart DIR ID            start server ID again
#   zk_ensemble.sh stop-all DIR              stop every server
#   zk_ensemble.sh connect DIR               print the client connect string
#
# Server i listens for clients on BASE_PORT+i, peers on BASE_PORT+100+i and
# elections on BASE_PORT+200+i.
set -euo pipefail

ZK_JAR=${ZK_JAR:-/usr/share/java/zookeeper.jar}   # its manifest names the other jars
SLF4J_JAR=${SLF4J_JAR:-/usr/share/java/slf4j-nop.jar}
JAVA=${JAVA:-java}

die() { echo "zk_ensemble: $*" >&2; exit 1; }

server_start() {
  local dir=$1 id=$2
  [ -f "$dir/$id/zoo.cfg" ] || die "no server $id in $dir"
  # Small heap and a quick JIT: a 2-core CI machine runs three of them beside the tests.
  setsid "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
    -cp "$ZK_JAR:$SLF4J_JAR" org.apache.zookeeper.server.quorum.QuorumPeerMain \
    "$dir/$id/zoo.cfg" >"$dir/$id/server.log" 2>&1 </dev/null &
  echo $! >"$dir/$id/pid"
}

case "${1:-}" in
  start)
    dir=$2 base=$3 n=${4:-3}
    mkdir -p "$dir"
    # A server left running on these ports (by a killed test) would answer for ours.
    for i in $(seq 1 "$n"); do
      for port in $((base + i)) $((base + 100 + i)) $((base + 200 + i)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
      done
    done
    servers=""
    for i in $(seq 1 "$n"); do
      servers+="server.$i=127.0.0.1:$((base + 100 + i)):$((base + 200 + i))"$'\n'
    done
    for i in $(seq 1 "$n"); do
      mkdir -p "$dir/$i/data"
      echo "$i" >"$dir/$i/data/myid"
      cat >"$dir/$i/zoo.cfg" <<CFG
tickTime=200
initLimit=20
syncLimit=10
dataDir=$dir/$i/data
clientPort=$((base + i))
clientPortAddress=127.0.0.1
maxSessionTimeout=60000
minSessionTimeout=400
4lw.commands.whitelist=ruok,srvr,stat
$servers
CFG
      server_start "$dir" "$i"
    done
    connect=""
    for i in $(seq 1 "$n"); do connect+="${connect:+,}127.0.0.1:$((base + i))"; done
    echo "$connect" >"$dir/connect"
    # Wait (bounded) until a majority answers "imok"-style: a server that joined a
    # quorum answers srvr with a Mode line.
    deadline=$((SECONDS + ${ZK_START_TIMEOUT:-60}))
    while :; do
      up=0
      for i in $(seq 1 "$n"); do
        if out=$( (exec 3<>"/dev/tcp/127.0.0.1/$((base + i))" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null) &&
           grep -q '^Mode: ' <<<"$out"; then up=$((up + 1)); fi
      done
      [ "$up" -gt $((n / 2)) ] && break
      [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$dir"/*/server.log >&2; die "no quorum after ${ZK_START_TIMEOUT:-60}s"; }
      sleep 0.3
    done
    echo "$connect"
    ;;
  stop)
    dir=$2 id=$3
    pid=$(cat "$dir/$id/pid") || die "server $id was not started"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    ;;
  restart)
    server_start "$2" "$3"
    ;;
  stop-all)
    dir=$2
    for f in "$dir"/*/pid; do
      [ -f "$f" ] || continue
      pid=$(cat "$f"); kill -KILL "$pid" 2>/dev/null || true
    done
    for f in "$dir"/*/pid; do
      [ -f "$f" ] || continue
      pid=$(cat "$f"); while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    done
    ;;
  connect)
    cat "$2/connect"
    ;;
  *)
    die "usage: zk_ensemble.sh start DIR BASE_PORT [N] | stop DIR ID | restart DIR ID | stop-all DIR | connect DIR"
    ;;
esac
