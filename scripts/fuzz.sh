#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz with libFuzzer's coverage instrumentation on the
# stable toolchain and runs each for a bounded time.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 20) each, FUZZ_JOBS
#                                   (default: the cores) at a time
#   scripts/fuzz.sh gateway_body    one target
#   FUZZ_SECONDS=3600 scripts/fuzz.sh wal_segments     a longer local run
#   FUZZ_OPT_LEVEL=0 scripts/fuzz.sh        a quicker build, a slower run (smoke runs)
#
# Inputs a run finds interesting go to target/fuzz-corpus/<target> (copy the good ones into
# tests/fuzz/corpus/<target> to keep them); a crash leaves its input in
# target/fuzz-artifacts/<target>/ and the script prints how to replay it. A crash fixed
# becomes a regression case by moving its input into the committed corpus, which
# `cargo test --test fuzz_corpora` replays.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
all=(peer_batch client_connection gateway_body auth_token wal_segments snapshot_file bolt_file etcd_snapshot v2_requests raft_step client_requests)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# The instrumentation cargo-fuzz asks rustc for, without its sanitizer (which needs a
# nightly compiler): edge counters, the PC table, and comparison tracing.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# With an explicit --target, RUSTFLAGS reach the targets' code but not build scripts and
# proc macros, which run in the build and have no libFuzzer to link.
host="$(rustc -vV | sed -n 's/^host: //p')"
# FUZZ_OPT_LEVEL=0 builds in half the time and runs an order of magnitude slower: what a
# short smoke run (the test command's) wants; a real run wants the profile's level 1.
target_dir="target/fuzz${FUZZ_OPT_LEVEL:+-o$FUZZ_OPT_LEVEL}"
if [ -n "${FUZZ_OPT_LEVEL:-}" ]; then
    export CARGO_PROFILE_RELEASE_OPT_LEVEL="$FUZZ_OPT_LEVEL"
fi
cargo build --locked --release --manifest-path tests/fuzz/Cargo.toml --target-dir "$target_dir" \
    --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
bin_dir="$target_dir/$host/release"

# Runs one target for the time given, its output in target/fuzz-artifacts/<target>.log;
# the exit status says whether it crashed.
run_target() {
    local target=$1
    local found="target/fuzz-corpus/$target"
    local artifacts="target/fuzz-artifacts/$target/"
    mkdir -p "$found" "$artifacts"
    # New inputs go to the first directory; the committed corpus is read, never written.
    "$bin_dir/$target" "$found" "tests/fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts" -print_final_stats=1 \
        >"target/fuzz-artifacts/$target.log" 2>&1
}

# FUZZ_JOBS targets at a time (default: the cores); each fuzzer is one process.
jobs="${FUZZ_JOBS:-$(nproc)}"
failed=()
for ((first = 0; first < ${#targets[@]}; first += jobs)); do
    batch=("${targets[@]:first:jobs}")
    printf '\n==> fuzzing %s for %ss\n' "${batch[*]}" "$seconds"
    pids=()
    for target in "${batch[@]}"; do
        run_target "$target" &
        pids+=($!)
    done
    for at in "${!batch[@]}"; do
        target=${batch[$at]}
        status=0
        wait "${pids[$at]}" || status=$?
        log="target/fuzz-artifacts/$target.log"
        echo "--- $target"
        grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus|SUMMARY|==[0-9]+== ERROR)|panicked at' "$log" || true
        if [ "$status" -ne 0 ]; then
            failed+=("$target")
            tail -40 "$log"
            for crash in "target/fuzz-artifacts/$target/"*; do
                [ -e "$crash" ] && echo "crash: $crash; replay with: $bin_dir/$target $crash"
            done
        fi
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]}"
    exit 1
fi
echo "no target crashed"
