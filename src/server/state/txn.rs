//! Applying one client write (Put, DeleteRange, Txn) to a write transaction of the store.
//!
//! This is etcd's apply logic, deterministic so that every member computes the same result
//! from the same entry: a Txn first evaluates its compares, then checks that the chosen
//! branch cannot fail half-way (a put on a missing key with `ignore_value`, an unknown
//! lease, a read at a compacted or future revision) — so that a failing request changes
//! nothing — and only then executes its operations in order, all at one new revision.

use bytes::Bytes;

use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::server::state::range::{self, KvView, Scan};
use crate::server::types::error::ServerError;

/// A write transaction: reads see its own earlier writes; everything it does lands at one
/// revision when it ends.
pub(crate) trait KvWrite: KvView {
    /// Puts `key`; returns the previous key-value, if the key existed.
    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<Option<KeyValue>, ServerError>;
    /// Deletes `[key, end)` (same range rules as a scan); returns what was deleted.
    fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, ServerError>;
    /// Whether the lease exists (puts with a lease are refused otherwise).
    fn lease_exists(&self, lease: i64) -> bool;
    /// The store's compacted revision.
    fn compact_revision(&self) -> i64;
    /// The store's revision before this transaction.
    fn current_revision(&self) -> i64;
    /// The revision etcd reports for an operation inside this transaction: the revision
    /// before it, plus one once the transaction has changed something.
    fn visible_revision(&self) -> i64;
}

/// Reads the one key, at the latest revision.
fn get(txn: &mut dyn KvWrite, key: &[u8]) -> Result<Option<KeyValue>, ServerError> {
    let scan = txn.scan(key, &[], 0, 1, false)?;
    Ok(scan.kvs.into_iter().next())
}

pub(crate) fn put(txn: &mut dyn KvWrite, request: &PutRequest) -> Result<PutResponse, ServerError> {
    // etcd's applier looks the lease up before it reads the key, so an unknown lease wins
    // over a missing key with `ignore_value` (inside a Txn the order is the other way
    // round, and `check_puts` has already checked both before this runs).
    if request.lease != 0 && !txn.lease_exists(request.lease) {
        return Err(ServerError::LeaseNotFound);
    }
    let previous = if request.prev_kv || request.ignore_value || request.ignore_lease {
        let previous = get(txn, &request.key)?;
        if previous.is_none() && (request.ignore_value || request.ignore_lease) {
            return Err(ServerError::KeyNotFound);
        }
        previous
    } else {
        None
    };
    let value = match (&previous, request.ignore_value) {
        (Some(previous), true) => previous.value.clone(),
        _ => request.value.clone(),
    };
    let lease = match (&previous, request.ignore_lease) {
        (Some(previous), true) => previous.lease,
        _ => request.lease,
    };
    if lease != 0 && !txn.lease_exists(lease) {
        return Err(ServerError::LeaseNotFound);
    }
    let replaced = txn.put(request.key.clone(), value, lease)?;
    Ok(PutResponse {
        header: Some(ResponseHeader {
            revision: txn.visible_revision(),
            ..Default::default()
        }),
        prev_kv: if request.prev_kv {
            replaced.or(previous)
        } else {
            None
        },
    })
}

pub(crate) fn delete_range(
    txn: &mut dyn KvWrite,
    request: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ServerError> {
    let deleted = txn.delete_range(&request.key, &request.range_end)?;
    Ok(DeleteRangeResponse {
        header: Some(ResponseHeader {
            revision: txn.visible_revision(),
            ..Default::default()
        }),
        deleted: deleted.len() as i64,
        prev_kvs: if request.prev_kv { deleted } else { Vec::new() },
    })
}

pub(crate) fn txn(txn: &mut dyn KvWrite, request: &TxnRequest) -> Result<TxnResponse, ServerError> {
    let path = choose_path(txn, request)?;
    if !txn_is_read_only(request) {
        check_puts(txn, request, &path, &mut Vec::new())?;
    }
    check_ranges(txn, request, &path)?;
    execute(txn, request, &path)
}

/// The branch a transaction takes and, in order, the paths of the nested transactions in
/// that branch. etcd decides every one of them before the transaction runs, against the
/// state before it, so a nested compare never sees the writes of the outer branch.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn branch<'a>(request: &'a TxnRequest, path: &Path) -> &'a [RequestOp] {
    if path.succeeded {
        &request.success
    } else {
        &request.failure
    }
}

fn choose_path(txn: &mut dyn KvWrite, request: &TxnRequest) -> Result<Path, ServerError> {
    let succeeded = compares_hold(txn, &request.compare)?;
    let mut path = Path {
        succeeded,
        nested: Vec::new(),
    };
    for op in branch(request, &path) {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            let nested = choose_path(txn, nested)?;
            path.nested.push(nested);
        }
    }
    Ok(path)
}

fn execute(
    txn: &mut dyn KvWrite,
    request: &TxnRequest,
    path: &Path,
) -> Result<TxnResponse, ServerError> {
    let ops = branch(request, path);
    let mut nested_paths = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(request)) => {
                Response::ResponseRange(range::range(txn, request)?)
            }
            Some(Request::RequestPut(request)) => Response::ResponsePut(put(txn, request)?),
            Some(Request::RequestDeleteRange(request)) => {
                Response::ResponseDeleteRange(delete_range(txn, request)?)
            }
            Some(Request::RequestTxn(request)) => {
                let nested_path = nested_paths.next().ok_or_else(|| {
                    ServerError::Internal("etcdserver: txn path shorter than the txn".into())
                })?;
                let mut nested = execute(txn, request, nested_path)?;
                // etcd leaves a nested transaction's header empty.
                nested.header = Some(ResponseHeader::default());
                Response::ResponseTxn(nested)
            }
            None => return Err(ServerError::KeyNotFound),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: path.succeeded,
        responses,
    })
}

/// Refuses a branch whose puts would fail part-way, before it changes anything: etcd's
/// `checkRequestPut` over every put along the chosen path, each against the state before
/// the transaction (a missing key with `ignore_*` first, then an unknown lease).
///
/// One case etcd 3.4 does not catch: a from-key delete (`range_end = "\0"`, which its
/// duplicate-key check lets through) followed by an `ignore_*` put of a key it removed. The
/// key exists before the transaction, so the check passes, and etcd's applier then panics
/// on the missing key. Here the transaction is refused as if the key were missing, and
/// nothing changes. `from_key_deletes` holds the start keys of the from-key deletes that
/// run before the operation being checked.
fn check_puts(
    txn: &mut dyn KvWrite,
    request: &TxnRequest,
    path: &Path,
    from_key_deletes: &mut Vec<Bytes>,
) -> Result<(), ServerError> {
    let mut nested_paths = path.nested.iter();
    for op in branch(request, path) {
        match &op.request {
            Some(Request::RequestPut(request)) => {
                if request.ignore_value || request.ignore_lease {
                    let existing = get(txn, &request.key)?;
                    let deleted_before = from_key_deletes
                        .iter()
                        .any(|start| request.key.as_ref() >= start.as_ref());
                    if existing.is_none() || deleted_before {
                        return Err(ServerError::KeyNotFound);
                    }
                }
                if request.lease != 0 && !txn.lease_exists(request.lease) {
                    return Err(ServerError::LeaseNotFound);
                }
            }
            Some(Request::RequestDeleteRange(request)) => {
                if request.range_end.as_ref() == [0] {
                    from_key_deletes.push(request.key.clone());
                }
            }
            Some(Request::RequestTxn(request)) => {
                if let Some(nested_path) = nested_paths.next() {
                    check_puts(txn, request, nested_path, from_key_deletes)?;
                }
            }
            Some(Request::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

/// etcd's `checkRequestRange`, after the puts: a read at a revision the store does not
/// hold refuses the whole transaction.
fn check_ranges(
    txn: &mut dyn KvWrite,
    request: &TxnRequest,
    path: &Path,
) -> Result<(), ServerError> {
    let mut nested_paths = path.nested.iter();
    for op in branch(request, path) {
        match &op.request {
            Some(Request::RequestRange(request)) => check_range_revision(txn, request)?,
            Some(Request::RequestTxn(request)) => {
                if let Some(nested_path) = nested_paths.next() {
                    check_ranges(txn, request, nested_path)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// In etcd's order: revision 0 is the latest; above the current revision is a future
/// revision; below the compacted revision is compacted. A store never compacted is
/// compacted at -1 (etcd's bookkeeping), so inside a transaction a revision below -1 (or
/// any negative one after a compaction) is "compacted" — unlike a plain Range, which reads
/// negative revisions as the latest.
fn check_range_revision(txn: &dyn KvWrite, request: &RangeRequest) -> Result<(), ServerError> {
    let first_revision = txn.compact_revision();
    if request.revision == 0 {
        return Ok(());
    }
    if request.revision > txn.current_revision() {
        return Err(ServerError::FutureRevision);
    }
    if request.revision < first_revision {
        return Err(ServerError::Compacted);
    }
    Ok(())
}

/// Whether every compare holds, each against every key of its range (etcd's
/// `applyCompare`).
pub(crate) fn compares_hold(
    txn: &mut dyn KvWrite,
    compares: &[Compare],
) -> Result<bool, ServerError> {
    for compare in compares {
        let Scan { kvs, .. } = txn.scan(&compare.key, &compare.range_end, 0, 0, false)?;
        let holds = if kvs.is_empty() {
            // A missing key compares as zero on every numeric target; a value compare on a
            // missing key always fails (there is no way to represent "no value").
            compare.target != CompareTarget::Value as i32
                && compare_one(compare, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| compare_one(compare, kv))
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// etcd's `compareKV`: the number compared is read only from the union field that matches
/// the target (any other field counts as 0); an unknown target compares as equal, and an
/// unknown result holds.
fn compare_one(compare: &Compare, kv: &KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    // The number in the union field `pick` reads, or 0 when another field is set.
    let number = |pick: fn(&TargetUnion) -> Option<i64>| union.and_then(pick).unwrap_or(0);
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => match union {
            Some(TargetUnion::Value(value)) => kv.value.as_ref().cmp(value.as_ref()),
            _ => kv.value.as_ref().cmp(&[][..]),
        },
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&number(|u| match u {
            TargetUnion::CreateRevision(n) => Some(*n),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&number(|u| match u {
            TargetUnion::ModRevision(n) => Some(*n),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&number(|u| match u {
            TargetUnion::Version(n) => Some(*n),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&number(|u| match u {
            TargetUnion::Lease(n) => Some(*n),
            _ => None,
        })),
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

/// Whether a transaction puts anything (then it costs quota and is refused under NOSPACE).
pub(crate) fn txn_has_puts(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_has_puts(nested),
            _ => false,
        })
}

/// Whether a transaction only reads (then it is served locally, without the Raft log).
pub(crate) fn txn_is_read_only(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        // As in etcd 3.4, only plain ranges: a nested transaction goes through the log
        // even when it only reads.
        .all(|op| matches!(&op.request, Some(Request::RequestRange(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The latest state of every key, with etcd's revision bookkeeping, and nothing else:
    /// enough to check the apply rules without the MVCC store.
    #[derive(Default)]
    struct Latest {
        kvs: BTreeMap<Bytes, KeyValue>,
        revision: i64,
        leases: Vec<i64>,
    }

    impl KvView for Latest {
        fn scan(
            &mut self,
            key: &[u8],
            end: &[u8],
            _revision: i64,
            limit: i64,
            _count_only: bool,
        ) -> Result<Scan, ServerError> {
            let inside = |candidate: &[u8]| match end {
                [] => candidate == key,
                [0] => candidate >= key,
                end => candidate >= key && candidate < end,
            };
            let all: Vec<KeyValue> = self
                .kvs
                .values()
                .filter(|kv| inside(&kv.key))
                .cloned()
                .collect();
            let count = all.len() as i64;
            let kvs = if limit > 0 {
                all.into_iter().take(limit as usize).collect()
            } else {
                all
            };
            Ok(Scan {
                kvs,
                count,
                revision: self.revision,
            })
        }
    }

    impl KvWrite for Latest {
        fn put(
            &mut self,
            key: Bytes,
            value: Bytes,
            lease: i64,
        ) -> Result<Option<KeyValue>, ServerError> {
            self.revision += 1;
            let previous = self.kvs.get(&key).cloned();
            let create_revision = previous
                .as_ref()
                .map_or(self.revision, |kv| kv.create_revision);
            let version = previous.as_ref().map_or(1, |kv| kv.version + 1);
            self.kvs.insert(
                key.clone(),
                KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: self.revision,
                    version,
                    lease,
                },
            );
            Ok(previous)
        }

        fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, ServerError> {
            let deleted = self.scan(key, end, 0, 0, false)?.kvs;
            for kv in &deleted {
                self.kvs.remove(&kv.key);
            }
            if !deleted.is_empty() {
                self.revision += 1;
            }
            Ok(deleted)
        }

        fn lease_exists(&self, lease: i64) -> bool {
            self.leases.contains(&lease)
        }

        fn compact_revision(&self) -> i64 {
            0
        }

        fn current_revision(&self) -> i64 {
            self.revision
        }

        fn visible_revision(&self) -> i64 {
            self.revision
        }
    }

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn put_op(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: bytes(key),
                value: bytes(value),
                ..Default::default()
            })),
        }
    }

    fn compare(
        key: &str,
        target: CompareTarget,
        result: CompareResult,
        union: TargetUnion,
    ) -> Compare {
        Compare {
            key: bytes(key),
            target: target as i32,
            result: result as i32,
            target_union: Some(union),
            range_end: Bytes::new(),
        }
    }

    fn store() -> Latest {
        let mut store = Latest {
            leases: vec![7],
            ..Default::default()
        };
        put(
            &mut store,
            &PutRequest {
                key: bytes("a"),
                value: bytes("1"),
                ..Default::default()
            },
        )
        .unwrap();
        put(
            &mut store,
            &PutRequest {
                key: bytes("a"),
                value: bytes("2"),
                ..Default::default()
            },
        )
        .unwrap();
        put(
            &mut store,
            &PutRequest {
                key: bytes("b"),
                value: bytes("x"),
                ..Default::default()
            },
        )
        .unwrap();
        store
    }

    #[test]
    fn compares_follow_etcd() {
        use CompareResult::*;
        use CompareTarget::*;
        let table = vec![
            (
                "value equal",
                compare("a", Value, Equal, TargetUnion::Value(bytes("2"))),
                true,
            ),
            (
                "value greater",
                compare("a", Value, Greater, TargetUnion::Value(bytes("1"))),
                true,
            ),
            (
                "version",
                compare("a", Version, Equal, TargetUnion::Version(2)),
                true,
            ),
            (
                "create revision",
                compare("a", Create, Equal, TargetUnion::CreateRevision(1)),
                true,
            ),
            (
                "mod revision",
                compare("a", Mod, Less, TargetUnion::ModRevision(3)),
                true,
            ),
            (
                "lease",
                compare("a", Lease, Equal, TargetUnion::Lease(0)),
                true,
            ),
            (
                "missing key has version 0",
                compare("z", Version, Equal, TargetUnion::Version(0)),
                true,
            ),
            (
                "missing key has mod 0",
                compare("z", Mod, Equal, TargetUnion::ModRevision(0)),
                true,
            ),
            (
                "value of a missing key never matches",
                compare("z", Value, NotEqual, TargetUnion::Value(bytes("q"))),
                false,
            ),
            (
                "a range compare needs every key",
                Compare {
                    range_end: bytes("c"),
                    ..compare("a", Version, Equal, TargetUnion::Version(2))
                },
                false,
            ),
        ];
        for (name, compare, want) in table {
            let mut store = store();
            assert_eq!(
                compares_hold(&mut store, &[compare]).unwrap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_failing_branch_changes_nothing() {
        let mut store = store();
        let before = store.revision;
        let request = TxnRequest {
            compare: vec![],
            success: vec![
                put_op("c", "1"),
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: bytes("d"),
                        lease: 99,
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        };
        assert_eq!(
            txn(&mut store, &request).unwrap_err(),
            ServerError::LeaseNotFound
        );
        assert_eq!(store.revision, before);
        assert!(!store.kvs.contains_key(&bytes("c")));
    }

    fn delete_op(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: bytes(key),
                range_end: bytes(end),
                prev_kv: true,
            })),
        }
    }

    /// Issue 18: etcd 3.4 accepts a from-key delete and puts of keys it removes in one
    /// branch, and applies them in order: the deletes, then the puts, which create their
    /// keys anew.
    #[test]
    fn a_from_key_delete_then_puts_apply_in_order() {
        let mut store = store();
        let request = TxnRequest {
            compare: vec![],
            success: vec![
                delete_op("a", "\0"),
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: bytes("b"),
                        value: bytes("y"),
                        prev_kv: true,
                        ..Default::default()
                    })),
                },
                put_op("c", "z"),
            ],
            failure: vec![],
        };
        let response = txn(&mut store, &request).unwrap();
        let Some(Response::ResponseDeleteRange(deleted)) = &response.responses[0].response else {
            panic!("not a delete response: {response:?}");
        };
        assert_eq!(deleted.deleted, 2);
        let Some(Response::ResponsePut(put)) = &response.responses[1].response else {
            panic!("not a put response: {response:?}");
        };
        assert_eq!(put.prev_kv, None, "b was deleted earlier in the branch");
        let keys: Vec<(Bytes, Bytes, i64)> = store
            .kvs
            .values()
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.version))
            .collect();
        assert_eq!(
            keys,
            vec![(bytes("b"), bytes("y"), 1), (bytes("c"), bytes("z"), 1)]
        );
    }

    /// The one shape of issue 18 etcd 3.4 cannot run: after a from-key delete, a put with
    /// `ignore_value` of a key it removed finds no key, and etcd's applier panics. oxcd
    /// refuses the transaction as "key not found" and changes nothing.
    #[test]
    fn an_ignore_value_put_after_a_from_key_delete_is_refused() {
        let mut store = store();
        let before = store.revision;
        let request = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp {
                    request: Some(Request::RequestTxn(TxnRequest {
                        compare: vec![],
                        success: vec![delete_op("a", "\0")],
                        failure: vec![],
                    })),
                },
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: bytes("b"),
                        ignore_value: true,
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        };
        assert_eq!(
            txn(&mut store, &request).unwrap_err(),
            ServerError::KeyNotFound
        );
        assert_eq!(store.revision, before);
        assert_eq!(store.kvs.len(), 2);
        // A key before the delete's start is still there when the put runs.
        let mut request = request;
        request.success[0] = delete_op("c", "\0");
        assert!(txn(&mut store, &request).is_ok());
    }

    /// etcd decides every nested branch before the transaction runs: a nested compare
    /// does not see the outer branch's earlier writes.
    #[test]
    fn nested_compares_see_the_state_before_the_txn() {
        let mut store = store();
        let request = TxnRequest {
            compare: vec![],
            success: vec![
                put_op("a", "3"),
                RequestOp {
                    request: Some(Request::RequestTxn(TxnRequest {
                        compare: vec![compare(
                            "a",
                            CompareTarget::Value,
                            CompareResult::Equal,
                            TargetUnion::Value(bytes("2")),
                        )],
                        success: vec![put_op("then", "1")],
                        failure: vec![put_op("else", "1")],
                    })),
                },
            ],
            failure: vec![],
        };
        let response = txn(&mut store, &request).unwrap();
        let Some(Response::ResponseTxn(nested)) = &response.responses[1].response else {
            panic!("not a txn response: {response:?}");
        };
        assert!(nested.succeeded);
        assert!(store.kvs.contains_key(&bytes("then")));
    }

    /// A plain Put looks the lease up before the key (etcd's applier); a put inside a Txn
    /// checks the key first.
    #[test]
    fn put_checks_the_lease_before_the_key() {
        let mut store = store();
        let request = PutRequest {
            key: bytes("nope"),
            ignore_value: true,
            lease: 99,
            ..Default::default()
        };
        assert_eq!(
            put(&mut store, &request).unwrap_err(),
            ServerError::LeaseNotFound
        );
        let in_txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(request)),
            }],
            failure: vec![],
        };
        assert_eq!(
            txn(&mut store, &in_txn).unwrap_err(),
            ServerError::KeyNotFound
        );
    }

    /// etcd reads the number only from the union field matching the target; an unknown
    /// target compares as equal and an unknown result holds.
    #[test]
    fn compares_read_only_the_matching_union_field() {
        use CompareResult::*;
        use CompareTarget::*;
        let table = vec![
            (
                "mod revision sent in the version field counts as 0",
                compare("a", Mod, Greater, TargetUnion::Version(100)),
                true,
            ),
            (
                "unknown target",
                Compare {
                    target: 7,
                    ..compare("a", Version, Equal, TargetUnion::Version(100))
                },
                true,
            ),
            (
                "unknown result",
                Compare {
                    result: 9,
                    ..compare("a", Version, Equal, TargetUnion::Version(100))
                },
                true,
            ),
        ];
        for (name, compare, want) in table {
            let mut store = store();
            assert_eq!(
                compares_hold(&mut store, &[compare]).unwrap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn put_flags_and_prev_kv() {
        let mut store = store();
        let response = put(
            &mut store,
            &PutRequest {
                key: bytes("a"),
                ignore_value: true,
                lease: 7,
                prev_kv: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(response.prev_kv.unwrap().value, bytes("2"));
        let kv = store.kvs[&bytes("a")].clone();
        assert_eq!((kv.value, kv.lease, kv.version), (bytes("2"), 7, 3));
        let missing = put(
            &mut store,
            &PutRequest {
                key: bytes("nope"),
                ignore_lease: true,
                ..Default::default()
            },
        );
        assert_eq!(missing.unwrap_err(), ServerError::KeyNotFound);
    }
}
