#!/bin/bash -eu
# The campaign figures of the README's Fuzzing section, re-measured: `qga-harness fuzz`
# against the socat one-liner (60 s), the reference client (300 s), the qemu.qmp and qapi
# adapters (300 s each), and the reference client's mutants (each campaign stopped at its
# first finding, capped at MUTANT_SECONDS). Local, not CI: about 15 minutes plus the
# mutants. Each minimal scenario is then rerun 3 times with `qga-harness run`.
#
#   fuzz/campaigns.sh [OUT_DIR]       (SEED, SECONDS_SOCAT, SECONDS_OTHERS, MUTANT_SECONDS)
#
# Needs a release build (`cargo build --release`), socat, python3 with qemu.qmp, and the
# qapi adapter built (`cargo build --release --manifest-path clients/qapi-rs/Cargo.toml`).

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${1:-fuzz-campaigns}
seed=${SEED:-1}
bin=target/release/qga-harness
mkdir -p "$out"
uptime

campaign() { # NAME SECONDS [CLIENT-FLAG CLIENT] (none: the reference client)
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $seconds s, seed $seed"
    "$bin" fuzz "$@" --seed "$seed" --duration "$seconds" --out "$out/$name" \
        2>/dev/null | tee "$out/$name.summary" || true
    for finding in "$out/$name"/*.json; do
        [ -f "$finding" ] || continue
        local pass=0
        for _ in 1 2 3; do
            "$bin" run "$@" "$finding" >/dev/null 2>&1 || pass=$((pass + 1))
        done
        echo "   $(basename "$finding"): FAILs qga-harness run $pass of 3"
    done
}

campaign socat "${SECONDS_SOCAT:-60}" --client 'clients/socat/oneshot.sh {socket} {request} {timeout_s}'
campaign reference "${SECONDS_OTHERS:-300}"
campaign qemu-qmp "${SECONDS_OTHERS:-300}" --client-session 'python3 clients/qemu-qmp/session.py {socket}'
if [ -x clients/qapi-rs/target/release/qapi-session ]; then
    campaign qapi "${SECONDS_OTHERS:-300}" --client-session 'clients/qapi-rs/target/release/qapi-session {socket}'
else
    echo "== qapi: clients/qapi-rs/target/release/qapi-session is not built; skipped"
fi
echo "== mutants (time to kill, each capped at ${MUTANT_SECONDS:-300} s)"
echo "| mutant | time to kill | case | kind | reproduced |"
echo "|---|---|---|---|---|"
FUZZ_CAMPAIGN_SECONDS=${MUTANT_SECONDS:-300} cargo test --release --test fuzz_campaign \
    campaigns_kill_the_mutants -- --ignored --nocapture 2>&1 | grep '^| `' || true
uptime
