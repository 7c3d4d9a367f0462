#!/usr/bin/env bash
# Runs Herald's fuzz targets one after another for a given time each and prints the
# executions per target. Not part of e2e/run-tests.sh.
#
#   fuzz/run.sh [seconds-per-target] [targets...]   (default: 1800 s, all targets)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Each run grows fuzz/corpus/<target>/; crashes land in fuzz/artifacts/<target>/.
# FUZZ_JOBS=N runs N targets at once; FUZZ_NICE (default 19) is their nice level.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${1:-1800}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(client_frame publish_body token wire_decode)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
jobs="${FUZZ_JOBS:-1}"
logs="$here/logs"
mkdir -p "$logs"

for target in "${targets[@]}"; do
    cargo +nightly fuzz build -O "$target"
done
bin="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

run() {
    local target="$1" started
    started=$(date +%s)
    mkdir -p "corpus/$target"
    mkdir -p "artifacts/$target"
    # The binaries cargo-fuzz built, run directly: one cargo at a time, however many jobs.
    # -timeout: one input taking longer is a finding; -rss_limit_mb: so is a blow-up.
    nice -n "${FUZZ_NICE:-19}" "$bin/$target" "corpus/$target" \
        -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$logs/$target.log" 2>&1 || echo "$target: exited with $? (see $logs/$target.log)"
    echo "$target: $(( $(date +%s) - started )) s wall"
}

running=0
for target in "${targets[@]}"; do
    run "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

printf '\n%-14s %14s %8s %8s %8s\n' target executions cov ft corpus
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    # A run that was cut short has no final stats: print what there is.
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    printf '%-14s %14s %8s %8s %8s\n' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
        "$(find "corpus/$target" -type f | wc -l)"
    if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/timeout-* >/dev/null 2>&1; then
        echo "  findings: $(ls "artifacts/$target" | tr '\n' ' ')"
    fi
done
