//! The read-only storage the core reads its stable log from, and an in-memory implementation.
//!
//! The core never writes to storage: the application persists what a `Ready` hands it (to
//! the WAL), then appends the same entries here, so that the core can read them back.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::types::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use super::Error;

/// The stable part of the log, as the core sees it.
pub trait Storage {
    /// The persisted hard state and membership, read once when the core starts.
    fn initial_state(&self) -> Result<(HardState, ConfState), Error>;
    /// Entries in `[low, high)`, at most `max_bytes` of them but always at least one.
    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, Error>;
    /// The term of the entry at `index`; `first_index() - 1` is answered from the snapshot.
    fn term(&self, index: u64) -> Result<u64, Error>;
    /// The index of the first entry still held (the one after the snapshot).
    fn first_index(&self) -> u64;
    /// The index of the last entry held (the snapshot's index when the log is empty).
    fn last_index(&self) -> u64;
    /// The newest snapshot, for a follower that is behind the compacted log.
    fn snapshot(&self) -> Result<Snapshot, Error>;
}

/// An in-memory log: the server's view of its WAL, and the store of the simulator's nodes.
/// Clones share the same log.
#[derive(Clone, Default, Debug)]
pub struct MemStorage {
    inner: Arc<Mutex<MemLog>>,
}

#[derive(Default, Debug)]
struct MemLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot.
    snapshot: Snapshot,
    /// The index of `entries[0]` (one past the snapshot when nothing was compacted yet).
    offset: u64,
    /// The term of the entry at `offset - 1`, which is no longer held.
    prev_term: u64,
    entries: Vec<Entry>,
}

impl MemLog {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.metadata.as_ref().map_or(0, |m| m.index)
    }

    fn first_index(&self) -> u64 {
        self.offset.max(1)
    }

    fn last_index(&self) -> u64 {
        self.first_index() + self.entries.len() as u64 - 1
    }
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The log of a member of a brand-new cluster of `voters`: one committed entry per
    /// voter, each adding it, at term 1, and the membership they make. A member that joins
    /// later starts empty and learns the initial membership by applying these entries.
    pub fn new_with_voters(voters: &[u64]) -> Self {
        let storage = Self::new();
        storage
            .append(&bootstrap_entries(voters))
            .expect("an empty log takes any entries");
        storage.set_conf_state(ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        });
        storage.set_hard_state(HardState {
            term: 1,
            vote: 0,
            commit: voters.len() as u64,
        });
        storage
    }

    fn lock(&self) -> MutexGuard<'_, MemLog> {
        self.inner.lock().expect("raft log lock poisoned")
    }

    pub fn set_hard_state(&self, hard_state: HardState) {
        self.lock().hard_state = hard_state;
    }

    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    pub fn set_conf_state(&self, conf_state: ConfState) {
        self.lock().conf_state = conf_state;
    }

    pub fn conf_state(&self) -> ConfState {
        self.lock().conf_state.clone()
    }

    /// Appends entries that were just persisted. Entries at or below the snapshot are
    /// skipped (a WAL replay may start before it); an entry that conflicts with a held one
    /// replaces it and everything after it.
    pub fn append(&self, entries: &[Entry]) -> Result<(), Error> {
        let mut log = self.lock();
        let first = log.first_index();
        let entries: Vec<&Entry> = entries.iter().filter(|e| e.index >= first).collect();
        let Some(head) = entries.first() else {
            return Ok(());
        };
        let last = log.last_index();
        if head.index > last + 1 {
            return Err(Error::Storage(format!(
                "appending entry {} leaves a gap after the last entry {last}",
                head.index
            )));
        }
        let keep = (head.index - first) as usize;
        log.entries.truncate(keep);
        log.entries.extend(entries.into_iter().cloned());
        Ok(())
    }

    /// Replaces the whole log with a snapshot received from the leader (or loaded at start).
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let mut log = self.lock();
        let metadata = snapshot.metadata.clone().unwrap_or_default();
        if metadata.index < log.snapshot_index() {
            return Err(Error::SnapshotOutOfDate);
        }
        if let Some(conf_state) = &metadata.conf_state {
            log.conf_state = conf_state.clone();
        }
        if log.hard_state.commit < metadata.index {
            log.hard_state.commit = metadata.index;
        }
        if log.hard_state.term < metadata.term {
            log.hard_state.term = metadata.term;
        }
        log.entries.clear();
        log.offset = metadata.index + 1;
        log.prev_term = metadata.term;
        log.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the application state at `index` (which must be held).
    pub fn create_snapshot(
        &self,
        index: u64,
        conf_state: Option<ConfState>,
        data: Bytes,
    ) -> Result<Snapshot, Error> {
        let mut log = self.lock();
        if index <= log.snapshot_index() {
            return Err(Error::SnapshotOutOfDate);
        }
        if index > log.last_index() {
            return Err(Error::Storage(format!(
                "snapshot at {index} is beyond the last entry {}",
                log.last_index()
            )));
        }
        let term = if index + 1 == log.first_index() {
            log.prev_term
        } else {
            log.entries[(index - log.first_index()) as usize].term
        };
        let conf_state = conf_state.unwrap_or_else(|| log.conf_state.clone());
        log.snapshot = Snapshot {
            data,
            metadata: Some(SnapshotMetadata {
                conf_state: Some(conf_state),
                index,
                term,
            }),
        };
        Ok(log.snapshot.clone())
    }

    /// Drops the entries before `index`. The snapshot must already cover them.
    pub fn compact(&self, index: u64) -> Result<(), Error> {
        let mut log = self.lock();
        if index <= log.first_index() {
            return Err(Error::Compacted);
        }
        if index > log.snapshot_index() + 1 {
            return Err(Error::Storage(format!(
                "compacting to {index} needs a snapshot at {} or later",
                index - 1
            )));
        }
        let drop = (index - log.first_index()) as usize;
        log.prev_term = log.entries[drop - 1].term;
        log.entries.drain(..drop);
        log.offset = index;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), Error> {
        let log = self.lock();
        Ok((log.hard_state, log.conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        let log = self.lock();
        if low < log.first_index() {
            return Err(Error::Compacted);
        }
        if high > log.last_index() + 1 {
            return Err(Error::Unavailable);
        }
        let from = (low - log.first_index()) as usize;
        let to = (high - log.first_index()) as usize;
        let mut entries = log.entries[from..to].to_vec();
        limit_size(&mut entries, max_bytes);
        Ok(entries)
    }

    fn term(&self, index: u64) -> Result<u64, Error> {
        let log = self.lock();
        if index + 1 == log.first_index() {
            return Ok(log.prev_term);
        }
        if index < log.first_index() {
            return Err(Error::Compacted);
        }
        if index > log.last_index() {
            return Err(Error::Unavailable);
        }
        Ok(log.entries[(index - log.first_index()) as usize].term)
    }

    fn first_index(&self) -> u64 {
        self.lock().first_index()
    }

    fn last_index(&self) -> u64 {
        self.lock().last_index()
    }

    fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(self.lock().snapshot.clone())
    }
}

/// The entries that bootstrap a new cluster of `voters` (see [`MemStorage::new_with_voters`]).
pub fn bootstrap_entries(voters: &[u64]) -> Vec<Entry> {
    use super::types::{ConfChangeSingle, ConfChangeType, ConfChangeV2, EntryType};
    use prost::Message as _;
    voters
        .iter()
        .enumerate()
        .map(|(i, &id)| Entry {
            entry_type: EntryType::ConfChangeV2 as i32,
            term: 1,
            index: i as u64 + 1,
            data: ConfChangeV2 {
                changes: vec![ConfChangeSingle {
                    change_type: ConfChangeType::AddNode as i32,
                    node_id: id,
                }],
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
        })
        .collect()
}

/// Cuts `entries` to at most `max_bytes` of encoded size, keeping at least one.
pub fn limit_size(entries: &mut Vec<Entry>, max_bytes: u64) {
    use prost::Message as _;
    let mut total = 0u64;
    let keep = entries
        .iter()
        .position(|entry| {
            total += entry.encoded_len() as u64;
            total > max_bytes
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_skips_snapshot_prefix_and_replaces_conflicts() {
        let storage = MemStorage::new();
        storage
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        storage.append(&[entry(2, 2)]).unwrap();
        assert_eq!(storage.last_index(), 2);
        assert_eq!(storage.term(2).unwrap(), 2);
        assert!(storage.append(&[entry(5, 2)]).is_err(), "a gap is refused");

        storage.create_snapshot(2, None, Bytes::new()).unwrap();
        storage.compact(3).unwrap();
        assert_eq!(storage.first_index(), 3);
        assert_eq!(storage.term(2).unwrap(), 2);
        assert_eq!(storage.term(1), Err(Error::Compacted));
        storage
            .append(&[entry(1, 1), entry(2, 2), entry(3, 2)])
            .unwrap();
        assert_eq!((storage.first_index(), storage.last_index()), (3, 3));
    }

    #[test]
    fn entries_are_limited_by_size_but_never_empty() {
        let storage = MemStorage::new();
        let big = |index| Entry {
            index,
            term: 1,
            data: Bytes::from(vec![0u8; 100]),
            ..Default::default()
        };
        storage.append(&[big(1), big(2), big(3)]).unwrap();
        assert_eq!(storage.entries(1, 4, u64::MAX).unwrap().len(), 3);
        assert_eq!(storage.entries(1, 4, 250).unwrap().len(), 2);
        assert_eq!(storage.entries(1, 4, 1).unwrap().len(), 1);
        assert_eq!(storage.entries(1, 5, 1), Err(Error::Unavailable));
    }
}
