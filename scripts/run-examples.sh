#!/usr/bin/env bash
# Starts what the example definitions proxy to, unless something already
# answers there: a redis-server on 16379 (the master), one on 16380 (its
# replica), and a redis-sentinel on 26379 watching them as "mymaster". Then
# tcpgate on apidefs/examples/. Ctrl-C stops tcpgate and what this started.
set -euo pipefail
bin=${1:-build/tcpgate}
top=$(cd "$(dirname "$0")/.." && pwd)
rundir="$top/.run"
mkdir -p "$rundir"

started=()
cleanup() {
    for port in "${started[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

wait_ping() {
    for _ in $(seq 50); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "nothing answers on 127.0.0.1:$1" >&2
    return 1
}

for port in 16379 16380; do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "redis on 127.0.0.1:$port is already running; using it"
        continue
    fi
    replica=()
    [[ "$port" == 16380 ]] && replica=(--replicaof 127.0.0.1 16379)
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --repl-diskless-sync-delay 0 --dir "$rundir" --pidfile "$rundir/redis-$port.pid" \
        --logfile "$rundir/redis-$port.log" \
        "${replica[@]}"
    wait_ping "$port"
    started+=("$port")
    echo "started redis-server on 127.0.0.1:$port${replica:+ (a replica of 16379)}"
done

if redis-cli -p 26379 ping >/dev/null 2>&1; then
    echo "a sentinel on 127.0.0.1:26379 is already running; using it"
else
    # Written afresh each time: sentinel rewrites its file as it learns.
    cat >"$rundir/sentinel-26379.conf" <<CONF
port 26379
bind 127.0.0.1
daemonize yes
dir $rundir
pidfile $rundir/sentinel-26379.pid
logfile $rundir/sentinel-26379.log
sentinel monitor mymaster 127.0.0.1 16379 1
sentinel down-after-milliseconds mymaster 2000
sentinel failover-timeout mymaster 10000
CONF
    redis-sentinel "$rundir/sentinel-26379.conf"
    wait_ping 26379
    started+=(26379)
    echo "started redis-sentinel on 127.0.0.1:26379, watching mymaster"
fi

cat <<MSG

tcpgate is starting on the example definitions in apidefs/examples/.
In another terminal, try:

  redis-cli -p 6380 ping                  # -> PONG, through tcpgate to 127.0.0.1:16379
  for i in 1 2 3 4; do redis-cli -p 6381 config get port | tail -1; done
                                          # -> 16379 16380 16379 16380: round robin
  redis-cli -p 6382 set greeting hello    # -> OK, on the master the sentinel names
  redis-cli -p 6383 get greeting          # -> "hello", read from the replica
  redis-cli -p 26379 sentinel failover mymaster
  redis-cli -p 6382 config get port       # -> 16380: tcpgate followed the switch
  curl -s 127.0.0.1:9696/tyk/health       # what the checks and the sentinel say

Press Ctrl-C to stop.

MSG
"$bin" --apps "$top/apidefs/examples" --log-level info &
gw=$!
trap 'kill -TERM $gw 2>/dev/null || true' INT TERM
wait $gw || true
wait $gw 2>/dev/null || true
