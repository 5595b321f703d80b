#!/bin/bash -eu
# Long local runs of every fuzz target, one at a time on one core under `nice -n 19`
# (`-workers=1 -jobs=1`), each from a copy of its committed seeds. Prints, per target,
# the executions, libFuzzer's exec/s (wall clock) and the executions per CPU second
# (the one-core rate, whatever else loads the machine), and fails on any crash, oracle
# failure, timeout or memory blow-up (the input is kept under $OUTDIR).
#
#   fuzz/long-runs.sh SECONDS [BIN_DIR] [TARGET...]
#
# BIN_DIR holds the built targets (default: what fuzz/smoke.sh built without sanitizer,
# fuzz/target/x86_64-unknown-linux-gnu/release; `SANITIZER=address fuzz/smoke.sh` builds
# the sanitized ones into the same place). OUTDIR (default a temporary directory) keeps
# the working corpora and logs.

seconds=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${2:-$repo/fuzz/target/x86_64-unknown-linux-gnu/release}
shift $(($# < 2 ? $# : 2))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire dispatch scenario profile fault_spec client)
out=${OUTDIR:-$(mktemp -d)}
mkdir -p "$out"

echo "| target | seconds | executions | exec/s (wall) | exec per CPU second |"
echo "|---|---|---|---|---|"
for target in "${targets[@]}"; do
    corpus="$out/$target.corpus"
    mkdir -p "$corpus" "$out/$target.run"
    cp -n "$repo/fuzz/seeds/$target/"* "$corpus/"
    started=$(date +%s.%N)
    TIMEFORMAT='%U %S'
    cpu=$( { time (cd "$out/$target.run" && nice -n 19 "$bin/$target" -workers=1 -jobs=1 \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
        -dict="$repo/fuzz/dicts/protocol.dict" -artifact_prefix="$out/$target-" \
        "$corpus" >/dev/null 2>&1); } 2>&1 ) || {
        tail -n 40 "$out/$target.run/fuzz-0.log" >&2
        echo "long run: $target FAILED (logs and input under $out)" >&2
        exit 1
    }
    wall=$(echo "$(date +%s.%N) - $started" | bc)
    log="$out/$target.run/fuzz-0.log"
    if grep -q '^==[0-9]*== ERROR\|^SUMMARY\|panicked at' "$log"; then
        tail -n 40 "$log" >&2
        echo "long run: $target FAILED (logs and input under $out)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    per_cpu=$(echo "$cpu" | awk -v r="$runs" '{ printf "%d", r / ($1 + $2) }')
    printf '| `%s` | %.0f | %s | %s | %s |\n' "$target" "$wall" "$runs" "$rate" "$per_cpu"
done
