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
pub mod auth;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod harness;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod observer;
#[cfg(madsim)]
pub mod points;
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

/// How many seeds a sweep simulates side by side (`SIM_THREADS`, default: the machine's
/// cores). Each world runs on a thread of its own and shares nothing with the others, so
/// a seed plays out the same whatever runs beside it.
pub fn sweep_threads() -> usize {
    std::env::var("SIM_THREADS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Runs `each` on every seed of `seeds`, `threads` at a time, and returns what it gave, in
/// seed order. A panic (a failed seed) stops the others from starting new seeds and is
/// passed on.
pub fn for_each_seed<T: Send>(
    seeds: std::ops::Range<u64>,
    threads: usize,
    each: impl Fn(u64) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    let next = AtomicU64::new(seeds.start);
    let failed = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= seeds.end {
                    return;
                }
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(seed))) {
                    Ok(result) => results.lock().unwrap().push((seed, result)),
                    Err(panic) => {
                        failed.store(true, Ordering::SeqCst);
                        std::panic::resume_unwind(panic);
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The command that replays one seed of a simulation test.
pub fn reproduce_command(test: &str, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} SIM_SEEDS=1 RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim \
         cargo test --release -p oxcd-sim --test {test} -- --nocapture"
    )
}

/// The seeds listed in `sim/known-failures.txt`: failing today, skipped by the sweep.
pub fn known_failures() -> Vec<u64> {
    include_str!("../known-failures.txt")
        .lines()
        .filter_map(|line| line.split('#').next())
        .filter_map(|seed| seed.trim().parse().ok())
        .collect()
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

/// What a sweep of cluster runs did in all, for its report.
#[cfg(madsim)]
#[derive(Default)]
pub struct SweepTotals {
    seeds: u64,
    faults: std::collections::BTreeMap<&'static str, u64>,
    operations: u64,
    unknown: u64,
    watch_events: u64,
    past_reads: u64,
    compacted_reads: u64,
    compactions: u64,
    burst_reads: u64,
    progress_notifications: u64,
    elections: u64,
    snapshots_installed: u64,
    member_starts: u64,
    /// Point → (crashes armed there, crashes that fired).
    points: std::collections::BTreeMap<String, (u64, u64)>,
    delayed: std::collections::BTreeMap<String, u64>,
}

#[cfg(madsim)]
impl SweepTotals {
    pub fn add(&mut self, outcome: &cluster::RunOutcome) {
        self.seeds += 1;
        for (fault, count) in &outcome.injected {
            *self.faults.entry(fault.name()).or_default() += count;
        }
        self.operations += outcome.counts.ok + outcome.counts.failed;
        self.unknown += outcome.counts.unknown;
        self.watch_events += outcome.counts.watch_events;
        self.past_reads += outcome.counts.past_reads + outcome.counts.compacted_reads;
        self.compacted_reads += outcome.counts.compacted_reads;
        self.compactions += outcome.counts.compactions;
        self.burst_reads += outcome.counts.burst_reads;
        self.progress_notifications += outcome.counts.progress_notifications;
        self.elections += outcome.observed.elections as u64;
        self.snapshots_installed += outcome.observed.snapshots_installed;
        self.member_starts += outcome.observed.member_starts;
        for (point, armed) in &outcome.points_armed {
            let fired = outcome.points_fired.get(point).copied().unwrap_or(0);
            let total = self.points.entry(format!("{point:?}")).or_default();
            total.0 += armed;
            total.1 += fired;
        }
        for (point, count) in &outcome.delayed {
            *self.delayed.entry(format!("{point:?}")).or_default() += count;
        }
    }

    /// Prints the totals and writes them to `target/sim-sweep-summary.txt` (the test
    /// script shows that file, since a passing test's output is captured).
    pub fn report(&self, elapsed: std::time::Duration) {
        let minutes = elapsed.as_secs_f64() / 60.0;
        let mut text = format!(
            "cluster sweep: {} seeds in {:.1} s ({:.0} seeds/min); {} operations with a known \
             outcome, {} unknown, {} watch events, {} past-revision reads ({} compacted), {} \
             compactions, {} linearizable reads in bursts around leader changes, {} watch \
             progress notifications, {} elections, {} snapshots installed, {} member \
             starts\nfaults injected:",
            self.seeds,
            elapsed.as_secs_f64(),
            self.seeds as f64 / minutes.max(1e-9),
            self.operations,
            self.unknown,
            self.watch_events,
            self.past_reads,
            self.compacted_reads,
            self.compactions,
            self.burst_reads,
            self.progress_notifications,
            self.elections,
            self.snapshots_installed,
            self.member_starts
        );
        for (fault, count) in &self.faults {
            text.push_str(&format!(" {fault}={count}"));
        }
        text.push_str("\ncrashes at points (fired/armed):");
        for (point, (armed, fired)) in &self.points {
            text.push_str(&format!(" {point}={fired}/{armed}"));
        }
        text.push_str("\npasses delayed at points:");
        for (point, count) in &self.delayed {
            text.push_str(&format!(" {point}={count}"));
        }
        text.push('\n');
        println!("{text}");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/sim-sweep-summary.txt"
        );
        if let Err(error) = std::fs::write(path, &text) {
            println!("cannot write {path}: {error}");
        }
    }
}
