#!/usr/bin/env bash
# Mutation testing of the code where a bug loses data or breaks linearizability, in two
# stages (docs/simulation.md, "Mutation testing"):
#   1. cargo-mutants generates the mutants of each file (`--list --diff`); a seeded sample of
#      them is applied to the tree one at a time, against the library's unit and property
#      tests (`cargo test --lib`): unviable (does not build), caught, missed or timeout;
#   2. every mutant those tests miss is applied again and run against the simulator: the
#      cluster sweep (SIM_SEEDS seeds), and for WAL and snapshot-file mutants the one-member
#      crash test too (SIM_SINGLE_SEEDS seeds).
#
# Usage: scripts/mutants.sh MODULE|FILE...
#   MODULE is one of: raft wal lease apply read watch membership (see `module_files`).
# Environment:
#   MUTANTS_SAMPLE  mutants drawn per file (default 8; 0 = every mutant of the file)
#   MUTANTS_SEED    seed of the draw (default 1): the same seed draws the same mutants
#   MUTANTS_OUT     where results go (default target/mutants): a folder per file with the
#                   sample, each mutant's diff and logs, stage1.txt and stage2.txt (outcome,
#                   number, name); summary.tsv has a line per file and run
#   MUTANTS_STAGES  "1 2" (default), "1", or "2" (stage two of an earlier stage one)
#   MUTANTS_TEST_TIMEOUT  seconds for one run of the library tests (default 600)
#   SIM_SEEDS       cluster seeds per mutant in stage two (default 200)
#   SIM_SINGLE_SEEDS one-member seeds per WAL mutant in stage two (default 20)
#   CARGO_TARGET_DIR  the normal build's target dir (default target); the simulator builds
#                   in $CARGO_TARGET_DIR/sim
# Mutants are applied to the work tree itself, one at a time: run it in a tree of its own.
# Each mutated file is copied aside first and put back on exit, also when the run is
# interrupted. A long run is best done in slices: a module or a file at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

sample="${MUTANTS_SAMPLE:-8}"
seed="${MUTANTS_SEED:-1}"
out="${MUTANTS_OUT:-target/mutants}"
stages="${MUTANTS_STAGES:-1 2}"
test_timeout="${MUTANTS_TEST_TIMEOUT:-600}"
sim_seeds="${SIM_SEEDS:-200}"
single_seeds="${SIM_SINGLE_SEEDS:-20}"
target="${CARGO_TARGET_DIR:-target}"
export CARGO_TARGET_DIR="$target"

module_files() {
    case "$1" in
    raft) echo src/raft/core.rs src/raft/log.rs src/raft/progress.rs src/raft/quorum.rs ;;
    wal) echo src/wal/log.rs src/wal/record.rs src/wal/segment.rs src/wal/snapshot.rs ;;
    lease) echo src/lease/mod.rs src/server/tasks/lease_expiry.rs ;;
    apply) echo src/server/tasks/apply.rs src/server/tasks/apply_chain.rs ;;
    read) echo src/server/tasks/read_index.rs src/server/state/reads.rs ;;
    watch) echo src/mvcc/watch.rs ;;
    membership) echo src/raft/confchange.rs src/server/state/membership.rs ;;
    *.rs) echo "$1" ;;
    *)
        echo "unknown module $1" >&2
        exit 2
        ;;
    esac
}

[ $# -gt 0 ] || {
    sed -n '2,/^set -euo/p' "$0" | sed '$d'
    exit 2
}
files=()
for arg in "$@"; do
    for file in $(module_files "$arg"); do files+=("$file"); done
done

# Every file a mutant may touch is copied aside, and put back however the script ends.
backup="$(mktemp -d)"
for file in "${files[@]}"; do
    mkdir -p "$backup/$(dirname "$file")"
    cp "$file" "$backup/$file"
done
restore() {
    for file in "${files[@]}"; do
        cmp -s "$backup/$file" "$file" || cp "$backup/$file" "$file"
    done
    rm -rf "$backup"
}
trap restore EXIT
trap 'exit 130' INT TERM

mkdir -p "$out"
summary="$out/summary.tsv"
[ -f "$summary" ] || printf 'file\tseed\tsampled\tcaught\ttimeout\tunviable\tmissed_lib\tcaught_sim\tmissed\n' >"$summary"

# The names of the mutants of $1 drawn by the seed, one per line.
draw() {
    cargo mutants --list --line-col=true -f "$1" | awk -v seed="$seed" -v file="$1" '
        BEGIN { n = 0; for (i = 1; i <= length(file); i++) n = n * 31 + index("abcdefghijklmnopqrstuvwxyz./_", substr(file, i, 1)); srand(seed * 7919 + n % 100000) }
        { printf "%.12f\t%s\n", rand(), $0 }' | sort -k1,1 | cut -f2- |
        awk -v n="$sample" 'n == 0 || NR <= n' | sort
}

# Applies the mutant whose diff is $2 to file $1, from the pristine copy.
apply_mutant() {
    cp "$backup/$1" "$1"
    patch -s --batch "$1" <"$2"
}

stage_one() {
    local file="$1" dir="$2" name diff n=0 status
    draw "$file" >"$dir/sample.txt"
    cargo mutants --list --json --diff -f "$file" >"$dir/mutants.json"
    mkdir -p "$dir/diff"
    : >"$dir/stage1.txt"
    while IFS= read -r name; do
        n=$((n + 1))
        diff="$dir/diff/$n.diff"
        jq -r --arg name "$name" '.[] | select(.name == $name) | .diff' "$dir/mutants.json" >"$diff"
        if ! apply_mutant "$file" "$diff" >"$dir/stage1-$n.log" 2>&1; then
            status=nodiff
        elif ! nice -n 15 cargo test --lib --no-run >>"$dir/stage1-$n.log" 2>&1 </dev/null; then
            status=unviable
        else
            status=0
            # A failing property case is enough: no shrinking, and no regression file
            # written for a bug that exists only in the mutant.
            PROPTEST_MAX_SHRINK_ITERS=0 PROPTEST_DISABLE_FAILURE_PERSISTENCE=1 \
                timeout "$test_timeout" nice -n 15 cargo test --lib >>"$dir/stage1-$n.log" 2>&1 </dev/null || status=$?
            case "$status" in
            0) status=missed ;;
            124) status=timeout ;;
            *) status=caught ;;
            esac
        fi
        cp "$backup/$file" "$file"
        printf '%s\t%s\t%s\n' "$status" "$n" "$name" | tee -a "$dir/stage1.txt"
    done <"$dir/sample.txt"
}

sim_test() {
    local file="$1"
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$target/sim" SIM_SEEDS="$sim_seeds" \
        nice -n 10 cargo test --release -p oxcd-sim --test cluster sweep || return 1
    case "$file" in
    src/wal/*)
        RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$target/sim" SIM_SEEDS="$single_seeds" \
            nice -n 10 cargo test --release -p oxcd-sim --test single_member \
            acknowledged_writes_survive_crashes || return 1
        ;;
    esac
}

# Every mutant stage one missed, against the simulator.
stage_two() {
    local file="$1" dir="$2" status n name log
    : >"$dir/stage2.txt"
    [ -f "$dir/stage1.txt" ] || return 0
    while IFS=$'\t' read -r status n name; do
        [ "$status" = missed ] || continue
        log="$dir/stage2-$n.log"
        if ! apply_mutant "$file" "$dir/diff/$n.diff" >"$log" 2>&1; then
            status=nodiff
        elif sim_test "$file" >>"$log" 2>&1 </dev/null; then
            status=missed
        elif grep -q '^error: could not compile' "$log"; then
            status=unviable
        else
            status=caught
        fi
        cp "$backup/$file" "$file"
        printf '%s\t%s\t%s\n' "$status" "$n" "$name" | tee -a "$dir/stage2.txt"
    done <"$dir/stage1.txt"
}

count_of() { if [ -f "$2" ]; then grep -c "^$1" "$2" || true; else echo 0; fi; }
count() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }

for file in "${files[@]}"; do
    dir="$out/$(echo "$file" | tr / _)"
    mkdir -p "$dir"
    echo "==> $file"
    case " $stages " in *" 1 "*) stage_one "$file" "$dir" ;; esac
    case " $stages " in *" 2 "*) stage_two "$file" "$dir" ;; esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$file" "$seed" "$(count "$dir/sample.txt")" \
        "$(count_of caught "$dir/stage1.txt")" "$(count_of timeout "$dir/stage1.txt")" \
        "$(count_of unviable "$dir/stage1.txt")" "$(count_of missed "$dir/stage1.txt")" \
        "$(count_of caught "$dir/stage2.txt")" "$(count_of missed "$dir/stage2.txt")" | tee -a "$summary"
done
