#!/usr/bin/env bash
# A quick side-by-side of tcpgate and HAProxy (tcp mode) on this machine, in the
# same run, against the same backends: redis-benchmark PING with 50 clients and
# iperf3 bulk throughput, plus the direct figures as the physical reference.
# Each figure is the median of ROUNDS runs; runs are interleaved. Not a test.
#
#   tests/bench/quick-compare.sh [path/to/tcpgate]
set -euo pipefail
bin=${1:-build/tcpgate}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
IPERF_SECONDS=${IPERF_SECONDS:-5}
WORKERS=${WORKERS:-$(nproc)}

for cmd in redis-server redis-benchmark haproxy iperf3; do
    command -v $cmd >/dev/null || { echo "missing $cmd: run 'make deps'" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2; for f in "$work"/*.log; do echo "== $f"; tail -n 5 "$f"; done >&2
    return 1
}

REDIS=$(free_port); IPERF=$(free_port)
GW_REDIS=$(free_port); GW_IPERF=$(free_port)
HA_REDIS=$(free_port); HA_IPERF=$(free_port)

redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --logfile "$work/redis.log" & pids+=($!)
iperf3 -s -p "$IPERF" -B 127.0.0.1 >/dev/null 2>&1 & pids+=($!)

mkdir "$work/apps"
cat >"$work/apps/redis.json" <<JSON
{"api_id":"redis","listen_port":$GW_REDIS,"protocol":"tcp","proxy":{"target_url":"127.0.0.1:$REDIS"}}
JSON
cat >"$work/apps/iperf.json" <<JSON
{"api_id":"iperf","listen_port":$GW_IPERF,"protocol":"tcp","proxy":{"target_url":"127.0.0.1:$IPERF"}}
JSON
cat >"$work/gw.json" <<JSON
{"listen_address":"127.0.0.1","control_api_port":0}
JSON
"$bin" --config "$work/gw.json" --apps "$work/apps" --workers "$WORKERS" --log-level warn \
    2>"$work/tcpgate.log" & pids+=($!)

cat >"$work/haproxy.cfg" <<CFG
global
    nbthread $WORKERS
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen redis
    bind 127.0.0.1:$HA_REDIS
    server r1 127.0.0.1:$REDIS
listen iperf
    bind 127.0.0.1:$HA_IPERF
    server i1 127.0.0.1:$IPERF
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & pids+=($!)

for p in $REDIS $IPERF $GW_REDIS $GW_IPERF $HA_REDIS $HA_IPERF; do wait_port "$p"; done

rps() { # port -> requests per second
    redis-benchmark -p "$1" -c 50 -n "$REQUESTS" -t ping_mbulk -q 2>/dev/null |
        tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -1
}
gbps() { # port -> Gbit/s (receiver)
    iperf3 -c 127.0.0.1 -p "$1" -t "$IPERF_SECONDS" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }

declare -A R G
for round in $(seq "$ROUNDS"); do
    for who in direct tcpgate haproxy; do
        case $who in
            direct) rp=$REDIS; ip=$IPERF ;;
            tcpgate) rp=$GW_REDIS; ip=$GW_IPERF ;;
            haproxy) rp=$HA_REDIS; ip=$HA_IPERF ;;
        esac
        R[$who]+="$(rps "$rp") "
        G[$who]+="$(gbps "$ip") "
    done
    echo "round $round of $ROUNDS done" >&2
done

echo "machine: $(nproc) cores, $(uname -sr); $(haproxy -v | head -1 | cut -d' ' -f1-3); tcpgate $("$bin" --version | cut -d' ' -f2); workers=$WORKERS"
printf '%-10s %16s %18s %12s %14s\n' "" "PING req/s" "(spread)" "iperf3 Gb/s" "(spread)"
for who in direct tcpgate haproxy; do
    r=$(tr ' ' '\n' <<<"${R[$who]}" | grep . | median)
    g=$(tr ' ' '\n' <<<"${G[$who]}" | grep . | median)
    printf '%-10s %16s %18s %12s %14s\n' "$who" "$r" "$(tr ' ' '\n' <<<"${R[$who]}" | grep . | spread)" \
        "$g" "$(tr ' ' '\n' <<<"${G[$who]}" | grep . | spread)"
done
rt=$(tr ' ' '\n' <<<"${R[tcpgate]}" | grep . | median); rh=$(tr ' ' '\n' <<<"${R[haproxy]}" | grep . | median)
gt=$(tr ' ' '\n' <<<"${G[tcpgate]}" | grep . | median); gh=$(tr ' ' '\n' <<<"${G[haproxy]}" | grep . | median)
echo "ratio tcpgate/haproxy: PING $(python3 -c "print('%.2f' % ($rt/$rh))")x, iperf3 $(python3 -c "print('%.2f' % ($gt/$gh))")x"
