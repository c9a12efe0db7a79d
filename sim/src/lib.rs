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
pub mod cluster;
#[cfg(madsim)]
pub mod harness;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod observer;
#[cfg(madsim)]
pub mod workload;

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

/// The seeds listed in `sim/regressions.txt` (one per line; `#` starts a comment).
pub fn regression_seeds() -> Vec<u64> {
    include_str!("../regressions.txt")
        .lines()
        .filter_map(|line| line.split('#').next())
        .filter_map(|seed| seed.trim().parse().ok())
        .collect()
}

/// How many seeds of a sweep the determinism tests run twice (`SIM_DETERMINISM_SEEDS`,
/// default 5).
pub fn determinism_sample() -> usize {
    std::env::var("SIM_DETERMINISM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5)
}

/// Writes a failed run's history where `jepsen-lite check` (and its HTML report) can read
/// it: `$SIM_HISTORY_DIR` or `target/sim-histories`. Returns a line saying where.
pub fn save_history(seed: u64, history: &jepsen_lite::History) -> String {
    let dir = std::env::var("SIM_HISTORY_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/sim-histories").to_string()
    });
    let path = std::path::Path::new(&dir).join(format!("seed-{seed}.jsonl"));
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, history.to_jsonl()));
    match written {
        Ok(()) => format!(
            "history: {} (cargo run -p jepsen-lite -- check {} --report report.html)",
            path.display(),
            path.display()
        ),
        Err(error) => format!("history not saved to {}: {error}", path.display()),
    }
}
