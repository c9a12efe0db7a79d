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
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::server::state::range::{self, KvView, Scan};
use crate::server::types::error::EtcdError;

/// A write transaction: reads see its own earlier writes; everything it does lands at one
/// revision when it ends.
pub(crate) trait KvWrite: KvView {
    /// Puts `key`; returns the previous key-value, if the key existed.
    fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Result<Option<KeyValue>, EtcdError>;
    /// Deletes `[key, end)` (same range rules as a scan); returns what was deleted.
    fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, EtcdError>;
    /// Whether the lease exists (puts with a lease are refused otherwise).
    fn lease_exists(&self, lease: i64) -> bool;
    /// The store's compacted revision.
    fn compact_revision(&self) -> i64;
    /// The current revision as this transaction sees it (before it ends).
    fn current_revision(&self) -> i64;
}

/// Reads the one key, at the latest revision.
fn get(txn: &mut dyn KvWrite, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
    let scan = txn.scan(key, &[], 0, 1, false)?;
    Ok(scan.kvs.into_iter().next())
}

pub(crate) fn put(txn: &mut dyn KvWrite, request: &PutRequest) -> Result<PutResponse, EtcdError> {
    let previous = if request.prev_kv || request.ignore_value || request.ignore_lease {
        let previous = get(txn, &request.key)?;
        if previous.is_none() && (request.ignore_value || request.ignore_lease) {
            return Err(EtcdError::KeyNotFound);
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
        return Err(EtcdError::LeaseNotFound);
    }
    let replaced = txn.put(request.key.clone(), value, lease)?;
    Ok(PutResponse {
        header: None,
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
) -> Result<DeleteRangeResponse, EtcdError> {
    let deleted = txn.delete_range(&request.key, &request.range_end)?;
    Ok(DeleteRangeResponse {
        header: None,
        deleted: deleted.len() as i64,
        prev_kvs: if request.prev_kv { deleted } else { Vec::new() },
    })
}

pub(crate) fn txn(txn: &mut dyn KvWrite, request: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    let succeeded = compares_hold(txn, &request.compare)?;
    let ops = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    check_ops(txn, ops)?;
    execute(txn, ops, succeeded)
}

fn execute(
    txn: &mut dyn KvWrite,
    ops: &[crate::proto::etcdserverpb::RequestOp],
    succeeded: bool,
) -> Result<TxnResponse, EtcdError> {
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
                let nested_succeeded = compares_hold(txn, &request.compare)?;
                let nested_ops = if nested_succeeded {
                    &request.success
                } else {
                    &request.failure
                };
                Response::ResponseTxn(execute(txn, nested_ops, nested_succeeded)?)
            }
            None => return Err(EtcdError::KeyNotFound),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// Refuses a branch that would fail part-way, before it changes anything. Nested
/// transactions are checked along the branch their compares choose now; their compares see
/// the state before the outer branch runs, which is what etcd 3.4 does too.
fn check_ops(
    txn: &mut dyn KvWrite,
    ops: &[crate::proto::etcdserverpb::RequestOp],
) -> Result<(), EtcdError> {
    for op in ops {
        match &op.request {
            Some(Request::RequestRange(request)) => check_range_revision(txn, request)?,
            Some(Request::RequestPut(request)) => {
                if request.ignore_value || request.ignore_lease {
                    let existing = get(txn, &request.key)?;
                    if existing.is_none() {
                        return Err(EtcdError::KeyNotFound);
                    }
                }
                if request.lease != 0 && !txn.lease_exists(request.lease) {
                    return Err(EtcdError::LeaseNotFound);
                }
            }
            Some(Request::RequestDeleteRange(_)) => {}
            Some(Request::RequestTxn(request)) => {
                let holds = compares_hold(txn, &request.compare)?;
                check_ops(
                    txn,
                    if holds {
                        &request.success
                    } else {
                        &request.failure
                    },
                )?;
            }
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

fn check_range_revision(txn: &dyn KvWrite, request: &RangeRequest) -> Result<(), EtcdError> {
    if request.revision > txn.current_revision() {
        return Err(EtcdError::FutureRevision);
    }
    if request.revision > 0 && request.revision < txn.compact_revision() {
        return Err(EtcdError::Compacted);
    }
    Ok(())
}

/// Whether every compare holds, each against every key of its range.
pub(crate) fn compares_hold(
    txn: &mut dyn KvWrite,
    compares: &[Compare],
) -> Result<bool, EtcdError> {
    for compare in compares {
        let Scan { kvs, .. } = txn.scan(&compare.key, &compare.range_end, 0, 0, false)?;
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let holds = if kvs.is_empty() {
            // A missing key compares as zero on every numeric target; a value compare on a
            // missing key always fails (there is no way to represent "no value").
            target != CompareTarget::Value && compare_one(compare, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| compare_one(compare, kv))
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare_one(compare: &Compare, kv: &KeyValue) -> bool {
    let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
    let ordering = match (target, &compare.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(value))) => {
            kv.value.as_ref().cmp(value.as_ref())
        }
        (CompareTarget::Value, _) => kv.value.as_ref().cmp(&[][..]),
        (CompareTarget::Version, union) => kv.version.cmp(&number(union)),
        (CompareTarget::Create, union) => kv.create_revision.cmp(&number(union)),
        (CompareTarget::Mod, union) => kv.mod_revision.cmp(&number(union)),
        (CompareTarget::Lease, union) => kv.lease.cmp(&number(union)),
    };
    let result = CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal);
    match result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The number a compare carries, whichever field of the union it was sent in (clients set
/// the field matching the target; a missing union compares as 0).
fn number(union: &Option<TargetUnion>) -> i64 {
    match union {
        Some(TargetUnion::Version(n))
        | Some(TargetUnion::CreateRevision(n))
        | Some(TargetUnion::ModRevision(n))
        | Some(TargetUnion::Lease(n)) => *n,
        Some(TargetUnion::Value(_)) | None => 0,
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
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_is_read_only(nested),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::RequestOp;
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
        ) -> Result<Scan, EtcdError> {
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
        ) -> Result<Option<KeyValue>, EtcdError> {
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

        fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, EtcdError> {
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
            EtcdError::LeaseNotFound
        );
        assert_eq!(store.revision, before);
        assert!(!store.kvs.contains_key(&bytes("c")));
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
        assert_eq!(missing.unwrap_err(), EtcdError::KeyNotFound);
    }
}
