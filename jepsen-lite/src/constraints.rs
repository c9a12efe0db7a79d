//! What the watches saw, as a constraint on the search.
//!
//! A watch opened at revision `s` that delivered events up to revision `v`
//! (its newest complete revision, or a progress notification) vouches for
//! every revision in `[s, v]`: it delivered exactly the events of each one
//! that fall in its range and pass its filters. Each revision is made by one
//! write, so the write that makes a covered revision must produce exactly
//! those events, by type, key and what the event carries (value, create
//! revision, version, lease and previous key-value when present). The search
//! checks this on every step that makes a new revision, which puts writes
//! whose responses say nothing about revisions (or that timed out) where the
//! watches saw them, and runs a txn's writes only through the branch that ran.
//!
//! A watch opened "from now" (`start_revision` 0) vouches from its first
//! event on. Watches cancelled by a compaction say nothing here; they are checked only against the replay of the
//! linearization found (see `watch`). Fields an event leaves out, and the
//! guarantees about the stream itself (order, uniqueness, atomicity), are also
//! left to `watch`: this only has to be no stricter than the truth.

use std::collections::HashMap;

use crate::history::{Event, EventType, History, KeyValue, WatchFilter};
use crate::linearizability::SearchOp;
use crate::model::{Expect, ModelEvent, RangeOpts, Request, Slot, State, Symbols};

/// A read at a past revision `r`: its answer is the store as the write that
/// made `r` left it (or the empty store, for `r` = 1). A range at a past
/// revision (alone or inside a txn), or a serializable txn answered at its
/// header revision.
#[derive(Clone)]
struct PastRead {
    /// Index in the searched operations.
    op: usize,
    /// The read, to evaluate on the newest revision of that state (a range with
    /// `revision` 0, or a read-only txn).
    request: Request,
    expect: Expect,
}

struct Covered {
    /// Index in `History::watches`.
    watch: usize,
    /// Key ids in the watched range.
    lo: u32,
    hi: u32,
    no_put: bool,
    no_delete: bool,
    start: i64,
    vouched: i64,
    events: HashMap<i64, Vec<Event>>,
}

/// The watches that vouch for revisions, and the reads at past revisions.
#[derive(Default)]
pub struct Constraints {
    watches: Vec<Covered>,
    /// The newest revision any watch vouches for.
    pub vouched_max: i64,
    past_reads: HashMap<i64, Vec<PastRead>>,
}

impl Constraints {
    pub fn new(history: &History, symbols: &Symbols) -> Constraints {
        let mut watches = Vec::new();
        for (index, watch) in history.watches.iter().enumerate() {
            if watch.compact_revision != 0 {
                continue;
            }
            // A watch opened "from now" started after the revision current
            // then, which is unknown; it vouches from its first event on.
            let start = if watch.start_revision >= 1 {
                watch.start_revision
            } else {
                let first = watch
                    .responses
                    .iter()
                    .filter(|r| !r.progress_notify)
                    .flat_map(|r| &r.events)
                    .map(|e| e.mod_revision)
                    .next();
                match first {
                    Some(first) => first,
                    None => continue,
                }
            };
            let (lo, hi) = symbols.range(&watch.key, watch.range_end.as_deref(), watch.prefix);
            let mut vouched = start - 1;
            let mut events: HashMap<i64, Vec<Event>> = HashMap::new();
            let mut open_fragment: Option<i64> = None;
            for response in &watch.responses {
                if response.progress_notify {
                    vouched = vouched.max(response.revision);
                    continue;
                }
                for event in &response.events {
                    if event.mod_revision >= start {
                        events
                            .entry(event.mod_revision)
                            .or_default()
                            .push(event.clone());
                    }
                }
                if let Some(newest) = response.events.iter().map(|e| e.mod_revision).max() {
                    if response.fragment {
                        open_fragment = Some(newest);
                        vouched = vouched.max(newest - 1);
                    } else {
                        open_fragment = None;
                        vouched = vouched.max(newest);
                    }
                }
            }
            // A stream that ended inside a fragmented revision vouches only for
            // the revisions before it.
            if let Some(partial) = open_fragment {
                vouched = vouched.min(partial - 1);
                events.retain(|r, _| *r < partial);
            }
            if vouched < start {
                continue;
            }
            watches.push(Covered {
                watch: index,
                lo,
                hi,
                no_put: watch.filters.contains(&WatchFilter::Noput),
                no_delete: watch.filters.contains(&WatchFilter::Nodelete),
                start,
                vouched,
                events,
            });
        }
        let vouched_max = watches.iter().map(|w| w.vouched).max().unwrap_or(0);
        Constraints {
            watches,
            vouched_max,
            past_reads: HashMap::new(),
        }
    }

    /// Adds the reads at past revisions among `ops` whose answers were
    /// recorded.
    pub fn add_past_reads(&mut self, ops: &[SearchOp]) {
        for (index, op) in ops.iter().enumerate() {
            let Some(expect) = op.expect.as_ref().filter(|e| !e.is_error()) else {
                continue;
            };
            self.add_reads_of(index, &op.request, expect);
        }
    }

    /// The past reads of one request whose response `expect` records: the
    /// request itself, or, in a txn whose branch the response names, the ranges
    /// at a past revision of that branch and of its nested txns.
    fn add_reads_of(&mut self, op: usize, request: &Request, expect: &Expect) {
        let (revision, request) = match request {
            Request::Range { lo, hi, opts } if opts.revision > 0 => (
                opts.revision,
                Request::Range {
                    lo: *lo,
                    hi: *hi,
                    opts: RangeOpts {
                        revision: 0,
                        ..*opts
                    },
                },
            ),
            Request::Txn { read_at, .. } if *read_at > 0 => {
                let mut request = request.clone();
                if let Request::Txn { read_at, .. } = &mut request {
                    *read_at = 0;
                }
                (*read_at, request)
            }
            Request::Txn {
                success, failure, ..
            } => {
                let (Some(succeeded), Some(responses)) = (expect.succeeded, &expect.responses)
                else {
                    return;
                };
                let branch = if succeeded { success } else { failure };
                for (sub, sub_expect) in branch.iter().zip(responses) {
                    if !matches!(sub, Request::Range { .. } | Request::Txn { .. }) {
                        continue;
                    }
                    self.add_reads_of(op, sub, sub_expect);
                }
                return;
            }
            _ => return,
        };
        let mut expect = expect.clone();
        expect.revision = None;
        self.past_reads.entry(revision).or_default().push(PastRead {
            op,
            request,
            expect,
        });
    }

    /// The same reads at past revisions, without the watches.
    pub fn past_reads_only(&self) -> Constraints {
        Constraints {
            past_reads: self.past_reads.clone(),
            ..Constraints::default()
        }
    }

    pub fn has_watches(&self) -> bool {
        !self.watches.is_empty()
    }

    /// Whether some watch vouches for `revision`.
    pub fn covers(&self, revision: i64) -> bool {
        revision <= self.vouched_max
            && self
                .watches
                .iter()
                .any(|w| w.start <= revision && revision <= w.vouched)
    }

    /// Whether `state`, the store at `revision`, answers every read at that
    /// past revision as recorded; `Err` names the first that it does not.
    pub fn state_fits(&self, revision: i64, state: &State) -> Result<(), usize> {
        for read in self.past_reads.get(&revision).into_iter().flatten() {
            let response = match &read.request {
                Request::Range { lo, hi, opts } => state.range(*lo, *hi, opts),
                // A read-only txn: run on a copy (the chunks are shared).
                other => state.clone().execute(other, None),
            };
            if !read.expect.matches(&response, false) {
                return Err(read.op);
            }
        }
        Ok(())
    }

    /// Whether `events`, everything one write did at `revision`, is what every
    /// watch vouching for `revision` saw there; `Err` names the first watch
    /// that saw otherwise.
    pub fn admits(
        &self,
        symbols: &Symbols,
        revision: i64,
        events: &[ModelEvent],
    ) -> Result<(), usize> {
        for w in &self.watches {
            if revision < w.start || revision > w.vouched {
                continue;
            }
            let produced: Vec<&ModelEvent> = events
                .iter()
                .filter(|e| {
                    w.lo <= e.key
                        && e.key < w.hi
                        && !(w.no_put && e.kind == EventType::Put)
                        && !(w.no_delete && e.kind == EventType::Delete)
                })
                .collect();
            let observed = w.events.get(&revision).map_or(&[][..], Vec::as_slice);
            if produced.len() != observed.len() {
                return Err(w.watch);
            }
            let mut used = vec![false; produced.len()];
            for event in observed {
                let found = (0..produced.len())
                    .find(|&i| !used[i] && event_matches(symbols, event, produced[i]));
                match found {
                    Some(i) => used[i] = true,
                    None => return Err(w.watch),
                }
            }
        }
        Ok(())
    }
}

/// Whether an observed event is the model's, on every field it carries.
fn event_matches(symbols: &Symbols, observed: &Event, model: &ModelEvent) -> bool {
    if observed.kind != model.kind || observed.key != symbols.keys[model.key as usize] {
        return false;
    }
    if observed.kind == EventType::Put {
        let Some(slot) = model.kv else {
            return false;
        };
        if observed
            .value
            .as_ref()
            .is_some_and(|v| *v != symbols.values[slot.value as usize])
            || (observed.create_revision != 0 && observed.create_revision != slot.create_revision)
            || (observed.version != 0 && observed.version != slot.version)
            || observed.lease.is_some_and(|l| l != slot.lease)
        {
            return false;
        }
    }
    match (&observed.prev_kv, model.prev) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(kv), Some(prev)) => kv_matches(symbols, kv, model.key, &prev),
    }
}

fn kv_matches(symbols: &Symbols, kv: &KeyValue, key: u32, slot: &Slot) -> bool {
    kv.key == symbols.keys[key as usize]
        && kv
            .value
            .as_ref()
            .is_none_or(|v| *v == symbols.values[slot.value as usize])
        && kv.version.is_none_or(|v| v == slot.version)
        && kv.create_revision.is_none_or(|v| v == slot.create_revision)
        && kv.mod_revision.is_none_or(|v| v == slot.mod_revision)
        && kv.lease.is_none_or(|v| v == slot.lease)
}
