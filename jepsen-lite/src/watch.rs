//! Watch guarantees, as etcd documents them (API guarantees page, and the
//! robustness suite's `validate/watch.go`).
//!
//! - **Ordered**: event revisions never go back along a stream.
//! - **Unique**: no event is delivered twice (one per key and revision, but
//!   for a txn that puts and deletes one key on one revision).
//! - **Atomic**: one revision's events are never split across responses,
//!   unless the response says `fragment`.
//! - **Reliable**: no event is missing between the start revision and the
//!   last revision the stream vouched for (its newest event or progress
//!   notification).
//! - **Resumable**: a watch opened at revision `r` starts with the first
//!   matching event at or after `r` (nothing before `r`, nothing skipped).
//! - **Bookmarkable**: after a progress notification at `r`, no event at or
//!   below `r` arrives.
//! - **PrevKv**, **IsCreate**: the previous key-value and the create marker
//!   (`version == 1`, `create_revision == mod_revision`) are right.
//! - **Filter**: only watched keys, and no puts/deletes the filters exclude.
//! - **Valid**: every event is one that happened, with the right content.
//! - **Compacted**: a watch created (its create request sent) on a server after a
//!   compaction at `C` returned there is cancelled with `compact_revision >= C` when it
//!   starts below `C`, and delivers nothing below `C` whatever its start.
//!
//! The reference is a [`Replay`]: the events of every revision, from
//! replaying the linearization through the model. When the history has no
//! linearization (a violation, or the budget ran out) the reference holds only
//! the writes whose responses carried a revision; it is incomplete, so the
//! checks that need every event (Valid, PrevKv) are skipped and only
//! acknowledged writes are required to appear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{
    interval_contains, key_interval, Event, EventType, History, Input, KeyValue, TxnOp, Watch,
    WatchFilter,
};
use crate::model::{slot_to_kv, ModelEvent, State};
use crate::Prepared;

/// Which guarantee a watch broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guarantee {
    Ordered,
    Unique,
    Atomic,
    Reliable,
    Resumable,
    Bookmarkable,
    PrevKv,
    IsCreate,
    Filter,
    Valid,
    Compacted,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::Ordered => "ordered",
            Guarantee::Unique => "unique",
            Guarantee::Atomic => "atomic",
            Guarantee::Reliable => "reliable",
            Guarantee::Resumable => "resumable",
            Guarantee::Bookmarkable => "bookmarkable",
            Guarantee::PrevKv => "prev_kv",
            Guarantee::IsCreate => "is_create",
            Guarantee::Filter => "filter",
            Guarantee::Valid => "valid",
            Guarantee::Compacted => "compacted",
        }
    }

    pub fn parse(name: &str) -> Option<Guarantee> {
        [
            Guarantee::Ordered,
            Guarantee::Unique,
            Guarantee::Atomic,
            Guarantee::Reliable,
            Guarantee::Resumable,
            Guarantee::Bookmarkable,
            Guarantee::PrevKv,
            Guarantee::IsCreate,
            Guarantee::Filter,
            Guarantee::Valid,
            Guarantee::Compacted,
        ]
        .into_iter()
        .find(|g| g.name() == name)
    }
}

/// One broken promise of one watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchViolation {
    /// Index in `History::watches`.
    pub watch: usize,
    /// File line of the watch record (0 when built in memory).
    pub line: usize,
    pub response: Option<usize>,
    pub event: Option<usize>,
    pub guarantee: Guarantee,
    /// The operation whose write the watch should have reported, when known.
    pub op: Option<usize>,
    pub message: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch #{} (line {})", self.watch, self.line)?;
        if let Some(r) = self.response {
            write!(f, " response #{r}")?;
        }
        if let Some(e) = self.event {
            write!(f, " event #{e}")?;
        }
        write!(f, " [{}] {}", self.guarantee.name(), self.message)?;
        if let Some(op) = self.op {
            write!(f, " (written by operation #{op})")?;
        }
        Ok(())
    }
}

/// One event of the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedEvent {
    /// The operation that caused it, when known.
    pub op: Option<usize>,
    pub event: Event,
}

/// The reference events, by revision.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub revisions: BTreeMap<i64, Vec<ExpectedEvent>>,
    /// Whether every event of every revision is present with full content.
    pub complete: bool,
}

impl Replay {
    /// The `nth` event of `kind` on `key` at `revision` (a txn may put a key and
    /// delete it again on one revision; see `EventId`).
    fn find(&self, id: &EventId) -> Option<&ExpectedEvent> {
        self.revisions
            .get(&id.1)?
            .iter()
            .filter(|e| e.event.key == id.0 && e.event.kind == id.2)
            .nth(id.3)
    }
}

/// An event's identity: key, revision, type and how many events of that type
/// the key had before it on that revision. A key has one event per revision,
/// except that a txn may put a key and delete it on one revision (a delete whose
/// range end is `"\0"` is no duplicate for etcd), so a delete can follow a put
/// and a put a delete.
type EventId = (String, i64, EventType, usize);

fn event_ids<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<EventId> {
    let mut counts: HashMap<(&str, EventType), usize> = HashMap::new();
    events
        .map(|e| {
            let n = counts.entry((e.key.as_str(), e.kind)).or_default();
            *n += 1;
            (e.key.clone(), e.mod_revision, e.kind, *n - 1)
        })
        .collect()
}

/// Replays `order` (history indices) through the model.
pub fn replay_linearization(prepared: &Prepared, order: &[usize]) -> Replay {
    let by_index: HashMap<usize, usize> = prepared
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| (op.index, i))
        .collect();
    let mut state = State::new(prepared.symbols.keys.len());
    let mut replay = Replay {
        revisions: BTreeMap::new(),
        complete: true,
    };
    let mut events: Vec<ModelEvent> = Vec::new();
    for index in order {
        let op = &prepared.ops[by_index[index]];
        let mut next = state.clone();
        events.clear();
        let response = next.execute(&op.request, Some(&mut events));
        if response.error.is_some() {
            continue;
        }
        state = next;
        for event in &events {
            let key = prepared.symbols.keys[event.key as usize].clone();
            let prev_kv = event
                .prev
                .map(|p| slot_to_kv(&prepared.symbols, event.key, &p));
            let converted = match (event.kind, event.kv) {
                (EventType::Put, Some(slot)) => Event {
                    kind: EventType::Put,
                    key,
                    value: Some(prepared.symbols.values[slot.value as usize].clone()),
                    create_revision: slot.create_revision,
                    mod_revision: slot.mod_revision,
                    version: slot.version,
                    lease: (slot.lease != 0).then_some(slot.lease),
                    prev_kv,
                },
                _ => Event {
                    kind: EventType::Delete,
                    key,
                    value: None,
                    create_revision: 0,
                    mod_revision: event.revision,
                    version: 0,
                    lease: None,
                    prev_kv,
                },
            };
            replay
                .revisions
                .entry(event.revision)
                .or_default()
                .push(ExpectedEvent {
                    op: Some(*index),
                    event: converted,
                });
        }
    }
    replay
}

/// The writes whose responses carried a revision: an incomplete reference.
pub fn acknowledged_writes(history: &History) -> Replay {
    let mut replay = Replay::default();
    let mut add = |revision: i64, op: usize, kind: EventType, key: &str, value: Option<&str>| {
        replay
            .revisions
            .entry(revision)
            .or_default()
            .push(ExpectedEvent {
                op: Some(op),
                event: Event {
                    kind,
                    key: key.to_string(),
                    value: value.map(str::to_string),
                    create_revision: 0,
                    mod_revision: revision,
                    version: 0,
                    lease: None,
                    prev_kv: None,
                },
            });
    };
    for (index, op) in history.operations.iter().enumerate() {
        let Some(output) = op
            .output
            .as_ref()
            .filter(|o| op.is_known() && o.error.is_none())
        else {
            continue;
        };
        let Some(revision) = output.revision else {
            continue;
        };
        match &op.input {
            Input::Put { key, value, .. } => add(revision, index, EventType::Put, key, Some(value)),
            Input::Delete {
                key,
                range_end: None,
                prefix: false,
            } if output.deleted == Some(1) => add(revision, index, EventType::Delete, key, None),
            Input::Txn {
                success, failure, ..
            } => {
                let Some(succeeded) = output.succeeded else {
                    continue;
                };
                let branch = if succeeded { success } else { failure };
                for (i, txn_op) in branch.iter().enumerate() {
                    match txn_op {
                        TxnOp::Put { key, value, .. } => {
                            add(revision, index, EventType::Put, key, Some(value))
                        }
                        TxnOp::Delete {
                            key,
                            range_end: None,
                            prefix: false,
                        } => {
                            let deleted = output
                                .responses
                                .as_ref()
                                .and_then(|r| r.get(i))
                                .and_then(|r| r.deleted);
                            if deleted == Some(1) {
                                add(revision, index, EventType::Delete, key, None);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    replay
}

/// At most this many violations are reported per watch: the first few are
/// the story, the rest is noise.
const VIOLATIONS_PER_WATCH_MAX: usize = 10;

/// Checks every watch of `history` against `replay`.
pub fn check_watches(history: &History, replay: &Replay, complete: bool) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    let compactions = compactions(history);
    for (index, watch) in history.watches.iter().enumerate() {
        let line = history.watch_lines.get(index).copied().unwrap_or(0);
        let mut found = check_cancellation(watch, &compactions);
        found.extend(check_created_after_compaction(history, index));
        found.extend(check_watch(watch, replay, complete && replay.complete));
        found.truncate(VIOLATIONS_PER_WATCH_MAX);
        for mut violation in found {
            violation.watch = index;
            violation.line = line;
            out.push(violation);
        }
    }
    out
}

/// The revisions the history's compactions may have compacted at: those that did not
/// fail (succeeded, or ended unknown).
fn compactions(history: &History) -> std::collections::BTreeSet<i64> {
    history
        .operations
        .iter()
        .filter_map(|op| match &op.input {
            Input::Compact { revision, .. } => {
                let failed = op.is_known()
                    && op
                        .output
                        .as_ref()
                        .is_some_and(|output| output.error.is_some());
                (!failed).then_some(*revision)
            }
            _ => None,
        })
        .collect()
}

/// A watch the server cancelled because its start was compacted (etcd cancels a watcher
/// whose next revision is below the compaction, and reports that compaction): the
/// compaction must be one the history made, and the watch must have been behind it — it
/// started, and delivered every event, below the compaction's revision.
fn check_cancellation(
    watch: &Watch,
    compactions: &std::collections::BTreeSet<i64>,
) -> Vec<WatchViolation> {
    let compacted = watch.compact_revision;
    if compacted <= 0 {
        return Vec::new();
    }
    let violation =
        |response: Option<usize>, event: Option<usize>, guarantee, message| WatchViolation {
            watch: 0,
            line: 0,
            response,
            event,
            guarantee,
            op: None,
            message,
        };
    let mut out = Vec::new();
    if !compactions.contains(&compacted) {
        out.push(violation(
            None,
            None,
            Guarantee::Valid,
            format!(
                "cancelled by a compaction at revision {compacted} that no operation in the \
                 history made"
            ),
        ));
    }
    if watch.start_revision >= compacted {
        out.push(violation(
            None,
            None,
            Guarantee::Resumable,
            format!(
                "cancelled as compacted at revision {compacted} although it started at {}, \
                 which that compaction keeps",
                watch.start_revision
            ),
        ));
    }
    for (r, response) in watch.responses.iter().enumerate() {
        for (e, event) in response.events.iter().enumerate() {
            if event.mod_revision >= compacted {
                out.push(violation(
                    Some(r),
                    Some(e),
                    Guarantee::Resumable,
                    format!(
                        "delivered revision {} and was then cancelled as compacted at \
                         {compacted}: a watch that far along is not behind the compaction",
                        event.mod_revision
                    ),
                ));
            }
        }
    }
    out
}

/// The newest compaction known to be in force on the watch's server when it was
/// created: one that succeeded (its response says so) and returned, on the same
/// server, before the watch's create request was sent. 0 when there is none.
///
/// Only the call time of the create request is sound: an event may be in flight
/// for any time, so when a watch received something says nothing. And only the
/// same server: etcd creates a watch on the member's own store without a read
/// barrier, so a member that lags (partitioned, say) serves a watch from below a
/// compaction that another member already answered; and a restarted process may
/// serve before it has replayed its log (etcd 3.4 does not, other servers may),
/// so the driver names processes, not members.
fn compaction_in_force(history: &History, watch: usize) -> i64 {
    let origin = history.watch_origin(watch);
    let Some(created) = origin.call else {
        return 0;
    };
    history
        .operations
        .iter()
        .enumerate()
        .filter_map(|(index, op)| {
            let Input::Compact { revision, .. } = op.input else {
                return None;
            };
            let succeeded = op.output.as_ref().is_some_and(|o| o.error.is_none());
            let before = op.return_time.is_some_and(|r| r < created);
            let same_server = history.operation_member(index) == origin.member.as_deref();
            (succeeded && before && same_server).then_some(revision)
        })
        .max()
        .unwrap_or(0)
}

/// A watch created after a compaction at `C` was in force on its server (see
/// [`compaction_in_force`]): etcd cancels a new watcher whose start is below the
/// compaction before sending it anything, with the compaction it has (at least
/// `C`), and a watcher from a later start (or from now) has nothing below `C` to
/// send.
fn check_created_after_compaction(history: &History, index: usize) -> Vec<WatchViolation> {
    let compacted = compaction_in_force(history, index);
    if compacted <= 0 {
        return Vec::new();
    }
    let watch = &history.watches[index];
    let violation =
        |response: Option<usize>, event: Option<usize>, message: String| WatchViolation {
            watch: 0,
            line: 0,
            response,
            event,
            guarantee: Guarantee::Compacted,
            op: None,
            message,
        };
    let mut out = Vec::new();
    for (r, response) in watch.responses.iter().enumerate() {
        for (e, event) in response.events.iter().enumerate() {
            if event.mod_revision < compacted {
                out.push(violation(
                    Some(r),
                    Some(e),
                    format!(
                        "delivered revision {} although the watch was created after a \
                         compaction at {compacted} returned on its server",
                        event.mod_revision
                    ),
                ));
            }
        }
    }
    let behind = (1..compacted).contains(&watch.start_revision);
    if behind && watch.compact_revision > 0 && watch.compact_revision < compacted {
        out.push(violation(
            None,
            None,
            format!(
                "cancelled as compacted at {} although a compaction at {compacted} had \
                 returned on its server before it was created",
                watch.compact_revision
            ),
        ));
    }
    let delivered = watch
        .responses
        .iter()
        .position(|r| r.progress_notify || !r.events.is_empty());
    if let (true, 0, Some(r)) = (behind, watch.compact_revision, delivered) {
        out.push(violation(
            Some(r),
            None,
            format!(
                "started at {} and was created after a compaction at {compacted} returned \
                 on its server, yet was not cancelled as compacted",
                watch.start_revision
            ),
        ));
    }
    out
}

struct Seen {
    response: usize,
    fragment: bool,
    revision: i64,
}

fn check_watch(watch: &Watch, replay: &Replay, complete: bool) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    let violation = |response: Option<usize>,
                     event: Option<usize>,
                     guarantee: Guarantee,
                     op: Option<usize>,
                     message: String| {
        WatchViolation {
            watch: 0,
            line: 0,
            response,
            event,
            guarantee,
            op,
            message,
        }
    };
    let interval = key_interval(&watch.key, watch.range_end.as_deref(), watch.prefix);
    let no_put = watch.filters.contains(&WatchFilter::Noput);
    let no_delete = watch.filters.contains(&WatchFilter::Nodelete);
    let wanted = |e: &Event| {
        interval_contains(&interval, &e.key)
            && !(no_put && e.kind == EventType::Put)
            && !(no_delete && e.kind == EventType::Delete)
    };

    let mut last: Option<Seen> = None;
    let mut progress = 0i64;
    let mut delivered: HashSet<EventId> = HashSet::new();
    // The events delivered so far per (key, revision): the same one again is a
    // duplicate.
    let mut delivered_events: HashMap<(String, i64), Vec<&Event>> = HashMap::new();
    let mut first_event_revision: Option<i64> = None;
    for (r, response) in watch.responses.iter().enumerate() {
        if response.progress_notify {
            if !response.events.is_empty() {
                out.push(violation(
                    Some(r),
                    None,
                    Guarantee::Bookmarkable,
                    None,
                    "a progress notification carries events".into(),
                ));
            }
            progress = progress.max(response.revision);
            continue;
        }
        for (e, event) in response.events.iter().enumerate() {
            let at = (Some(r), Some(e));
            let describe = format!(
                "{:?} {:?}@{}",
                event.kind,
                crate::bytes::display(&event.key),
                event.mod_revision
            );
            first_event_revision.get_or_insert(event.mod_revision);
            let same_key = delivered_events
                .entry((event.key.clone(), event.mod_revision))
                .or_default();
            let id: EventId = (
                event.key.clone(),
                event.mod_revision,
                event.kind,
                same_key.iter().filter(|e| e.kind == event.kind).count(),
            );
            let duplicate = same_key.contains(&event);
            same_key.push(event);
            if duplicate || !delivered.insert(id.clone()) {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Unique,
                    None,
                    format!("{describe} delivered twice"),
                ));
                continue;
            }
            if let Some(seen) = &last {
                if event.mod_revision < seen.revision {
                    out.push(violation(
                        at.0,
                        at.1,
                        Guarantee::Ordered,
                        None,
                        format!("{describe} after an event at revision {}", seen.revision),
                    ));
                    continue;
                }
                if event.mod_revision == seen.revision && seen.response != r && !seen.fragment {
                    out.push(violation(
                        at.0,
                        at.1,
                        Guarantee::Atomic,
                        None,
                        format!(
                            "revision {} split across responses #{} and #{r}",
                            event.mod_revision, seen.response
                        ),
                    ));
                    continue;
                }
            }
            last = Some(Seen {
                response: r,
                fragment: response.fragment,
                revision: event.mod_revision,
            });
            if event.mod_revision <= progress {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Bookmarkable,
                    None,
                    format!("{describe} after a progress notification at {progress}"),
                ));
                continue;
            }
            if watch.start_revision > 0 && event.mod_revision < watch.start_revision {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Resumable,
                    None,
                    format!(
                        "{describe} before the start revision {}",
                        watch.start_revision
                    ),
                ));
                continue;
            }
            if response.revision != 0 && response.revision < event.mod_revision {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Ordered,
                    None,
                    format!(
                        "{describe} in a response with header revision {}",
                        response.revision
                    ),
                ));
                continue;
            }
            if !interval_contains(&interval, &event.key) {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Filter,
                    None,
                    format!("{describe} is outside the watched range"),
                ));
                continue;
            }
            if !wanted(event) {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::Filter,
                    None,
                    format!("{describe} should have been filtered out"),
                ));
                continue;
            }
            if event.kind == EventType::Put
                && (event.version == 1) != (event.create_revision == event.mod_revision)
            {
                out.push(violation(
                    at.0,
                    at.1,
                    Guarantee::IsCreate,
                    None,
                    format!(
                        "{describe} has version {} but create_revision {}",
                        event.version, event.create_revision
                    ),
                ));
                continue;
            }
            let expected = replay.find(&id);
            match expected {
                None if complete => {
                    out.push(violation(
                        at.0,
                        at.1,
                        Guarantee::Valid,
                        None,
                        format!("{describe} matches no write of the history"),
                    ));
                }
                None => {}
                Some(expected) => {
                    if let Some(problem) = compare_event(event, &expected.event, complete) {
                        let guarantee = if event.kind == EventType::Put
                            && (event.version == 1) != (expected.event.version == 1)
                            && complete
                        {
                            Guarantee::IsCreate
                        } else {
                            Guarantee::Valid
                        };
                        out.push(violation(
                            at.0,
                            at.1,
                            guarantee,
                            expected.op,
                            format!("{describe}: {problem}"),
                        ));
                    } else if watch.prev_kv
                        && complete
                        && !same_prev(&event.prev_kv, &expected.event.prev_kv)
                    {
                        out.push(violation(
                            at.0,
                            at.1,
                            Guarantee::PrevKv,
                            expected.op,
                            format!(
                                "{describe} has prev_kv {:?}, expected {:?}",
                                event.prev_kv, expected.event.prev_kv
                            ),
                        ));
                    }
                }
            }
        }
    }

    // Reliability: every wanted event between the start and the last revision
    // the stream vouched for must have arrived.
    if watch.compact_revision > 0 {
        return out;
    }
    let vouched = last.as_ref().map_or(0, |s| s.revision).max(progress);
    let start = if watch.start_revision > 0 {
        watch.start_revision
    } else {
        first_event_revision.unwrap_or(i64::MAX)
    };
    if start <= vouched {
        for (revision, events) in replay.revisions.range(start..=vouched) {
            let ids = event_ids(events.iter().map(|e| &e.event));
            for (expected, id) in events.iter().zip(&ids) {
                if !wanted(&expected.event) || delivered.contains(id) {
                    continue;
                }
                let before_first = first_event_revision.is_none_or(|f| *revision < f);
                let guarantee = if before_first {
                    Guarantee::Resumable
                } else {
                    Guarantee::Reliable
                };
                out.push(violation(
                    None,
                    None,
                    guarantee,
                    expected.op,
                    format!(
                        "missing {:?} {:?}@{revision} (the stream vouched for revisions {start}..={vouched})",
                        expected.event.kind,
                        crate::bytes::display(&expected.event.key)
                    ),
                ));
            }
        }
    }
    out
}

/// What differs between an observed event and the reference, if anything.
fn compare_event(observed: &Event, expected: &Event, complete: bool) -> Option<String> {
    if observed.kind != expected.kind {
        return Some(format!(
            "type {:?}, expected {:?}",
            observed.kind, expected.kind
        ));
    }
    if observed.kind == EventType::Put
        && expected.value.is_some()
        && observed.value != expected.value
    {
        return Some(format!(
            "value {:?}, expected {:?}",
            observed.value.as_deref().map(crate::bytes::display),
            expected.value.as_deref().map(crate::bytes::display)
        ));
    }
    if complete && observed.kind == EventType::Put {
        if observed.version != expected.version
            || observed.create_revision != expected.create_revision
        {
            return Some(format!(
                "version {} create_revision {}, expected {} and {}",
                observed.version,
                observed.create_revision,
                expected.version,
                expected.create_revision
            ));
        }
        if observed.lease.unwrap_or(0) != expected.lease.unwrap_or(0) {
            return Some(format!(
                "lease {:?}, expected {:?}",
                observed.lease, expected.lease
            ));
        }
    }
    None
}

fn same_prev(observed: &Option<KeyValue>, expected: &Option<KeyValue>) -> bool {
    match (observed, expected) {
        (None, None) => true,
        (Some(o), Some(e)) => {
            o.key == e.key
                && o.value == e.value
                && o.version.is_none_or(|v| Some(v) == e.version)
                && o.create_revision
                    .is_none_or(|v| Some(v) == e.create_revision)
                && o.mod_revision.is_none_or(|v| Some(v) == e.mod_revision)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WatchResponse;

    fn put_event(key: &str, value: &str, revision: i64, version: i64, create: i64) -> Event {
        Event {
            kind: EventType::Put,
            key: key.into(),
            value: Some(value.into()),
            create_revision: create,
            mod_revision: revision,
            version,
            lease: None,
            prev_kv: None,
        }
    }

    fn reference(events: &[Event]) -> Replay {
        let mut replay = Replay {
            revisions: BTreeMap::new(),
            complete: true,
        };
        for (i, e) in events.iter().enumerate() {
            replay
                .revisions
                .entry(e.mod_revision)
                .or_default()
                .push(ExpectedEvent {
                    op: Some(i),
                    event: e.clone(),
                });
        }
        replay
    }

    fn watch(responses: Vec<Vec<Event>>) -> Watch {
        Watch {
            client: 9,
            watch_id: 1,
            key: "".into(),
            range_end: Some("\0".into()),
            prefix: false,
            start_revision: 2,
            filters: vec![],
            prev_kv: false,
            responses: responses
                .into_iter()
                .map(|events| WatchResponse {
                    revision: events.iter().map(|e| e.mod_revision).max().unwrap_or(0),
                    events,
                    fragment: false,
                    progress_notify: false,
                })
                .collect(),
            canceled: false,
            compact_revision: 0,
        }
    }

    fn guarantees(found: &[WatchViolation]) -> Vec<Guarantee> {
        found.iter().map(|v| v.guarantee).collect()
    }

    #[test]
    fn table() {
        let a2 = put_event("a", "1", 2, 1, 2);
        let b3 = put_event("b", "1", 3, 1, 3);
        let c3 = put_event("c", "1", 3, 1, 3);
        let a4 = put_event("a", "2", 4, 2, 2);
        let replay = reference(&[a2.clone(), b3.clone(), c3.clone(), a4.clone()]);
        type Case = (&'static str, Vec<Vec<Event>>, Vec<Guarantee>);
        let cases: Vec<Case> = vec![
            (
                "all in order",
                vec![
                    vec![a2.clone()],
                    vec![b3.clone(), c3.clone()],
                    vec![a4.clone()],
                ],
                vec![],
            ),
            (
                "duplicate",
                vec![
                    vec![a2.clone()],
                    vec![b3.clone(), c3.clone()],
                    vec![b3.clone(), a4.clone()],
                ],
                vec![Guarantee::Unique],
            ),
            (
                "missing",
                vec![vec![a2.clone()], vec![a4.clone()]],
                vec![Guarantee::Reliable, Guarantee::Reliable],
            ),
            (
                "split",
                vec![
                    vec![a2.clone()],
                    vec![b3.clone()],
                    vec![c3.clone(), a4.clone()],
                ],
                vec![Guarantee::Atomic],
            ),
            (
                "backwards",
                vec![
                    vec![a2.clone()],
                    vec![a4.clone()],
                    vec![b3.clone(), c3.clone()],
                ],
                vec![Guarantee::Ordered, Guarantee::Ordered],
            ),
            (
                "missing first",
                vec![vec![b3.clone(), c3.clone()], vec![a4.clone()]],
                vec![Guarantee::Resumable],
            ),
            (
                "wrong create",
                vec![
                    vec![a2.clone()],
                    vec![b3.clone(), c3.clone()],
                    vec![put_event("a", "2", 4, 1, 4)],
                ],
                vec![Guarantee::IsCreate],
            ),
        ];
        for (name, responses, want) in cases {
            let found = check_watch(&watch(responses), &replay, true);
            assert_eq!(guarantees(&found), want, "{name}: {found:?}");
        }
    }

    #[test]
    fn filters_and_progress() {
        let a2 = put_event("a", "1", 2, 1, 2);
        let b3 = put_event("b", "1", 3, 1, 3);
        let replay = reference(&[a2.clone(), b3.clone()]);
        let mut w = watch(vec![vec![a2.clone()]]);
        w.key = "a".into();
        w.range_end = None;
        w.responses.push(WatchResponse {
            revision: 3,
            events: vec![],
            fragment: false,
            progress_notify: true,
        });
        assert!(check_watch(&w, &replay, true).is_empty());
        w.responses.push(WatchResponse {
            revision: 3,
            events: vec![b3.clone()],
            fragment: false,
            progress_notify: false,
        });
        assert_eq!(
            guarantees(&check_watch(&w, &replay, true)),
            vec![Guarantee::Bookmarkable]
        );
        let mut noput = watch(vec![vec![a2.clone()]]);
        noput.filters = vec![WatchFilter::Noput];
        assert_eq!(
            guarantees(&check_watch(&noput, &replay, true)),
            vec![Guarantee::Filter]
        );
    }

    /// A history with puts at 2 and 3 and a compaction at 3 (returning at 70, on
    /// `compaction_member`, ending as `compaction_output` says), and one watch from
    /// `start` created at `call` on `watch_member` that delivered `events` (revisions
    /// of puts on `a`) and was cancelled with `compact_revision`.
    struct Case {
        name: &'static str,
        compaction_return: Option<i64>,
        compaction_error: bool,
        compaction_member: Option<&'static str>,
        call: Option<i64>,
        watch_member: Option<&'static str>,
        start: i64,
        events: Vec<i64>,
        compact_revision: i64,
        want: usize,
    }

    fn created_after_compaction(case: &Case) -> Vec<WatchViolation> {
        use crate::history::{Operation, Output, WatchOrigin};
        let mut history = History::default();
        for (revision, value) in [(2, "1"), (3, "2")] {
            history.push_operation(Operation {
                client: 1,
                call: revision * 10,
                return_time: Some(revision * 10 + 5),
                input: Input::Put {
                    key: "a".into(),
                    value: value.into(),
                    lease: None,
                },
                output: Some(Output {
                    revision: Some(revision),
                    ..Output::default()
                }),
            });
        }
        let compaction = history.push_operation(Operation {
            client: 2,
            call: 60,
            return_time: case.compaction_return,
            input: Input::Compact {
                revision: 3,
                physical: false,
            },
            output: Some(Output {
                revision: Some(3),
                error: case.compaction_error.then(|| "compacted".to_string()),
                ..Output::default()
            }),
        });
        history.set_operation_member(compaction, case.compaction_member.map(String::from));
        let mut w = watch(vec![case
            .events
            .iter()
            .map(|&r| put_event("a", if r == 2 { "1" } else { "2" }, r, r - 1, 2))
            .collect()]);
        w.start_revision = case.start;
        w.compact_revision = case.compact_revision;
        w.canceled = case.compact_revision > 0;
        let index = history.push_watch(w);
        history.set_watch_origin(
            index,
            WatchOrigin {
                call: case.call,
                member: case.watch_member.map(String::from),
            },
        );
        check_created_after_compaction(&history, index)
    }

    #[test]
    fn watches_created_after_a_compaction() {
        let base = || Case {
            name: "",
            compaction_return: Some(70),
            compaction_error: false,
            compaction_member: None,
            call: Some(80),
            watch_member: None,
            start: 2,
            events: vec![2, 3],
            compact_revision: 0,
            want: 2,
        };
        let cases = [
            Case {
                name: "delivered from below and not cancelled",
                ..base()
            },
            Case {
                name: "cancelled as it must be",
                events: vec![],
                compact_revision: 3,
                want: 0,
                ..base()
            },
            Case {
                name: "cancelled naming an older compaction",
                events: vec![],
                compact_revision: 2,
                want: 1,
                ..base()
            },
            Case {
                name: "only events the compaction keeps, still not cancelled",
                events: vec![3],
                want: 1,
                ..base()
            },
            Case {
                name: "nothing delivered: the cancellation may be on its way",
                events: vec![],
                want: 0,
                ..base()
            },
            Case {
                name: "created before the compaction returned",
                call: Some(70),
                want: 0,
                ..base()
            },
            Case {
                name: "no creation time",
                call: None,
                want: 0,
                ..base()
            },
            Case {
                name: "compaction failed",
                compaction_error: true,
                want: 0,
                ..base()
            },
            Case {
                name: "compaction outcome unknown",
                compaction_return: None,
                want: 0,
                ..base()
            },
            Case {
                name: "another member, which may lag",
                compaction_member: Some("m1"),
                watch_member: Some("m2"),
                want: 0,
                ..base()
            },
            Case {
                name: "the same member",
                compaction_member: Some("m1"),
                watch_member: Some("m1"),
                want: 2,
                ..base()
            },
            Case {
                name: "started at the compaction",
                start: 3,
                events: vec![3],
                want: 0,
                ..base()
            },
            Case {
                name: "from now, yet an event below the compaction",
                start: 0,
                events: vec![2],
                want: 1,
                ..base()
            },
        ];
        for case in &cases {
            let found = created_after_compaction(case);
            assert_eq!(found.len(), case.want, "{}: {found:?}", case.name);
            assert!(
                found.iter().all(|v| v.guarantee == Guarantee::Compacted),
                "{}: {found:?}",
                case.name
            );
        }
    }
}
