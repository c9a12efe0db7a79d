//! The search against a brute force on small histories: every optimization
//! (memoization, reads first, revision bounds, evidence, no-op skipping,
//! partitioning) must give the verdict that trying every order gives.
//!
//! Histories come from the generator and are then mutated at random, so about
//! half are violations.

use jepsen_lite::generator::Rng;
use jepsen_lite::history::{Input, Operation};
use jepsen_lite::model::{compile_input, compile_output, Expect, Request, State, Symbols};
use jepsen_lite::{check, generate_history, CheckOptions, History, Outcome};

struct Op {
    request: Request,
    expect: Option<Expect>,
    call: i64,
    return_time: Option<i64>,
}

/// Whether some order of the operations, respecting real time, with each
/// unknown-outcome write placed or left out, matches every response.
fn brute_force(history: &History) -> bool {
    let symbols = Symbols::from_history(history);
    let ops: Vec<Op> = history
        .operations
        .iter()
        .filter(|o| o.is_known() || !o.input.is_read_only())
        .map(|o| Op {
            request: compile_input(&symbols, &o.input).unwrap(),
            expect: if o.is_known() {
                o.output
                    .as_ref()
                    .map(|out| compile_output(&symbols, out).unwrap())
            } else {
                None
            },
            call: o.call,
            return_time: o.return_time,
        })
        .collect();
    let mut placed = vec![false; ops.len()];
    explore(&ops, &mut placed, &State::new(symbols.keys.len()))
}

fn explore(ops: &[Op], placed: &mut [bool], state: &State) -> bool {
    if ops
        .iter()
        .zip(placed.iter())
        .all(|(op, p)| *p || op.return_time.is_none())
    {
        return true;
    }
    // Every unplaced known operation returns after this point in real time.
    let earliest_return = ops
        .iter()
        .zip(placed.iter())
        .filter(|(_, p)| !**p)
        .filter_map(|(op, _)| op.return_time)
        .min()
        .unwrap_or(i64::MAX);
    for i in 0..ops.len() {
        if placed[i] || ops[i].call > earliest_return {
            continue;
        }
        if let Some(next) = state.step(&ops[i].request, ops[i].expect.as_ref()) {
            placed[i] = true;
            let found = explore(ops, placed, &next);
            placed[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

/// Checks `history` both ways and fails the test if the verdicts differ; returns whether
/// it is linearizable.
fn check_agrees_with_brute_force(seed: u64, history: &History) -> bool {
    let expected = brute_force(history);
    let result = check(history, &CheckOptions::default()).unwrap();
    let got = match result.outcome() {
        Outcome::Ok => true,
        Outcome::Violation => false,
        Outcome::Unknown => panic!("seed {seed}: unknown"),
    };
    assert_eq!(
        got,
        expected,
        "seed {seed}: brute force says {expected}\n{}\n{result}",
        history.to_jsonl()
    );
    expected
}

fn mutate(rng: &mut Rng, history: &mut History) {
    let values: Vec<String> = history
        .operations
        .iter()
        .filter_map(|o| match &o.input {
            Input::Put { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    let count = history.operations.len() as u64;
    let op: &mut Operation = &mut history.operations[rng.below(count) as usize];
    let Some(output) = op.output.as_mut() else {
        return;
    };
    match rng.below(5) {
        0 => {
            if let Some(r) = output.revision.as_mut() {
                *r += if rng.one_in(2) { 1 } else { -1 };
            }
        }
        1 => {
            if let Some(kv) = output.kvs.as_mut().and_then(|k| k.first_mut()) {
                if !values.is_empty() {
                    kv.value = Some(values[rng.below(values.len() as u64) as usize].clone());
                }
            }
        }
        2 => {
            if let Some(s) = output.succeeded.as_mut() {
                *s = !*s;
            }
        }
        3 => {
            if let Some(kvs) = output.kvs.as_mut() {
                kvs.clear();
            }
        }
        _ => {
            if let Some(kv) = output.kvs.as_mut().and_then(|k| k.first_mut()) {
                kv.mod_revision = kv.mod_revision.map(|m| m - 1);
            }
        }
    }
}

#[test]
fn search_agrees_with_brute_force() {
    let mut rng = Rng::new(2024);
    let (mut agreed_ok, mut agreed_bad) = (0, 0);
    for seed in 0..1500 {
        let mut history = generate_history(seed, 3, 2, 8);
        history.watches.clear();
        if seed % 3 != 0 {
            mutate(&mut rng, &mut history);
        }
        // Time some requests out: their outcome becomes unknown.
        for op in &mut history.operations {
            if rng.one_in(5) {
                op.return_time = None;
                op.output = None;
            }
        }
        if seed % 5 == 0 {
            // Strip revisions so that the split-by-key path is exercised too.
            for op in &mut history.operations {
                if let Some(output) = op.output.as_mut() {
                    output.revision = None;
                    for kv in output.kvs.iter_mut().flatten() {
                        kv.mod_revision = None;
                        kv.create_revision = None;
                    }
                }
            }
        }
        if check_agrees_with_brute_force(seed, &history) {
            agreed_ok += 1;
        } else {
            agreed_bad += 1;
        }
    }
    println!("agreed on {agreed_ok} linearizable and {agreed_bad} non-linearizable histories");
    assert!(
        agreed_ok > 200 && agreed_bad > 200,
        "{agreed_ok} ok, {agreed_bad} bad"
    );
}

/// Valid histories with many timed-out requests and truthful watches: the
/// evidence the watches give must never turn into a false violation, and the
/// linearization chosen must agree with what the watches saw.
#[test]
fn watch_evidence_never_rejects_valid_histories() {
    let mut rng = Rng::new(77);
    for seed in 0..300 {
        let mut history = generate_history(seed, 4, 3, 40);
        for op in &mut history.operations {
            if rng.one_in(6) {
                op.return_time = None;
                op.output = None;
            }
        }
        let result = check(&history, &CheckOptions::default()).unwrap();
        assert_eq!(
            result.outcome(),
            Outcome::Ok,
            "seed {seed}\n{}\n{result}",
            history.to_jsonl()
        );
    }
}

/// The same at a larger size, with and without the watches.
#[test]
fn many_timeouts_stay_tractable() {
    let mut rng = Rng::new(78);
    for seed in 0..10 {
        let mut history = generate_history(seed, 10, 20, 1000);
        for op in &mut history.operations {
            if rng.one_in(20) {
                op.return_time = None;
                op.output = None;
            }
        }
        let options = CheckOptions {
            timeout: Some(std::time::Duration::from_secs(60)),
            ..CheckOptions::default()
        };
        let result = check(&history, &options).unwrap();
        assert_eq!(
            result.outcome(),
            Outcome::Ok,
            "seed {seed} with watches: {result}"
        );
        history.watches.clear();
        let result = check(&history, &options).unwrap();
        assert_eq!(
            result.outcome(),
            Outcome::Ok,
            "seed {seed} without watches: {result}"
        );
    }
}

/// Lease expiries, as the simulator writes them (revokes with an unknown outcome, called
/// at some point after the grant), and timed-out grants: the search defers the ones that
/// only change whether a lease exists, which must never change a verdict.
#[test]
fn lease_expiries_agree_with_brute_force() {
    let mut rng = Rng::new(4242);
    let (mut agreed_ok, mut agreed_bad, mut with_expiries) = (0, 0, 0);
    for seed in 0..3000 {
        let mut history = generate_history(seed, 3, 2, 9);
        history.watches.clear();
        let end = history
            .operations
            .iter()
            .filter_map(|o| o.return_time)
            .max()
            .unwrap_or(0);
        let grants: Vec<(i64, i64)> = history
            .operations
            .iter()
            .filter_map(|o| match o.input {
                Input::LeaseGrant { id, .. } => Some((id, o.call)),
                _ => None,
            })
            .collect();
        for (n, (id, call)) in grants.into_iter().enumerate() {
            let at = call + rng.below((end - call).max(1) as u64 + 10) as i64;
            history.push_operation(Operation {
                client: 1_000 + n as u64,
                call: at,
                return_time: None,
                input: Input::LeaseRevoke { id },
                output: None,
            });
            with_expiries += 1;
        }
        if seed % 3 != 0 {
            mutate(&mut rng, &mut history);
        }
        for op in &mut history.operations {
            if op.client < 1_000 && rng.one_in(5) {
                op.return_time = None;
                op.output = None;
            }
        }
        if check_agrees_with_brute_force(seed, &history) {
            agreed_ok += 1;
        } else {
            agreed_bad += 1;
        }
    }
    println!(
        "agreed on {agreed_ok} linearizable and {agreed_bad} non-linearizable histories \
         ({with_expiries} expiries)"
    );
    assert!(
        agreed_ok > 200 && agreed_bad > 200 && with_expiries > 500,
        "{agreed_ok} ok, {agreed_bad} bad, {with_expiries} expiries"
    );
}
