//! etcd's Range semantics on top of the MVCC store's plain range scan.
//!
//! The store answers "the keys in [key, end) at revision r, at most n of them, and how many
//! there are in all". Everything else a `RangeRequest` can ask for happens here, in etcd's
//! order: the limit is pushed down to the store only when nothing reorders or filters the
//! result (one extra key is fetched to learn whether there are `more`); the min/max
//! revision filters apply after the fetch (so `count` is taken before them, as in etcd 3.4);
//! a sort target other than KEY with order NONE sorts ascending; then the limit cuts.

use std::cmp::Ordering;

use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::mvccpb::KeyValue;
use crate::server::types::error::ServerError;

/// What the store returns for a plain range scan.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Scan {
    /// In ascending key order.
    pub(crate) kvs: Vec<KeyValue>,
    /// Keys in the range at the revision, ignoring the limit.
    pub(crate) count: i64,
    /// The store's current revision (not the revision read at).
    pub(crate) revision: i64,
}

/// A readable view of the store: a read-only snapshot, or a write transaction that sees its
/// own earlier writes.
pub(crate) trait KvView {
    /// The keys in `[key, end)` at `revision` (<= 0: latest); `end` empty means the one key,
    /// `end == [0]` means every key >= `key`. `limit` 0 means no limit. With `count_only`
    /// the store may leave `kvs` empty.
    fn scan(
        &mut self,
        key: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<Scan, ServerError>;
}

/// Answers a `RangeRequest` (the header is filled in by the caller, except its revision).
pub(crate) fn range(
    view: &mut dyn KvView,
    request: &RangeRequest,
) -> Result<RangeResponse, ServerError> {
    // etcd 3.4 takes the order as sent: an unknown one still counts as "not NONE" (so the
    // limit is not pushed down) but sorts nothing.
    let sort_order = SortOrder::try_from(request.sort_order).ok();
    let sort_target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let mut limit = request.limit;
    let sorted = request.sort_order != SortOrder::None as i32
        && !crate::planted::active(crate::planted::Bug::LimitBeforeSort);
    if sorted || filtered {
        limit = 0;
    }
    if limit > 0 {
        // One more than asked, to learn whether the range holds more.
        limit += 1;
    }
    let mut scan = view.scan(
        &request.key,
        &request.range_end,
        request.revision,
        limit,
        request.count_only,
    )?;
    let mut kvs = std::mem::take(&mut scan.kvs);
    if filtered {
        kvs.retain(|kv| {
            (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_create_revision == 0
                    || kv.create_revision <= request.max_create_revision)
                && (request.min_create_revision == 0
                    || kv.create_revision >= request.min_create_revision)
        });
    }
    let order = match (sort_order, sort_target) {
        (Some(SortOrder::None), SortTarget::Key) | (None, _) => SortOrder::None,
        (Some(SortOrder::None), _) => SortOrder::Ascend,
        (Some(order), _) => order,
    };
    if order != SortOrder::None {
        // Stable, with key order as the tie-break (the scan is in key order), so equal
        // targets always come back in the same order.
        kvs.sort_by(|a, b| {
            let ordering = compare_target(a, b, sort_target);
            match order {
                SortOrder::Descend => ordering.reverse(),
                _ => ordering,
            }
        });
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.count_only {
        kvs.clear();
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Default::default();
        }
    }
    Ok(RangeResponse {
        header: Some(crate::proto::etcdserverpb::ResponseHeader {
            revision: scan.revision,
            ..Default::default()
        }),
        kvs,
        more,
        count: scan.count,
    })
}

fn compare_target(a: &KeyValue, b: &KeyValue, target: SortTarget) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A view over a fixed list of keys at one revision.
    struct Fixed(Vec<KeyValue>);

    impl KvView for Fixed {
        fn scan(
            &mut self,
            key: &[u8],
            end: &[u8],
            _revision: i64,
            limit: i64,
            _count_only: bool,
        ) -> Result<Scan, ServerError> {
            let inside = |kv: &&KeyValue| match end {
                [] => kv.key.as_ref() == key,
                [0] => kv.key.as_ref() >= key,
                end => kv.key.as_ref() >= key && kv.key.as_ref() < end,
            };
            let all: Vec<KeyValue> = self.0.iter().filter(inside).cloned().collect();
            let count = all.len() as i64;
            let kvs = match limit {
                0 => all,
                n => all.into_iter().take(n as usize).collect(),
            };
            Ok(Scan {
                kvs,
                count,
                revision: 9,
            })
        }
    }

    fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    fn store() -> Fixed {
        Fixed(vec![
            kv("a", "3", 2, 8, 3),
            kv("b", "1", 3, 3, 1),
            kv("c", "2", 4, 6, 2),
            kv("d", "4", 5, 5, 1),
        ])
    }

    fn keys(response: &RangeResponse) -> String {
        response
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    fn request(key: &str, end: &str) -> RangeRequest {
        RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn etcd_range_rules() {
        let table: Vec<(&str, RangeRequest, &str, bool, i64)> = vec![
            ("one key", request("b", ""), "b", false, 1),
            ("from key", request("b", "\0"), "bcd", false, 3),
            ("half-open range", request("a", "c"), "ab", false, 2),
            (
                "limit sets more and keeps count",
                RangeRequest {
                    limit: 2,
                    ..request("a", "\0")
                },
                "ab",
                true,
                4,
            ),
            (
                "limit equal to the count has no more",
                RangeRequest {
                    limit: 4,
                    ..request("a", "\0")
                },
                "abcd",
                false,
                4,
            ),
            (
                "sort by value descending",
                RangeRequest {
                    sort_order: SortOrder::Descend as i32,
                    sort_target: SortTarget::Value as i32,
                    ..request("a", "\0")
                },
                "dacb",
                false,
                4,
            ),
            (
                "a non-key target with order NONE sorts ascending",
                RangeRequest {
                    sort_target: SortTarget::Mod as i32,
                    ..request("a", "\0")
                },
                "bdca",
                false,
                4,
            ),
            (
                "filters apply before the limit; count before the filters",
                RangeRequest {
                    min_mod_revision: 5,
                    limit: 1,
                    ..request("a", "\0")
                },
                "a",
                true,
                4,
            ),
            (
                "max create revision",
                RangeRequest {
                    max_create_revision: 3,
                    ..request("a", "\0")
                },
                "ab",
                false,
                4,
            ),
        ];
        for (name, request, want_keys, want_more, want_count) in table {
            let response = range(&mut store(), &request).unwrap();
            assert_eq!(keys(&response), want_keys, "{name}");
            assert_eq!(response.more, want_more, "{name}");
            assert_eq!(response.count, want_count, "{name}");
            assert_eq!(response.header.unwrap().revision, 9, "{name}");
        }
    }

    #[test]
    fn keys_only_and_count_only() {
        let response = range(
            &mut store(),
            &RangeRequest {
                keys_only: true,
                ..request("a", "\0")
            },
        )
        .unwrap();
        assert!(response.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(keys(&response), "abcd");
        let response = range(
            &mut store(),
            &RangeRequest {
                count_only: true,
                ..request("a", "\0")
            },
        )
        .unwrap();
        assert!(response.kvs.is_empty());
        assert_eq!(response.count, 4);
    }
}
