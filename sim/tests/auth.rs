//! Authorization under faults (`oxcd_sim::auth`): permission changes must be as
//! linearizable as the data. `SIM_AUTH_SEEDS` (default 20) seeds from `SIM_SEED`.

#![cfg(madsim)]

use oxcd_sim::auth;
use oxcd_sim::harness::run_seed;

#[test]
fn permission_changes_are_linearizable_under_faults() {
    let first = std::env::var("SIM_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1u64);
    let count: u64 = std::env::var("SIM_AUTH_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    let outcomes =
        oxcd_sim::for_each_seed(first..first + count, oxcd_sim::sweep_threads(), |seed| {
            run_seed("auth", seed, auth::run)
        });
    let mut failures = Vec::new();
    for outcome in outcomes {
        println!("{}", outcome.summary);
        if !outcome.violations.is_empty() {
            failures.push(format!(
                "{}\n{}\nreproduce with: SIM_AUTH_SEEDS=1 {}",
                outcome.summary,
                outcome.violations.join("\n"),
                oxcd_sim::reproduce_command("auth", outcome.seed)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
