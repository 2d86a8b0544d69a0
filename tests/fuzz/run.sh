#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz one after the other.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]          SECONDS per target
#   tests/fuzz/run.sh BUILD_DIR --total SECONDS [TARGET...]  SECONDS shared by all
#
# TARGET is a name under tests/fuzz/corpus/ (proxyproto, clienthello, ...);
# without one, every target runs. Each works on a copy of its corpus in a
# scratch folder, so the checked-in seeds stay as they are. On a crash, leak,
# timeout or violated invariant, the scratch folder is kept with the input
# (crash-*, leak-*, timeout-*) and the log; the run goes on with the next
# target and exits 1 at the end. FUZZ_KEEP=1 keeps every scratch folder, for
# instance to look at the corpus a long run grew. A table of executions per
# target ends the run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD_DIR SECONDS|--total SECONDS [TARGET...]}
shift
total=""
if [[ "${1:-}" == --total ]]; then
    total=${2:?--total needs a number of seconds}
    shift 2
else
    seconds=${1:?usage: run.sh BUILD_DIR SECONDS|--total SECONDS [TARGET...]}
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    for d in "$here"/corpus/*/; do
        targets+=("$(basename "$d")")
    done
fi
if [[ -n "$total" ]]; then
    # libFuzzer checks max_total_time about once a second and then reports:
    # count a second more per target.
    seconds=$(((total - ${#targets[@]}) / ${#targets[@]}))
    ((seconds >= 1)) || seconds=1
fi

rows=()
failed=0
for t in "${targets[@]}"; do
    bin="$build/fuzz/fuzz_$t"
    if [[ ! -x "$bin" ]]; then
        echo "fuzz: $bin is missing: build with 'make build-fuzz'" >&2
        exit 1
    fi
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/tcpgate-fuzz-$t.XXXXXX")
    mkdir "$scratch/corpus"
    cp "$here/corpus/$t"/* "$scratch/corpus/"
    # -timeout: one input taking 30 s is a hang; -rss_limit_mb: libFuzzer's
    # default, spelled out since the machine may be shared.
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048
          -artifact_prefix="$scratch/")
    if [[ -f "$here/dict/$t.dict" ]]; then
        args+=(-dict="$here/dict/$t.dict")
    fi
    echo "fuzz: $t for ${seconds}s (scratch: $scratch)" >&2
    start=$(date +%s%N)
    rc=0
    # timeout: libFuzzer stops itself after max_total_time, but a leak check
    # over a heap that blew past the RSS limit can take far longer than that.
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout --kill-after=10 $((seconds + 120)) \
        "$bin" "${args[@]}" "$scratch/corpus" >"$scratch/log" 2>&1 || rc=$?
    took_ms=$((($(date +%s%N) - start) / 1000000))
    took=$(printf '%d.%d' $((took_ms / 1000)) $((took_ms % 1000 / 100)))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/log" | tail -1)
    execs=${execs:-?}
    size=$(find "$scratch/corpus" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        result=ok
        [[ "${FUZZ_KEEP:-0}" == 1 ]] || rm -rf "$scratch"
    else
        failed=1
        artifact=$(find "$scratch" -maxdepth 1 -type f \
            \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \
            -o -name 'slow-unit-*' \) | head -1)
        result="FAILED (exit $rc): ${artifact:-see $scratch/log}"
        echo "fuzz: $t failed; the end of its log:" >&2
        tail -40 "$scratch/log" >&2
    fi
    rate="?"
    if [[ "$execs" =~ ^[0-9]+$ ]] && ((took_ms > 0)); then
        rate=$((execs * 1000 / took_ms))
    fi
    rows+=("$(printf '%-16s %7ss %12s %9s %7s  %s' "$t" "$took" "$execs" "$rate" "$size" "$result")")
done

printf '\n%-16s %8s %12s %9s %7s  %s\n' target time executions 'execs/s' corpus result
for r in "${rows[@]}"; do
    echo "$r"
done
exit $failed
