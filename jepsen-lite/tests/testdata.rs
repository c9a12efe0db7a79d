//! The hand-written histories in `testdata/`: every good one passes, every
//! bad one is rejected naming what its `# expect:` line says. Also the CLI's
//! exit codes and the HTML report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jepsen_lite::{check, report, CheckOptions, Expectation, Guarantee, History, Outcome, Verdict};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn load(name: &str) -> History {
    let text = std::fs::read_to_string(testdata().join(name)).unwrap();
    History::parse(&text).unwrap()
}

fn options() -> CheckOptions {
    CheckOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CheckOptions::default()
    }
}

fn files(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

#[test]
fn good_histories_pass() {
    let names = files("good-");
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let result = check(&load(&name), &options()).unwrap();
        assert_eq!(result.outcome(), Outcome::Ok, "{name}: {result}");
    }
}

#[test]
fn bad_histories_are_rejected_as_expected() {
    let names = files("bad-");
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let history = load(&name);
        let expectation = Expectation::from_history(&history).unwrap();
        assert_ne!(
            expectation,
            Expectation::default(),
            "{name} has no expectation"
        );
        let result = check(&history, &options()).unwrap();
        assert_eq!(result.outcome(), Outcome::Violation, "{name}: {result}");
        expectation
            .check(&result)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn violation(name: &str) -> (usize, Vec<usize>, i64) {
    match check(&load(name), &options()).unwrap().linearizability {
        Verdict::Violation {
            op,
            longest_prefix,
            model_state,
            ..
        } => (op, longest_prefix, model_state.revision),
        other => panic!("{name}: expected a violation, got {other:?}"),
    }
}

#[test]
fn each_linearizability_bug_names_its_operation() {
    // (file, operation that cannot be placed, longest prefix, model revision there)
    let table: &[(&str, usize, &[usize], i64)] = &[
        ("bad-stale-read.jsonl", 2, &[0, 1], 3),
        ("bad-lost-write.jsonl", 2, &[0, 1], 3),
        ("bad-revision-backwards.jsonl", 3, &[0, 1], 3),
        ("bad-never-written.jsonl", 2, &[0, 1], 3),
        ("bad-cas-twice.jsonl", 2, &[0, 1], 3),
        ("bad-unknown-flicker.jsonl", 4, &[0, 1, 2, 3], 4),
    ];
    for (name, op, prefix, revision) in table {
        let (found_op, found_prefix, found_revision) = violation(name);
        assert_eq!(found_op, *op, "{name}");
        assert_eq!(
            found_prefix.len(),
            prefix.len(),
            "{name}: prefix {found_prefix:?}"
        );
        assert_eq!(found_revision, *revision, "{name}");
        if *name != "bad-revision-backwards.jsonl" {
            assert_eq!(found_prefix, *prefix, "{name}");
        }
    }
}

#[test]
fn each_watch_bug_names_its_watch_and_event() {
    // (file, guarantee, response, event, write operation named)
    type Row = (
        &'static str,
        Guarantee,
        Option<usize>,
        Option<usize>,
        Option<usize>,
    );
    let table: &[Row] = &[
        (
            "bad-watch-duplicate-event.jsonl",
            Guarantee::Unique,
            Some(2),
            Some(0),
            None,
        ),
        (
            "bad-watch-missing-event.jsonl",
            Guarantee::Reliable,
            None,
            None,
            Some(1),
        ),
        (
            "bad-watch-split-revision.jsonl",
            Guarantee::Atomic,
            Some(2),
            Some(0),
            None,
        ),
    ];
    for (name, guarantee, response, event, op) in table {
        let result = check(&load(name), &options()).unwrap();
        assert!(
            matches!(result.linearizability, Verdict::Ok),
            "{name}: {result}"
        );
        let found: Vec<_> = result
            .watch_violations
            .iter()
            .map(|v| (v.watch, v.guarantee, v.response, v.event, v.op))
            .collect();
        assert_eq!(
            found,
            vec![(0, *guarantee, *response, *event, *op)],
            "{name}"
        );
    }
}

#[test]
fn stale_read_without_revisions_is_split_by_key() {
    let result = check(&load("bad-stale-read-no-revisions.jsonl"), &options()).unwrap();
    assert!(result.partitioned);
    assert!(
        matches!(result.linearizability, Verdict::Violation { op: 2, .. }),
        "{result}"
    );
}

#[test]
fn report_is_self_contained_and_names_the_failure() {
    let history = load("bad-stale-read.jsonl");
    let result = check(&history, &options()).unwrap();
    let html = report::render_html(&history, &result);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("class=\"bad\""),
        "the failing operation is drawn"
    );
    assert_eq!(
        html.matches("class=\"ok\"").count(),
        2,
        "the two prefix operations are drawn"
    );
    assert!(html.contains("operation #2 (line 6"));
    assert!(html.contains("Model state after the longest prefix (revision 3)"));
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "no external assets"
    );
}

fn cli(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn cli_exit_codes() {
    let dir = testdata();
    let good = dir.join("good-concurrent.jsonl");
    let bad = dir.join("bad-cas-twice.jsonl");
    let (code, out) = cli(&["check", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: ok"));

    let report =
        std::env::temp_dir().join(format!("jepsen-lite-report-{}.html", std::process::id()));
    let (code, out) = cli(&[
        "check",
        bad.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("operation #2"), "{out}");
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("could not be placed"));
    let _ = std::fs::remove_file(&report);

    let garbage =
        std::env::temp_dir().join(format!("jepsen-lite-garbage-{}.jsonl", std::process::id()));
    std::fs::write(&garbage, "{not json}\n").unwrap();
    let (code, _) = cli(&["check", garbage.to_str().unwrap()]);
    assert_eq!(code, 2);
    let _ = std::fs::remove_file(&garbage);

    let (code, out) = cli(&["selftest", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn timeout_is_unknown_not_a_pass() {
    let history = jepsen_lite::generate_history(1, 10, 100, 3000);
    let result = check(
        &history,
        &CheckOptions {
            timeout: Some(Duration::ZERO),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert_eq!(result.outcome(), Outcome::Unknown, "{result}");
    let result = check(
        &history,
        &CheckOptions {
            cache_entries_max: Some(10),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert_eq!(result.outcome(), Outcome::Unknown, "{result}");
}

/// What the checker cannot judge it refuses, never passes: a serializable read
/// or txn without its header revision, a past-revision read inside a
/// serializable txn.
#[test]
fn unjudgeable_reads_are_refused() {
    let lines = [
        r#"{"client":1,"call":0,"return":10,"input":{"type":"range","key":"a","serializable":true},"output":{"kvs":[]}}"#,
        r#"{"client":1,"call":0,"return":10,"input":{"type":"txn","success":[{"type":"range","key":"a","serializable":true}]},"output":{"succeeded":true}}"#,
        r#"{"client":1,"call":0,"return":10,"input":{"type":"txn"},"output":{"succeeded":true}}"#,
        r#"{"client":1,"call":0,"return":10,"input":{"type":"txn","success":[{"type":"range","key":"a","revision":1,"serializable":true}]},"output":{"revision":1}}"#,
    ];
    for line in lines {
        let history = History::parse(line).unwrap();
        assert!(check(&history, &options()).is_err(), "{line}");
    }
}
