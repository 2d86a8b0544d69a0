#!/usr/bin/env bash
# Installs what tcpgate needs to build, test and run its examples, using only
# Debian's packages. As root it runs apt-get; otherwise it prints the command.
# "deps.sh bench" also covers what only the benchmarks need (make bench).
set -euo pipefail

packages=(
    # build
    cmake make gcc pkg-config clang-format
    # the fuzz targets (make fuzz): clang, and compiler-rt for libFuzzer and the
    # sanitizers, which clang only recommends
    clang libclang-rt-dev
    libssl-dev libevent-dev libjansson-dev libhiredis-dev libcmocka-dev
    # peers for the tests, the examples and the benchmarks
    python3 openssl redis-server redis-sentinel redis-tools haproxy nginx libnginx-mod-stream
    iperf3 procps
    # the status page's test renders the page in a headless browser
    chromium
)
if [[ "${1:-}" == bench ]]; then
    packages+=(gnuplot-nox) # the chart of tests/bench/bench.py
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
# python3 may come from elsewhere than Debian (pyenv, /usr/local); that is fine.
if command -v python3 >/dev/null 2>&1; then
    missing=("${missing[@]/python3/}")
fi
read -r -a missing <<<"${missing[*]:-}"

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "tcpgate needs these Debian packages: ${missing[*]}" >&2
    echo "run as root:  apt-get update && $cmd" >&2
    exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$cmd -qq
