//! oxcd-sim: the deterministic simulation harness.
//!
//! Everything here runs inside madsim (build with `RUSTFLAGS="--cfg madsim"` and a separate
//! target dir, `target/sim`): one thread, virtual time, a simulated network, and — through
//! oxcd's `Disk` seam — a simulated disk that loses unsynced data on a crash. The real
//! server code runs unchanged on top of it.
//!
//! A run is a function of its seed. The sweep prints each seed and the one command that
//! replays it *before* anything else happens, so that a hung or crashed run can still be
//! reproduced.

#[cfg(madsim)]
pub mod harness;

/// The seeds a sweep runs: `SIM_SEED` (default 1) and the `SIM_SEEDS - 1` seeds after it
/// (`SIM_SEEDS` defaults to 20).
pub fn seeds_from_env() -> std::ops::Range<u64> {
    let first = std::env::var("SIM_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    first..first + count
}

/// The command that replays one seed of a simulation test.
pub fn reproduce_command(test: &str, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} SIM_SEEDS=1 RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim \
         cargo test --release -p oxcd-sim --test {test} -- --nocapture"
    )
}
