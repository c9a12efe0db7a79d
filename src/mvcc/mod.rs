//! Multi-version concurrency control: revisions, the key index, the backend and watches.
//!
//! Every change to the key space happens at a *revision*: a `(main, sub)` pair where `main`
//! counts write transactions (it is etcd's `header.revision`) and `sub` orders the changes
//! inside one. The backend stores every version of every key under its revision, so a read
//! at an old revision, or a watch that starts in the past, reads history directly. An
//! in-memory key index maps each key to the revisions it was written or deleted at, so a
//! range read at any revision finds the right version of each key with one lookup.
//!
//! Writes are buffered in memory and committed to redb in batches (`commit`); reads see
//! the buffer first, so a write is visible as soon as it is applied. The applied Raft index
//! is stored in the same redb transaction as the data it produced: after a crash the store
//! reopens at a consistent point and the member replays the WAL after it.

mod backend;
mod index;
pub mod watch;

use std::sync::Arc;

use bytes::Bytes;

pub use backend::{Backend, BackendError};
pub use index::{KeyIndex, Revision};
pub use watch::{WatchController, WatchFilters, WatchHub, WatchStream, WatchUpdate};

use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("backend: {0}")]
    Backend(String),
}

impl From<BackendError> for MvccError {
    fn from(error: BackendError) -> Self {
        MvccError::Backend(error.to_string())
    }
}

/// The index names a revision the backend does not hold: the two disagree.
fn missing(rev: Revision) -> MvccError {
    MvccError::Backend(format!(
        "revision {rev:?} is in the index but not in the backend"
    ))
}

/// The result of a plain range scan.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RangeScan {
    pub kvs: Vec<KeyValue>,
    pub count: i64,
}

/// Whether `key` is inside the range `[start, end)` with etcd's conventions: an empty end
/// means the one key `start`; an end of `[0]` means every key from `start` on.
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// The key-value store: the index, the current and compacted revisions, and the backend.
/// Not synchronized: the server wraps it in a lock.
pub struct KvStore {
    pub index: KeyIndex,
    pub backend: Backend,
    /// The revision of the last completed write transaction.
    pub revision: i64,
    /// -1 until the first compaction (etcd's `compactMainRev`).
    pub compact_revision: i64,
    pub hub: Arc<WatchHub>,
}

impl KvStore {
    /// Opens the store over `backend`, rebuilding the index from every stored revision.
    pub fn open(backend: Backend) -> Result<Self, MvccError> {
        let mut index = KeyIndex::default();
        let mut revision = 0;
        backend.for_each_revision(|rev, tombstone, kv| {
            index.insert(kv.key.clone(), rev, tombstone);
            revision = revision.max(rev.main);
        })?;
        let compact_revision = backend.compact_revision()?;
        Ok(Self {
            index,
            backend,
            // An empty store is at revision 1, as etcd's is: the first write makes 2.
            revision: revision.max(compact_revision).max(1),
            compact_revision,
            hub: Arc::new(WatchHub::default()),
        })
    }

    fn check_revision(&self, revision: i64) -> Result<i64, MvccError> {
        if revision <= 0 {
            return Ok(self.revision);
        }
        if revision > self.revision {
            return Err(MvccError::FutureRevision);
        }
        if revision < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        Ok(revision)
    }

    /// The keys in `[key, end)` at `revision` (<= 0: the latest), at most `limit` of them
    /// (0: all), and how many there are in all.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<RangeScan, MvccError> {
        let at = self.check_revision(revision)?;
        self.scan_at(key, end, at, limit, count_only)
    }

    /// The range at a revision known to be readable.
    fn scan_at(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<RangeScan, MvccError> {
        let revisions = self.index.range(key, end, at);
        let count = revisions.len() as i64;
        if count_only {
            return Ok(RangeScan {
                kvs: Vec::new(),
                count,
            });
        }
        let take = if limit > 0 {
            (limit as usize).min(revisions.len())
        } else {
            revisions.len()
        };
        let revs: Vec<Revision> = revisions[..take].iter().map(|(_, rev)| *rev).collect();
        let kvs = self
            .backend
            .get_many(&revs)?
            .into_iter()
            .zip(&revs)
            .map(|(record, rev)| match record {
                Some((_, kv)) => Ok(kv),
                None => Err(missing(*rev)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeScan { kvs, count })
    }

    fn load(&self, rev: Revision) -> Result<KeyValue, MvccError> {
        match self.backend.get(rev)? {
            Some((_, kv)) => Ok(kv),
            None => Err(missing(rev)),
        }
    }

    /// The latest version of `key` at `revision` (<= 0: latest), if it exists then.
    pub fn get(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        match self.index.get(key, at) {
            Some(rev) => Ok(Some(self.load(rev)?)),
            None => Ok(None),
        }
    }

    /// Starts a write transaction at the next revision.
    pub fn write(&mut self) -> WriteTxn<'_> {
        let main = self.revision + 1;
        WriteTxn {
            store: self,
            main,
            sub: 0,
            events: Vec::new(),
        }
    }

    /// Compacts the history: every version older than the newest one at or below
    /// `revision` is removed (and a key deleted at or before it disappears entirely).
    pub fn compact(&mut self, revision: i64) -> Result<(), MvccError> {
        if revision <= self.compact_revision {
            return Err(MvccError::Compacted);
        }
        if revision > self.revision {
            return Err(MvccError::FutureRevision);
        }
        let removed = self.index.compact(revision);
        for rev in removed {
            self.backend.delete(rev);
        }
        self.compact_revision = revision;
        self.backend.set_compact_revision(revision);
        Ok(())
    }

    /// Every event in revisions `[from, to]` for keys in `[key, end)`, in revision order.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        end: &[u8],
    ) -> Result<Vec<Event>, MvccError> {
        let mut events = Vec::new();
        self.backend
            .for_each_revision_between(from, to, |_, tombstone, kv| {
                if in_range(&kv.key, key, end) {
                    events.push(Event {
                        r#type: if tombstone {
                            EventType::Delete as i32
                        } else {
                            EventType::Put as i32
                        },
                        kv: Some(kv),
                        prev_kv: None,
                    });
                }
            })?;
        Ok(events)
    }

    /// Fills the previous version of each event's key as etcd's watch does: the key at the
    /// revision before the event's, where still held, and nothing for an event that
    /// creates the key. So a key deleted and put again in one transaction has a creating
    /// put event without a previous version, and a key put and then deleted in one
    /// transaction has a delete event whose previous version is the one from before it.
    pub fn fill_prev_kvs(&self, events: &mut [Event]) {
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let creates =
                event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
            if creates {
                event.prev_kv = None;
                continue;
            }
            let from_before = event
                .prev_kv
                .as_ref()
                .is_some_and(|prev| prev.mod_revision < kv.mod_revision);
            if from_before {
                continue;
            }
            event.prev_kv = None;
            if kv.mod_revision - 1 < self.compact_revision {
                continue;
            }
            if let Ok(prev) = self.get(&kv.key, kv.mod_revision - 1) {
                event.prev_kv = prev;
            }
        }
    }

    /// A hash of every stored version at or below `revision`: equal on members that agree.
    pub fn hash_kv(&self, revision: i64) -> Result<u32, MvccError> {
        let at = self.check_revision(revision)?;
        let mut hash = 0u32;
        self.backend
            .for_each_raw_between(self.compact_revision.max(1), at, |key, value| {
                hash = crc32c::crc32c_append(hash, key);
                hash = crc32c::crc32c_append(hash, value);
            })?;
        Ok(hash)
    }
}

/// One write transaction: every change lands at revision `main`, with increasing `sub`.
/// Reads through it see its own earlier writes.
pub struct WriteTxn<'a> {
    pub store: &'a mut KvStore,
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl WriteTxn<'_> {
    fn next_revision(&mut self) -> Revision {
        let rev = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }

    /// Writes `key`; returns its previous version.
    pub fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<Option<KeyValue>, MvccError> {
        let previous = self.store.index.get(&key, self.main);
        let previous = match previous {
            Some(rev) => Some(self.store.load(rev)?),
            None => None,
        };
        let rev = self.next_revision();
        let kv = KeyValue {
            key: key.clone(),
            create_revision: previous.as_ref().map_or(self.main, |kv| kv.create_revision),
            mod_revision: self.main,
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            value,
            lease,
        };
        self.store.backend.put(rev, false, &kv);
        self.store.index.insert(key, rev, false);
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: previous.clone(),
        });
        Ok(previous)
    }

    /// Deletes every key in `[key, end)`; returns what was deleted.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, MvccError> {
        let live = self.store.index.range(key, end, self.main);
        let mut deleted = Vec::with_capacity(live.len());
        for (name, rev) in live {
            let previous = self.store.load(rev)?;
            let rev = self.next_revision();
            let tombstone = KeyValue {
                key: name.clone(),
                mod_revision: self.main,
                ..Default::default()
            };
            self.store.backend.put(rev, true, &tombstone);
            self.store.index.insert(name, rev, true);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tombstone),
                prev_kv: Some(previous.clone()),
            });
            deleted.push(previous);
        }
        Ok(deleted)
    }

    /// The store's revision before this transaction.
    pub fn current_revision(&self) -> i64 {
        self.store.revision
    }

    /// Whether this transaction has changed anything yet.
    pub fn has_changes(&self) -> bool {
        self.sub > 0
    }

    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<RangeScan, MvccError> {
        if revision <= 0 && self.sub > 0 {
            // Latest, including this transaction's own writes.
            return self.store.scan_at(key, end, self.main, limit, count_only);
        }
        self.store.range(key, end, revision, limit, count_only)
    }

    /// Ends the transaction: the revision moves if anything changed, and watchers hear of
    /// it. Returns the store's revision after it.
    pub fn end(self) -> i64 {
        if self.sub > 0 {
            self.store.revision = self.main;
            self.store.hub.notify(self.main, &self.events);
        }
        self.store.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8, u8),
        Compact(u8),
        Commit,
        Restart,
        Read(u8, u8, u8),
        /// One transaction: delete every key from `key(k)` on, then put these keys (etcd
        /// 3.4 accepts this shape in one Txn branch: issue 18).
        DeleteFromThenPut(u8, Vec<(u8, u8)>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0u8..12, 0u8..13).prop_map(|(k, e)| Op::Delete(k, e)),
            1 => any::<u8>().prop_map(Op::Compact),
            1 => Just(Op::Commit),
            1 => Just(Op::Restart),
            3 => (0u8..12, 0u8..13, any::<u8>()).prop_map(|(k, e, r)| Op::Read(k, e, r)),
            1 => (0u8..12, proptest::collection::vec((0u8..12, any::<u8>()), 0..4))
                .prop_map(|(k, puts)| Op::DeleteFromThenPut(k, puts)),
        ]
    }

    fn key(k: u8) -> Bytes {
        Bytes::from(format!("k{k:02}"))
    }

    /// The model: every (key, revision) → value written, `None` for a deletion.
    #[derive(Default)]
    struct Model {
        history: BTreeMap<(Bytes, i64), Option<Bytes>>,
        revision: i64,
        compacted: i64,
    }

    impl Model {
        fn at(&self, key: &Bytes, revision: i64) -> Option<(Bytes, i64)> {
            self.history
                .range((key.clone(), 0)..=(key.clone(), revision))
                .next_back()
                .and_then(|((_, rev), value)| value.clone().map(|v| (v, *rev)))
        }

        fn live(&self, revision: i64) -> Vec<(Bytes, Bytes, i64)> {
            let keys: std::collections::BTreeSet<Bytes> =
                self.history.keys().map(|(k, _)| k.clone()).collect();
            keys.into_iter()
                .filter_map(|k| self.at(&k, revision).map(|(v, rev)| (k, v, rev)))
                .collect()
        }
    }

    fn open(disk: &SimDisk) -> KvStore {
        let backend = Backend::open(Arc::new(disk.clone()), Path::new("/data/db")).unwrap();
        KvStore::open(backend).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]
        #[test]
        fn store_matches_a_btreemap_model(ops in proptest::collection::vec(op(), 1..120)) {
            let disk = SimDisk::new(1);
            let mut store = open(&disk);
            // Never compacted is -1, as in etcd: a compaction at 0 is allowed once.
            let mut model = Model { revision: 1, compacted: -1, ..Default::default() };
            // What the last commit made durable: a restart goes back to it.
            let mut durable = (BTreeMap::new(), 1i64, -1i64);
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let mut txn = store.write();
                        txn.put(key(k), Bytes::from(vec![v]), 0).unwrap();
                        txn.end();
                        model.revision += 1;
                        model.history.insert((key(k), model.revision), Some(Bytes::from(vec![v])));
                    }
                    Op::Delete(k, e) => {
                        let end = if e > k { key(e) } else { Bytes::new() };
                        let start = key(k);
                        let mut txn = store.write();
                        let deleted = txn.delete_range(&start, &end).unwrap();
                        txn.end();
                        let live: Vec<Bytes> = model
                            .live(model.revision)
                            .into_iter()
                            .map(|(k, _, _)| k)
                            .filter(|k| in_range(k, &start, &end))
                            .collect();
                        prop_assert_eq!(deleted.len(), live.len());
                        if !live.is_empty() {
                            model.revision += 1;
                            for k in live {
                                model.history.insert((k, model.revision), None);
                            }
                        }
                    }
                    Op::DeleteFromThenPut(k, puts) => {
                        let start = key(k);
                        let mut seen = std::collections::BTreeSet::new();
                        let puts: Vec<(Bytes, Bytes)> = puts
                            .into_iter()
                            .filter(|(p, _)| seen.insert(*p))
                            .map(|(p, v)| (key(p), Bytes::from(vec![v])))
                            .collect();
                        let deleted_keys: Vec<Bytes> = model
                            .live(model.revision)
                            .into_iter()
                            .map(|(k, _, _)| k)
                            .filter(|k| *k >= start)
                            .collect();
                        let mut txn = store.write();
                        let deleted = txn.delete_range(&start, &[0]).unwrap();
                        for (put_key, value) in &puts {
                            txn.put(put_key.clone(), value.clone(), 0).unwrap();
                        }
                        let revision = txn.end();
                        prop_assert_eq!(deleted.len(), deleted_keys.len());
                        if deleted_keys.is_empty() && puts.is_empty() {
                            prop_assert_eq!(revision, model.revision);
                            continue;
                        }
                        model.revision += 1;
                        prop_assert_eq!(revision, model.revision);
                        for deleted_key in &deleted_keys {
                            model.history.insert((deleted_key.clone(), revision), None);
                        }
                        for (put_key, value) in &puts {
                            model.history.insert((put_key.clone(), revision), Some(value.clone()));
                        }
                        // One revision, the changes in order: the deletes in key order, then
                        // the puts as given; a key deleted and put again is created anew.
                        let events = store.history(revision, revision, b"\0", b"\0").unwrap();
                        let got: Vec<(i32, Bytes, Bytes, bool)> = events
                            .into_iter()
                            .map(|event| {
                                let kv = event.kv.unwrap_or_default();
                                prop_assert_eq!(kv.mod_revision, revision);
                                Ok((event.r#type, kv.key, kv.value, kv.create_revision == revision))
                            })
                            .collect::<Result<_, TestCaseError>>()?;
                        let mut want: Vec<(i32, Bytes, Bytes, bool)> = deleted_keys
                            .iter()
                            .map(|k| (EventType::Delete as i32, k.clone(), Bytes::new(), false))
                            .collect();
                        for (put_key, value) in &puts {
                            let created = *put_key >= start
                                || model.at(put_key, revision - 1).is_none();
                            want.push((EventType::Put as i32, put_key.clone(), value.clone(), created));
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Compact(r) => {
                        let at = i64::from(r) % (model.revision + 1);
                        let result = store.compact(at);
                        if at <= model.compacted {
                            prop_assert_eq!(result, Err(MvccError::Compacted));
                        } else {
                            prop_assert_eq!(result, Ok(()));
                            model.compacted = at;
                        }
                    }
                    Op::Commit => {
                        store.backend.commit().unwrap();
                        durable = (model.history.clone(), model.revision, model.compacted);
                    }
                    Op::Restart => {
                        drop(store);
                        disk.crash();
                        store = open(&disk);
                        model.history = durable.0.clone();
                        model.revision = durable.1;
                        model.compacted = durable.2;
                        prop_assert_eq!(store.revision, model.revision);
                    }
                    Op::Read(k, e, r) => {
                        let end = if e > k { key(e) } else { Bytes::new() };
                        let at = i64::from(r) % (model.revision + 2);
                        let result = store.range(&key(k), &end, at, 0, false);
                        if at > model.revision {
                            prop_assert_eq!(result, Err(MvccError::FutureRevision));
                        } else if at > 0 && at < model.compacted {
                            prop_assert_eq!(result, Err(MvccError::Compacted));
                        } else {
                            let at = if at <= 0 { model.revision } else { at };
                            let got: Vec<(Bytes, Bytes, i64)> = result
                                .unwrap()
                                .kvs
                                .into_iter()
                                .map(|kv| (kv.key, kv.value, kv.mod_revision))
                                .collect();
                            let want: Vec<(Bytes, Bytes, i64)> = model
                                .live(at)
                                .into_iter()
                                .filter(|(key_name, _, _)| in_range(key_name, &key(k), &end))
                                .collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }
}
