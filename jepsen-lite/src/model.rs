//! The etcd KV model: a deterministic step function over interned state.
//!
//! The state is what an etcd member's MVCC store exposes at its newest
//! revision: per key `(value, version, create_revision, mod_revision, lease)`,
//! the global revision, and the set of granted leases. `step` applies one
//! request and says whether the response the client saw is the one the model
//! gives; it never looks at time, so the same history always checks the same.
//!
//! Semantics follow etcd's `mvcc` and `apply` packages (and the robustness
//! suite's `model/deterministic.go`):
//! - every put bumps the revision, even when the value is unchanged; the
//!   version restarts at 1 after a delete;
//! - a delete or lease revoke that removes nothing leaves the revision alone;
//! - a txn's writes, nested txns' included, all land on one revision, which is
//!   only consumed if the txn changed something; every compare on the path the
//!   txn takes is judged before it writes (etcd's `compareToPath`); gets inside
//!   the branch see the branch's earlier writes, reads at a past revision do
//!   not; a txn in either of whose branches a put key repeats or lies in a
//!   delete range (etcd's `checkIntervals`, nested txns included) is refused
//!   whole (`duplicate key`, judged when compiling, with etcd's quirk that a
//!   range end of `"\0"` is an empty interval there); a txn of serializable
//!   ranges only is read at its header revision, as a serializable range is;
//! - a value compare on a missing key is false; other targets compare a
//!   missing key as 0;
//! - a put with a lease that does not exist fails and changes nothing.
//!
//! Lease expiry is not modelled as such: a history that lets leases expire
//! records each expiry as a lease revoke with an unknown outcome, called at the
//! earliest time the expiry may take effect (the simulator derives it from the
//! TTL, the last renewal and the clock faults it injected). A keep-alive only
//! asserts that its lease exists.
//!
//! Keys and values arrive interned (see `compile.rs`). The key
//! table is chunked behind `Arc`s: the checker keeps thousands of states in
//! its cache and a step copies only the chunk it writes. The state hash is kept
//! up to date incrementally (XOR of per-slot hashes), which is what makes the
//! checker's memoization cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::compile::Operand;
pub use crate::compile::{
    compile_input, compile_output, Expect, Guard, RangeOpts, Request, Symbols, WriteRevisions,
};
use crate::history::{CompareResult, CompareTarget, EventType, KeyValue};

/// Keys per copy-on-write chunk of the state.
const CHUNK_KEYS: usize = 16;

/// One key's state. Invariant: `version >= 1` and
/// `create_revision <= mod_revision` for a present key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub value: u32,
    pub lease: i64,
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// A change to one key, as a watch would report it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEvent {
    pub kind: EventType,
    pub key: u32,
    pub revision: i64,
    /// The key after a put.
    pub kv: Option<Slot>,
    pub prev: Option<Slot>,
}

/// The model's answer to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub revision: i64,
    pub kvs: Vec<(u32, Slot)>,
    pub succeeded: bool,
    pub deleted: i64,
    /// A range's count of keys in range, before filters and limit.
    pub count: i64,
    pub more: bool,
    /// For a range with options: `kvs` holds every key that passes the
    /// filters, in key order, and the answer is judged against `opts` (see
    /// `kvs_fit_range`).
    pub range_opts: Option<RangeOpts>,
    /// A read at a past revision: only the header and errors are in this
    /// response; the content is judged when the revision is made.
    pub deferred: bool,
    pub responses: Vec<Response>,
    pub error: Option<&'static str>,
}

/// The model state at the newest revision.
#[derive(Clone, Debug)]
pub struct State {
    /// Invariant: never decreases from one step to the next.
    revision: i64,
    /// The newest compaction (0: none). Reads below it fail.
    compacted: i64,
    chunks: Vec<Arc<Vec<Option<Slot>>>>,
    /// Granted, unrevoked lease ids, sorted.
    leases: Arc<Vec<i64>>,
    /// XOR of `slot_hash` over present keys.
    slots_hash: u64,
    /// XOR of `mix(id)` over `leases`.
    leases_hash: u64,
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.revision == other.revision
            && self.compacted == other.compacted
            && self.slots_hash == other.slots_hash
            && self.leases_hash == other.leases_hash
            && self.leases == other.leases
            && self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

impl Eq for State {}

/// splitmix64's finalizer: a cheap, well-mixed 64-bit hash.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn slot_hash(key: u32, slot: &Slot) -> u64 {
    let mut h = mix(u64::from(key) + 1);
    for field in [
        u64::from(slot.value),
        slot.lease as u64,
        slot.version as u64,
        slot.create_revision as u64,
        slot.mod_revision as u64,
    ] {
        h = mix(h ^ field);
    }
    h
}

impl State {
    /// The empty store at revision 1, as etcd starts.
    pub fn new(key_count: usize) -> State {
        let chunk_count = key_count.div_ceil(CHUNK_KEYS);
        let chunks = (0..chunk_count)
            .map(|c| {
                let len = CHUNK_KEYS.min(key_count - c * CHUNK_KEYS);
                Arc::new(vec![None; len])
            })
            .collect();
        State {
            revision: 1,
            compacted: 0,
            chunks,
            leases: Arc::new(Vec::new()),
            slots_hash: 0,
            leases_hash: 0,
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// A hash of the whole state, kept incrementally.
    pub fn fingerprint(&self) -> u64 {
        self.slots_hash
            ^ self.leases_hash
            ^ mix(self.revision as u64 ^ 0x5bd1_e995)
            ^ mix(self.compacted as u64 ^ 0x2545_f491_4f6c_dd1d)
    }

    pub fn slot(&self, key: u32) -> Option<Slot> {
        let key = key as usize;
        self.chunks[key / CHUNK_KEYS][key % CHUNK_KEYS]
    }

    fn set_slot(&mut self, key: u32, slot: Option<Slot>) {
        let index = key as usize;
        let chunk = Arc::make_mut(&mut self.chunks[index / CHUNK_KEYS]);
        let entry = &mut chunk[index % CHUNK_KEYS];
        if let Some(old) = entry {
            self.slots_hash ^= slot_hash(key, old);
        }
        if let Some(new) = &slot {
            self.slots_hash ^= slot_hash(key, new);
        }
        *entry = slot;
    }

    /// Whether some key is attached to lease `id`.
    pub fn lease_has_keys(&self, id: i64) -> bool {
        (0..self.key_count() as u32).any(|key| self.slot(key).is_some_and(|s| s.lease == id))
    }

    fn has_lease(&self, id: i64) -> bool {
        self.leases.binary_search(&id).is_ok()
    }

    /// Applies `request` if the observed response matches; returns the next
    /// state. `expect == None` (unknown outcome) matches any response.
    pub fn step(&self, request: &Request, expect: Option<&Expect>) -> Option<State> {
        self.step_events(request, expect, None)
    }

    /// [`State::step`], also collecting the events of the step into `events`
    /// (cleared first) when given.
    pub fn step_events(
        &self,
        request: &Request,
        expect: Option<&Expect>,
        events: Option<&mut Vec<ModelEvent>>,
    ) -> Option<State> {
        if let (Request::Range { lo, hi, opts }, Some(expect)) = (request, expect) {
            // Reads dominate histories; answer them without cloning.
            let response = self.range(*lo, *hi, opts);
            return expect.matches(&response, true).then(|| self.clone());
        }
        let mut next = self.clone();
        let mut events = events;
        if let Some(events) = events.as_deref_mut() {
            events.clear();
        }
        let response = next.execute(request, events);
        if let Some(limits) = expect.and_then(|e| e.write_revisions.as_ref()) {
            let wrote = response.error.is_none() && next.revision > self.revision;
            if !limits.permits(wrote.then_some(next.revision)) {
                return None;
            }
            // The response itself is unknown: only the revision was narrowed.
            return Some(if response.error.is_some() {
                self.clone()
            } else {
                next
            });
        }
        match expect {
            Some(expect) if !expect.matches(&response, true) => None,
            _ if response.error.is_some() => Some(self.clone()),
            _ => Some(next),
        }
    }

    pub(crate) fn range(&self, lo: u32, hi: u32, opts: &RangeOpts) -> Response {
        if opts.revision > 0 {
            // etcd: a future revision and a compacted one are errors. A
            // serializable read cannot see past the newest revision either, and
            // its header is its own revision.
            if opts.revision > self.revision {
                return error_response("mvcc: required revision is a future revision");
            }
            if opts.revision < self.compacted && !opts.serializable {
                return error_response("mvcc: required revision has been compacted");
            }
            return Response {
                revision: if opts.serializable {
                    opts.revision
                } else {
                    self.revision
                },
                range_opts: Some(*opts),
                deferred: true,
                ..Response::default()
            };
        }
        let kvs: Vec<(u32, Slot)> = (lo..hi)
            .filter_map(|k| self.slot(k).map(|s| (k, s)))
            .collect();
        let count = kvs.len() as i64;
        if opts.is_plain() {
            return Response {
                revision: self.revision,
                kvs,
                count,
                ..Response::default()
            };
        }
        let bound = |limit: i64, keep: &dyn Fn(i64) -> bool, of: i64| limit == 0 || keep(of);
        let kvs: Vec<(u32, Slot)> = if opts.count_only {
            Vec::new()
        } else {
            kvs.into_iter()
                .filter(|(_, s)| {
                    bound(
                        opts.max_mod_revision,
                        &|m| m <= opts.max_mod_revision,
                        s.mod_revision,
                    ) && bound(
                        opts.min_mod_revision,
                        &|m| m >= opts.min_mod_revision,
                        s.mod_revision,
                    ) && bound(
                        opts.max_create_revision,
                        &|c| c <= opts.max_create_revision,
                        s.create_revision,
                    ) && bound(
                        opts.min_create_revision,
                        &|c| c >= opts.min_create_revision,
                        s.create_revision,
                    )
                })
                .collect()
        };
        Response {
            revision: self.revision,
            more: opts.limit > 0 && kvs.len() as i64 > opts.limit,
            kvs,
            count,
            range_opts: Some(*opts),
            ..Response::default()
        }
    }

    /// Executes `request` in place and returns the model's response. On an
    /// error the state may be half-changed: callers discard it.
    pub fn execute(
        &mut self,
        request: &Request,
        mut events: Option<&mut Vec<ModelEvent>>,
    ) -> Response {
        match request {
            Request::Range { lo, hi, opts } => self.range(*lo, *hi, opts),
            Request::Put { .. } | Request::Delete { .. } => {
                let ops = std::slice::from_ref(request);
                let mut response = self.apply_writes(ops, events);
                if response.error.is_none() {
                    let sub = response.responses.pop().unwrap_or_default();
                    response.deleted = sub.deleted;
                }
                response
            }
            Request::Txn {
                serializable: true,
                read_at,
                ..
            } if *read_at > 0 => {
                // Answered by one member from the store at its header revision:
                // the content is judged when the search makes that revision.
                if *read_at > self.revision {
                    return error_response("mvcc: required revision is a future revision");
                }
                Response {
                    revision: *read_at,
                    deferred: true,
                    ..Response::default()
                }
            }
            Request::Txn { .. } => {
                // etcd's `compareToPath`: every compare on the chosen path, nested
                // txns' included, is judged on the store before the txn runs.
                let mut path = Vec::new();
                self.txn_path(request, &mut path);
                if let Some(error) = self.check_path(request, &path, &mut 0) {
                    return error_response(error);
                }
                let next_revision = self.revision + 1;
                let mut changed = false;
                let mut response = self.apply_txn(
                    request,
                    &path,
                    &mut 0,
                    next_revision,
                    &mut changed,
                    &mut events,
                );
                if changed {
                    self.revision = next_revision;
                }
                response.revision = self.revision;
                response
            }
            Request::LeaseGrant { id } => {
                if self.has_lease(*id) {
                    return error_response("lease already exists");
                }
                let leases = Arc::make_mut(&mut self.leases);
                let at = leases.partition_point(|l| l < id);
                leases.insert(at, *id);
                self.leases_hash ^= mix(*id as u64);
                Response {
                    revision: self.revision,
                    ..Response::default()
                }
            }
            Request::LeaseKeepAlive { id } => {
                if !self.has_lease(*id) {
                    return error_response("lease not found");
                }
                Response {
                    revision: self.revision,
                    ..Response::default()
                }
            }
            Request::Refused { reason } => error_response(reason),
            Request::Compact { revision } => {
                if *revision <= self.compacted {
                    return error_response("mvcc: required revision has been compacted");
                }
                if *revision > self.revision {
                    return error_response("mvcc: required revision is a future revision");
                }
                self.compacted = *revision;
                Response {
                    revision: self.revision,
                    ..Response::default()
                }
            }
            Request::LeaseRevoke { id } => {
                let Ok(at) = self.leases.binary_search(id) else {
                    return error_response("lease not found");
                };
                Arc::make_mut(&mut self.leases).remove(at);
                self.leases_hash ^= mix(*id as u64);
                let next_revision = self.revision + 1;
                let mut changed = false;
                for key in 0..self.key_count() as u32 {
                    if let Some(prev) = self.slot(key).filter(|s| s.lease == *id) {
                        self.set_slot(key, None);
                        changed = true;
                        if let Some(events) = events.as_deref_mut() {
                            events.push(ModelEvent {
                                kind: EventType::Delete,
                                key,
                                revision: next_revision,
                                kv: None,
                                prev: Some(prev),
                            });
                        }
                    }
                }
                if changed {
                    self.revision = next_revision;
                }
                Response {
                    revision: self.revision,
                    ..Response::default()
                }
            }
        }
    }

    fn key_count(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// etcd's `applyCompare`: every key in the compared range must satisfy
    /// the compare; over no key, a value compare fails and the others compare
    /// a zero key-value.
    fn guard_holds(&self, guard: &Guard) -> bool {
        let present: Vec<Slot> = (guard.lo..guard.hi).filter_map(|k| self.slot(k)).collect();
        if present.is_empty() {
            return self.slot_satisfies(guard, None);
        }
        present.iter().all(|s| self.slot_satisfies(guard, Some(*s)))
    }

    fn slot_satisfies(&self, guard: &Guard, slot: Option<Slot>) -> bool {
        let (actual, wanted) = match (guard.target, guard.operand, slot) {
            // etcd: a value compare against a missing key always fails.
            (CompareTarget::Value, _, None) => return false,
            (CompareTarget::Value, Operand::Value(v), Some(s)) => {
                (i64::from(s.value), i64::from(v))
            }
            (CompareTarget::Value, Operand::Int(_), _) => return false,
            (_, Operand::Value(_), _) => return false,
            (target, Operand::Int(n), slot) => {
                let s = slot.unwrap_or(Slot {
                    value: 0,
                    lease: 0,
                    version: 0,
                    create_revision: 0,
                    mod_revision: 0,
                });
                let actual = match target {
                    CompareTarget::Version => s.version,
                    CompareTarget::ModRevision => s.mod_revision,
                    CompareTarget::CreateRevision => s.create_revision,
                    CompareTarget::Lease => s.lease,
                    CompareTarget::Value => unreachable!("handled above"),
                };
                (actual, n)
            }
        };
        match guard.result {
            CompareResult::Equal => actual == wanted,
            CompareResult::NotEqual => actual != wanted,
            CompareResult::Less => actual < wanted,
            CompareResult::Greater => actual > wanted,
        }
    }

    /// The branch each txn on the chosen path takes, in etcd's order: the txn's
    /// own, then those of the nested txns of the branch it takes, depth first.
    fn txn_path(&self, request: &Request, path: &mut Vec<bool>) {
        let Request::Txn {
            guards,
            success,
            failure,
            ..
        } = request
        else {
            return;
        };
        let succeeded = guards.iter().all(|g| self.guard_holds(g));
        path.push(succeeded);
        for op in if succeeded { success } else { failure } {
            self.txn_path(op, path);
        }
    }

    /// etcd's `checkRequests` along the chosen path, before anything is written:
    /// a put's lease must exist, and a read at a past revision must be neither
    /// in the future nor compacted (on the store before the txn). Any failure
    /// refuses the whole txn.
    fn check_path(&self, request: &Request, path: &[bool], at: &mut usize) -> Option<&'static str> {
        let Request::Txn {
            success, failure, ..
        } = request
        else {
            return None;
        };
        let succeeded = path[*at];
        *at += 1;
        for op in if succeeded { success } else { failure } {
            match op {
                Request::Put { lease, .. } if *lease != 0 && !self.has_lease(*lease) => {
                    return Some("lease not found")
                }
                Request::Range { opts, .. } if opts.revision > 0 => {
                    if opts.revision > self.revision {
                        return Some("mvcc: required revision is a future revision");
                    }
                    if opts.revision < self.compacted {
                        return Some("mvcc: required revision has been compacted");
                    }
                }
                Request::Txn { .. } => {
                    if let Some(error) = self.check_path(op, path, at) {
                        return Some(error);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Runs the branch `path` chooses for a txn (checked by `check_path`), nested
    /// txns included, on revision `next_revision`; `changed` is set when
    /// something was written. The caller sets the revision.
    fn apply_txn(
        &mut self,
        request: &Request,
        path: &[bool],
        at: &mut usize,
        next_revision: i64,
        changed: &mut bool,
        events: &mut Option<&mut Vec<ModelEvent>>,
    ) -> Response {
        let Request::Txn {
            success, failure, ..
        } = request
        else {
            unreachable!("apply_txn is called on txns only");
        };
        let succeeded = path[*at];
        *at += 1;
        let branch = if succeeded { success } else { failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match op {
                Request::Txn { .. } => self.apply_txn(op, path, at, next_revision, changed, events),
                _ => self.apply_one(op, next_revision, changed, events),
            };
            responses.push(response);
        }
        Response {
            succeeded,
            responses,
            ..Response::default()
        }
    }

    /// One range, put or delete of a write, on revision `next_revision` (the
    /// caller sets the revision afterwards; a put's lease was checked).
    fn apply_one(
        &mut self,
        op: &Request,
        next_revision: i64,
        changed: &mut bool,
        events: &mut Option<&mut Vec<ModelEvent>>,
    ) -> Response {
        match op {
            Request::Range { lo, hi, opts } => self.range(*lo, *hi, opts),
            Request::Put { key, value, lease } => {
                let prev = self.slot(*key);
                let slot = Slot {
                    value: *value,
                    lease: *lease,
                    version: prev.map_or(1, |p| p.version + 1),
                    create_revision: prev.map_or(next_revision, |p| p.create_revision),
                    mod_revision: next_revision,
                };
                self.set_slot(*key, Some(slot));
                *changed = true;
                if let Some(events) = events.as_deref_mut() {
                    events.push(ModelEvent {
                        kind: EventType::Put,
                        key: *key,
                        revision: next_revision,
                        kv: Some(slot),
                        prev,
                    });
                }
                Response::default()
            }
            Request::Delete { lo, hi } => {
                let mut deleted = 0;
                for key in *lo..*hi {
                    if let Some(prev) = self.slot(key) {
                        self.set_slot(key, None);
                        deleted += 1;
                        if let Some(events) = events.as_deref_mut() {
                            events.push(ModelEvent {
                                kind: EventType::Delete,
                                key,
                                revision: next_revision,
                                kv: None,
                                prev: Some(prev),
                            });
                        }
                    }
                }
                *changed |= deleted > 0;
                Response {
                    deleted,
                    ..Response::default()
                }
            }
            Request::Txn { .. }
            | Request::Refused { .. }
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. } => {
                error_response("request not supported inside a txn")
            }
        }
    }

    /// Runs a put or a delete on one new revision.
    fn apply_writes(
        &mut self,
        ops: &[Request],
        mut events: Option<&mut Vec<ModelEvent>>,
    ) -> Response {
        // Validate first: etcd rejects the whole request before touching the
        // store. (Duplicate keys are refused when compiling: etcd judges them on
        // both branches before the compares.)
        for op in ops {
            if let Request::Put { lease, .. } = op {
                if *lease != 0 && !self.has_lease(*lease) {
                    return error_response("lease not found");
                }
            }
        }
        let next_revision = self.revision + 1;
        let mut changed = false;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.apply_one(op, next_revision, &mut changed, &mut events));
        }
        if changed {
            self.revision = next_revision;
        }
        Response {
            revision: self.revision,
            responses,
            ..Response::default()
        }
    }

    /// A readable copy of the state, for reports.
    pub fn describe(&self, symbols: &Symbols) -> ModelState {
        let mut kvs = BTreeMap::new();
        for key in 0..self.key_count() as u32 {
            if let Some(slot) = self.slot(key) {
                let name = symbols.keys[key as usize].clone();
                kvs.insert(name, slot_to_kv(symbols, key, &slot));
            }
        }
        ModelState {
            revision: self.revision,
            compacted: self.compacted,
            kvs,
            leases: self.leases.to_vec(),
        }
    }
}

pub fn slot_to_kv(symbols: &Symbols, key: u32, slot: &Slot) -> KeyValue {
    KeyValue {
        key: symbols.keys[key as usize].clone(),
        value: Some(symbols.values[slot.value as usize].clone()),
        version: Some(slot.version),
        create_revision: Some(slot.create_revision),
        mod_revision: Some(slot.mod_revision),
        lease: (slot.lease != 0).then_some(slot.lease),
    }
}

fn error_response(message: &'static str) -> Response {
    Response {
        error: Some(message),
        ..Response::default()
    }
}

/// A readable model state.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelState {
    pub revision: i64,
    pub compacted: i64,
    pub kvs: BTreeMap<String, KeyValue>,
    pub leases: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Compare, CompareOperand, History, Input, Operation, TxnOp};

    fn op(input: Input) -> Operation {
        Operation {
            client: 0,
            call: 0,
            return_time: Some(1),
            input,
            output: None,
        }
    }

    fn put(key: &str, value: &str) -> Input {
        Input::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    fn setup(inputs: Vec<Input>) -> (Symbols, Vec<Request>) {
        let mut history = History::default();
        for input in inputs {
            history.push_operation(op(input));
        }
        let symbols = Symbols::from_history(&history);
        let requests = history
            .operations
            .iter()
            .map(|o| compile_input(&symbols, &o.input).unwrap())
            .collect();
        (symbols, requests)
    }

    #[test]
    fn put_bumps_revision_and_version() {
        let (symbols, requests) = setup(vec![
            put("a", "1"),
            put("a", "2"),
            Input::Delete {
                key: "a".into(),
                range_end: None,
                prefix: false,
            },
            put("a", "3"),
        ]);
        let mut state = State::new(symbols.keys.len());
        let mut responses = Vec::new();
        for request in &requests {
            responses.push(state.execute(request, None));
        }
        assert_eq!(
            responses.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(responses[2].deleted, 1);
        let slot = state.slot(0).unwrap();
        assert_eq!(
            (slot.version, slot.create_revision, slot.mod_revision),
            (1, 5, 5)
        );
    }

    #[test]
    fn delete_of_nothing_keeps_revision() {
        let (symbols, requests) = setup(vec![
            put("b", "1"),
            Input::Delete {
                key: "a".into(),
                range_end: None,
                prefix: false,
            },
        ]);
        let mut state = State::new(symbols.keys.len());
        state.execute(&requests[0], None);
        let response = state.execute(&requests[1], None);
        assert_eq!((response.revision, response.deleted), (2, 0));
    }

    #[test]
    fn txn_compares_and_branches() {
        let cas = |expected: i64, value: &str| Input::Txn {
            compare: vec![Compare {
                key: "a".into(),
                range_end: None,
                target: CompareTarget::ModRevision,
                result: CompareResult::Equal,
                value: CompareOperand::Int(expected),
            }],
            success: vec![TxnOp::Put {
                key: "a".into(),
                value: value.into(),
                lease: None,
            }],
            failure: vec![TxnOp::Get {
                key: "a".into(),
                range_end: None,
                prefix: false,
            }],
        };
        let (symbols, requests) = setup(vec![put("a", "1"), cas(2, "2"), cas(2, "3")]);
        let mut state = State::new(symbols.keys.len());
        state.execute(&requests[0], None);
        let first = state.execute(&requests[1], None);
        assert!(first.succeeded);
        assert_eq!(first.revision, 3);
        let second = state.execute(&requests[2], None);
        assert!(!second.succeeded);
        assert_eq!(
            second.revision, 3,
            "a failed txn with only reads keeps the revision"
        );
        assert_eq!(second.responses[0].kvs[0].1.mod_revision, 3);
    }

    #[test]
    fn value_compare_on_missing_key_fails() {
        let txn = Input::Txn {
            compare: vec![Compare {
                key: "zz".into(),
                range_end: None,
                target: CompareTarget::Value,
                result: CompareResult::NotEqual,
                value: CompareOperand::Str("x".into()),
            }],
            success: vec![],
            failure: vec![],
        };
        let (symbols, requests) = setup(vec![put("a", "x"), txn]);
        let mut state = State::new(symbols.keys.len());
        assert!(!state.execute(&requests[1], None).succeeded);
    }

    #[test]
    fn leases_attach_and_revoke_in_one_revision() {
        let (symbols, requests) = setup(vec![
            Input::LeaseGrant { id: 7, ttl: 10 },
            Input::Put {
                key: "a".into(),
                value: "1".into(),
                lease: Some(7),
            },
            Input::Put {
                key: "b".into(),
                value: "1".into(),
                lease: Some(7),
            },
            Input::LeaseRevoke { id: 7 },
            Input::Put {
                key: "c".into(),
                value: "1".into(),
                lease: Some(7),
            },
        ]);
        let mut state = State::new(symbols.keys.len());
        let mut events = Vec::new();
        let revisions: Vec<_> = requests
            .iter()
            .map(|r| state.execute(r, Some(&mut events)))
            .collect();
        assert_eq!(revisions[3].revision, 4);
        assert_eq!(events.iter().filter(|e| e.revision == 4).count(), 2);
        assert_eq!(revisions[4].error, Some("lease not found"));
    }

    #[test]
    fn duplicate_keys_in_txn_are_rejected() {
        let txn = Input::Txn {
            compare: vec![],
            success: vec![
                TxnOp::Put {
                    key: "a".into(),
                    value: "1".into(),
                    lease: None,
                },
                TxnOp::Delete {
                    key: "a".into(),
                    range_end: None,
                    prefix: true,
                },
            ],
            failure: vec![],
        };
        let (symbols, requests) = setup(vec![txn]);
        let mut state = State::new(symbols.keys.len());
        assert!(state.execute(&requests[0], None).error.is_some());
    }

    #[test]
    fn fingerprint_is_incremental() {
        let (symbols, requests) = setup(vec![
            put("a", "1"),
            put("b", "2"),
            Input::Delete {
                key: "a".into(),
                range_end: None,
                prefix: false,
            },
        ]);
        let mut state = State::new(symbols.keys.len());
        let empty = state.fingerprint();
        for request in &requests {
            state.execute(request, None);
        }
        let mut direct = State::new(symbols.keys.len());
        direct.revision = state.revision;
        direct.set_slot(1, state.slot(1));
        assert_eq!(direct.fingerprint(), state.fingerprint());
        assert_eq!(direct, state);
        assert_ne!(empty, state.fingerprint());
    }
}
