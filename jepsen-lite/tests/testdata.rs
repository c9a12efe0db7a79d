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

/// The `compacted` guarantee on random small histories, written as JSON lines (so
/// the optional `call` and `member` fields go through the parser): puts at
/// revisions 2 to 5, up to three compactions that succeed, fail or time out at
/// random times on random members, and one watch created at a random time on a
/// random member, delivering a random subset of the puts, maybe cancelled. The
/// checker must report `compacted` exactly when the rule, restated here over the
/// raw records, says so.
#[test]
fn compacted_guarantee_on_random_histories() {
    let mut rng = jepsen_lite::generator::Rng::new(23);
    let members = [None, Some("m1"), Some("m1"), Some("m2")];
    let member_field = |m: Option<&str>| m.map_or(String::new(), |m| format!(r#","member":"{m}""#));
    let (mut flagged, mut clean) = (0, 0);
    for round in 0..3000 {
        let mut lines = Vec::new();
        for (i, revision) in (2..=5).enumerate() {
            let t = i as i64 * 10;
            lines.push(format!(
                r#"{{"client":1,"call":{t},"return":{},"input":{{"type":"put","key":"a","value":"{revision}"}},"output":{{"revision":{revision}}}}}"#,
                t + 5
            ));
        }
        // (return time if it succeeded, revision, member)
        let mut in_force: Vec<(i64, i64, Option<&str>)> = Vec::new();
        for _ in 0..rng.below(4) {
            let revision = 2 + rng.below(4) as i64;
            let call = 40 + rng.below(60) as i64;
            let ret = call + rng.below(40) as i64;
            let member = members[rng.below(4) as usize];
            let (ret_field, output) = match rng.below(4) {
                0 | 1 => (ret.to_string(), r#"{"revision":5}"#.to_string()),
                2 => (ret.to_string(), r#"{"error":"compacted"}"#.to_string()),
                _ => ("null".to_string(), "{}".to_string()),
            };
            if output.contains("revision") {
                in_force.push((ret, revision, member));
            }
            lines.push(format!(
                r#"{{"client":2,"call":{call},"return":{ret_field},"input":{{"type":"compact","revision":{revision}}},"output":{output}{}}}"#,
                member_field(member)
            ));
        }
        let start = rng.below(5) as i64;
        let call = 60 + rng.below(160) as i64;
        let member = members[rng.below(4) as usize];
        let delivered: Vec<i64> = (2..=5).filter(|r| *r >= start && rng.one_in(2)).collect();
        let compact_revision = if rng.one_in(2) {
            2 + rng.below(4) as i64
        } else {
            0
        };
        let events: Vec<String> = delivered
            .iter()
            .map(|r| {
                format!(
                    r#"{{"revision":{r},"events":[{{"type":"put","key":"a","value":"{r}","create_revision":2,"mod_revision":{r},"version":{}}}]}}"#,
                    r - 1
                )
            })
            .collect();
        let with_call = !rng.one_in(5);
        lines.push(format!(
            r#"{{"watch":{{"client":3,"key":"a","start_revision":{start},"responses":[{}],"canceled":{},"compact_revision":{compact_revision}{}{}}}}}"#,
            events.join(","),
            compact_revision > 0,
            if with_call {
                format!(r#","call":{call}"#)
            } else {
                String::new()
            },
            member_field(member)
        ));
        let text = lines.join("\n");
        let history = History::parse(&text).unwrap();
        // The rule: the newest compaction that returned successfully on the watch's
        // member before the watch was called.
        let newest = in_force
            .iter()
            .filter(|(ret, _, m)| with_call && *ret < call && *m == member)
            .map(|(_, revision, _)| *revision)
            .max()
            .unwrap_or(0);
        let expected = newest > 0
            && (delivered.iter().any(|r| *r < newest)
                || ((1..newest).contains(&start)
                    && if compact_revision > 0 {
                        compact_revision < newest
                    } else {
                        !delivered.is_empty()
                    }));
        let result = check(&history, &options()).unwrap();
        let got = result
            .watch_violations
            .iter()
            .any(|v| v.guarantee == Guarantee::Compacted);
        assert_eq!(got, expected, "round {round}\n{text}\n{result}");
        if expected {
            flagged += 1;
        } else {
            clean += 1;
        }
    }
    assert!(
        flagged > 200 && clean > 200,
        "{flagged} flagged, {clean} clean"
    );
}
