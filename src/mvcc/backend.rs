//! The MVCC backend: every version of every key in redb, keyed by revision, with writes
//! buffered in memory between batched commits.
//!
//! Tables:
//! - `kv`: 16-byte revision (big-endian main, sub) → one marker byte (0 put, 1 deletion)
//!   followed by the protobuf `mvccpb.KeyValue`;
//! - `meta`: name → value: the applied Raft index, the compacted revision, the alarms,
//!   the member list, the auth state;
//! - `lease`: lease id → granted TTL and remaining TTL (8 bytes each, little-endian).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::index::Revision;
use crate::io::{Disk, DiskBackend, DiskFile};
use crate::proto::mvccpb::KeyValue;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LEASE: TableDefinition<i64, &[u8]> = TableDefinition::new("lease");
/// The v2 keyspace, one record per node, keyed by its path.
const V2: TableDefinition<&str, &[u8]> = TableDefinition::new("v2");

const CONSISTENT_INDEX: &str = "consistent_index";
const COMPACT_REVISION: &str = "compact_revision";
const ALARMS: &str = "alarms";
const MEMBERS: &str = "members";
const AUTH: &str = "auth";
const V2_INDEX: &str = "v2_index";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redb: {0}")]
    Redb(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record at revision {0:?}: {1}")]
    Corrupt(Revision, String),
}

fn redb_error(error: impl std::fmt::Display) -> BackendError {
    BackendError::Redb(error.to_string())
}

/// Changes not yet committed to redb.
#[derive(Default)]
struct Pending {
    puts: BTreeMap<Revision, Vec<u8>>,
    deletes: BTreeSet<Revision>,
    meta: BTreeMap<&'static str, Vec<u8>>,
    leases: BTreeMap<i64, Option<Vec<u8>>>,
    v2: BTreeMap<String, Option<Vec<u8>>>,
}

pub struct Backend {
    db: Database,
    /// A second handle on the database file, opened once, for its size and its image.
    file: Box<dyn DiskFile>,
    pending: Pending,
}

fn encode_record(tombstone: bool, kv: &KeyValue) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + kv.encoded_len());
    bytes.push(tombstone as u8);
    kv.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

fn decode_record(rev: Revision, bytes: &[u8]) -> Result<(bool, KeyValue), BackendError> {
    let Some((&marker, rest)) = bytes.split_first() else {
        return Err(BackendError::Corrupt(rev, "empty record".into()));
    };
    let kv = KeyValue::decode(rest).map_err(|e| BackendError::Corrupt(rev, e.to_string()))?;
    Ok((marker == 1, kv))
}

impl Backend {
    /// Opens (or creates) the database file at `path` on `disk`.
    pub fn open(disk: Arc<dyn Disk>, path: &std::path::Path) -> Result<Self, BackendError> {
        Self::open_with_cache(disk, path, None)
    }

    /// Opens the database file at `path` with at most `cache_bytes` of redb's page cache
    /// (redb's default when `None`): a copy read once from start to end gains nothing from
    /// a cache as large as the database.
    pub fn open_with_cache(
        disk: Arc<dyn Disk>,
        path: &std::path::Path,
        cache_bytes: Option<usize>,
    ) -> Result<Self, BackendError> {
        let parent = path.parent().unwrap_or(std::path::Path::new("."));
        disk.create_dir_all(parent)?;
        if !disk.exists(path) {
            // A crash during redb's first write of a new file leaves a file it refuses to
            // open; so the new database is made under a temporary name and renamed into
            // place only once it is complete.
            let tmp = path.with_extension("tmp");
            if disk.exists(&tmp) {
                disk.remove(&tmp)?;
            }
            {
                let db = Database::builder()
                    .create_with_backend(DiskBackend::new(disk.open(&tmp, true)?))
                    .map_err(redb_error)?;
                Self::create_tables(&db)?;
            }
            disk.rename(&tmp, path)?;
            disk.sync_dir(parent)?;
        }
        let mut builder = Database::builder();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = builder
            .create_with_backend(DiskBackend::new(disk.open(path, false)?))
            .map_err(redb_error)?;
        Self::create_tables(&db)?;
        Ok(Self {
            db,
            file: disk.open(path, false)?,
            pending: Pending::default(),
        })
    }

    fn create_tables(db: &Database) -> Result<(), BackendError> {
        let txn = db.begin_write().map_err(redb_error)?;
        {
            txn.open_table(KV).map_err(redb_error)?;
            txn.open_table(META).map_err(redb_error)?;
            txn.open_table(LEASE).map_err(redb_error)?;
            txn.open_table(V2).map_err(redb_error)?;
        }
        txn.commit().map_err(redb_error)
    }

    pub fn put(&mut self, rev: Revision, tombstone: bool, kv: &KeyValue) {
        self.pending.deletes.remove(&rev);
        self.pending.puts.insert(rev, encode_record(tombstone, kv));
    }

    pub fn delete(&mut self, rev: Revision) {
        self.pending.puts.remove(&rev);
        self.pending.deletes.insert(rev);
    }

    pub fn get(&self, rev: Revision) -> Result<Option<(bool, KeyValue)>, BackendError> {
        Ok(self.get_many(&[rev])?.pop().flatten())
    }

    /// The records at `revs`, in order, through one read transaction.
    pub fn get_many(
        &self,
        revs: &[Revision],
    ) -> Result<Vec<Option<(bool, KeyValue)>>, BackendError> {
        let mut table = None;
        let mut records = Vec::with_capacity(revs.len());
        for &rev in revs {
            if self.pending.deletes.contains(&rev) {
                records.push(None);
                continue;
            }
            if let Some(bytes) = self.pending.puts.get(&rev) {
                records.push(Some(decode_record(rev, bytes)?));
                continue;
            }
            if table.is_none() {
                let txn = self.db.begin_read().map_err(redb_error)?;
                table = Some(txn.open_table(KV).map_err(redb_error)?);
            }
            let table = table.as_ref().expect("opened above");
            records.push(
                match table.get(rev.to_bytes().as_slice()).map_err(redb_error)? {
                    Some(value) => Some(decode_record(rev, value.value())?),
                    None => None,
                },
            );
        }
        Ok(records)
    }

    /// Visits every stored record in revision order.
    pub fn for_each_revision(
        &self,
        visit: impl FnMut(Revision, bool, KeyValue),
    ) -> Result<(), BackendError> {
        self.for_each_revision_between(0, i64::MAX, visit)
    }

    /// Visits the records with `from <= main <= to`, in revision order, pending included.
    pub fn for_each_revision_between(
        &self,
        from: i64,
        to: i64,
        mut visit: impl FnMut(Revision, bool, KeyValue),
    ) -> Result<(), BackendError> {
        let mut failure = None;
        self.for_each_raw_between(from, to, |key, value| {
            if failure.is_some() {
                return;
            }
            let rev = Revision::from_bytes(key).unwrap_or_default();
            match decode_record(rev, value) {
                Ok((tombstone, kv)) => visit(rev, tombstone, kv),
                Err(error) => failure = Some(error),
            }
        })?;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Visits raw (key, value) records with `from <= main <= to` in revision order.
    pub fn for_each_raw_between(
        &self,
        from: i64,
        to: i64,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), BackendError> {
        let low = Revision { main: from, sub: 0 };
        let high = Revision {
            main: to,
            sub: i64::MAX,
        };
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(KV).map_err(redb_error)?;
        let (low_bytes, high_bytes) = (low.to_bytes(), high.to_bytes());
        let mut stored = table
            .range(low_bytes.as_slice()..=high_bytes.as_slice())
            .map_err(redb_error)?
            .peekable();
        let mut pending = self.pending.puts.range(low..=high).peekable();
        loop {
            let stored_rev = match stored.peek() {
                Some(Ok((key, _))) => Revision::from_bytes(key.value()),
                Some(Err(_)) => {
                    let error = stored.next().and_then(|r| r.err());
                    return Err(redb_error(error.map(|e| e.to_string()).unwrap_or_default()));
                }
                None => None,
            };
            let pending_rev = pending.peek().map(|(rev, _)| **rev);
            match (stored_rev, pending_rev) {
                (None, None) => return Ok(()),
                (Some(s), p) if p.is_none_or(|p| s < p) => {
                    let (key, value) = stored.next().expect("peeked").map_err(redb_error)?;
                    if !self.pending.deletes.contains(&s) {
                        visit(key.value(), value.value());
                    }
                }
                (s, Some(p)) => {
                    if s == Some(p) {
                        stored.next();
                    }
                    let (rev, value) = pending.next().expect("peeked");
                    visit(&rev.to_bytes(), value);
                }
                (Some(_), None) => unreachable!("covered by the guard above"),
            }
        }
    }

    fn meta(&self, name: &'static str) -> Result<Option<Vec<u8>>, BackendError> {
        if let Some(value) = self.pending.meta.get(name) {
            return Ok(Some(value.clone()));
        }
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(META).map_err(redb_error)?;
        Ok(table
            .get(name)
            .map_err(redb_error)?
            .map(|value| value.value().to_vec()))
    }

    fn meta_u64(&self, name: &'static str) -> Result<u64, BackendError> {
        Ok(self
            .meta(name)?
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0))
    }

    pub fn consistent_index(&self) -> Result<u64, BackendError> {
        self.meta_u64(CONSISTENT_INDEX)
    }

    pub fn set_consistent_index(&mut self, index: u64) {
        self.pending
            .meta
            .insert(CONSISTENT_INDEX, index.to_le_bytes().to_vec());
    }

    /// The revision of the last compaction; -1 before the first one, as in etcd (where a
    /// compaction at revision 0 is therefore allowed once).
    pub fn compact_revision(&self) -> Result<i64, BackendError> {
        if self.meta(COMPACT_REVISION)?.is_none() {
            return Ok(-1);
        }
        Ok(self.meta_u64(COMPACT_REVISION)? as i64)
    }

    pub fn set_compact_revision(&mut self, revision: i64) {
        self.pending
            .meta
            .insert(COMPACT_REVISION, (revision as u64).to_le_bytes().to_vec());
    }

    pub fn alarms(&self) -> Result<Vec<u8>, BackendError> {
        Ok(self.meta(ALARMS)?.unwrap_or_default())
    }

    pub fn set_alarms(&mut self, encoded: Vec<u8>) {
        self.pending.meta.insert(ALARMS, encoded);
    }

    /// The auth state (users, roles, enabled flag, revision), encoded.
    pub fn auth(&self) -> Result<Vec<u8>, BackendError> {
        Ok(self.meta(AUTH)?.unwrap_or_default())
    }

    pub fn set_auth(&mut self, encoded: Vec<u8>) {
        self.pending.meta.insert(AUTH, encoded);
    }

    pub fn members(&self) -> Result<Vec<u8>, BackendError> {
        Ok(self.meta(MEMBERS)?.unwrap_or_default())
    }

    pub fn set_members(&mut self, encoded: Vec<u8>) {
        self.pending.meta.insert(MEMBERS, encoded);
    }

    pub fn put_lease(&mut self, id: i64, ttl: i64, remaining: i64) {
        let mut value = ttl.to_le_bytes().to_vec();
        value.extend_from_slice(&remaining.to_le_bytes());
        self.pending.leases.insert(id, Some(value));
    }

    pub fn delete_lease(&mut self, id: i64) {
        self.pending.leases.insert(id, None);
    }

    /// Every stored lease: (id, ttl, remaining ttl).
    pub fn leases(&self) -> Result<Vec<(i64, i64, i64)>, BackendError> {
        let mut leases = BTreeMap::new();
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(LEASE).map_err(redb_error)?;
        for item in table.iter().map_err(redb_error)? {
            let (id, value) = item.map_err(redb_error)?;
            leases.insert(id.value(), value.value().to_vec());
        }
        for (id, value) in &self.pending.leases {
            match value {
                Some(value) => leases.insert(*id, value.clone()),
                None => leases.remove(id),
            };
        }
        Ok(leases
            .into_iter()
            .filter(|(_, value)| value.len() == 16)
            .map(|(id, value)| {
                let ttl = i64::from_le_bytes(value[..8].try_into().expect("16 bytes"));
                let remaining = i64::from_le_bytes(value[8..].try_into().expect("16 bytes"));
                (id, ttl, remaining)
            })
            .collect())
    }

    /// The v2 store's index (the number of its changes).
    pub fn v2_index(&self) -> Result<u64, BackendError> {
        self.meta_u64(V2_INDEX)
    }

    pub fn set_v2_index(&mut self, index: u64) {
        self.pending
            .meta
            .insert(V2_INDEX, index.to_le_bytes().to_vec());
    }

    /// Stores the record of the v2 node at `path`, or deletes it (`None`).
    pub fn put_v2_node(&mut self, path: String, record: Option<Vec<u8>>) {
        self.pending.v2.insert(path, record);
    }

    /// Every stored v2 node: (path, encoded record).
    pub fn v2_nodes(&self) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let mut nodes = BTreeMap::new();
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(V2).map_err(redb_error)?;
        for item in table.iter().map_err(redb_error)? {
            let (path, value) = item.map_err(redb_error)?;
            nodes.insert(path.value().to_owned(), value.value().to_vec());
        }
        for (path, value) in &self.pending.v2 {
            match value {
                Some(value) => nodes.insert(path.clone(), value.clone()),
                None => nodes.remove(path),
            };
        }
        Ok(nodes.into_iter().collect())
    }

    pub fn has_pending(&self) -> bool {
        let pending = &self.pending;
        !(pending.puts.is_empty()
            && pending.deletes.is_empty()
            && pending.meta.is_empty()
            && pending.leases.is_empty()
            && pending.v2.is_empty())
    }

    /// Writes everything pending in one durable redb transaction.
    pub fn commit(&mut self) -> Result<(), BackendError> {
        if !self.has_pending() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(redb_error)?;
        {
            let mut kv = txn.open_table(KV).map_err(redb_error)?;
            for (rev, value) in &self.pending.puts {
                kv.insert(rev.to_bytes().as_slice(), value.as_slice())
                    .map_err(redb_error)?;
            }
            for rev in &self.pending.deletes {
                kv.remove(rev.to_bytes().as_slice()).map_err(redb_error)?;
            }
            let mut meta = txn.open_table(META).map_err(redb_error)?;
            for (name, value) in &self.pending.meta {
                meta.insert(*name, value.as_slice()).map_err(redb_error)?;
            }
            let mut leases = txn.open_table(LEASE).map_err(redb_error)?;
            for (id, value) in &self.pending.leases {
                match value {
                    Some(value) => leases.insert(*id, value.as_slice()).map_err(redb_error)?,
                    None => leases.remove(*id).map_err(redb_error)?,
                };
            }
            let mut v2 = txn.open_table(V2).map_err(redb_error)?;
            for (path, value) in &self.pending.v2 {
                match value {
                    Some(value) => v2
                        .insert(path.as_str(), value.as_slice())
                        .map_err(redb_error)?,
                    None => v2.remove(path.as_str()).map_err(redb_error)?,
                };
            }
        }
        txn.commit().map_err(redb_error)?;
        self.pending = Pending::default();
        Ok(())
    }

    /// The size of the database file.
    pub fn size_bytes(&self) -> u64 {
        self.file.len().unwrap_or(0)
    }

    /// Commits, then rewrites the file to release free pages.
    pub fn defragment(&mut self) -> Result<(), BackendError> {
        self.commit()?;
        while self.db.compact().map_err(redb_error)? {}
        Ok(())
    }

    /// Copies the whole database file, committed first (a consistent image), into `out`
    /// a piece at a time; returns its length.
    pub fn copy_image(&mut self, out: &dyn DiskFile) -> Result<u64, BackendError> {
        const PIECE_BYTES: u64 = 1 << 20;
        self.commit()?;
        let len = self.file.len()?;
        out.set_len(0)?;
        let mut piece = vec![0; PIECE_BYTES.min(len) as usize];
        let mut offset = 0;
        while offset < len {
            let n = PIECE_BYTES.min(len - offset) as usize;
            self.file.read_exact_at(offset, &mut piece[..n])?;
            out.write_at(offset, &piece[..n])?;
            offset += n as u64;
        }
        Ok(len)
    }
}
