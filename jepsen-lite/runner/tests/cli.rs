//! The command line refuses what it cannot run, before it starts anything, and says why.
//! (Runs against real clusters are the CI step of `scripts/test-all.sh`; building this
//! test is also what builds the `jepsen-runner` binary that step runs.)

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-runner"))
        .args(args)
        .output()
        .expect("running jepsen-runner");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A file that exists: the test binary itself stands in for a server that is never
/// started.
fn some_file() -> String {
    std::env::current_exe()
        .expect("the test's own path")
        .display()
        .to_string()
}

#[test]
fn a_missing_server_binary_is_refused() {
    let (ok, text) = run(&["--server-bin", "/nonexistent/oxcd", "--seed", "3"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("--server-bin /nonexistent/oxcd: no such file"),
        "{text}"
    );
    // The repeat command comes with the failure.
    assert!(text.contains("--seed 3"), "{text}");
}

#[test]
fn an_unknown_nemesis_is_refused() {
    let (ok, text) = run(&["--server-bin", &some_file(), "--nemesis", "kill,flood"]);
    assert!(!ok, "{text}");
    assert!(text.contains("unknown nemesis \"flood\""), "{text}");
}

#[test]
fn too_few_keys_and_a_bad_network_are_refused() {
    let (ok, text) = run(&["--server-bin", &some_file(), "--keys", "2"]);
    assert!(!ok, "{text}");
    assert!(text.contains("--keys must be at least 3"), "{text}");
    let (ok, text) = run(&["--server-bin", &some_file(), "--network", "wifi"]);
    assert!(!ok, "{text}");
    assert!(text.contains("--network wifi"), "{text}");
}

#[test]
fn a_duration_needs_a_known_unit() {
    let (ok, text) = run(&["--server-bin", &some_file(), "--duration", "2h"]);
    assert!(!ok, "{text}");
    assert!(text.contains("not a duration"), "{text}");
}
