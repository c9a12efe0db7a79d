//! The in-memory key index: for every key, the revisions it was written and deleted at.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

/// A point in the store's history: `main` is the write transaction, `sub` the change
/// inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The backend key: big-endian so that byte order is revision order.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.main.to_be_bytes());
        bytes[8..].copy_from_slice(&self.sub.to_be_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 16 {
            return None;
        }
        Some(Self {
            main: i64::from_be_bytes(bytes[..8].try_into().ok()?),
            sub: i64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

#[derive(Debug, Default)]
pub struct KeyIndex {
    /// Per key, its revisions in increasing order, each marked when it is a deletion.
    keys: BTreeMap<Bytes, Vec<(Revision, bool)>>,
    /// Keys whose newest revision is not a deletion (etcd's `keys_total` metric).
    /// Invariant: equals the keys of `keys` whose last entry is not a tombstone.
    live: usize,
}

impl KeyIndex {
    pub fn insert(&mut self, key: Bytes, rev: Revision, tombstone: bool) {
        let revisions = self.keys.entry(key).or_default();
        debug_assert!(revisions.last().is_none_or(|(last, _)| *last < rev));
        let was_live = revisions.last().is_some_and(|(_, deleted)| !deleted);
        revisions.push((rev, tombstone));
        match (was_live, tombstone) {
            (false, false) => self.live += 1,
            (true, true) => self.live -= 1,
            _ => {}
        }
    }

    /// How many keys exist at the newest revision.
    pub fn live_keys(&self) -> usize {
        self.live
    }

    fn visible(revisions: &[(Revision, bool)], at: i64) -> Option<Revision> {
        let position = revisions.partition_point(|(rev, _)| rev.main <= at);
        if position == 0 {
            return None;
        }
        let (rev, tombstone) = revisions[position - 1];
        (!tombstone).then_some(rev)
    }

    /// The revision of the version of `key` visible at `at`, if the key exists then.
    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        Self::visible(self.keys.get(key)?, at)
    }

    /// The keys in `[key, end)` that exist at `at`, with their visible revisions.
    pub fn range(&self, key: &[u8], end: &[u8], at: i64) -> Vec<(Bytes, Revision)> {
        if end.is_empty() {
            return self
                .get(key, at)
                .map(|rev| vec![(Bytes::copy_from_slice(key), rev)])
                .unwrap_or_default();
        }
        let upper = if end == [0] {
            Bound::Unbounded
        } else {
            if key >= end {
                return Vec::new();
            }
            Bound::Excluded(end)
        };
        self.keys
            .range::<[u8], _>((Bound::Included(key), upper))
            .filter_map(|(name, revisions)| {
                Self::visible(revisions, at).map(|rev| (name.clone(), rev))
            })
            .collect()
    }

    /// Drops the history at or below `at` that no read at `at` or later can see; returns
    /// the revisions dropped.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        self.keys.retain(|_, revisions| {
            let position = revisions.partition_point(|(rev, _)| rev.main <= at);
            if position == 0 {
                return true;
            }
            let (_, newest_is_tombstone) = revisions[position - 1];
            let drop = if newest_is_tombstone {
                position
            } else {
                position - 1
            };
            removed.extend(revisions.drain(..drop).map(|(rev, _)| rev));
            !revisions.is_empty()
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    #[test]
    fn visibility_follows_writes_and_deletes() {
        let mut index = KeyIndex::default();
        index.insert(Bytes::from_static(b"a"), rev(2), false);
        index.insert(Bytes::from_static(b"a"), rev(4), true);
        index.insert(Bytes::from_static(b"a"), rev(6), false);
        index.insert(Bytes::from_static(b"b"), rev(3), false);
        assert_eq!(index.get(b"a", 1), None);
        assert_eq!(index.get(b"a", 3), Some(rev(2)));
        assert_eq!(index.get(b"a", 5), None);
        assert_eq!(index.get(b"a", 9), Some(rev(6)));
        assert_eq!(index.range(b"a", &[0], 3).len(), 2);
        assert_eq!(index.range(b"a", b"b", 9).len(), 1);
        assert_eq!(index.range(b"b", b"a", 9).len(), 0);
    }

    #[test]
    fn compaction_keeps_the_newest_visible_version() {
        let mut index = KeyIndex::default();
        index.insert(Bytes::from_static(b"a"), rev(2), false);
        index.insert(Bytes::from_static(b"a"), rev(3), false);
        index.insert(Bytes::from_static(b"b"), rev(4), false);
        index.insert(Bytes::from_static(b"b"), rev(5), true);
        let removed = index.compact(5);
        assert_eq!(removed, vec![rev(2), rev(4), rev(5)]);
        assert_eq!(index.get(b"a", 5), Some(rev(3)));
        assert_eq!(index.len(), 1);
        assert_eq!(index.live_keys(), 1);
    }

    #[test]
    fn live_keys_follow_creations_and_deletions() {
        let mut index = KeyIndex::default();
        let steps: &[(&[u8], i64, bool, usize)] = &[
            (b"a", 2, false, 1),
            (b"a", 3, false, 1),
            (b"b", 4, false, 2),
            (b"a", 5, true, 1),
            (b"a", 6, false, 2),
            (b"b", 7, true, 1),
            (b"c", 8, true, 1),
        ];
        for (key, main, tombstone, live) in steps {
            index.insert(Bytes::copy_from_slice(key), rev(*main), *tombstone);
            assert_eq!(index.live_keys(), *live, "after revision {main}");
        }
        index.compact(8);
        assert_eq!(index.live_keys(), 1);
    }
}
