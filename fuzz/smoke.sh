#!/bin/bash -eu
# The fuzzing smoke test: builds every fuzz target with ClusterFuzzLite's build.sh, run
# here directly with the environment variables the ClusterFuzzLite/OSS-Fuzz builders set
# (no Docker), then runs each target for a bounded time on its committed seeds. A crash, a
# failed oracle, a timeout or a blown memory limit fails it (the input is kept in $WORK).
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET]        (default 15)
#
# Needs the nightly toolchain, cargo-fuzz and a C++ compiler (libfuzzer-sys builds
# libFuzzer). SANITIZER=none keeps the build within the CI budget (an AddressSanitizer
# build of the same targets takes tens of minutes on two cores); override with
# SANITIZER=address. FUZZ_TARGET_DIR is the shared cargo target directory (default
# fuzz/target, reused between runs). FUZZ_SEED is libFuzzer's random seed (default 1): a
# fixed seed makes a red smoke a property of the code, found again by the same command;
# exploring new inputs is the long runs' and ClusterFuzzLite's work (fuzz/long-runs.sh).

seconds=${1:-15}
seed=${FUZZ_SEED:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$repo" "$work/qga-harness"
mkdir -p "$work/out" "$work/work"

sanitizer=${SANITIZER:-none}
cxx=${CXX:-$(command -v clang++ || command -v g++)}
cc=${CC:-$(command -v clang || command -v gcc)}
# The builders' flags, as clang takes them; GCC has no -gline-tables-only (its nearest is
# -g1), and a machine may have only GCC for libFuzzer's C++.
case "$("$cxx" --version 2>/dev/null | head -n 1)" in
    *clang*) debug=-gline-tables-only ;;
    *) debug=-g1 ;;
esac
case "$sanitizer" in
    none) cflags="-O1 -fno-omit-frame-pointer $debug" ;;
    *) cflags="-O1 -fno-omit-frame-pointer $debug -fsanitize=$sanitizer" ;;
esac

start=$(date +%s)
SRC="$work" OUT="$work/out" WORK="$work/work" \
    SANITIZER="$sanitizer" FUZZING_ENGINE=libfuzzer FUZZING_LANGUAGE=rust ARCHITECTURE=x86_64 \
    CC="$cc" CXX="$cxx" CFLAGS="$cflags" CXXFLAGS="$cflags" \
    RUSTFLAGS="--cfg fuzzing -Cforce-frame-pointers" \
    CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$repo/fuzz/target}" \
    FUZZ_BUILD_FLAGS="--codegen-units 16" \
    bash .clusterfuzzlite/build.sh
built=$(date +%s)
echo "fuzz smoke: built in $((built - start)) s (SANITIZER=$sanitizer)"

for target in wire dispatch scenario profile fault_spec client; do
    test -x "$work/out/$target" || { echo "fuzz smoke: $target was not built into \$OUT" >&2; exit 1; }
    test -f "$work/out/$target.options" || { echo "fuzz smoke: no $target.options" >&2; exit 1; }
    test -f "$work/out/${target}_seed_corpus.zip" || { echo "fuzz smoke: no seed corpus for $target" >&2; exit 1; }
    mkdir -p "$work/work/$target"
    log="$work/work/$target.log"
    if ! "$work/out/$target" -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 \
        -dict="$work/out/$target.dict" -artifact_prefix="$work/work/$target-" -print_final_stats=1 \
        "$work/work/$target" "fuzz/seeds/$target" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        ls "$work/work/$target-"* >&2 2>/dev/null || true
        echo "fuzz smoke: $target FAILED" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz smoke: $target ok, $runs executions in ${seconds} s"
done
echo "fuzz smoke: done in $(($(date +%s) - start)) s"
