//! Generated histories: valid ones must pass, and each planted bug must be
//! rejected with the right operation or watch named.

use std::time::{Duration, Instant};

use jepsen_lite::history::{EventType, Input, KeyValue};
use jepsen_lite::{check, generate_history, CheckOptions, Guarantee, History, Outcome, Verdict};

fn options() -> CheckOptions {
    CheckOptions {
        timeout: Some(Duration::from_secs(120)),
        ..CheckOptions::default()
    }
}

#[test]
fn generated_histories_pass() {
    for seed in 0..20 {
        for (clients, keys, ops) in [(1, 1, 50), (3, 2, 200), (5, 10, 500), (10, 3, 300)] {
            let history = generate_history(seed, clients, keys, ops);
            let result = check(&history, &options()).unwrap();
            assert_eq!(
                result.outcome(),
                Outcome::Ok,
                "seed {seed} clients {clients} keys {keys}: {result}"
            );
            assert!(result.linearization.is_some());
        }
    }
}

/// The acceptance bound: 10,000 operations, 10 clients, 100 keys, under 5 s in
/// a release build. Debug builds are several times slower, so they get a looser
/// bound; the figure is printed either way.
#[test]
fn ten_thousand_operations_check_fast() {
    let history = generate_history(42, 10, 100, 10_000);
    let unknown = history.operations.iter().filter(|o| !o.is_known()).count();
    let started = Instant::now();
    let result = check(&history, &options()).unwrap();
    let elapsed = started.elapsed();
    println!(
        "10,000 ops / 10 clients / 100 keys ({unknown} unknown outcomes, {} watches): {:.3} s ({})",
        history.watches.len(),
        elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert_eq!(result.outcome(), Outcome::Ok, "{result}");
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    assert!(elapsed < bound, "took {elapsed:?}, bound {bound:?}");
}

/// The same size without watches: no evidence narrows the timed-out writes,
/// so the search has to place them from the reads' revisions alone.
#[test]
fn ten_thousand_operations_without_watches() {
    let mut history = generate_history(43, 10, 100, 10_000);
    history.watches.clear();
    let started = Instant::now();
    let result = check(&history, &options()).unwrap();
    let elapsed = started.elapsed();
    println!("10,000 ops without watches: {:.3} s", elapsed.as_secs_f64());
    assert_eq!(result.outcome(), Outcome::Ok, "{result}");
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    assert!(elapsed < bound, "took {elapsed:?}, bound {bound:?}");
}

#[test]
fn generated_histories_without_watches_pass() {
    for seed in 100..130 {
        let mut history = generate_history(seed, 8, 20, 1500);
        history.watches.clear();
        let result = check(&history, &options()).unwrap();
        assert_eq!(result.outcome(), Outcome::Ok, "seed {seed}: {result}");
    }
}

fn known_reads(history: &History) -> Vec<usize> {
    history
        .operations
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.is_known()
                && matches!(o.input, Input::Get { prefix: false, .. })
                && o.output
                    .as_ref()
                    .is_some_and(|out| out.kvs.as_ref().is_some_and(|k| !k.is_empty()))
        })
        .map(|(i, _)| i)
        .collect()
}

fn violation_op(history: &History) -> usize {
    let result = check(history, &options()).unwrap();
    match result.linearizability {
        Verdict::Violation { op, .. } => op,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn read_of_a_value_never_written_is_named() {
    for seed in 0..5 {
        let mut history = generate_history(seed, 5, 10, 400);
        history.watches.clear();
        let reads = known_reads(&history);
        let target = reads[reads.len() / 2];
        let output = history.operations[target].output.as_mut().unwrap();
        output.kvs.as_mut().unwrap()[0].value = Some("never-written".into());
        assert_eq!(violation_op(&history), target, "seed {seed}");
    }
}

#[test]
fn revision_going_backwards_is_named() {
    for seed in 0..5 {
        let mut history = generate_history(seed, 5, 10, 400);
        history.watches.clear();
        let reads = known_reads(&history);
        let target = reads[reads.len() * 3 / 4];
        let output = history.operations[target].output.as_mut().unwrap();
        output.revision = Some(output.revision.unwrap() - 20);
        assert_eq!(violation_op(&history), target, "seed {seed}");
    }
}

#[test]
fn stale_read_is_named() {
    // Replace a read's answer with the key's previous version: the read then
    // returns a value that an acknowledged write had already replaced.
    let mut history = generate_history(3, 5, 4, 600);
    history.watches.clear();
    let reads = known_reads(&history);
    let mut done = false;
    for &target in reads.iter().skip(reads.len() / 2) {
        let kv = history.operations[target]
            .output
            .as_ref()
            .unwrap()
            .kvs
            .as_ref()
            .unwrap()[0]
            .clone();
        let Some(previous) = previous_version(&history, &kv) else {
            continue;
        };
        let output = history.operations[target].output.as_mut().unwrap();
        output.kvs.as_mut().unwrap()[0] = previous;
        assert_eq!(violation_op(&history), target);
        done = true;
        break;
    }
    assert!(done, "no read of an overwritten key found");
}

/// The key-value a read of the same key saw just before `kv` was written.
fn previous_version(history: &History, kv: &KeyValue) -> Option<KeyValue> {
    history
        .operations
        .iter()
        .filter_map(|o| o.output.as_ref()?.kvs.as_ref())
        .flatten()
        .filter(|other| {
            other.key == kv.key
                && other.mod_revision < kv.mod_revision
                && other.create_revision == kv.create_revision
        })
        .max_by_key(|other| other.mod_revision)
        .cloned()
}

fn watch_violations(history: &History) -> Vec<(usize, Guarantee, Option<usize>)> {
    let result = check(history, &options()).unwrap();
    assert!(matches!(result.linearizability, Verdict::Ok), "{result}");
    result
        .watch_violations
        .iter()
        .map(|v| (v.watch, v.guarantee, v.op))
        .collect()
}

#[test]
fn duplicate_watch_event_is_named() {
    let mut history = generate_history(5, 5, 10, 500);
    let watch = &mut history.watches[0];
    let event = watch.responses[3].events[0].clone();
    watch.responses[4].events.insert(0, event);
    let found = watch_violations(&history);
    assert_eq!(
        found.first().map(|v| (v.0, v.1)),
        Some((0, Guarantee::Unique)),
        "{found:?}"
    );
}

#[test]
fn missing_watch_event_is_named() {
    let mut history = generate_history(6, 5, 10, 500);
    let watch = &mut history.watches[0];
    let removed = watch.responses[5].events.remove(0);
    let found = watch_violations(&history);
    assert_eq!(found.len(), 1, "{found:?}");
    let (w, guarantee, op) = found[0];
    assert_eq!((w, guarantee), (0, Guarantee::Reliable));
    let writer = &history.operations[op.expect("the missing event's write is named")];
    let written_key = match &writer.input {
        Input::Put { key, .. } | Input::Delete { key, .. } => Some(key.clone()),
        _ => None,
    };
    if let Some(key) = written_key {
        assert_eq!(key, removed.key);
    }
}

#[test]
fn split_revision_is_named() {
    let mut history = generate_history(7, 10, 5, 3000);
    let watch = &mut history.watches[0];
    let (r, e) = watch
        .responses
        .iter()
        .enumerate()
        .find_map(|(r, resp)| {
            resp.events
                .windows(2)
                .position(|w| w[0].mod_revision == w[1].mod_revision)
                .map(|e| (r, e + 1))
        })
        .expect("some revision has two events");
    let tail = watch.responses[r].events.split_off(e);
    let mut second = watch.responses[r].clone();
    second.events = tail;
    watch.responses.insert(r + 1, second);
    let found = watch_violations(&history);
    assert_eq!(
        found.iter().map(|v| (v.0, v.1)).collect::<Vec<_>>(),
        vec![(0, Guarantee::Atomic)],
        "{found:?}"
    );
}

#[test]
fn wrong_prev_kv_is_named() {
    let mut history = generate_history(8, 5, 10, 500);
    let watch = &mut history.watches[0];
    let event = watch
        .responses
        .iter_mut()
        .flat_map(|r| r.events.iter_mut())
        .find(|e| e.kind == EventType::Put && e.prev_kv.is_some())
        .expect("some put overwrote a key");
    event.prev_kv.as_mut().unwrap().value = Some("bogus".into());
    let found = watch_violations(&history);
    assert_eq!(
        found.iter().map(|v| (v.0, v.1)).collect::<Vec<_>>(),
        vec![(0, Guarantee::PrevKv)],
        "{found:?}"
    );
}
