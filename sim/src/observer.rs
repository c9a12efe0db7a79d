//! The Raft observer: invariants checked across all members while a run goes on.
//!
//! Every member reports to it (see `oxcd::server::observe`): when it starts, when it becomes
//! leader, each committed entry the core hands out, each entry the applier applies. From
//! that the observer checks:
//!
//! - **Election safety**: at most one leader per term.
//! - **Leader commit rule**: a leader moves its commit index only to an entry of its own
//!   term (Raft §5.4.2); older entries commit with it.
//! - **Log matching and state-machine safety**: every member that commits index `i` commits
//!   the same entry there (same term, same data digest), across restarts too.
//! - **Same state at every index**: every member that applies index `i` reaches the same
//!   revision and the same state digest (every live key with its metadata, every lease with
//!   its keys, the compaction); a store loaded from disk (at start, or from a leader's
//!   image) holding index `i` must equal what the members that applied `i` had. The first
//!   index where two members differ is reported, naming both.
//! - **One vote per term**: a member never votes for two candidates in one term, across
//!   restarts too (a vote sent must have been durable).
//! - **Monotonic progress**: within one process life, committed entries arrive in order
//!   with no gap (a snapshot from the leader moves the start forward, never back), and the
//!   applier applies exactly the entries after the state it loaded, each once, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use oxcd::server::observe::{Observation, Observer};

#[derive(Default)]
pub struct RaftObserver {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// term → the member that led it.
    leaders: BTreeMap<u64, u64>,
    /// index → (term, digest, first member to commit it).
    committed: BTreeMap<u64, (u64, u32, u64)>,
    /// index → (revision, state digest, first member to reach it).
    applied: BTreeMap<u64, (i64, u64, u64)>,
    /// (member, term) → the candidate it voted for.
    votes: HashMap<(u64, u64), u64>,
    /// Members whose states already differed: one report per member pair is enough.
    diverged: std::collections::HashSet<(u64, u64)>,
    lives: HashMap<u64, Life>,
    violations: Vec<String>,
    restarts: u64,
    snapshots: u64,
    /// member → the newest snapshot it took of its own (its log is compacted behind it).
    taken: HashMap<u64, u64>,
}

#[derive(Default, Clone, Copy)]
struct Life {
    last_committed: Option<u64>,
    last_applied: Option<u64>,
}

/// What the observer saw over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub violations: Vec<String>,
    /// Terms that had a leader.
    pub elections: usize,
    /// The newest term with a leader, and that leader.
    pub last_leader: Option<(u64, u64)>,
    pub committed_entries: usize,
    pub member_starts: u64,
    pub snapshots_installed: u64,
}

impl RaftObserver {
    pub fn observed(&self) -> Observed {
        let state = self.state.lock().expect("observer lock poisoned");
        Observed {
            violations: state.violations.clone(),
            elections: state.leaders.len(),
            last_leader: state.leaders.iter().next_back().map(|(&t, &m)| (t, m)),
            committed_entries: state.committed.len(),
            member_starts: state.restarts,
            snapshots_installed: state.snapshots,
        }
    }

    /// The newest index `member` committed in its current life, and the newest any
    /// member committed.
    pub fn commit_progress(&self, member: u64) -> (Option<u64>, u64) {
        let state = self.state.lock().expect("observer lock poisoned");
        let own = state
            .lives
            .get(&member)
            .and_then(|life| life.last_committed);
        let newest = state.committed.keys().next_back().copied().unwrap_or(0);
        (own, newest)
    }

    /// The newest snapshot `member` took of its own, in any life (0 if none).
    pub fn snapshot_taken(&self, member: u64) -> u64 {
        let state = self.state.lock().expect("observer lock poisoned");
        state.taken.get(&member).copied().unwrap_or(0)
    }

    /// How many images from a leader members installed so far.
    pub fn snapshots_installed(&self) -> u64 {
        self.state.lock().expect("observer lock poisoned").snapshots
    }

    /// The newest term that had a leader, and that leader.
    pub fn latest_term_leader(&self) -> Option<(u64, u64)> {
        let state = self.state.lock().expect("observer lock poisoned");
        state.leaders.iter().next_back().map(|(&t, &m)| (t, m))
    }

    /// The leader of the newest term that had one, as far as the observer knows.
    pub fn latest_leader(&self) -> Option<u64> {
        let state = self.state.lock().expect("observer lock poisoned");
        state.leaders.values().next_back().copied()
    }
}

impl Observer for RaftObserver {
    fn observe(&self, member: u64, observation: Observation) {
        let mut state = self.state.lock().expect("observer lock poisoned");
        let state = &mut *state;
        match observation {
            Observation::Started => {
                state.restarts += 1;
                state.lives.insert(member, Life::default());
            }
            Observation::Leader { term } => {
                let leader = *state.leaders.entry(term).or_insert(member);
                if leader != member {
                    state.violations.push(format!(
                        "election safety: {leader:x} and {member:x} both led term {term}"
                    ));
                }
            }
            Observation::Committed {
                index,
                term,
                digest,
            } => {
                let life = state.lives.entry(member).or_default();
                if let Some(last) = life.last_committed {
                    if index != last + 1 {
                        state.violations.push(format!(
                            "member {member:x} committed index {index} right after {last}"
                        ));
                    }
                }
                life.last_committed = Some(index);
                let first = *state
                    .committed
                    .entry(index)
                    .or_insert((term, digest, member));
                if (first.0, first.1) != (term, digest) {
                    state.violations.push(format!(
                        "state-machine safety: index {index} committed as term {} digest {:08x} \
                         by {:x} but as term {term} digest {digest:08x} by {member:x}",
                        first.0, first.1, first.2
                    ));
                }
            }
            Observation::LeaderCommit {
                term,
                index,
                entry_term,
            } => {
                if entry_term != term {
                    state.violations.push(format!(
                        "leader commit rule: {member:x}, leader of term {term}, committed index \
                         {index} of term {entry_term} by counting replicas (Raft §5.4.2)"
                    ));
                }
            }
            Observation::Snapshot { index } => {
                state.snapshots += 1;
                let life = state.lives.entry(member).or_default();
                if life.last_committed.is_some_and(|last| index < last) {
                    state.violations.push(format!(
                        "member {member:x} installed a snapshot at {index} behind its commit"
                    ));
                }
                life.last_committed = Some(index);
            }
            Observation::SnapshotTaken { index } => {
                let taken = state.taken.entry(member).or_default();
                *taken = (*taken).max(index);
            }
            Observation::Applied {
                index,
                revision,
                digest,
            } => {
                let life = state.lives.entry(member).or_default();
                if let Some(last) = life.last_applied {
                    if index != last + 1 {
                        state.violations.push(format!(
                            "member {member:x} applied index {index} right after {last}"
                        ));
                    }
                }
                life.last_applied = Some(index);
                state.same_state(member, "applying", index, revision, digest);
            }
            Observation::Loaded {
                index,
                revision,
                digest,
            } => {
                let life = state.lives.entry(member).or_default();
                if life.last_applied.is_some_and(|last| index < last) {
                    state.violations.push(format!(
                        "member {member:x} loaded a store at index {index} after applying {:?}",
                        life.last_applied
                    ));
                }
                life.last_applied = Some(index);
                state.same_state(member, "loading its store at", index, revision, digest);
            }
            Observation::Voted { term, candidate } => {
                let first = *state.votes.entry((member, term)).or_insert(candidate);
                if first != candidate {
                    state.violations.push(format!(
                        "one vote per term: {member:x} voted for {first:x} and for \
                         {candidate:x} in term {term}"
                    ));
                }
            }
        }
    }
}

impl State {
    /// Checks that `member`, having reached `index` by `how`, holds the state every member
    /// that reached `index` before it held.
    fn same_state(&mut self, member: u64, how: &str, index: u64, revision: i64, digest: u64) {
        let (first_revision, first_digest, first_member) = *self
            .applied
            .entry(index)
            .or_insert((revision, digest, member));
        if (first_revision, first_digest) == (revision, digest) {
            return;
        }
        let pair = (first_member.min(member), first_member.max(member));
        if !self.diverged.insert(pair) {
            return;
        }
        self.violations.push(format!(
            "same state at every index: at index {index}, {first_member:x} had revision \
             {first_revision} and state {first_digest:016x}, but {member:x}, {how} it, has \
             revision {revision} and state {digest:016x}"
        ));
    }
}
