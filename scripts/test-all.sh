#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
#   1. unit, property and integration tests (real sockets, real etcdctl, a real etcd; the
#      differential test sends DIFF_SEEDS (default 5) seeds of DIFF_STEPS (default 700)
#      random requests to oxcd and to etcd 3.4 and requires identical answers);
#   2. the checker's self-tests and its verdicts on the known-good and known-bad histories,
#      then real processes under faults: jepsen-runner drives a 3-member cluster of the
#      debug oxcd for 40 s through kill -9 (of a member and of the leader), SIGSTOP pauses,
#      network partitions (in network namespaces, when root) and a whole-cluster crash, and
#      fails on any anomaly (checker verdict, HashKV disagreement, no service after the
#      heal, a vacuous run); its results stay in target/jepsen-runner/ci;
#   3. a bounded sweep of the deterministic simulation (madsim) in its own target dir:
#      the one-member crash test and the multi-member fault runs (every seed checked by
#      the Raft observer, jepsen-lite, durability, HashKV and liveness checks), the seeds of
#      sim/regressions.txt, and a sample of seeds run twice for determinism; then auth
#      under faults: permission changes must be as linearizable as the data;
#   4. the planted bugs, each of which the simulation must catch within a bounded number
#      of seeds;
#   5. a short run of every fuzz target (scripts/fuzz.sh).
# Environment: SIM_SEEDS (default 2000) seeds of the cluster sweep, SIM_SINGLE_SEEDS
# (default 120) of the one-member crash test, SIM_AUTH_SEEDS (default 50) of the auth
# scenario, SIM_THREADS (default: the cores) worlds side by side; SKIP_SIM=1 skips steps
# 3 and 4; FUZZ_SECONDS (default 10) per fuzz target, two at a time, built at
# FUZZ_OPT_LEVEL (default 0: a smoke run; real fuzzing is scripts/fuzz.sh's level 1),
# SKIP_FUZZ=1 skips step 5;
# SKIP_REAL_FAULTS=1 skips the real-process run of step 2, REAL_FAULTS_SEED (default 1)
# picks its fault schedule.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
    local missing=()
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    # tests/patroni.rs: a Patroni pair of PostgreSQL servers on oxcd.
    command -v patroni >/dev/null 2>&1 || missing+=(patroni postgresql)
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing ${missing[*]} (the integration tests drive a real etcdctl, etcd and Patroni)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
    fi
}

install_debian_packages

step "unit, property and integration tests"
cargo test --workspace --locked

step "checker on the recorded histories"
cargo run -q --locked -p jepsen-lite -- selftest jepsen-lite/testdata

if [ "${SKIP_REAL_FAULTS:-0}" != "1" ]; then
    step "real processes under faults: 3 oxcd members for 40 s (jepsen-runner, seed ${REAL_FAULTS_SEED:-1})"
    # Both binaries come from `cargo test --workspace` above (jepsen-runner's command-line
    # tests build it with the workspace's features; `cargo run -p jepsen-runner` would
    # resolve other features and compile oxcd again, a minute or more on two cores).
    target="${CARGO_TARGET_DIR:-target}"
    "$target/debug/jepsen-runner" --server-bin "$target/debug/oxcd" --duration 40s \
        --nemesis all --seed "${REAL_FAULTS_SEED:-1}" --out "$target/jepsen-runner/ci"
fi

if [ "${SKIP_SIM:-0}" != "1" ]; then
    # One simulation build serves every step: the planted bugs are compiled in (each stays
    # inactive until the detection test chooses it at run time), so the detection step
    # does not rebuild oxcd. A simulation build never serves data.
    sim_features=(--features planted-bugs)
    step "deterministic simulation: one member losing power (${SIM_SINGLE_SEEDS:-120} seeds)"
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim SIM_SEEDS="${SIM_SINGLE_SEEDS:-120}" \
        cargo test --locked -p oxcd-sim --release "${sim_features[@]}" --test single_member

    step "deterministic simulation: cluster sweep (${SIM_SEEDS:-2000} seeds), regressions, determinism"
    rm -f target/sim-sweep-summary.txt
    # The sweep simulates as many worlds side by side as there are cores (SIM_THREADS).
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim SIM_SEEDS="${SIM_SEEDS:-2000}" \
        cargo test --locked -p oxcd-sim --release "${sim_features[@]}" --test cluster
    cat target/sim-sweep-summary.txt

    step "deterministic simulation: authorization under faults (${SIM_AUTH_SEEDS:-50} seeds)"
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim SIM_AUTH_SEEDS="${SIM_AUTH_SEEDS:-50}" \
        cargo test --locked -p oxcd-sim --release "${sim_features[@]}" --test auth

    step "planted bugs: each must be caught (cluster simulation, Raft property test)"
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim \
        cargo test --locked -p oxcd-sim --release "${sim_features[@]}" --test planted \
        -- --nocapture 2>&1 | grep -E '^planted bug|test result|panicked|not caught'
    cargo test --locked --lib --features planted-bugs planted_raft_bugs_are_caught \
        -- --nocapture 2>&1 | grep -E '^planted bug|test result|panicked|not caught'
fi

if [ "${SKIP_FUZZ:-0}" != "1" ]; then
    step "fuzzing: every target for ${FUZZ_SECONDS:-10} s (a smoke run, opt-level ${FUZZ_OPT_LEVEL:-0})"
    FUZZ_SECONDS="${FUZZ_SECONDS:-10}" FUZZ_OPT_LEVEL="${FUZZ_OPT_LEVEL:-0}" bash scripts/fuzz.sh
fi
step "all tests passed"
