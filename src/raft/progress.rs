//! What a leader knows about each follower: how far its log matches, what to send next, and
//! how many appends are in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::quorum::{JointConfig, VoteResult};
use super::types::ConfState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: send one append at a time and wait.
    Probe,
    /// The follower's log matches through `matched`: stream appends optimistically.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until it reports back.
    Snapshot,
}

/// A bounded window of appends sent but not yet acknowledged, by count and by bytes.
#[derive(Debug, Clone)]
pub struct Inflights {
    /// (last index of the append, its size in bytes), oldest first.
    sent: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Self {
            sent: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn add(&mut self, index: u64, bytes: u64) {
        assert!(!self.full(), "inflights window overflow at index {index}");
        if let Some(&(last, _)) = self.sent.back() {
            assert!(index > last, "inflight index {index} is not above {last}");
        }
        self.sent.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is at or below `index`.
    pub fn free_le(&mut self, index: u64) {
        while let Some(&(sent, bytes)) = self.sent.front() {
            if sent > index {
                break;
            }
            self.sent.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest append, so that a follower whose acknowledgements were lost gets
    /// one more append (a heartbeat response shows it is reachable again).
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.sent.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn full(&self) -> bool {
        self.sent.len() >= self.max_count || (self.max_bytes > 0 && self.bytes >= self.max_bytes)
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.sent.len()
    }

    pub fn reset(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    pub matched: u64,
    /// The next index to send.
    pub next: u64,
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot sent.
    pub pending_snapshot: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In `Probe` state: an append is out; wait for its answer (or a heartbeat response).
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next: u64, max_inflight: usize, max_inflight_bytes: u64) -> Self {
        Self {
            matched: 0,
            next,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// The follower acknowledged `index`. Returns whether `matched` moved.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// An append through `last` was just sent in `Replicate` state.
    pub fn optimistic_update(&mut self, last: u64) {
        self.next = last + 1;
    }

    /// The follower rejected the append after `rejected`; `hint` is where its log may match.
    /// Returns false when the rejection is stale.
    pub fn maybe_decrease_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// The membership as the core tracks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    pub learners: BTreeSet<u64>,
    /// Voters of the outgoing half that become learners when the joint state is left.
    pub learners_next: BTreeSet<u64>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn from_conf_state(conf_state: &ConfState) -> Self {
        Self {
            voters: JointConfig {
                incoming: conf_state.voters.iter().copied().collect(),
                outgoing: conf_state.voters_outgoing.iter().copied().collect(),
            },
            learners: conf_state.learners.iter().copied().collect(),
            learners_next: conf_state.learners_next.iter().copied().collect(),
            auto_leave: conf_state.auto_leave,
        }
    }

    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// Every member: voters of both halves, learners and future learners.
    pub fn ids(&self) -> BTreeSet<u64> {
        let mut ids = self.voters.ids();
        ids.extend(&self.learners);
        ids.extend(&self.learners_next);
        ids
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    pub config: TrackerConfig,
    pub progress: BTreeMap<u64, Progress>,
    pub votes: BTreeMap<u64, bool>,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl Tracker {
    pub fn new(max_inflight: usize, max_inflight_bytes: u64) -> Self {
        Self {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    /// Switches to `config`, keeping the progress of members that stay and starting new
    /// members at `next`.
    pub fn set_config(&mut self, config: TrackerConfig, next: u64) {
        let ids = config.ids();
        self.progress.retain(|id, _| ids.contains(id));
        for &id in &ids {
            let progress = self.progress.entry(id).or_insert_with(|| {
                let mut progress = Progress::new(next, self.max_inflight, self.max_inflight_bytes);
                // A new member counts as active until the first check-quorum round.
                progress.recent_active = true;
                progress
            });
            progress.is_learner = !config.voters.contains(id);
        }
        self.config = config;
    }

    pub fn committed(&self) -> u64 {
        self.config
            .voters
            .committed(|id| self.progress.get(&id).map(|p| p.matched))
    }

    pub fn is_singleton(&self) -> bool {
        self.config.voters.incoming.len() == 1 && !self.config.voters.is_joint()
    }

    /// Whether a quorum was heard from recently (the leader itself is marked by the caller).
    pub fn quorum_active(&self) -> bool {
        self.config
            .voters
            .vote_result(|id| self.progress.get(&id).map(|p| p.recent_active))
            == VoteResult::Won
    }

    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn tally(&self) -> (usize, usize, VoteResult) {
        let mut granted = 0;
        let mut rejected = 0;
        for (&id, &vote) in &self.votes {
            if !self.config.voters.contains(id) {
                continue;
            }
            if vote {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        let result = self
            .config
            .voters
            .vote_result(|id| self.votes.get(&id).copied());
        (granted, rejected, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_by_count_and_bytes() {
        let mut inflights = Inflights::new(3, 0);
        inflights.add(1, 10);
        inflights.add(2, 10);
        assert!(!inflights.full());
        inflights.add(5, 10);
        assert!(inflights.full());
        inflights.free_le(2);
        assert_eq!(inflights.count(), 1);
        assert!(!inflights.full());
        inflights.free_le(10);
        assert_eq!(inflights.count(), 0);

        let mut by_bytes = Inflights::new(100, 25);
        by_bytes.add(1, 10);
        by_bytes.add(2, 10);
        assert!(!by_bytes.full());
        by_bytes.add(3, 10);
        assert!(by_bytes.full());
        by_bytes.free_le(1);
        assert!(!by_bytes.full());
    }

    #[test]
    fn probe_pauses_after_one_append_and_backs_off_with_hints() {
        let mut progress = Progress::new(11, 16, 0);
        progress.matched = 4;
        assert!(!progress.is_paused());
        progress.probe_sent = true;
        assert!(progress.is_paused());
        // A stale rejection (not for next - 1) changes nothing.
        assert!(!progress.maybe_decrease_to(7, 3));
        assert!(progress.maybe_decrease_to(10, 6));
        assert_eq!(progress.next, 7);
        assert!(!progress.is_paused());
        // The hint never takes next below matched + 1.
        assert!(progress.maybe_decrease_to(6, 0));
        assert_eq!(progress.next, 5);
    }

    #[test]
    fn replicate_rejection_falls_back_to_matched() {
        let mut progress = Progress::new(1, 16, 0);
        progress.maybe_update(5);
        progress.become_replicate();
        progress.optimistic_update(9);
        assert!(
            !progress.maybe_decrease_to(5, 0),
            "at or below matched is stale"
        );
        assert!(progress.maybe_decrease_to(8, 0));
        assert_eq!(progress.next, 6);
    }

    #[test]
    fn snapshot_state_resumes_after_the_snapshot() {
        let mut progress = Progress::new(1, 16, 0);
        progress.become_snapshot(20);
        assert!(progress.is_paused());
        progress.become_probe();
        assert_eq!(progress.next, 21);
    }
}
