//! Interning and compiling a history for the model.
//!
//! Keys and values are interned to `u32` in sorted order, so a range request
//! is a contiguous id interval and a value comparison is an id comparison.
//! Requests become [`Request`]s and observed responses [`Expect`]s, whose
//! absent fields match anything.

use std::collections::HashMap;

use crate::history::{
    key_interval, CompareOperand, CompareResult, CompareTarget, History, Input, Output, TxnOp,
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
    fn range(&self, key: &str, range_end: Option<&str>, prefix: bool) -> (u32, u32) {
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
            for guard in compare {
                if let CompareOperand::Str(value) = &guard.value {
                    values.push(value.clone());
                }
            }
            for op in success.iter().chain(failure) {
                if let TxnOp::Put { key, value, .. } = op {
                    keys.push(key.clone());
                    values.push(value.clone());
                }
            }
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
    },
    Put {
        key: u32,
        value: u32,
        lease: i64,
    },
    Delete {
        lo: u32,
        hi: u32,
        /// Sent with `range_end = "\0"` (every key from `lo` on). etcd 3.4's duplicate-key
        /// check sees such a delete as the empty interval `[key, "\0")`, so a put of a key
        /// it removes may follow it in one transaction.
        from_key: bool,
    },
    Txn {
        guards: Vec<Guard>,
        success: Vec<Request>,
        failure: Vec<Request>,
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
            Request::Range { .. } | Request::Delete { .. } => false,
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

#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// `None` when the key is never written: it is always missing.
    pub(crate) key: Option<u32>,
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

pub fn compile_input(symbols: &Symbols, input: &Input) -> Result<Request, String> {
    Ok(match input {
        Input::Get {
            key,
            range_end,
            prefix,
        } => {
            let (lo, hi) = symbols.range(key, range_end.as_deref(), *prefix);
            Request::Range { lo, hi }
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
            let from_key = key_interval(key, range_end.as_deref(), *prefix).1.is_none();
            Request::Delete { lo, hi, from_key }
        }
        Input::Txn {
            compare,
            success,
            failure,
        } => {
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
                guards.push(Guard {
                    key: symbols.key_id(&c.key).ok(),
                    target: c.target,
                    result: c.result,
                    operand,
                });
            }
            let branch = |ops: &[TxnOp]| -> Result<Vec<Request>, String> {
                ops.iter().map(|op| compile_txn_op(symbols, op)).collect()
            };
            Request::Txn {
                guards,
                success: branch(success)?,
                failure: branch(failure)?,
            }
        }
        Input::LeaseGrant { id, .. } => {
            if *id == 0 {
                return Err("lease_grant needs an explicit non-zero id".into());
            }
            Request::LeaseGrant { id: *id }
        }
        Input::LeaseRevoke { id } => Request::LeaseRevoke { id: *id },
        Input::LeaseKeepAlive { id } => Request::LeaseKeepAlive { id: *id },
    })
}

fn compile_txn_op(symbols: &Symbols, op: &TxnOp) -> Result<Request, String> {
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
        if self.succeeded.is_some_and(|s| s != response.succeeded) {
            return false;
        }
        if self.deleted.is_some_and(|d| d != response.deleted) {
            return false;
        }
        if let Some(kvs) = &self.kvs {
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

impl ExpectKv {
    fn matches(&self, key: u32, slot: &Slot) -> bool {
        self.key == key
            && self.value.is_none_or(|v| v == slot.value)
            && self.version.is_none_or(|v| v == slot.version)
            && self
                .create_revision
                .is_none_or(|v| v == slot.create_revision)
            && self.mod_revision.is_none_or(|v| v == slot.mod_revision)
            && self.lease.is_none_or(|v| v == slot.lease)
    }
}
