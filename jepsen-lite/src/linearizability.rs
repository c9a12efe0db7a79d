//! Linearizability: Wing & Gong's search with Lowe's memoization.
//!
//! # The search
//!
//! Every operation becomes a call entry and, when its outcome is known, a
//! return entry. Entries are sorted by time with calls before returns at equal
//! times, so operations that merely touch count as concurrent (the safe side).
//! They sit in a doubly linked list. At any point the operations that may be
//! linearized next are the calls that precede the first return entry still in
//! the list: each was invoked before any pending operation finished.
//!
//! The search is a depth-first walk. A frame holds those candidates; trying one
//! steps the model with the operation's input and checks the observed output.
//! On success the operation is lifted out of the list (call and return) and a
//! new frame starts. When a frame runs out of candidates, the walk backtracks:
//! the last operation is put back (in reverse order, dancing-links style) and
//! the model state restored. An empty stack is a violation; an empty set of
//! operations still owed is a linearization.
//!
//! Lowe's memoization: each successful step records `(linearized set, state)`.
//! Reaching the same pair again by another order cannot lead anywhere new, so it
//! is skipped. The key is an incremental hash of the set XOR the state's
//! incremental fingerprint; equality is exact (run-length encoded set and full
//! state), so a hash collision never prunes a real alternative.
//!
//! # Reads go first
//!
//! An operation that cannot change the state (a read, a txn whose branches
//! only read, a request that failed definitively) and that may go next, and
//! whose response matches now, is linearized at once, with no alternative
//! tried at that frame. This is sound: take any linearization from here with
//! that read later on; moving the read to the front keeps every other
//! operation's state (the read changes nothing), keeps the read's own
//! response (it matched the current state), and keeps real time (it was
//! called before any pending operation returned). Without this, concurrent
//! reads of one revision multiply into every interleaving, and each is a new
//! `(set, state)` pair for the cache.
//!
//! # Revisions only go up
//!
//! A configuration is dead when the state's revision already exceeds what an
//! operation still owed reported (see `Expect::revision_bound`): revisions
//! never decrease, so that operation can never be placed. The bounds of the
//! unplaced operations sit in an ordered set, so the check is one lookup per
//! frame. This is what stops the search from stacking timed-out writes on
//! top of each other at a point where one of them must have landed.
//!
//! # Unknown outcomes
//!
//! An operation whose client never heard back has no return entry: its return
//! is after every event. It may be linearized anywhere after its call, or never
//! (it did not take effect), so it is not owed. Candidates whose outcome is
//! known are tried first and unknown ones last: a timed-out write that never
//! landed then costs nothing until the search is stuck, and then the most
//! recently called are tried first. An optional operation whose step changes
//! nothing is not placed at all: that is the same as never taking effect.
//! Reads with unknown outcomes are dropped before the search, as in Porcupine
//! and the etcd robustness suite. An unknown write that the evidence (see
//! `evidence.rs`) proves landed is owed, with the revisions it may have made.
//!
//! # Watches set the final revision
//!
//! A revision some watch delivered an event at was reached, and only the
//! history's operations make revisions. So a linearization must reach at least
//! the newest such revision (`revision_min`): one whose unknown writes all stay
//! out when a watch saw one of them land is no explanation. When the evidence
//! cannot say which of several timed-out writes made a revision, this is what
//! makes the search place one of them.
//!
//! # Lease-only changes wait
//!
//! An optional operation whose only effect here is on whether one lease exists
//! (a grant with an unknown outcome; a lease expiry, which is a revoke with an
//! unknown outcome, of a lease no key is attached to) is offered only when a
//! candidate that depends on that lease, and is not such an optional operation
//! itself, could go next. This is sound: in any linearization, such operations can
//! move later, in their order, to just before the next other operation that
//! touches the lease (or out, if none does), since nothing in between sees the
//! lease set, the revision is unchanged, and an unknown outcome has no return
//! to be late for. Without it, every pending expiry, and every grant that timed
//! out, doubles the configurations a backtracking search visits.
//!
//! # Budget
//!
//! The problem is NP-complete; a deadline turns a long search into
//! `Unknown`, never into a pass.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::constraints::Constraints;
use crate::model::{mix, Expect, ModelEvent, ModelState, Request, State, Symbols};

/// An operation ready for the search.
#[derive(Clone, Debug)]
pub struct SearchOp {
    /// Index in `History::operations`.
    pub index: usize,
    pub request: Request,
    /// `None`: any response matches (unknown outcome, or none recorded).
    pub expect: Option<Expect>,
    pub call: i64,
    /// `None`: after every event.
    pub return_time: Option<i64>,
    /// Must be linearized: the outcome is known, or a watch proved it.
    pub owed: bool,
}

/// How a search ended.
#[derive(Clone, Debug)]
pub enum SearchOutcome {
    /// A linearization, as indices into the searched slice.
    Linearizable(Vec<usize>),
    Illegal(Failure),
    TimedOut,
    /// The memo cache reached its bound.
    OutOfMemory,
}

/// Where the search got stuck furthest.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Searched-slice index of the operation that could not be placed.
    pub op: usize,
    /// The longest linearizable prefix found, in order (searched-slice indices).
    pub prefix: Vec<usize>,
    /// The model state after that prefix.
    pub state: ModelState,
    /// The watch that refused a step deepest in the search, if any did.
    pub watch_blame: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Call,
    Return,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    time: i64,
    kind: EntryKind,
    op: usize,
}

/// The entry list with O(1) lift and unlift. Index `entries.len()` is the head
/// sentinel.
struct EntryList {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> EntryList {
        let mut entries = Vec::with_capacity(ops.len() * 2);
        for (op, search_op) in ops.iter().enumerate() {
            entries.push(Entry {
                time: search_op.call,
                kind: EntryKind::Call,
                op,
            });
            if let Some(ret) = search_op.return_time {
                entries.push(Entry {
                    time: ret,
                    kind: EntryKind::Return,
                    op,
                });
            }
        }
        // Calls before returns at equal times: touching operations are concurrent.
        entries.sort_by_key(|e| (e.time, e.kind == EntryKind::Return, e.op));
        let len = entries.len();
        let head = len;
        let mut next = vec![0; len + 1];
        let mut prev = vec![0; len + 1];
        // A circular list through the sentinel.
        for i in 0..=len {
            next[i] = if i == head {
                if len == 0 {
                    head
                } else {
                    0
                }
            } else if i + 1 == len {
                head
            } else {
                i + 1
            };
            prev[i] = if i == head {
                if len == 0 {
                    head
                } else {
                    len - 1
                }
            } else if i == 0 {
                head
            } else {
                i - 1
            };
        }
        let mut call_of = vec![0; ops.len()];
        let mut return_of = vec![None; ops.len()];
        for (i, e) in entries.iter().enumerate() {
            match e.kind {
                EntryKind::Call => call_of[e.op] = i,
                EntryKind::Return => return_of[e.op] = Some(i),
            }
        }
        EntryList {
            entries,
            next,
            prev,
            call_of,
            return_of,
        }
    }

    fn head(&self) -> usize {
        self.entries.len()
    }

    fn remove(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn restore(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }

    fn lift(&mut self, op: usize) {
        self.remove(self.call_of[op]);
        if let Some(r) = self.return_of[op] {
            self.remove(r);
        }
    }

    /// Undoes `lift(op)`; must be called in reverse order of lifts.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_of[op] {
            self.restore(r);
        }
        self.restore(self.call_of[op]);
    }

    /// The operations that may go next: known outcomes first in call order,
    /// then unknown ones in reverse call order. Also the first return entry's operation.
    fn candidates(&self, ops: &[SearchOp]) -> (Vec<usize>, Option<usize>) {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        let mut blocking = None;
        let mut i = self.next[self.head()];
        while i != self.head() {
            let entry = self.entries[i];
            if entry.kind == EntryKind::Return {
                blocking = Some(entry.op);
                break;
            }
            if ops[entry.op].return_time.is_some() {
                known.push(entry.op);
            } else {
                unknown.push(entry.op);
            }
            i = self.next[i];
        }
        // Newest first: a write that timed out long ago is the least likely
        // to be the one that just landed.
        known.extend(unknown.into_iter().rev());
        (known, blocking)
    }
}

/// A dense bitset of linearized operations.
struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    /// Positions where the bit value changes, starting from 0. Linearized sets
    /// are mostly a solid prefix, so this is short.
    fn runs(&self) -> Box<[u32]> {
        let mut out = Vec::new();
        let mut current = false;
        for (w, &word) in self.words.iter().enumerate() {
            let uniform = if current { u64::MAX } else { 0 };
            if word == uniform {
                continue;
            }
            for b in 0..64 {
                let bit = (word >> b) & 1 == 1;
                if bit != current {
                    out.push((w * 64 + b) as u32);
                    current = bit;
                }
            }
        }
        out.into_boxed_slice()
    }
}

fn op_hash(op: usize) -> u64 {
    mix(op as u64 ^ 0xa076_1d64_78bd_642f)
}

/// A memoized configuration: the linearized set (as `Bitset::runs`) and the
/// state it led to.
type Configuration = (Box<[u32]>, State);

struct Frame {
    candidates: Vec<usize>,
    next: usize,
    /// The operation whose linearization opened this frame, and the state
    /// before it.
    entered: Option<(usize, State)>,
    /// Set when the frame is dead: the owed operation whose reported revision
    /// the state has passed.
    dead_because: Option<usize>,
}

/// How many search steps between two looks at the clock.
const CLOCK_CHECK_STEPS: u64 = 256;

/// Default bound on memoized configurations; each costs roughly a state's
/// chunk table plus one copied chunk (~1 KiB), so this is about 1 GiB.
pub const CACHE_ENTRIES_MAX_DEFAULT: usize = 1_000_000;

/// Whether a request can never change the state when its response matches.
fn preserves_state(op: &SearchOp) -> bool {
    let reads_only = |branch: &[Request]| branch.iter().all(|r| matches!(r, Request::Range { .. }));
    op.expect.as_ref().is_some_and(|e| e.is_error())
        || match &op.request {
            Request::Range { .. } | Request::Refused { .. } => true,
            Request::Txn {
                success, failure, ..
            } => reads_only(success) && reads_only(failure),
            _ => false,
        }
}

/// Candidates of a new frame: none when the configuration is dead (see
/// "Revisions only go up"), a state-preserving candidate that matches now
/// alone (see "Reads go first"), else all of them.
fn frame_candidates(
    list: &EntryList,
    ops: &[SearchOp],
    preserving: &[bool],
    state: &State,
    pending_bounds: &BTreeSet<(i64, usize)>,
) -> (Vec<usize>, Option<usize>) {
    if let Some((_, op)) = pending_bounds
        .first()
        .filter(|(bound, _)| state.revision() > *bound)
    {
        return (Vec::new(), Some(*op));
    }
    let (mut candidates, _) = list.candidates(ops);
    let waiting: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&c| {
            !ops[c].owed
                && ops[c]
                    .request
                    .lease_only_change(state)
                    .is_some_and(|lease| {
                        !candidates.iter().any(|&o| {
                            o != c
                                && ops[o].request.touches_lease(lease)
                                && (ops[o].owed
                                    || ops[o].request.lease_only_change(state) != Some(lease))
                        })
                    })
        })
        .collect();
    candidates.retain(|c| !waiting.contains(c));
    // Only an owed operation: an optional one that changes nothing is never placed.
    let forced = candidates.iter().copied().find(|&c| {
        preserving[c]
            && ops[c].owed
            && state
                .step(&ops[c].request, ops[c].expect.as_ref())
                .is_some()
    });
    match forced {
        Some(op) => (vec![op], None),
        None => (candidates, None),
    }
}

/// Searches for a linearization of `ops` from the empty store that reaches
/// `revision_min` at least, keeping at most `cache_entries_max` memoized
/// configurations.
pub fn search(
    symbols: &Symbols,
    ops: &[SearchOp],
    revision_min: i64,
    deadline: Option<Instant>,
    cache_entries_max: usize,
    watches: &Constraints,
) -> SearchOutcome {
    if ops.is_empty() {
        // Nothing to place; a watch event without a write is the watch check's to name.
        return SearchOutcome::Linearizable(Vec::new());
    }
    let owed_total = ops.iter().filter(|o| o.owed).count();
    let preserving: Vec<bool> = ops.iter().map(preserves_state).collect();
    let bounds: Vec<Option<i64>> = ops
        .iter()
        .map(|o| o.expect.as_ref().and_then(|e| e.revision_bound(&o.request)))
        .collect();
    // Bounds of the operations not linearized yet.
    let mut pending_bounds: BTreeSet<(i64, usize)> = bounds
        .iter()
        .enumerate()
        .filter_map(|(op, b)| b.map(|b| (b, op)))
        .collect();
    let mut cache_entries = 0usize;
    let mut list = EntryList::new(ops);
    let mut state = State::new(symbols.keys.len());
    let mut linearized = Bitset::new(ops.len());
    let mut linearized_hash = 0u64;
    let mut owed_done = 0usize;
    let mut cache: HashMap<u64, Vec<Configuration>> = HashMap::new();
    let (candidates, dead_because) =
        frame_candidates(&list, ops, &preserving, &state, &pending_bounds);
    let mut stack = vec![Frame {
        candidates,
        next: 0,
        entered: None,
        dead_because,
    }];
    let mut deepest = 0usize;
    let mut deepest_unrecorded = true;
    let mut best: Option<Failure> = None;
    let mut until_clock_check = CLOCK_CHECK_STEPS;
    let mut events: Vec<ModelEvent> = Vec::new();
    // (depth, watch) of the deepest step a watch refused.
    let mut watch_blame: Option<(usize, usize)> = None;
    // (depth, operation) of the deepest step a read at a past revision refused.
    let mut read_blame: Option<(usize, usize)> = None;
    if let Err(read) = watches.state_fits(state.revision(), &state) {
        // A read at the first revision that the empty store does not answer.
        return SearchOutcome::Illegal(Failure {
            op: read,
            prefix: Vec::new(),
            state: state.describe(symbols),
            watch_blame: None,
        });
    }

    loop {
        if owed_done == owed_total && state.revision() >= revision_min {
            return SearchOutcome::Linearizable(
                stack
                    .iter()
                    .filter_map(|f| f.entered.as_ref().map(|e| e.0))
                    .collect(),
            );
        }
        until_clock_check -= 1;
        if until_clock_check == 0 {
            until_clock_check = CLOCK_CHECK_STEPS;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchOutcome::TimedOut;
            }
        }
        let top = stack
            .last_mut()
            .expect("the root frame is never popped without returning");
        if top.next < top.candidates.len() {
            let op = top.candidates[top.next];
            top.next += 1;
            // The step's events are needed only where a watch vouches for the
            // revision it would make.
            let watched = watches.covers(state.revision() + 1);
            events.clear();
            let Some(next_state) = state.step_events(
                &ops[op].request,
                ops[op].expect.as_ref(),
                watched.then_some(&mut events),
            ) else {
                continue;
            };
            if !ops[op].owed && next_state == state {
                // An optional operation that changes nothing here is the same
                // as one that never took effect; it stays pending for later.
                continue;
            }
            if next_state.revision() > state.revision() {
                if let Err(read) = watches.state_fits(next_state.revision(), &next_state) {
                    if read_blame.is_none_or(|(depth, _)| stack.len() >= depth) {
                        read_blame = Some((stack.len(), read));
                    }
                    continue;
                }
            }
            if next_state.revision() > state.revision() && watched {
                // A revision some watch vouches for: the write must make exactly
                // the events the watches saw there.
                if let Err(watch) = watches.admits(symbols, next_state.revision(), &events) {
                    if watch_blame.is_none_or(|(depth, _)| stack.len() >= depth) {
                        watch_blame = Some((stack.len(), watch));
                    }
                    continue;
                }
            }
            linearized.set(op);
            let next_hash = linearized_hash ^ op_hash(op);
            let key = next_hash ^ next_state.fingerprint();
            let runs = linearized.runs();
            let bucket = cache.entry(key).or_default();
            if bucket.iter().any(|(r, s)| *r == runs && *s == next_state) {
                linearized.clear(op);
                continue;
            }
            bucket.push((runs, next_state.clone()));
            cache_entries += 1;
            if cache_entries > cache_entries_max {
                return SearchOutcome::OutOfMemory;
            }
            linearized_hash = next_hash;
            list.lift(op);
            if ops[op].owed {
                owed_done += 1;
            }
            let previous = std::mem::replace(&mut state, next_state);
            if let Some(bound) = bounds[op] {
                pending_bounds.remove(&(bound, op));
            }
            let (candidates, dead_because) =
                frame_candidates(&list, ops, &preserving, &state, &pending_bounds);
            stack.push(Frame {
                candidates,
                next: 0,
                entered: Some((op, previous)),
                dead_because,
            });
            if stack.len() - 1 > deepest {
                deepest = stack.len() - 1;
                deepest_unrecorded = true;
            }
        } else {
            if deepest_unrecorded && stack.len() - 1 == deepest {
                deepest_unrecorded = false;
                let (candidates, blocking) = list.candidates(ops);
                let dead_because = stack.last().and_then(|f| f.dead_because);
                // Stuck short of `revision_min` with nothing owed left: name the
                // newest unknown write still unplaced, else the last one placed.
                let op = dead_because
                    .or(blocking)
                    .or_else(|| candidates.iter().copied().find(|&c| ops[c].owed))
                    .or_else(|| candidates.first().copied())
                    .or_else(|| {
                        stack
                            .iter()
                            .rev()
                            .find_map(|f| f.entered.as_ref().map(|e| e.0))
                    })
                    .unwrap_or(0);
                best = Some(Failure {
                    op,
                    prefix: stack
                        .iter()
                        .filter_map(|f| f.entered.as_ref().map(|e| e.0))
                        .collect(),
                    state: state.describe(symbols),
                    watch_blame: None,
                });
            }
            let frame = stack.pop().expect("checked non-empty above");
            match frame.entered {
                None => {
                    let mut failure = best.expect("the root frame is the deepest at least once");
                    failure.watch_blame = watch_blame.map(|(_, watch)| watch);
                    // Stuck where a read at a past revision refused the store
                    // that the write there made: the read is the one to name.
                    if let Some((depth, read)) = read_blame {
                        if depth >= failure.prefix.len() {
                            failure.op = read;
                        }
                    }
                    return SearchOutcome::Illegal(failure);
                }
                Some((op, previous)) => {
                    list.unlift(op);
                    if let Some(bound) = bounds[op] {
                        pending_bounds.insert((bound, op));
                    }
                    linearized.clear(op);
                    linearized_hash ^= op_hash(op);
                    if ops[op].owed {
                        owed_done -= 1;
                    }
                    state = previous;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Input, KeyValue, Operation, Output};
    use crate::model::{compile_input, compile_output};

    fn get(call: i64, ret: Option<i64>, value: Option<&str>) -> Operation {
        Operation {
            client: 0,
            call,
            return_time: ret,
            input: Input::Get {
                key: "x".into(),
                range_end: None,
                prefix: false,
            },
            output: Some(Output {
                kvs: Some(
                    value
                        .map(|v| KeyValue {
                            key: "x".into(),
                            value: Some(v.into()),
                            version: None,
                            create_revision: None,
                            mod_revision: None,
                            lease: None,
                        })
                        .into_iter()
                        .collect(),
                ),
                ..Output::default()
            }),
        }
    }

    fn put(call: i64, ret: Option<i64>, value: &str) -> Operation {
        Operation {
            client: 1,
            call,
            return_time: ret,
            input: Input::Put {
                key: "x".into(),
                value: value.into(),
                lease: None,
            },
            output: Some(Output::default()),
        }
    }

    fn run(ops: Vec<Operation>) -> SearchOutcome {
        let mut history = History::default();
        for op in ops {
            history.push_operation(op);
        }
        let symbols = Symbols::from_history(&history);
        let search_ops: Vec<SearchOp> = history
            .operations
            .iter()
            .enumerate()
            .map(|(index, op)| SearchOp {
                index,
                request: compile_input(&symbols, &op.input).unwrap(),
                expect: if op.is_known() {
                    op.output
                        .as_ref()
                        .map(|o| compile_output(&symbols, o).unwrap())
                } else {
                    None
                },
                call: op.call,
                return_time: op.return_time,
                owed: op.is_known(),
            })
            .collect();
        search(
            &symbols,
            &search_ops,
            0,
            None,
            CACHE_ENTRIES_MAX_DEFAULT,
            &Constraints::default(),
        )
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let outcome = run(vec![
            put(0, Some(10), "1"),
            put(20, Some(40), "2"),
            get(25, Some(30), Some("1")),
            get(26, Some(35), Some("2")),
        ]);
        assert!(
            matches!(outcome, SearchOutcome::Linearizable(_)),
            "{outcome:?}"
        );
    }

    #[test]
    fn stale_read_is_illegal_and_named() {
        let outcome = run(vec![
            put(0, Some(10), "1"),
            put(20, Some(30), "2"),
            get(40, Some(50), Some("1")),
        ]);
        match outcome {
            SearchOutcome::Illegal(failure) => {
                assert_eq!(failure.op, 2);
                assert_eq!(failure.prefix, vec![0, 1]);
                assert_eq!(failure.state.kvs["x"].value.as_deref(), Some("2"));
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn unknown_write_may_or_may_not_apply() {
        let applied = run(vec![
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(40, Some(50), Some("2")),
        ]);
        assert!(matches!(applied, SearchOutcome::Linearizable(_)));
        let lost = run(vec![
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(40, Some(50), Some("1")),
        ]);
        assert!(matches!(lost, SearchOutcome::Linearizable(_)));
        let flicker = run(vec![
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(40, Some(50), Some("2")),
            get(60, Some(70), Some("1")),
        ]);
        assert!(
            matches!(flicker, SearchOutcome::Illegal(ref f) if f.op == 3),
            "{flicker:?}"
        );
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert!(matches!(run(vec![]), SearchOutcome::Linearizable(ref order) if order.is_empty()));
    }

    #[test]
    fn bitset_runs() {
        let mut bits = Bitset::new(200);
        for i in 0..130 {
            bits.set(i);
        }
        bits.set(140);
        assert_eq!(&*bits.runs(), &[0, 130, 140, 141]);
    }
}
