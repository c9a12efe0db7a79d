//! Interning and compiling a history for the model.
//!
//! Keys and values are interned to `u32` in sorted order, so a range request
//! is a contiguous id interval and a value comparison is an id comparison.
//! Requests become [`Request`]s and observed responses [`Expect`]s, whose
//! absent fields match anything.

use std::collections::HashMap;

use crate::history::{
    key_interval, prefix_end, CompareOperand, CompareResult, CompareTarget, History, Input, Output,
    RangeRequest, SortOrder, SortTarget, TxnOp,
};
use crate::model::{Response, Slot};

/// Interned keys and values, both in sorted order.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    pub keys: Vec<String>,
    pub values: Vec<String>,
    value_ids: HashMap<String, u32>,
}

impl Symbols {
    /// Collects every key and value mentioned by the history's operations.
    pub fn from_history(history: &History) -> Symbols {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for op in &history.operations {
            collect_input(&op.input, &mut keys, &mut values);
            if let Some(output) = &op.output {
                collect_output(output, &mut keys, &mut values);
            }
        }
        keys.sort();
        keys.dedup();
        values.sort();
        values.dedup();
        let value_ids = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i as u32))
            .collect();
        Symbols {
            keys,
            values,
            value_ids,
        }
    }

    fn key_id(&self, key: &str) -> Result<u32, String> {
        self.keys
            .binary_search_by(|k| k.as_str().cmp(key))
            .map(|i| i as u32)
            .map_err(|_| format!("key {key:?} was not interned"))
    }

    fn value_id(&self, value: &str) -> Result<u32, String> {
        self.value_ids
            .get(value)
            .copied()
            .ok_or_else(|| format!("value {value:?} was not interned"))
    }

    /// The key ids in `[lo, hi)` covered by a range request.
    pub(crate) fn range(&self, key: &str, range_end: Option<&str>, prefix: bool) -> (u32, u32) {
        let (start, end) = key_interval(key, range_end, prefix);
        let lo = self.keys.partition_point(|k| k.as_str() < start.as_str());
        let hi = match end {
            None => self.keys.len(),
            Some(end) => self.keys.partition_point(|k| k.as_str() < end.as_str()),
        };
        (lo as u32, hi.max(lo) as u32)
    }
}

fn collect_input(input: &Input, keys: &mut Vec<String>, values: &mut Vec<String>) {
    match input {
        Input::Get { .. }
        | Input::Range(_)
        | Input::Compact { .. }
        | Input::Delete { .. }
        | Input::LeaseGrant { .. }
        | Input::LeaseRevoke { .. }
        | Input::LeaseKeepAlive { .. } => {}
        Input::Put { key, value, .. } => {
            keys.push(key.clone());
            values.push(value.clone());
        }
        Input::Txn {
            compare,
            success,
            failure,
        } => {
            collect_txn(compare, success, failure, keys, values);
        }
    }
}

fn collect_txn(
    compare: &[crate::history::Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
    keys: &mut Vec<String>,
    values: &mut Vec<String>,
) {
    for guard in compare {
        if let CompareOperand::Str(value) = &guard.value {
            values.push(value.clone());
        }
    }
    for op in success.iter().chain(failure) {
        match op {
            TxnOp::Put { key, value, .. } => {
                keys.push(key.clone());
                values.push(value.clone());
            }
            TxnOp::Txn {
                compare,
                success,
                failure,
            } => collect_txn(compare, success, failure, keys, values),
            TxnOp::Get { .. } | TxnOp::Delete { .. } | TxnOp::Range(_) => {}
        }
    }
}

fn collect_output(output: &Output, keys: &mut Vec<String>, values: &mut Vec<String>) {
    for kv in output.kvs.iter().flatten() {
        keys.push(kv.key.clone());
        if let Some(value) = &kv.value {
            values.push(value.clone());
        }
    }
    for sub in output.responses.iter().flatten() {
        collect_output(sub, keys, values);
    }
}

/// A request with keys and values interned.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Range {
        lo: u32,
        hi: u32,
        opts: RangeOpts,
    },
    Put {
        key: u32,
        value: u32,
        lease: i64,
    },
    Delete {
        lo: u32,
        hi: u32,
    },
    /// A txn; `success` and `failure` hold ranges, puts, deletes and nested txns.
    Txn {
        guards: Vec<Guard>,
        success: Vec<Request>,
        failure: Vec<Request>,
        /// Answered by one member without asking the leader (see
        /// `Input::is_serializable`): from the store at `read_at`.
        serializable: bool,
        /// For a serializable txn, its header revision, set when preparing the
        /// search (0 until then, and for every other txn). The answer's content is
        /// judged when the search makes that revision (see `constraints`).
        read_at: i64,
    },
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseKeepAlive {
        id: i64,
    },
    /// A request etcd refuses before it reaches the store (an empty key): it
    /// always fails and changes nothing.
    Refused {
        reason: &'static str,
    },
}

impl Request {
    /// Whether the request's outcome depends on whether lease `id` exists, or changes it.
    pub fn touches_lease(&self, id: i64) -> bool {
        match self {
            Request::Put { lease, .. } => *lease == id,
            Request::Txn {
                success, failure, ..
            } => success.iter().chain(failure).any(|r| r.touches_lease(id)),
            Request::LeaseGrant { id: own }
            | Request::LeaseRevoke { id: own }
            | Request::LeaseKeepAlive { id: own } => *own == id,
            Request::Range { .. }
            | Request::Delete { .. }
            | Request::Compact { .. }
            | Request::Refused { .. } => false,
        }
    }

    /// The lease whose existence is all this request changes, if that is all it can
    /// change in `state`: a grant, or a revoke of a lease no key is attached to.
    pub fn lease_only_change(&self, state: &crate::model::State) -> Option<i64> {
        match self {
            Request::LeaseGrant { id } => Some(*id),
            Request::LeaseRevoke { id } if !state.lease_has_keys(*id) => Some(*id),
            _ => None,
        }
    }
}

/// A range's options, as etcd's `Range` applies them (see `RangeRequest`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RangeOpts {
    pub limit: i64,
    /// The sort etcd applies: `Key` ascending unless asked otherwise; a
    /// non-key target with no order is ascending.
    pub sort_target: SortTarget,
    pub descending: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
    /// A past revision to read at (0: the newest). The answer's content is
    /// judged when the search makes that revision (see `constraints`); the
    /// read itself only has to find it neither compacted nor in the future.
    pub revision: i64,
    /// A serializable read: answered by one member from what it has applied,
    /// so from the store at its header revision, which may be behind the
    /// newest. `revision` is set to that header when preparing the search.
    pub serializable: bool,
}

impl RangeOpts {
    /// Every key in range, in key order, with values.
    pub fn is_plain(&self) -> bool {
        *self == RangeOpts::default()
    }

    fn from_request(r: &RangeRequest) -> Result<RangeOpts, String> {
        if r.revision < 0 {
            return Err("a negative `revision`".into());
        }
        if r.serializable && r.revision != 0 {
            return Err("a serializable read at a past revision is not modelled yet".into());
        }
        if r.limit < 0 {
            return Err("a negative `limit`".into());
        }
        Ok(RangeOpts {
            limit: r.limit,
            sort_target: r.sort_target,
            descending: r.sort_order == SortOrder::Descend,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
            revision: r.revision,
            serializable: r.serializable,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// The key ids compared, `[lo, hi)` (empty when the key is never written).
    pub(crate) lo: u32,
    pub(crate) hi: u32,
    pub(crate) target: CompareTarget,
    pub(crate) result: CompareResult,
    pub(crate) operand: Operand,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Operand {
    Int(i64),
    Value(u32),
}

/// The observed response, interned. `None` fields are not checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    pub(crate) revision: Option<i64>,
    pub(crate) kvs: Option<Vec<ExpectKv>>,
    pub(crate) succeeded: Option<bool>,
    pub(crate) deleted: Option<i64>,
    pub(crate) count: Option<i64>,
    pub(crate) more: Option<bool>,
    pub(crate) responses: Option<Vec<Expect>>,
    error: bool,
    /// For unknown outcomes narrowed by watch evidence: where the write may
    /// land (see `WriteRevisions`).
    pub(crate) write_revisions: Option<WriteRevisions>,
}

/// Revisions an unknown-outcome write may have produced, from evidence
/// (see `evidence.rs`). A write landing on revision `r` is allowed when `r` is
/// in no `forbidden` interval and, if `allowed` is known, `r` is in it or
/// (unless `must_write`) above `after`. With `must_write` the operation is
/// known to have written: it is owed, and taking effect without writing is
/// rejected.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteRevisions {
    pub allowed: Option<Vec<i64>>,
    pub after: i64,
    pub must_write: bool,
    /// Sorted, disjoint `(lo, hi]` intervals.
    pub forbidden: Vec<(i64, i64)>,
    /// The read (history index) whose response pinned the write: when the
    /// write cannot be placed where it says, that read is the one to blame.
    pub pinned_by: Option<usize>,
}

impl WriteRevisions {
    pub(crate) fn permits(&self, wrote_revision: Option<i64>) -> bool {
        let Some(revision) = wrote_revision else {
            return !self.must_write;
        };
        let at = self.forbidden.partition_point(|(_, hi)| *hi < revision);
        if self.forbidden.get(at).is_some_and(|(lo, _)| *lo < revision) {
            return false;
        }
        match &self.allowed {
            Some(allowed) => {
                allowed.contains(&revision) || (!self.must_write && revision > self.after)
            }
            None => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExpectKv {
    key: u32,
    value: Option<u32>,
    /// The value read was empty (what `keys_only` gives).
    value_empty: bool,
    version: Option<i64>,
    create_revision: Option<i64>,
    mod_revision: Option<i64>,
    lease: Option<i64>,
}

impl Expect {
    /// An unknown outcome narrowed down by watch evidence.
    pub fn from_evidence(write_revisions: WriteRevisions) -> Expect {
        Expect {
            write_revisions: Some(write_revisions),
            ..Expect::default()
        }
    }

    /// The highest revision the state may have while this operation is still
    /// to be linearized: revisions never decrease, and the response reported
    /// the revision after it (one above the state's for a put, which always
    /// writes).
    pub fn revision_bound(&self, request: &Request) -> Option<i64> {
        if self.error {
            return None;
        }
        if let Some(limits) = self.write_revisions.as_ref().filter(|l| l.must_write) {
            return limits
                .allowed
                .as_ref()
                .and_then(|a| a.iter().max())
                .map(|r| r - 1);
        }
        if let Request::Range { opts, .. } = request {
            if opts.serializable {
                // A stale read may go after its header revision.
                return None;
            }
        }
        if let Request::Txn {
            serializable: true, ..
        } = request
        {
            return None;
        }
        let revision = self.revision?;
        Some(if matches!(request, Request::Put { .. }) {
            revision - 1
        } else {
            revision
        })
    }

    /// Whether the client saw a definite failure.
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// Whether the output pins anything to the global revision (a header
    /// revision or a key's create/mod revision).
    pub fn mentions_revision(&self) -> bool {
        self.revision.is_some()
            || self.write_revisions.is_some()
            || self
                .kvs
                .iter()
                .flatten()
                .any(|kv| kv.create_revision.is_some() || kv.mod_revision.is_some())
            || self
                .responses
                .iter()
                .flatten()
                .any(Expect::mentions_revision)
    }
}

/// etcd's refusal of an empty key (`ErrGRPCEmptyKey`), checked before anything
/// else: in a get, put or delete, and in any compare or operation of either
/// branch of a txn, nested txns included.
const EMPTY_KEY: &str = "etcdserver: key is not provided";

fn has_empty_key(input: &Input) -> bool {
    fn op_empty(op: &TxnOp) -> bool {
        match op {
            TxnOp::Get { key, .. } | TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } => {
                key.is_empty()
            }
            TxnOp::Range(r) => r.key.is_empty(),
            TxnOp::Txn {
                compare,
                success,
                failure,
            } => {
                compare.iter().any(|c| c.key.is_empty())
                    || success.iter().chain(failure).any(op_empty)
            }
        }
    }
    match input {
        Input::Get { key, .. } | Input::Put { key, .. } | Input::Delete { key, .. } => {
            key.is_empty()
        }
        Input::Range(r) => r.key.is_empty(),
        Input::Txn {
            compare,
            success,
            failure,
        } => {
            compare.iter().any(|c| c.key.is_empty()) || success.iter().chain(failure).any(op_empty)
        }
        Input::Compact { .. }
        | Input::LeaseGrant { .. }
        | Input::LeaseRevoke { .. }
        | Input::LeaseKeepAlive { .. } => false,
    }
}

/// etcd's refusal of a txn with a put that repeats a key or falls in a delete
/// range of the same branch (`ErrGRPCDuplicateKey`).
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";

/// A delete's key interval as etcd's `checkIntervals` sees it: `[key, end)`, a
/// point without a range end. Its intervals have a quirk kept here: a delete
/// whose range end is `"\0"` (every key from `key` on, also what a prefix of only
/// `ff` bytes turns into) is an empty interval there, so it never conflicts.
fn delete_interval(key: &str, range_end: Option<&str>, prefix: bool) -> (String, String) {
    let end = if prefix {
        prefix_end(key)
    } else {
        match range_end {
            None | Some("") => format!("{key}\0"),
            Some(end) => end.to_string(),
        }
    };
    (key.to_string(), end)
}

/// The puts and deletes of one branch, nested txns included, when the branch
/// passes etcd's `checkIntervals`; `None` when it holds a duplicate.
struct BranchKeys {
    puts: std::collections::BTreeSet<String>,
    deletes: Vec<(String, String)>,
}

fn covered(deletes: &[(String, String)], key: &str) -> bool {
    deletes
        .iter()
        .any(|(lo, hi)| lo.as_str() <= key && key < hi.as_str())
}

/// etcd's `checkIntervals` for one branch, judged before the compares: this
/// level's deletes are collected first; then each nested txn, in order, adds
/// the puts of both its branches (which may repeat each other, since only one
/// runs, but no put of an earlier nested txn, and none in a delete seen so far)
/// and then its deletes; last, this level's puts must be new and outside every
/// delete collected. A put of an earlier nested txn that a later nested txn
/// deletes is therefore allowed, as in etcd.
fn branch_keys(ops: &[TxnOp]) -> Option<BranchKeys> {
    let mut deletes: Vec<(String, String)> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Delete {
                key,
                range_end,
                prefix,
            } => Some(delete_interval(key, range_end.as_deref(), *prefix)),
            _ => None,
        })
        .collect();
    let mut puts = std::collections::BTreeSet::new();
    for op in ops {
        let TxnOp::Txn {
            success, failure, ..
        } = op
        else {
            continue;
        };
        let then = branch_keys(success)?;
        let otherwise = branch_keys(failure)?;
        for key in &then.puts {
            if puts.contains(key) || covered(&deletes, key) {
                return None;
            }
            puts.insert(key.clone());
        }
        for key in &otherwise.puts {
            if (puts.contains(key) && !then.puts.contains(key)) || covered(&deletes, key) {
                return None;
            }
            puts.insert(key.clone());
        }
        deletes.extend(then.deletes);
        deletes.extend(otherwise.deletes);
    }
    for op in ops {
        if let TxnOp::Put { key, .. } = op {
            if !puts.insert(key.clone()) || covered(&deletes, key) {
                return None;
            }
        }
    }
    Some(BranchKeys { puts, deletes })
}

pub fn compile_input(symbols: &Symbols, input: &Input) -> Result<Request, String> {
    if has_empty_key(input) {
        return Ok(Request::Refused { reason: EMPTY_KEY });
    }
    if let Input::Txn {
        success, failure, ..
    } = input
    {
        // Both branches, whichever would run: the whole request is refused.
        if branch_keys(success).is_none() || branch_keys(failure).is_none() {
            return Ok(Request::Refused {
                reason: DUPLICATE_KEY,
            });
        }
    }
    Ok(match input {
        Input::Get {
            key,
            range_end,
            prefix,
        } => {
            let (lo, hi) = symbols.range(key, range_end.as_deref(), *prefix);
            Request::Range {
                lo,
                hi,
                opts: RangeOpts::default(),
            }
        }
        Input::Range(r) => {
            let (lo, hi) = symbols.range(&r.key, r.range_end.as_deref(), r.prefix);
            Request::Range {
                lo,
                hi,
                opts: RangeOpts::from_request(r)?,
            }
        }
        Input::Put { key, value, lease } => Request::Put {
            key: symbols.key_id(key)?,
            value: symbols.value_id(value)?,
            lease: lease.unwrap_or(0),
        },
        Input::Delete {
            key,
            range_end,
            prefix,
        } => {
            let (lo, hi) = symbols.range(key, range_end.as_deref(), *prefix);
            Request::Delete { lo, hi }
        }
        Input::Txn {
            compare,
            success,
            failure,
        } => compile_txn(symbols, compare, success, failure, input.is_serializable())?,
        Input::LeaseGrant { id, .. } => {
            if *id == 0 {
                return Err("lease_grant needs an explicit non-zero id".into());
            }
            Request::LeaseGrant { id: *id }
        }
        Input::Compact { revision, .. } => Request::Compact {
            revision: *revision,
        },
        Input::LeaseRevoke { id } => Request::LeaseRevoke { id: *id },
        Input::LeaseKeepAlive { id } => Request::LeaseKeepAlive { id: *id },
    })
}

/// A txn (top level or nested) with its guards and branches compiled.
fn compile_txn(
    symbols: &Symbols,
    compare: &[crate::history::Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
    serializable: bool,
) -> Result<Request, String> {
    {
        {
            let mut guards = Vec::with_capacity(compare.len());
            for c in compare {
                let operand = match (c.target, &c.value) {
                    (CompareTarget::Value, CompareOperand::Str(v)) => {
                        Operand::Value(symbols.value_id(v)?)
                    }
                    (CompareTarget::Value, CompareOperand::Int(_)) => {
                        return Err("a value compare needs a string operand".into())
                    }
                    (_, CompareOperand::Int(n)) => Operand::Int(*n),
                    (target, CompareOperand::Str(_)) => {
                        return Err(format!("a {target:?} compare needs an integer operand"))
                    }
                };
                let (lo, hi) = symbols.range(&c.key, c.range_end.as_deref(), false);
                guards.push(Guard {
                    lo,
                    hi,
                    target: c.target,
                    result: c.result,
                    operand,
                });
            }
            let branch = |ops: &[TxnOp]| -> Result<Vec<Request>, String> {
                ops.iter()
                    .map(|op| compile_txn_op(symbols, op, serializable))
                    .collect()
            };
            Ok(Request::Txn {
                guards,
                success: branch(success)?,
                failure: branch(failure)?,
                serializable,
                read_at: 0,
            })
        }
    }
}

/// One operation of a txn branch. `serializable`: the whole txn is (see
/// `Input::is_serializable`); otherwise etcd ignores the flag on its ranges.
fn compile_txn_op(symbols: &Symbols, op: &TxnOp, serializable: bool) -> Result<Request, String> {
    let input = match op.clone() {
        TxnOp::Get {
            key,
            range_end,
            prefix,
        } => Input::Get {
            key,
            range_end,
            prefix,
        },
        TxnOp::Put { key, value, lease } => Input::Put { key, value, lease },
        TxnOp::Range(r) if serializable && r.revision != 0 => {
            return Err(
                "a read at a past revision inside a serializable txn is not modelled yet".into(),
            )
        }
        TxnOp::Range(r) => Input::Range(RangeRequest {
            serializable: false,
            ..r
        }),
        TxnOp::Txn {
            compare,
            success,
            failure,
        } => return compile_txn(symbols, &compare, &success, &failure, false),
        TxnOp::Delete {
            key,
            range_end,
            prefix,
        } => Input::Delete {
            key,
            range_end,
            prefix,
        },
    };
    compile_input(symbols, &input)
}

pub fn compile_output(symbols: &Symbols, output: &Output) -> Result<Expect, String> {
    let kvs = match &output.kvs {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for kv in list {
                out.push(ExpectKv {
                    key: symbols.key_id(&kv.key)?,
                    value: kv
                        .value
                        .as_deref()
                        .map(|v| symbols.value_id(v))
                        .transpose()?,
                    value_empty: kv.value.as_deref() == Some(""),
                    version: kv.version,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    lease: kv.lease,
                });
            }
            Some(out)
        }
    };
    let responses = match &output.responses {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|o| compile_output(symbols, o))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Expect {
        revision: output.revision,
        kvs,
        succeeded: output.succeeded,
        deleted: output.deleted,
        count: output.count,
        more: output.more,
        responses,
        error: output.error.is_some(),
        write_revisions: None,
    })
}

impl Expect {
    pub(crate) fn matches(&self, response: &Response, top_level: bool) -> bool {
        if self.error || response.error.is_some() {
            return self.error && response.error.is_some();
        }
        if top_level && self.revision.is_some_and(|r| r != response.revision) {
            return false;
        }
        if response.deferred {
            // A read at a past revision: its content is judged when the search
            // makes that revision (see `constraints`).
            return true;
        }
        if self.succeeded.is_some_and(|s| s != response.succeeded) {
            return false;
        }
        if self.deleted.is_some_and(|d| d != response.deleted)
            || self.count.is_some_and(|c| c != response.count)
            || self.more.is_some_and(|m| m != response.more)
        {
            return false;
        }
        if let (Some(kvs), Some(opts)) = (&self.kvs, response.range_opts.filter(|o| !o.is_plain()))
        {
            if !kvs_fit_range(kvs, &response.kvs, &opts) {
                return false;
            }
        } else if let Some(kvs) = &self.kvs {
            if kvs.len() != response.kvs.len()
                || !kvs
                    .iter()
                    .zip(&response.kvs)
                    .all(|(e, (k, s))| e.matches(*k, s))
            {
                return false;
            }
        }
        if let Some(subs) = &self.responses {
            if subs.len() != response.responses.len()
                || !subs
                    .iter()
                    .zip(&response.responses)
                    .all(|(e, r)| e.matches(r, false))
            {
                return false;
            }
        }
        true
    }
}

/// Whether `observed` is what etcd's `Range` may answer with `opts` when the
/// keys in range that pass the filters are `candidates` (in key order). Keys
/// that tie on a non-key sort target may come in any order, and when the limit
/// cuts among them, any of them may be the ones kept.
fn kvs_fit_range(observed: &[ExpectKv], candidates: &[(u32, Slot)], opts: &RangeOpts) -> bool {
    if opts.count_only {
        return observed.is_empty();
    }
    let n = candidates.len();
    let want = if opts.limit > 0 {
        n.min(opts.limit as usize)
    } else {
        n
    };
    if observed.len() != want {
        return false;
    }
    let rank = |key: u32, slot: &Slot| -> i64 {
        let r = match opts.sort_target {
            SortTarget::Key => i64::from(key),
            SortTarget::Version => slot.version,
            SortTarget::Create => slot.create_revision,
            SortTarget::Mod => slot.mod_revision,
            SortTarget::Value => i64::from(slot.value),
        };
        if opts.descending {
            -r
        } else {
            r
        }
    };
    let mut taken = vec![false; n];
    let mut last_rank = i64::MIN;
    for kv in observed {
        let Ok(at) = candidates.binary_search_by_key(&kv.key, |(k, _)| *k) else {
            return false;
        };
        let (key, slot) = &candidates[at];
        if taken[at] || !kv.matches_opts(*key, slot, opts.keys_only) {
            return false;
        }
        taken[at] = true;
        let r = rank(*key, slot);
        if r < last_rank {
            return false;
        }
        last_rank = r;
    }
    // What the limit left out must not come before what it kept.
    candidates
        .iter()
        .zip(&taken)
        .all(|((key, slot), taken)| *taken || rank(*key, slot) >= last_rank)
}

impl ExpectKv {
    fn matches(&self, key: u32, slot: &Slot) -> bool {
        self.matches_opts(key, slot, false)
    }

    fn matches_opts(&self, key: u32, slot: &Slot, keys_only: bool) -> bool {
        let value_fits = if keys_only {
            self.value.is_none() || self.value_empty
        } else {
            self.value.is_none_or(|v| v == slot.value)
        };
        self.key == key
            && value_fits
            && self.version.is_none_or(|v| v == slot.version)
            && self
                .create_revision
                .is_none_or(|v| v == slot.create_revision)
            && self.mod_revision.is_none_or(|v| v == slot.mod_revision)
            && self.lease.is_none_or(|v| v == slot.lease)
    }
}
