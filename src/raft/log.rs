//! The Raft log as the core sees it: the stable part in [`Storage`] followed by the
//! unstable part (entries and perhaps a snapshot not yet handed to the application to
//! persist), with the commit and applied indexes.

use super::storage::{limit_size, Storage};
use super::types::{Entry, Snapshot};
use super::Error;

/// Entries (and perhaps a snapshot) that the application has not persisted yet.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    /// The index of `entries[0]`.
    offset: u64,
}

impl Unstable {
    fn snapshot_index(&self) -> Option<u64> {
        self.snapshot
            .as_ref()
            .map(|s| s.metadata.as_ref().map_or(0, |m| m.index))
    }

    fn last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(entry) => Some(entry.index),
            None => self.snapshot_index(),
        }
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?.metadata.as_ref()?;
            return (snapshot.index == index).then_some(snapshot.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|entry| entry.term)
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        if first == self.offset + self.entries.len() as u64 {
            self.entries.extend_from_slice(entries);
        } else if first <= self.offset {
            // Replaces everything unstable.
            self.offset = first;
            self.entries = entries.to_vec();
        } else {
            self.entries.truncate((first - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
    }
}

pub struct RaftLog<S: Storage> {
    pub storage: S,
    unstable: Unstable,
    /// The highest index known to be committed. Never decreases.
    pub committed: u64,
    /// The highest index handed to the application to apply. `applied <= committed`.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S) -> Self {
        let first = storage.first_index();
        let last = storage.last_index();
        Self {
            storage,
            unstable: Unstable {
                offset: last + 1,
                ..Default::default()
            },
            committed: first - 1,
            applied: first - 1,
        }
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.snapshot_index() {
            Some(index) => index + 1,
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> u64 {
        self.unstable
            .last_index()
            .unwrap_or_else(|| self.storage.last_index())
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .unwrap_or_else(|e| panic!("the last entry's term is unreadable: {e}"))
    }

    /// The term of the entry at `index`, or 0 when the index is beyond the log.
    pub fn term(&self, index: u64) -> Result<u64, Error> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(Error::Compacted);
        }
        if index > self.last_index() {
            return Ok(0);
        }
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        self.storage.term(index)
    }

    /// Whether this log holds the entry (`index`, `term`). An index past the end is never
    /// held, whatever the term: `term` answers 0 there, which a damaged message claiming
    /// term 0 would otherwise match.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        index <= self.last_index() && self.term(index).is_ok_and(|t| t == term)
    }

    /// A candidate whose log ends at (`last_index`, `last_term`) is at least as up to date
    /// as this log (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries from the leader after the entry (`index`, `log_term`), if this log
    /// holds that entry. Returns the index of the last new entry.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        entries: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(entries) {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with the committed prefix (committed {})",
                self.committed
            );
            let start = (conflict - (index + 1)) as usize;
            self.append(&entries[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    /// The first entry of `entries` that this log lacks or holds with another term.
    fn find_conflict(&self, entries: &[Entry]) -> Option<u64> {
        entries
            .iter()
            .find(|entry| !self.match_term(entry.index, entry.term))
            .map(|entry| entry.index)
    }

    /// The largest index at or below `index` whose term is at most `term`, with that term:
    /// where a leader whose log has `term` at `index` should probe next.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t > term && index > 0 => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        if entries.is_empty() {
            return self.last_index();
        }
        let after = entries[0].index - 1;
        assert!(
            after >= self.committed,
            "appending after {after} would truncate committed entries (committed {})",
            self.committed
        );
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref()
    }

    /// Committed entries not yet handed to the application.
    pub fn next_committed_entries(&self) -> Vec<Entry> {
        let low = (self.applied + 1).max(self.first_index());
        if self.committed < low {
            return Vec::new();
        }
        self.slice(low, self.committed + 1, u64::MAX)
            .unwrap_or_else(|e| {
                panic!(
                    "committed entries {low}..={} unreadable: {e}",
                    self.committed
                )
            })
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.committed > self.applied.max(self.first_index() - 1)
    }

    /// Entries in `[low, high)`, at most `max_bytes` of them (always at least one).
    pub fn slice(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(Error::Compacted);
        }
        assert!(
            high <= self.last_index() + 1,
            "slice {low}..{high} is beyond the last entry {}",
            self.last_index()
        );
        let mut entries = Vec::new();
        let offset = self.unstable.offset;
        if low < offset {
            entries = self.storage.entries(low, high.min(offset), max_bytes)?;
            if (entries.len() as u64) < high.min(offset) - low {
                return Ok(entries);
            }
        }
        if high > offset {
            let from = (low.max(offset) - offset) as usize;
            let to = (high - offset) as usize;
            entries.extend_from_slice(&self.unstable.entries[from..to]);
        }
        limit_size(&mut entries, max_bytes);
        Ok(entries)
    }

    /// Entries from `index` to the end, at most `max_bytes` of them.
    pub fn entries_from(&self, index: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if index > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(index, self.last_index() + 1, max_bytes)
    }

    /// Commits up to `max_index` if that entry is from `term`: a leader commits only entries
    /// of its own term by counting replicas (Raft §5.4.2).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        let own_term = self.term(max_index).is_ok_and(|t| t == term);
        let counted_old_term = crate::planted::active(crate::planted::Bug::CommitOldTerm)
            && max_index <= self.last_index();
        if max_index > self.committed && (own_term || counted_old_term) {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// Raises the commit index. It never decreases.
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit index {index} is beyond the last entry {}; was the log lost?",
                self.last_index()
            );
            self.committed = index;
        }
    }

    pub fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "applied index {index} out of range [applied {}, committed {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    /// The application persisted the unstable entries through (`index`, `term`).
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if self.unstable.term(index) == Some(term) && index >= self.unstable.offset {
            let drop = (index + 1 - self.unstable.offset) as usize;
            self.unstable.entries.drain(..drop);
            self.unstable.offset = index + 1;
        }
    }

    pub fn stable_snapshot_to(&mut self, index: u64) {
        if self.unstable.snapshot_index() == Some(index) {
            self.unstable.snapshot = None;
        }
    }

    /// Replaces the log with a snapshot from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        assert!(
            index >= self.committed,
            "restoring snapshot {index} would move commit back from {}",
            self.committed
        );
        self.committed = index;
        self.unstable.offset = index + 1;
        self.unstable.entries.clear();
        self.unstable.snapshot = Some(snapshot);
    }

    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        match &self.unstable.snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.storage.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::storage::MemStorage;
    use super::*;

    fn entries(terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: i as u64 + 1,
                term,
                ..Default::default()
            })
            .collect()
    }

    fn log_with(terms: &[u64]) -> RaftLog<MemStorage> {
        let storage = MemStorage::new();
        storage.append(&entries(terms)).unwrap();
        RaftLog::new(storage)
    }

    #[test]
    fn maybe_append_table() {
        // (prev index, prev term, commit, new entries (index, term)) -> (result, last, committed)
        let cases: &[(u64, u64, u64, &[(u64, u64)], Option<u64>, u64, u64)] = &[
            (3, 2, 3, &[], Some(3), 3, 3),       // heartbeat-like, commits 3
            (3, 3, 3, &[(4, 4)], None, 3, 1),    // prev term mismatch
            (4, 2, 3, &[(5, 4)], None, 3, 1),    // prev index beyond the log
            (3, 2, 4, &[(4, 4)], Some(4), 4, 4), // appends and commits
            (2, 2, 3, &[(3, 4)], Some(3), 3, 3), // conflict truncates entry 3
            (1, 1, 2, &[(2, 2), (3, 2)], Some(3), 3, 2), // all present: nothing changes
            (3, 2, 10, &[(4, 4)], Some(4), 4, 4), // commit capped at the last new entry
        ];
        for (i, &(index, term, commit, new, want, last, committed)) in cases.iter().enumerate() {
            let mut log = log_with(&[1, 2, 2]);
            log.commit_to(1);
            let new: Vec<Entry> = new
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    ..Default::default()
                })
                .collect();
            assert_eq!(
                log.maybe_append(index, term, commit, &new),
                want,
                "case {i}"
            );
            assert_eq!(log.last_index(), last, "case {i}");
            assert_eq!(log.committed, committed, "case {i}");
        }
    }

    #[test]
    #[should_panic(expected = "conflicts with the committed prefix")]
    fn conflicting_with_committed_entries_panics() {
        let mut log = log_with(&[1, 2, 2]);
        log.commit_to(3);
        log.maybe_append(
            1,
            1,
            3,
            &[Entry {
                index: 2,
                term: 3,
                ..Default::default()
            }],
        );
    }

    #[test]
    fn find_conflict_by_term_table() {
        let log = log_with(&[1, 1, 2, 2, 5, 5]);
        let cases = [
            ((6, 5), (6, 5)),
            ((6, 4), (4, 2)),
            ((6, 1), (2, 1)),
            ((6, 0), (0, 0)),
            ((10, 3), (4, 2)),
        ];
        for ((index, term), want) in cases {
            assert_eq!(
                log.find_conflict_by_term(index, term),
                want,
                "({index}, {term})"
            );
        }
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_with(&[1, 2, 3]);
        assert!(log.is_up_to_date(3, 3));
        assert!(log.is_up_to_date(1, 4));
        assert!(!log.is_up_to_date(5, 2));
        assert!(!log.is_up_to_date(2, 3));
    }

    #[test]
    fn slice_spans_stable_and_unstable_entries() {
        let mut log = log_with(&[1, 1, 1]);
        log.append(&[
            Entry {
                index: 4,
                term: 2,
                ..Default::default()
            },
            Entry {
                index: 5,
                term: 2,
                ..Default::default()
            },
        ]);
        let got: Vec<u64> = log
            .slice(2, 6, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(got, vec![2, 3, 4, 5]);
        log.stable_to(4, 2);
        assert_eq!(log.unstable_entries().len(), 1);
        log.stable_to(5, 1); // wrong term: ignored
        assert_eq!(log.unstable_entries().len(), 1);
    }

    #[test]
    fn commit_never_decreases_and_committed_entries_are_handed_out_once() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(2);
        log.commit_to(1);
        assert_eq!(log.committed, 2);
        assert_eq!(log.next_committed_entries().len(), 2);
        log.applied_to(2);
        assert!(!log.has_next_committed_entries());
        assert!(log.maybe_commit(3, 1));
        assert!(!log.maybe_commit(3, 1));
    }
}
