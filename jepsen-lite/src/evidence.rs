//! Evidence that narrows unknown-outcome writes before the search.
//!
//! A timed-out write may or may not have landed, and if it did, on any
//! revision after its call. Since every write consumes one global revision,
//! the search can let a write that never landed stand in for one that did and
//! only notice much later; with many of them pending this is exponential. The
//! history usually says much more, and each rule below only removes
//! placements that contradict an acknowledged observation, so it never hides
//! a violation; wrong evidence (a lying read or watch) can only make the search
//! fail, and then a violation is reported.
//!
//! From reads (any known response carrying a header revision `h`):
//! - a key read with `mod_revision m < h` was not written in `(m, h]`, so no
//!   unknown write of that key produced a revision there (`forbidden`);
//! - a value written by exactly one operation, seen by a read at
//!   `mod_revision m`, pins that operation to `m`: it is owed. A value seen by
//!   any watch (in an event or a previous key-value) pins it the same way.
//!
//! From a reference watch (every key, from the first revision, no filters; a
//! chain of such watches, each resuming where the last one's events ended, counts
//! as one):
//! each revision it saw was produced by exactly one request, so an unknown
//! write produced one of the revisions no acknowledged write claims whose
//! events it explains, or landed after the last revision the watch vouched for.
//! A revision only one unknown write explains is pinned to it. This is the
//! ambiguity the etcd robustness suite removes with WAL and watch evidence
//! (`patch_history.go`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{
    interval_contains, key_interval, Event, EventType, History, Input, KeyValue, Output, TxnOp,
};
use crate::model::WriteRevisions;

/// The evidence for every unknown-outcome write that has some, by operation
/// index.
pub fn narrow_unknown_writes(history: &History) -> HashMap<usize, WriteRevisions> {
    let mut evidence = watch_evidence(history);
    let reads = read_evidence(history);
    for (index, op) in history.operations.iter().enumerate() {
        if op.is_known() || op.input.is_read_only() {
            continue;
        }
        let forbidden = forbidden_for(&op.input, &reads.unwritten);
        let pinned = reads.pinned.get(&index).copied();
        if forbidden.is_empty() && pinned.is_none() {
            continue;
        }
        let limits = evidence.entry(index).or_default();
        match pinned {
            // A read saw the write's own value: that fixes its revision, and
            // any other evidence is moot. If the rest contradicts it, the search
            // then fails where the contradicting observation is, which names
            // a better operation than failing here.
            Some((revision, by)) => {
                limits.pinned_by = by;
                limits.must_write = true;
                limits.allowed = Some(vec![revision]);
                limits.forbidden = Vec::new();
            }
            None => limits.forbidden = forbidden,
        }
    }
    evidence
}

struct ReadEvidence {
    /// Per key, sorted disjoint `(lo, hi]` revision intervals in which it was
    /// not written.
    unwritten: HashMap<String, Vec<(i64, i64)>>,
    /// Unknown-outcome operations whose unique value a read saw, the
    /// mod_revision it had, and the read (`None` for a watch).
    pinned: HashMap<usize, (i64, Option<usize>)>,
}

fn read_evidence(history: &History) -> ReadEvidence {
    let mut writers: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (index, op) in history.operations.iter().enumerate() {
        for (key, value) in put_pairs(&op.input) {
            writers.entry((key, value)).or_default().push(index);
        }
    }
    let mut unwritten: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut pinned = HashMap::new();
    for (reader, op) in history.operations.iter().enumerate() {
        if !op.is_known() {
            continue;
        }
        let Some(output) = op.output.as_ref().filter(|o| o.error.is_none()) else {
            continue;
        };
        // What the read saw was the store at its header revision, or at the
        // past revision it asked for.
        let header = match &op.input {
            Input::Range(r) if r.revision > 0 => Some(r.revision),
            _ => output.revision,
        };
        let mut read: Vec<(&KeyValue, Option<i64>)> =
            output.kvs.iter().flatten().map(|kv| (kv, header)).collect();
        if let Input::Txn {
            success, failure, ..
        } = &op.input
        {
            txn_reads(success, failure, output, header, &mut read);
        }
        for (kv, read_at) in read {
            let Some(modified) = kv.mod_revision else {
                continue;
            };
            if let Some(h) = read_at.filter(|h| modified < *h) {
                unwritten
                    .entry(kv.key.clone())
                    .or_default()
                    .push((modified, h));
            }
            if let Some(value) = kv.value.as_deref() {
                if let Some([only]) = writers.get(&(kv.key.as_str(), value)).map(Vec::as_slice) {
                    if !history.operations[*only].is_known() {
                        pinned.insert(*only, (modified, Some(reader)));
                    }
                }
            }
        }
    }
    // Any watch that saw a value (as an event or as a previous key-value) saw the one write
    // that produced it, at its mod_revision, just as a read would have.
    let watched = history.watches.iter().flat_map(|watch| &watch.responses);
    for event in watched.flat_map(|response| &response.events) {
        let seen = [(
            event.key.as_str(),
            event.value.as_deref(),
            Some(event.mod_revision),
        )]
        .into_iter()
        .chain(
            event
                .prev_kv
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_deref(), kv.mod_revision)),
        );
        for (key, value, modified) in seen {
            let (Some(value), Some(modified)) = (value, modified) else {
                continue;
            };
            if let Some([only]) = writers.get(&(key, value)).map(Vec::as_slice) {
                if !history.operations[*only].is_known() {
                    pinned.entry(*only).or_insert((modified, None));
                }
            }
        }
    }
    for intervals in unwritten.values_mut() {
        *intervals = merge(std::mem::take(intervals));
    }
    ReadEvidence { unwritten, pinned }
}

fn put_pairs(input: &Input) -> Vec<(&str, &str)> {
    fn branch_puts<'a>(ops: &'a [TxnOp], out: &mut Vec<(&'a str, &'a str)>) {
        for op in ops {
            match op {
                TxnOp::Put { key, value, .. } => out.push((key.as_str(), value.as_str())),
                TxnOp::Txn {
                    success, failure, ..
                } => {
                    branch_puts(success, out);
                    branch_puts(failure, out);
                }
                TxnOp::Get { .. } | TxnOp::Delete { .. } | TxnOp::Range(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    match input {
        Input::Put { key, value, .. } => out.push((key.as_str(), value.as_str())),
        Input::Txn {
            success, failure, ..
        } => {
            branch_puts(success, &mut out);
            branch_puts(failure, &mut out);
        }
        _ => {}
    }
    out
}

/// The key-values a txn's sub-responses read, each with the revision of the store
/// it was read from when known: a read at a past revision reads there, any other
/// at the txn's header. Without `succeeded` the branch is unknown, and so is the
/// revision, when a branch holds a past-revision read or a nested txn.
fn txn_reads<'a>(
    success: &'a [TxnOp],
    failure: &'a [TxnOp],
    output: &'a Output,
    header: Option<i64>,
    out: &mut Vec<(&'a KeyValue, Option<i64>)>,
) {
    let plain = |ops: &[TxnOp]| {
        ops.iter().all(|op| match op {
            TxnOp::Range(r) => r.revision == 0,
            TxnOp::Txn { .. } => false,
            TxnOp::Get { .. } | TxnOp::Put { .. } | TxnOp::Delete { .. } => true,
        })
    };
    let branch = match output.succeeded {
        Some(true) => Some(success),
        Some(false) => Some(failure),
        None => None,
    };
    let both_plain = plain(success) && plain(failure);
    for (i, sub) in output.responses.iter().flatten().enumerate() {
        let op = branch.and_then(|b| b.get(i));
        let read_at = match op {
            Some(TxnOp::Range(r)) if r.revision > 0 => Some(r.revision),
            Some(TxnOp::Txn {
                success, failure, ..
            }) => {
                txn_reads(success, failure, sub, header, out);
                continue;
            }
            Some(_) => header,
            None if both_plain => header,
            None => None,
        };
        for kv in sub.kvs.iter().flatten() {
            out.push((kv, read_at));
        }
    }
}

/// Revisions at which `input` cannot have written, given when keys were
/// surely not written.
fn forbidden_for(input: &Input, unwritten: &HashMap<String, Vec<(i64, i64)>>) -> Vec<(i64, i64)> {
    let single_keys = |ops: &[TxnOp]| -> Option<Vec<(i64, i64)>> {
        let mut writes = false;
        let mut union = Vec::new();
        for op in ops {
            let key = match op {
                TxnOp::Put { key, .. } => key,
                TxnOp::Delete {
                    key,
                    range_end: None,
                    prefix: false,
                } => key,
                // May write anything, or nothing.
                TxnOp::Delete { .. } | TxnOp::Txn { .. } => {
                    writes = true;
                    continue;
                }
                TxnOp::Get { .. } | TxnOp::Range(_) => continue,
            };
            writes = true;
            union.extend(unwritten.get(key).into_iter().flatten().copied());
        }
        writes.then(|| merge(union))
    };
    match input {
        Input::Put { key, .. } => unwritten.get(key).cloned().unwrap_or_default(),
        Input::Delete {
            key,
            range_end: None,
            prefix: false,
        } => unwritten.get(key).cloned().unwrap_or_default(),
        Input::Txn {
            success, failure, ..
        } => {
            // The txn writes through one branch: a revision is forbidden only
            // if every writing branch is forbidden there.
            let branches: Vec<Vec<(i64, i64)>> = [success, failure]
                .into_iter()
                .filter_map(|b| single_keys(b))
                .collect();
            let mut iter = branches.into_iter();
            let first = iter.next().unwrap_or_default();
            iter.fold(first, |acc, b| intersect(&acc, &b))
        }
        _ => Vec::new(),
    }
}

/// Sorts and merges `(lo, hi]` intervals.
fn merge(mut intervals: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    intervals.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Intersects two merged lists of `(lo, hi]` intervals.
fn intersect(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The events of every revision up to `vouched`, from watches that together saw every
/// key from the first revision on.
struct ReferenceWatch {
    revisions: BTreeMap<i64, Vec<Event>>,
    vouched: i64,
    /// For each delete event, by (revision, key): the lease the key was attached to just
    /// before (0 for none), as its newest put event or its previous key-value said
    /// (`None` when neither was seen).
    leases_deleted: HashMap<(i64, String), Option<i64>>,
}

impl ReferenceWatch {
    /// Whether the revocation of `lease` could have produced the delete of `key` at
    /// `revision`: the key was attached to it, or the watch does not say to what.
    fn revoke_deletes(&self, lease: i64, revision: i64, key: &str) -> bool {
        match self.leases_deleted.get(&(revision, key.to_string())) {
            Some(Some(attached)) => *attached == lease,
            _ => true,
        }
    }
}

/// The reference: watches over every key without filters, chained by start revision —
/// a client that resumes a broken watch from the revision after the last event it saw
/// continues the same record — as far as they leave no gap from the first revision on.
fn reference_watch(history: &History) -> Option<ReferenceWatch> {
    let mut chain: Vec<_> = history
        .watches
        .iter()
        .filter(|w| {
            let everything =
                key_interval(&w.key, w.range_end.as_deref(), w.prefix) == (String::new(), None);
            everything && w.start_revision >= 1 && w.filters.is_empty() && w.compact_revision == 0
        })
        .collect();
    chain.sort_by_key(|w| w.start_revision);
    let mut revisions: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    // Revision 1 is the empty store: nothing happened at it.
    let mut vouched = 1;
    let mut linked = false;
    for watch in chain {
        if watch.start_revision > vouched + 1 {
            break;
        }
        linked = true;
        for response in &watch.responses {
            if response.progress_notify {
                vouched = vouched.max(response.revision);
            }
            for event in &response.events {
                vouched = vouched.max(event.mod_revision);
                let events = revisions.entry(event.mod_revision).or_default();
                if !events.contains(event) {
                    events.push(event.clone());
                }
            }
        }
    }
    if !linked {
        return None;
    }
    // A put event carries the key's lease (absent: none, as the watch checks read it);
    // a delete ends it.
    let mut attached: HashMap<&str, i64> = HashMap::new();
    let mut leases_deleted = HashMap::new();
    for (revision, events) in &revisions {
        for event in events {
            match event.kind {
                EventType::Put => {
                    attached.insert(&event.key, event.lease.unwrap_or(0));
                }
                EventType::Delete => {
                    let before = attached
                        .remove(event.key.as_str())
                        .or_else(|| event.prev_kv.as_ref().map(|kv| kv.lease.unwrap_or(0)));
                    leases_deleted.insert((*revision, event.key.clone()), before);
                }
            }
        }
    }
    Some(ReferenceWatch {
        revisions,
        vouched,
        leases_deleted,
    })
}

/// Whether the request's writes could have produced exactly `events`, the events of
/// `revision` in `reference`.
fn explains(input: &Input, revision: i64, events: &[Event], reference: &ReferenceWatch) -> bool {
    use {EventType, TxnOp};
    let branch_explains = |ops: &[TxnOp]| {
        let mut puts: Vec<(&str, &str)> = Vec::new();
        let mut deletes = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value, .. } => puts.push((key, value)),
                TxnOp::Delete {
                    key,
                    range_end,
                    prefix,
                } => deletes.push(key_interval(key, range_end.as_deref(), *prefix)),
                // A nested txn may make any events: the branch may explain them.
                TxnOp::Txn { .. } => return !events.is_empty(),
                TxnOp::Get { .. } | TxnOp::Range(_) => {}
            }
        }
        let put_events: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e.kind == EventType::Put)
            .map(|e| (e.key.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        let deletes_ok = events
            .iter()
            .filter(|e| e.kind == EventType::Delete)
            .all(|e| deletes.iter().any(|d| interval_contains(d, &e.key)));
        !events.is_empty()
            && put_events.len() == puts.len()
            && puts.iter().all(|p| put_events.contains(p))
            && deletes_ok
    };
    match input {
        Input::Put { key, value, lease } => branch_explains(&[TxnOp::Put {
            key: key.clone(),
            value: value.clone(),
            lease: *lease,
        }]),
        Input::Delete {
            key,
            range_end,
            prefix,
        } => branch_explains(&[TxnOp::Delete {
            key: key.clone(),
            range_end: range_end.clone(),
            prefix: *prefix,
        }]),
        Input::Txn {
            success, failure, ..
        } => branch_explains(success) || branch_explains(failure),
        Input::LeaseRevoke { id } => {
            !events.is_empty()
                && events.iter().all(|e| {
                    e.kind == EventType::Delete && reference.revoke_deletes(*id, revision, &e.key)
                })
        }
        Input::Get { .. }
        | Input::Range(_)
        | Input::Compact { .. }
        | Input::LeaseGrant { .. }
        | Input::LeaseKeepAlive { .. } => false,
    }
}

/// Narrows unknown-outcome writes with a reference watch (one over every key
/// from the first revision): each revision the watch saw was produced by one
/// request, so an unknown write either produced one of the revisions that no
/// acknowledged write claims and whose events it explains, or landed after
/// the last revision the watch vouched for. A revision only one unknown write
/// explains must have been produced by it.
fn watch_evidence(history: &History) -> HashMap<usize, WriteRevisions> {
    let mut evidence = HashMap::new();
    let Some(reference) = reference_watch(history) else {
        return evidence;
    };
    // `claimed`: revisions an acknowledged write surely produced (no unknown
    // write can have). `maybe_claimed`: revisions an acknowledged request may
    // have produced; pinning needs a revision nobody else can explain.
    let mut claimed = HashSet::new();
    let mut maybe_claimed = HashSet::new();
    let mut can_pin = true;
    for op in history
        .operations
        .iter()
        .filter(|o| o.is_known() && !o.input.is_read_only())
    {
        let Some(output) = op.output.as_ref() else {
            can_pin = false;
            continue;
        };
        if output.error.is_some() {
            continue;
        }
        let Some(revision) = output.revision else {
            can_pin = false;
            continue;
        };
        maybe_claimed.insert(revision);
        let wrote = match &op.input {
            Input::Put { .. } => true,
            Input::Delete { .. } => output.deleted.is_some_and(|d| d > 0),
            Input::Txn {
                success, failure, ..
            } => {
                let branch = match output.succeeded {
                    Some(true) => success,
                    Some(false) => failure,
                    None => continue,
                };
                branch.iter().any(|o| matches!(o, TxnOp::Put { .. }))
            }
            _ => false,
        };
        if wrote {
            claimed.insert(revision);
        }
    }
    let unclaimed: Vec<(i64, &Vec<Event>)> = reference
        .revisions
        .iter()
        .filter(|(r, _)| !claimed.contains(*r))
        .map(|(r, e)| (*r, e))
        .collect();
    let mut explainers: HashMap<i64, Vec<usize>> = HashMap::new();
    for (index, op) in history.operations.iter().enumerate() {
        if op.is_known() || op.input.is_read_only() || matches!(op.input, Input::LeaseGrant { .. })
        {
            continue;
        }
        let allowed: Vec<i64> = unclaimed
            .iter()
            .filter(|(revision, events)| explains(&op.input, *revision, events, &reference))
            .map(|(r, _)| *r)
            .collect();
        for revision in &allowed {
            explainers.entry(*revision).or_default().push(index);
        }
        evidence.insert(
            index,
            WriteRevisions {
                allowed: Some(allowed),
                after: reference.vouched,
                must_write: false,
                forbidden: Vec::new(),
                pinned_by: None,
            },
        );
    }
    for (revision, ops) in explainers {
        if !can_pin || maybe_claimed.contains(&revision) {
            continue;
        }
        if let [only] = ops.as_slice() {
            let limits = evidence.get_mut(only).expect("inserted above");
            limits.allowed = Some(vec![revision]);
            limits.must_write = true;
        }
    }
    evidence
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_algebra() {
        assert_eq!(
            merge(vec![(5, 7), (1, 3), (2, 4), (7, 9)]),
            vec![(1, 4), (5, 9)]
        );
        assert_eq!(
            intersect(&[(1, 4), (5, 9)], &[(3, 6), (8, 20)]),
            vec![(3, 4), (5, 6), (8, 9)]
        );
        assert!(intersect(&[(1, 2)], &[(2, 3)]).is_empty());
    }

    #[test]
    fn reads_forbid_and_pin() {
        let text = r#"{"client":1,"call":0,"return":10,"input":{"type":"put","key":"a","value":"1"},"output":{"revision":2}}
{"client":2,"call":5,"return":null,"input":{"type":"put","key":"a","value":"2"}}
{"client":3,"call":5,"return":null,"input":{"type":"put","key":"b","value":"3"}}
{"client":1,"call":20,"return":30,"input":{"type":"put","key":"c","value":"1"},"output":{"revision":4}}
{"client":1,"call":40,"return":50,"input":{"type":"get","key":"","range_end":"\u0000"},"output":{"revision":4,"kvs":[{"key":"a","value":"1","mod_revision":2},{"key":"b","value":"3","mod_revision":3}]}}"#;
        let history = History::parse(text).unwrap();
        let evidence = narrow_unknown_writes(&history);
        assert_eq!(evidence[&1].forbidden, vec![(2, 4)]);
        assert!(!evidence[&1].must_write);
        assert_eq!(evidence[&2].allowed, Some(vec![3]));
        assert!(evidence[&2].must_write);
    }
}
