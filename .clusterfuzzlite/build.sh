#!/bin/bash -eu
# Builds every fuzz target into $OUT with its seed corpus and dictionary, the way the
# ClusterFuzzLite and OSS-Fuzz builders call it: $SRC holds the checkout (as
# $SRC/qga-harness), and the builder sets $OUT, $WORK, SANITIZER, FUZZING_ENGINE,
# CFLAGS, CXXFLAGS and RUSTFLAGS. CI runs this script itself with the same variables.

cd "$SRC/qga-harness/fuzz"

# The builder image's default toolchain is nightly; elsewhere ask rustup for it.
if cargo --version | grep -q nightly; then
    cargo=(cargo)
else
    cargo=(cargo +nightly)
fi

# cargo-fuzz knows address, leak, memory and thread; the coverage and undefined builds
# use libFuzzer's instrumentation alone (the builder's RUSTFLAGS add what they need).
case "${SANITIZER:-address}" in
    address | memory | thread | leak) sanitizer="$SANITIZER" ;;
    *) sanitizer=none ;;
esac

# One invocation builds every target (the dependencies are compiled once). Outside the
# builders, FUZZ_BUILD_FLAGS adds cargo-fuzz flags (the CI smoke asks for more codegen
# units: a faster build of slightly slower binaries) and CARGO_TARGET_DIR shares a target
# directory between runs.
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
# --no-trace-compares: comparisons are traced in qga-harness only (fuzz/Cargo.toml says why).
# shellcheck disable=SC2086 # FUZZ_BUILD_FLAGS is a list of flags
"${cargo[@]}" fuzz build -O --debug-assertions --no-trace-compares --sanitizer "$sanitizer" \
    --target-dir "$target_dir" ${FUZZ_BUILD_FLAGS:-}

targets=$("${cargo[@]}" fuzz list)
triple=$(rustc -vV | sed -n 's/^host: //p')
for target in $targets; do
    cp "$target_dir/$triple/release/$target" "$OUT/"
    if [ -d "seeds/$target" ]; then
        (cd "seeds/$target" && zip -q -j "$OUT/${target}_seed_corpus.zip" ./*)
    fi
    cp dicts/protocol.dict "$OUT/$target.dict"
    # Bounded memory is one of the oracles: a reply or file that grows past this fails.
    printf '[libfuzzer]\nrss_limit_mb = 2560\nmax_len = 65536\ndict = %s.dict\n' "$target" \
        > "$OUT/$target.options"
done
