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
//! - **Deterministic apply**: every member that applies index `i` reaches the same revision.
//! - **Monotonic progress**: within one process life, committed entries arrive in order
//!   with no gap (a snapshot from the leader moves the start forward, never back), and the
//!   applied index only grows.

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
    /// index → (revision, first member to apply it).
    applied: BTreeMap<u64, (i64, u64)>,
    lives: HashMap<u64, Life>,
    violations: Vec<String>,
    restarts: u64,
    snapshots: u64,
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
                life.last_applied = Some(index);
            }
            Observation::Applied { index, revision } => {
                let life = state.lives.entry(member).or_default();
                if life.last_applied.is_some_and(|last| index <= last) {
                    state.violations.push(format!(
                        "member {member:x} applied index {index} after {:?}",
                        life.last_applied
                    ));
                }
                life.last_applied = Some(index);
                let first = *state.applied.entry(index).or_insert((revision, member));
                if first.0 != revision {
                    state.violations.push(format!(
                        "deterministic apply: index {index} left {:x} at revision {} but \
                         {member:x} at revision {revision}",
                        first.1, first.0
                    ));
                }
            }
        }
    }
}
