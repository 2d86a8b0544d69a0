#!/usr/bin/env bash
# Starts what the example definitions proxy to (two local redis-servers on
# 16379 and 16380, unless something already answers there), then tcpgate on
# apidefs/examples/. Ctrl-C stops tcpgate and the redis-servers it started.
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

for port in 16379 16380; do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "redis on 127.0.0.1:$port is already running; using it"
        continue
    fi
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$rundir" --pidfile "$rundir/redis-$port.pid" --logfile "$rundir/redis-$port.log"
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    started+=("$port")
    echo "started redis-server on 127.0.0.1:$port"
done

cat <<MSG

tcpgate is starting on the example definitions in apidefs/examples/.
In another terminal, try:

  redis-cli -p 6380 ping                  # -> PONG, through tcpgate to 127.0.0.1:16379
  for i in 1 2 3 4; do redis-cli -p 6381 config get port | tail -1; done
                                          # -> 16379 16380 16379 16380: round robin

Press Ctrl-C to stop.

MSG
"$bin" --apps "$top/apidefs/examples" --log-level info &
gw=$!
trap 'kill -TERM $gw 2>/dev/null || true' INT TERM
wait $gw || true
wait $gw 2>/dev/null || true
