//! jepsen-lite: does a history of etcd operations and watches keep etcd's
//! promises?
//!
//! A history (see `history` and `README.md`) comes from the simulator, the
//! real-process runner or a run against a real etcd. [`check`] answers two
//! questions about it:
//!
//! 1. **Linearizability** of the key-value operations against the etcd model
//!    (`model`), by Wing & Gong search with Lowe's memoization
//!    (`linearizability`). The verdict is `Ok`, `Violation` (naming the
//!    operation that could not be placed, the longest linearizable prefix and
//!    the model state there) or `Unknown` when the time budget ran out. A
//!    budget never turns into a pass.
//! 2. **Watch guarantees** (`watch`): ordered, unique, atomic, reliable,
//!    resumable, bookmarkable, prev_kv, is-create, filters, compacted, checked against
//!    the replay of the linearization (or, when there is none, the
//!    acknowledged writes). The search itself already places every write
//!    where the watches saw it (`constraints`): a linearization is an order
//!    that fits every response and every watch. When none fits the watches
//!    but one fits the responses, the watches are reported against that one.
//!
//! # Partitioning (P-compositionality)
//!
//! Every etcd write bumps one global revision and responses report it, so
//! keys are not independent objects: splitting by key would accept a history
//! where two keys disagree about the order of revisions. The checker therefore
//! searches the whole history with the global model whenever any output
//! carries a revision (a header revision or a key's create/mod revision) or
//! any watch saw something, and splits by key only when neither happens and
//! every operation touches a single key without leases or txns. Then the per-key models are the whole
//! story and the split is sound. The revision half is covered by the global
//! search itself: every revision a response reports must be the one the model
//! reaches.
//!
//! # Evidence
//!
//! Unknown-outcome writes are what make the search expensive: the global
//! revision is fungible, so a timed-out write that never landed can stand in
//! for one that did, and the mistake shows up only much later. Before the
//! search, `evidence` narrows each of them down to the revisions it can have
//! produced, from what reads and a reference watch saw.
//!
//! # Layout
//!
//! `history` (file format, with `bytes` for byte-string keys) → `compile`
//! (interning) → `model` (state, step) → `evidence` (narrowing unknown
//! outcomes) → `constraints` (what watches and past-revision reads fix) →
//! `linearizability` (search) →
//! `watch` (guarantees) → `report` (HTML).
//! `generator` builds valid histories from a simulated store for tests.

pub mod bytes;
mod compile;
mod constraints;
mod evidence;
pub mod generator;
pub mod history;
pub mod linearizability;
pub mod model;
pub mod report;
pub mod watch;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

pub use generator::generate_history;
pub use history::{History, Input, Operation, Output};
pub use model::ModelState;
pub use watch::{Guarantee, WatchViolation};

use constraints::Constraints;
use linearizability::{search, SearchOp, SearchOutcome};
use model::{compile_input, compile_output, Expect, Request, Symbols};

/// Knobs for [`check`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Search budget; `None` is unbounded.
    pub timeout: Option<Duration>,
    /// Bound on memoized configurations (memory); `None` is
    /// `linearizability::CACHE_ENTRIES_MAX_DEFAULT`. Reaching it is `Unknown`.
    pub cache_entries_max: Option<usize>,
}

/// The linearizability verdict.
#[derive(Clone, Debug)]
pub enum Verdict {
    Ok,
    Violation {
        /// Index in `History::operations` of the operation that could not be
        /// placed after the longest linearizable prefix.
        op: usize,
        /// The longest linearizable prefix, in linearization order.
        longest_prefix: Vec<usize>,
        /// The model state after that prefix.
        model_state: ModelState,
        message: String,
    },
    /// The budget ran out. Never a pass.
    Unknown {
        reason: String,
    },
}

/// What a watch was compared against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchBasis {
    /// The replay of the linearization the search found.
    Linearization,
    /// Only the writes whose responses carried a revision.
    AcknowledgedWrites,
}

/// The overall outcome, for exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Violation,
    Unknown,
}

/// Everything [`check`] found.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub linearizability: Verdict,
    /// The linearization found (history indices, including the unknown-outcome
    /// operations it applied), when the history was checked as a whole.
    pub linearization: Option<Vec<usize>>,
    /// Whether the history was split by key.
    pub partitioned: bool,
    pub watch_basis: WatchBasis,
    pub watch_violations: Vec<WatchViolation>,
    pub elapsed: Duration,
}

impl CheckResult {
    pub fn outcome(&self) -> Outcome {
        if matches!(self.linearizability, Verdict::Violation { .. })
            || !self.watch_violations.is_empty()
        {
            Outcome::Violation
        } else if matches!(self.linearizability, Verdict::Unknown { .. }) {
            Outcome::Unknown
        } else {
            Outcome::Ok
        }
    }

    /// 0 ok, 1 violation, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        match self.outcome() {
            Outcome::Ok => 0,
            Outcome::Violation => 1,
            Outcome::Unknown => 2,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.linearizability {
            Verdict::Ok => writeln!(
                f,
                "linearizability: ok ({}{:.3} s)",
                if self.partitioned {
                    "split by key, "
                } else {
                    ""
                },
                self.elapsed.as_secs_f64()
            )?,
            Verdict::Violation { message, .. } => {
                writeln!(f, "linearizability: VIOLATION: {message}")?
            }
            Verdict::Unknown { reason } => writeln!(f, "linearizability: UNKNOWN: {reason}")?,
        }
        if self.watch_violations.is_empty() {
            writeln!(f, "watch: ok (against {:?})", self.watch_basis)?;
        } else {
            for violation in &self.watch_violations {
                writeln!(f, "watch: VIOLATION: {violation}")?;
            }
        }
        write!(
            f,
            "verdict: {}",
            match self.outcome() {
                Outcome::Ok => "ok",
                Outcome::Violation => "violation",
                Outcome::Unknown => "unknown",
            }
        )
    }
}

/// The history compiled for the model.
pub struct Prepared {
    pub symbols: Symbols,
    pub ops: Vec<SearchOp>,
    /// The newest revision any watch delivered an event at: a linearization
    /// reaches it at least.
    pub revision_min: i64,
}

/// Interns and compiles the history, drops reads with unknown outcomes and
/// applies watch evidence to unknown puts.
pub fn prepare(history: &History) -> Result<Prepared, String> {
    history.validate_bytes()?;
    let symbols = Symbols::from_history(history);
    let evidence = evidence::narrow_unknown_writes(history);
    let mut ops = Vec::with_capacity(history.operations.len());
    for (index, op) in history.operations.iter().enumerate() {
        let line = history.line_of(index);
        let mut request = compile_input(&symbols, &op.input)
            .map_err(|e| format!("operation #{index} (line {line}): {e}"))?;
        let read_at = match &mut request {
            Request::Range { opts, .. } if opts.serializable => Some(&mut opts.revision),
            Request::Txn {
                serializable: true,
                read_at,
                ..
            } => Some(read_at),
            _ => None,
        };
        if let Some(read_at) = read_at {
            // Read from the store at its header revision.
            let answered = op.output.as_ref().filter(|o| o.error.is_none());
            match answered.map(|o| o.revision) {
                Some(Some(header)) => *read_at = header,
                Some(None) if op.is_known() => {
                    return Err(format!(
                        "operation #{index} (line {line}): a serializable read needs its header revision"
                    ))
                }
                _ => {}
            }
        }
        let known = op.is_known();
        if !known && op.input.is_read_only() {
            continue;
        }
        let (expect, owed) = if known {
            let expect = op
                .output
                .as_ref()
                .map(|o| compile_output(&symbols, o))
                .transpose()
                .map_err(|e| format!("operation #{index} (line {line}): {e}"))?;
            (expect, true)
        } else if let Some(limits) = evidence.get(&index) {
            (
                Some(Expect::from_evidence(limits.clone())),
                limits.must_write,
            )
        } else {
            (None, false)
        };
        ops.push(SearchOp {
            index,
            request,
            expect,
            call: op.call,
            return_time: op.return_time,
            owed,
        });
    }
    let revision_min = history
        .watches
        .iter()
        .flat_map(|watch| &watch.responses)
        .flat_map(|response| {
            let progress = response.progress_notify.then_some(response.revision);
            response
                .events
                .iter()
                .map(|event| event.mod_revision)
                .chain(progress)
        })
        .max()
        .unwrap_or(0);
    Ok(Prepared {
        symbols,
        ops,
        revision_min,
    })
}

/// Whether splitting by key is sound for these operations (see the module doc).
fn partition_keys(history: &History, ops: &[SearchOp]) -> Option<Vec<String>> {
    // A watch that saw anything orders revisions across keys: every event must
    // come from a write placed where the watch saw it.
    if history
        .watches
        .iter()
        .flat_map(|w| &w.responses)
        .any(|r| r.progress_notify || !r.events.is_empty())
    {
        return None;
    }
    let mut keys = Vec::with_capacity(ops.len());
    for op in ops {
        if op.expect.as_ref().is_some_and(Expect::mentions_revision) {
            return None;
        }
        let key = match &history.operations[op.index].input {
            Input::Get {
                key,
                range_end: None,
                prefix: false,
            } => key,
            Input::Put {
                key,
                lease: None | Some(0),
                ..
            } => key,
            Input::Delete {
                key,
                range_end: None,
                prefix: false,
            } => key,
            _ => return None,
        };
        keys.push(key.clone());
    }
    Some(keys)
}

/// Checks a history: linearizability, then watches.
pub fn check(history: &History, options: &CheckOptions) -> Result<CheckResult, String> {
    let started = Instant::now();
    let deadline = options.timeout.map(|t| started + t);
    let cache_max = options
        .cache_entries_max
        .unwrap_or(linearizability::CACHE_ENTRIES_MAX_DEFAULT);
    let prepared = prepare(history)?;
    let mut partitioned = false;
    let mut linearization = None;
    let mut watch_blame: Option<usize> = None;
    let verdict = match partition_keys(history, &prepared.ops) {
        Some(keys) if !history.operations.is_empty() => {
            partitioned = true;
            let mut groups: HashMap<&str, Vec<SearchOp>> = HashMap::new();
            for (op, key) in prepared.ops.iter().zip(&keys) {
                groups.entry(key.as_str()).or_default().push(op.clone());
            }
            let mut names: Vec<&str> = groups.keys().copied().collect();
            names.sort_unstable();
            let mut verdict = Verdict::Ok;
            for name in names {
                let group = &groups[name];
                match to_verdict(
                    history,
                    group,
                    // Per key, revisions are not checked at all (see `partition_keys`).
                    search(
                        &prepared.symbols,
                        group,
                        0,
                        deadline,
                        cache_max,
                        &Constraints::default(),
                    ),
                ) {
                    (Verdict::Ok, _) => {}
                    (found @ Verdict::Violation { .. }, _) => {
                        verdict = found;
                        break;
                    }
                    (unknown, _) => verdict = unknown,
                }
            }
            verdict
        }
        _ => {
            let mut watches = Constraints::new(history, &prepared.symbols);
            watches.add_past_reads(&prepared.ops);
            let mut outcome = search(
                &prepared.symbols,
                &prepared.ops,
                prepared.revision_min,
                deadline,
                cache_max,
                &watches,
            );
            if let SearchOutcome::Illegal(failure) = &outcome {
                if watches.has_watches() {
                    // No order fits both the responses and the watches. If one
                    // fits the responses alone, the watches are at fault: they
                    // are checked against it below, and at least one of them
                    // is reported.
                    let plain = search(
                        &prepared.symbols,
                        &prepared.ops,
                        prepared.revision_min,
                        deadline,
                        cache_max,
                        &watches.past_reads_only(),
                    );
                    if matches!(plain, SearchOutcome::Linearizable(_)) {
                        watch_blame = Some(failure.watch_blame.unwrap_or(0));
                    }
                    outcome = plain;
                }
            }
            let (verdict, order) = to_verdict(history, &prepared.ops, outcome);
            linearization = order;
            verdict
        }
    };
    let (watch_basis, watch_violations) = match &linearization {
        Some(order) => {
            let replay = watch::replay_linearization(&prepared, order);
            let mut found = watch::check_watches(history, &replay, true);
            if let (Some(watch), true) = (watch_blame, found.is_empty()) {
                found.push(WatchViolation {
                    watch,
                    line: history.watch_lines.get(watch).copied().unwrap_or(0),
                    response: None,
                    event: None,
                    guarantee: Guarantee::Valid,
                    op: None,
                    message: "no order of the operations that fits their responses makes \
                              the events this watch saw"
                        .into(),
                });
            }
            (WatchBasis::Linearization, found)
        }
        None => {
            let replay = watch::acknowledged_writes(history);
            (
                WatchBasis::AcknowledgedWrites,
                watch::check_watches(history, &replay, false),
            )
        }
    };
    Ok(CheckResult {
        linearizability: verdict,
        linearization,
        partitioned,
        watch_basis,
        watch_violations,
        elapsed: started.elapsed(),
    })
}

fn to_verdict(
    history: &History,
    ops: &[SearchOp],
    outcome: SearchOutcome,
) -> (Verdict, Option<Vec<usize>>) {
    match outcome {
        SearchOutcome::Linearizable(order) => (
            Verdict::Ok,
            Some(order.into_iter().map(|i| ops[i].index).collect()),
        ),
        SearchOutcome::TimedOut => (
            Verdict::Unknown {
                reason: "the search ran out of time".into(),
            },
            None,
        ),
        SearchOutcome::OutOfMemory => (
            Verdict::Unknown {
                reason: "the search reached its memo cache bound".into(),
            },
            None,
        ),
        SearchOutcome::Illegal(failure) => {
            let stuck = ops[failure.op].index;
            // A timed-out write that a read pinned is stuck because of what that
            // read claimed: the read is the operation to name.
            let pinned_by = ops[failure.op]
                .expect
                .as_ref()
                .and_then(|e| e.write_revisions.as_ref())
                .and_then(|w| w.pinned_by)
                .filter(|_| !history.operations[stuck].is_known());
            let op = pinned_by.unwrap_or(stuck);
            let longest_prefix: Vec<usize> = failure.prefix.iter().map(|&i| ops[i].index).collect();
            let because = match pinned_by {
                Some(_) => format!(
                    " (it saw the value of timed-out operation #{stuck} (line {}), which cannot take effect where it says)",
                    history.line_of(stuck)
                ),
                None => String::new(),
            };
            let message = format!(
                "{}{because} cannot be linearized after the longest linearizable prefix ({} operations, model at revision {})",
                describe_operation(history, op),
                longest_prefix.len(),
                failure.state.revision
            );
            (
                Verdict::Violation {
                    op,
                    longest_prefix,
                    model_state: failure.state,
                    message,
                },
                None,
            )
        }
    }
}

/// A one-line description of operation `index` for messages.
pub fn describe_operation(history: &History, index: usize) -> String {
    let op = &history.operations[index];
    let input = history::record_json(&op.input);
    let output = match (&op.output, op.return_time) {
        (_, None) => "unknown outcome".to_string(),
        (Some(output), _) => history::record_json(output),
        (None, _) => "no output recorded".to_string(),
    };
    format!(
        "operation #{index} (line {}, client {}): {input} -> {output}",
        history.line_of(index),
        op.client
    )
}

/// What a test history says it should produce, from `# expect:` header lines:
/// `# expect: op=3` (a linearizability violation naming operation 3) or
/// `# expect: watch=0 guarantee=unique` (that watch breaks that guarantee).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    pub op: Option<usize>,
    pub watch: Option<usize>,
    pub guarantee: Option<Guarantee>,
}

impl Expectation {
    pub fn from_history(history: &History) -> Result<Expectation, String> {
        let mut expectation = Expectation::default();
        for comment in &history.comments {
            let Some(rest) = comment.strip_prefix("expect:") else {
                continue;
            };
            for token in rest.split_whitespace() {
                let (name, value) = token
                    .split_once('=')
                    .ok_or_else(|| format!("bad expectation {token:?}"))?;
                match name {
                    "op" => {
                        expectation.op =
                            Some(value.parse().map_err(|_| format!("bad op {value:?}"))?)
                    }
                    "watch" => {
                        expectation.watch =
                            Some(value.parse().map_err(|_| format!("bad watch {value:?}"))?)
                    }
                    "guarantee" => {
                        expectation.guarantee = Some(
                            Guarantee::parse(value)
                                .ok_or_else(|| format!("unknown guarantee {value:?}"))?,
                        )
                    }
                    _ => return Err(format!("unknown expectation {name:?}")),
                }
            }
        }
        Ok(expectation)
    }

    /// Whether `result` names what was expected.
    pub fn check(&self, result: &CheckResult) -> Result<(), String> {
        if let Some(expected) = self.op {
            match &result.linearizability {
                Verdict::Violation { op, .. } if *op == expected => {}
                Verdict::Violation { op, .. } => {
                    return Err(format!("named operation #{op}, expected #{expected}"))
                }
                other => {
                    return Err(format!(
                        "expected a violation at operation #{expected}, got {other:?}"
                    ))
                }
            }
        }
        if self.watch.is_some() || self.guarantee.is_some() {
            let hit = result.watch_violations.iter().any(|v| {
                self.watch.is_none_or(|w| w == v.watch)
                    && self.guarantee.is_none_or(|g| g == v.guarantee)
            });
            if !hit {
                return Err(format!(
                    "expected a watch violation (watch {:?}, guarantee {:?}), got {:?}",
                    self.watch,
                    self.guarantee.map(Guarantee::name),
                    result
                        .watch_violations
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}
