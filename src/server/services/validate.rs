//! Request validation at the edge, before anything is proposed: etcd's rules and errors.
//!
//! A request that fails here never reaches the Raft log, so bad input costs nothing and
//! changes nothing. The checks follow etcd 3.4's gRPC layer: keys must be present, the
//! `ignore_*` flags exclude their fields, a transaction has at most `max_txn_ops` operations
//! per list, and one branch of a transaction may not write a key twice (two puts, or a put
//! and a delete covering it), because the outcome would depend on the order of operations.

use std::collections::HashSet;

use bytes::Bytes;

use crate::proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::server::types::error::ServerError;

pub(crate) fn check_range(request: &RangeRequest) -> Result<(), ServerError> {
    if request.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_put(request: &PutRequest) -> Result<(), ServerError> {
    if request.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

pub(crate) fn check_delete(request: &DeleteRangeRequest) -> Result<(), ServerError> {
    if request.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_txn(request: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    check_txn_shape(request, max_txn_ops)?;
    check_writes_disjoint(&request.success)?;
    check_writes_disjoint(&request.failure)?;
    Ok(())
}

fn check_txn_shape(request: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    let longest = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if longest > max_txn_ops {
        return Err(ServerError::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(ServerError::EmptyKey);
    }
    // etcd gives a nested transaction only what the outer one leaves of the limit.
    let nested_max_txn_ops = max_txn_ops.saturating_sub(longest);
    for op in request.success.iter().chain(&request.failure) {
        check_op(op, nested_max_txn_ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), ServerError> {
    match &op.request {
        Some(Request::RequestRange(range)) => check_range(range),
        Some(Request::RequestPut(put)) => check_put(put),
        Some(Request::RequestDeleteRange(delete)) => check_delete(delete),
        Some(Request::RequestTxn(txn)) => check_txn_shape(txn, max_txn_ops),
        // etcd answers an empty operation this way.
        None => Err(ServerError::KeyNotFound),
    }
}

/// A deleted interval `[start, end)` as etcd 3.4's overlap check sees it.
#[derive(Clone, Debug)]
struct Interval {
    start: Bytes,
    end: Bytes,
}

impl Interval {
    /// etcd builds the interval from the raw request bytes: a single key k is
    /// `[k, k + "\0")`, and any other range end is taken literally. So a from-key delete
    /// (`range_end = "\0"`) becomes `[key, "\0")`, which is empty for every non-empty key:
    /// etcd 3.4 finds no overlap with it, although the delete removes every key from `key`
    /// on. Clients rely on what etcd accepts, so this check does the same; the applier runs
    /// such a branch in order (see `txn::check_puts` for the one case that cannot run).
    fn of(delete: &DeleteRangeRequest) -> Interval {
        let end = if delete.range_end.is_empty() {
            let mut end = delete.key.to_vec();
            end.push(0);
            Bytes::from(end)
        } else {
            delete.range_end.clone()
        };
        Interval {
            start: delete.key.clone(),
            end,
        }
    }

    /// Empty and inverted intervals contain nothing.
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && key < self.end.as_ref()
    }
}

/// The keys a list of operations puts and the intervals it deletes, nested transactions
/// included.
#[derive(Default)]
struct Writes {
    puts: HashSet<Bytes>,
    deletes: Vec<Interval>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|interval| interval.contains(key))
    }
}

/// Fails when one list of operations writes a key twice. The two branches of a nested
/// transaction are mutually exclusive, so a key put in both is fine.
fn check_writes_disjoint(ops: &[RequestOp]) -> Result<Writes, ServerError> {
    let mut writes = Writes::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(delete)) = &op.request {
            writes.deletes.push(Interval::of(delete));
        }
    }
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else {
            continue;
        };
        let success = check_writes_disjoint(&txn.success)?;
        let failure = check_writes_disjoint(&txn.failure)?;
        for key in &success.puts {
            if writes.puts.contains(key) || writes.deleted(key) {
                return Err(ServerError::DuplicateKey);
            }
        }
        writes.puts.extend(success.puts.iter().cloned());
        for key in &failure.puts {
            let clashes = writes.puts.contains(key) && !success.puts.contains(key);
            if clashes || writes.deleted(key) {
                return Err(ServerError::DuplicateKey);
            }
        }
        writes.puts.extend(failure.puts);
        writes.deletes.extend(success.deletes);
        writes.deletes.extend(failure.deletes);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if writes.puts.contains(&put.key) || writes.deleted(&put.key) {
            return Err(ServerError::DuplicateKey);
        }
        writes.puts.insert(put.key.clone());
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        }
    }

    fn delete(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                range_end: Bytes::copy_from_slice(end.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn get(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(txn(success, failure))),
        }
    }

    #[test]
    fn duplicate_writes_in_one_branch() {
        let table: Vec<(&str, TxnRequest, Result<(), ServerError>)> = vec![
            (
                "distinct puts",
                txn(vec![put("a"), put("b")], vec![]),
                Ok(()),
            ),
            (
                "put twice",
                txn(vec![put("a"), put("a")], vec![]),
                Err(ServerError::DuplicateKey),
            ),
            (
                "same key in both branches",
                txn(vec![put("a")], vec![put("a")]),
                Ok(()),
            ),
            (
                "put inside a deleted range",
                txn(vec![delete("a", "c"), put("b")], vec![]),
                Err(ServerError::DuplicateKey),
            ),
            (
                "put outside a deleted range",
                txn(vec![delete("a", "c"), put("c")], vec![]),
                Ok(()),
            ),
            (
                // etcd 3.4 checks the literal interval ["a", "\0"), which is empty.
                "put after a from-key delete",
                txn(vec![delete("a", "\0"), put("zzz")], vec![]),
                Ok(()),
            ),
            (
                "put of the from-key delete's own key",
                txn(vec![delete("a/2", "\0"), put("a/2"), put("\u{7f}")], vec![]),
                Ok(()),
            ),
            (
                "nested from-key delete and an outer put",
                txn(
                    vec![nested(vec![delete("a", "\0")], vec![]), put("b/x")],
                    vec![],
                ),
                Ok(()),
            ),
            (
                "inverted range deletes nothing",
                txn(vec![delete("c", "a"), put("b")], vec![]),
                Ok(()),
            ),
            (
                "a put inside a nested real range",
                txn(
                    vec![nested(vec![delete("a", "c")], vec![]), put("b")],
                    vec![],
                ),
                Err(ServerError::DuplicateKey),
            ),
            (
                "put and delete of one key",
                txn(vec![put("a"), delete("a", "")], vec![]),
                Err(ServerError::DuplicateKey),
            ),
            (
                "reads never clash",
                txn(vec![get("a"), get("a"), put("a")], vec![]),
                Ok(()),
            ),
            (
                "nested put clashes with outer put",
                txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]),
                Err(ServerError::DuplicateKey),
            ),
            (
                "nested branches are exclusive",
                txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]),
                Ok(()),
            ),
            (
                "nested else clashes with an outer put",
                txn(
                    vec![put("b"), nested(vec![put("a")], vec![put("b")])],
                    vec![],
                ),
                Err(ServerError::DuplicateKey),
            ),
        ];
        for (name, request, want) in table {
            assert_eq!(check_txn(&request, 128), want, "{name}");
        }
    }

    #[test]
    fn txn_limits_and_empty_keys() {
        let many: Vec<RequestOp> = (0..129).map(|i| get(&format!("k{i}"))).collect();
        assert_eq!(
            check_txn(&txn(many.clone(), vec![]), 128),
            Err(ServerError::TooManyOps)
        );
        assert_eq!(check_txn(&txn(vec![], many[..128].to_vec()), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![get("")], vec![]), 128),
            Err(ServerError::EmptyKey)
        );
        // A nested transaction gets what the outer one leaves: 100 outer operations leave
        // 28, so a nested one with 29 is too many.
        let nested_29 = nested((0..29).map(|i| get(&format!("n{i}"))).collect(), vec![]);
        let mut outer: Vec<RequestOp> = (0..99).map(|i| get(&format!("k{i}"))).collect();
        outer.push(nested_29);
        assert_eq!(
            check_txn(&txn(outer.clone(), vec![]), 128),
            Err(ServerError::TooManyOps)
        );
        outer.remove(0);
        assert_eq!(check_txn(&txn(outer, vec![]), 128), Ok(()));
        let empty_op = RequestOp { request: None };
        assert_eq!(
            check_txn(&txn(vec![empty_op], vec![]), 128),
            Err(ServerError::KeyNotFound)
        );
    }

    #[test]
    fn put_flags() {
        let mut request = PutRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        assert_eq!(check_put(&request), Ok(()));
        request.ignore_value = true;
        request.value = Bytes::from_static(b"v");
        assert_eq!(check_put(&request), Err(ServerError::ValueProvided));
        request.value = Bytes::new();
        request.ignore_lease = true;
        request.lease = 7;
        assert_eq!(check_put(&request), Err(ServerError::LeaseProvided));
        request.key = Bytes::new();
        assert_eq!(check_put(&request), Err(ServerError::EmptyKey));
    }
}
