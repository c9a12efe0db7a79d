//! The Raft state machine: roles, elections, replication, reads, snapshots, membership and
//! leader transfer. Input arrives through [`Raft::step`] and [`Raft::tick`]; output
//! accumulates in `msgs`, `msgs_after_persist`, `read_states` and the log's unstable part,
//! and is collected by the `RawNode` into a `Ready`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::confchange;
use super::log::RaftLog;
use super::progress::{ProgressState, Tracker, TrackerConfig};
use super::quorum::VoteResult;
use super::storage::Storage;
use super::types::{
    ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use super::{Config, Error, ReadState};

/// The context of a vote request that a leader transfer started: it may disturb a leader.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// A ReadIndex request waiting for a quorum of heartbeat acknowledgements.
#[derive(Debug)]
struct PendingRead {
    /// Who asked: this node (0 or its own id) or a follower.
    from: u64,
    index: u64,
    acks: std::collections::BTreeSet<u64>,
}

pub struct Raft<S: Storage> {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub role: Role,
    pub leader: u64,
    pub log: RaftLog<S>,
    pub tracker: Tracker,
    pub is_learner: bool,
    /// Messages that may leave at once.
    pub msgs: Vec<Message>,
    /// Messages that may leave only once the unstable state is persisted: vote grants and
    /// append acknowledgements promise something about this node's disk.
    pub msgs_after_persist: Vec<Message>,
    pub read_states: Vec<ReadState>,
    /// Leader only: the target of a leadership transfer in progress.
    pub lead_transferee: Option<u64>,
    /// The index of the newest configuration change proposed; another may be proposed only
    /// once this one is applied.
    pending_conf_index: u64,
    pending_reads: HashMap<Bytes, PendingRead>,
    read_queue: VecDeque<Bytes>,
    /// ReadIndex requests that arrived before this leader committed an entry of its term.
    reads_before_commit: Vec<Message>,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    election_timeout: usize,
    heartbeat_timeout: usize,
    check_quorum: bool,
    pre_vote: bool,
    max_msg_bytes: u64,
    rng: SmallRng,
}

impl<S: Storage> Raft<S> {
    pub fn new(config: &Config, storage: S, seed: u64) -> Result<Self, Error> {
        config.validate()?;
        let (hard_state, conf_state) = storage.initial_state()?;
        let log = RaftLog::new(storage);
        let mut raft = Self {
            id: config.id,
            term: 0,
            vote: 0,
            role: Role::Follower,
            leader: 0,
            log,
            tracker: Tracker::new(config.max_inflight_msgs, config.max_inflight_bytes),
            is_learner: false,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            lead_transferee: None,
            pending_conf_index: 0,
            pending_reads: HashMap::new(),
            read_queue: VecDeque::new(),
            reads_before_commit: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_ticks,
            election_timeout: config.election_ticks,
            heartbeat_timeout: config.heartbeat_ticks,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            max_msg_bytes: config.max_size_per_msg_bytes,
            rng: SmallRng::seed_from_u64(seed ^ config.id.rotate_left(17)),
        };
        raft.apply_config(TrackerConfig::from_conf_state(&conf_state));
        if hard_state != HardState::default() {
            let last = raft.log.last_index();
            if hard_state.commit > last {
                return Err(Error::Storage(format!(
                    "hard state commit {} is beyond the last log entry {last}",
                    hard_state.commit
                )));
            }
            raft.log.commit_to(hard_state.commit);
            raft.term = hard_state.term;
            raft.vote = hard_state.vote;
        }
        if config.applied > 0 {
            // Entries the application applied were committed, even if the persisted hard
            // state had not caught up with the commit index yet.
            if config.applied > raft.log.last_index() {
                return Err(Error::Storage(format!(
                    "applied index {} is beyond the last log entry {}",
                    config.applied,
                    raft.log.last_index()
                )));
            }
            raft.log.commit_to(config.applied);
            raft.log.applied_to(config.applied);
        }
        raft.become_follower(raft.term, 0);
        Ok(raft)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn conf_state(&self) -> ConfState {
        self.tracker.config.to_conf_state()
    }

    /// May this node campaign: it is a voter and its log is not waiting on a snapshot.
    pub fn promotable(&self) -> bool {
        self.tracker.progress.contains_key(&self.id)
            && !self.is_learner
            && self.log.unstable_snapshot().is_none()
    }

    // ----- sending -----

    fn send(&mut self, mut message: Message) {
        message.from = self.id;
        let kind = message.msg_type();
        match kind {
            MessageType::RequestVote
            | MessageType::RequestVoteResponse
            | MessageType::RequestPreVote
            | MessageType::RequestPreVoteResponse => {
                // The caller chose the term: a pre-vote carries the term it would campaign
                // in, and a grant carries the candidate's.
                assert!(message.term != 0, "vote message {kind:?} without a term");
            }
            // Forwarded proposals and reads are treated as local input by the leader.
            MessageType::Propose | MessageType::ReadIndex => message.term = 0,
            _ => message.term = self.term,
        }
        if matches!(
            kind,
            MessageType::AppendResponse
                | MessageType::RequestVoteResponse
                | MessageType::RequestPreVoteResponse
        ) {
            self.msgs_after_persist.push(message);
        } else {
            self.msgs.push(message);
        }
    }

    fn message(kind: MessageType, to: u64) -> Message {
        Message {
            msg_type: kind as i32,
            to,
            ..Default::default()
        }
    }

    /// Sends `to` the entries it lacks, or a snapshot when they are compacted away. Returns
    /// whether a message went out.
    fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(progress) = self.tracker.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next;
        let prev_term = self.log.term(next - 1);
        let entries = self.log.entries_from(next, self.max_msg_bytes);
        if let (Ok(prev_term), Ok(entries)) = (prev_term, entries) {
            if entries.is_empty() && !send_if_empty {
                return false;
            }
            let progress = self.tracker.progress.get_mut(&to).expect("checked above");
            if let Some(last) = entries.last().map(|e| e.index) {
                match progress.state {
                    ProgressState::Replicate => {
                        let bytes = entries.iter().map(|e| e.encoded_len() as u64).sum();
                        progress.optimistic_update(last);
                        progress.inflights.add(last, bytes);
                    }
                    ProgressState::Probe => progress.probe_sent = true,
                    ProgressState::Snapshot => unreachable!("a paused progress was sent to"),
                }
            }
            let mut message = Self::message(MessageType::Append, to);
            message.index = next - 1;
            message.log_term = prev_term;
            message.entries = entries;
            message.commit = self.log.committed;
            self.send(message);
            return true;
        }
        // The entries are compacted: send the snapshot instead.
        if !self.tracker.progress[&to].recent_active {
            return false;
        }
        let snapshot = match self.log.snapshot() {
            Ok(snapshot) => snapshot,
            Err(Error::SnapshotTemporarilyUnavailable) => return false,
            Err(error) => panic!("the snapshot for {to} is unreadable: {error}"),
        };
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        assert!(
            index != 0,
            "needs a snapshot for {to} but the snapshot is empty"
        );
        self.tracker
            .progress
            .get_mut(&to)
            .expect("checked above")
            .become_snapshot(index);
        let mut message = Self::message(MessageType::Snapshot, to);
        message.snapshot = Some(snapshot);
        self.send(message);
        true
    }

    fn send_heartbeat(&mut self, to: u64, context: Bytes) {
        let matched = self.tracker.progress.get(&to).map_or(0, |p| p.matched);
        let mut message = Self::message(MessageType::Heartbeat, to);
        message.commit = matched.min(self.log.committed);
        message.context = context;
        self.send(message);
    }

    fn peers(&self) -> Vec<u64> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    fn broadcast_append(&mut self) {
        for id in self.peers() {
            self.maybe_send_append(id, true);
        }
    }

    fn broadcast_heartbeat(&mut self, context: Bytes) {
        for id in self.peers() {
            self.send_heartbeat(id, context.clone());
        }
    }

    // ----- roles -----

    fn reset(&mut self, term: u64) {
        if self.term != term {
            assert!(
                term > self.term,
                "term moving back from {} to {term}",
                self.term
            );
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout =
            self.election_timeout + self.rng.random_range(0..self.election_timeout);
        self.lead_transferee = None;
        self.tracker.votes.clear();
        let last = self.log.last_index();
        let id = self.id;
        for (&peer, progress) in self.tracker.progress.iter_mut() {
            let is_learner = progress.is_learner;
            *progress = super::progress::Progress::new(
                last + 1,
                self.tracker.max_inflight,
                self.tracker.max_inflight_bytes,
            );
            progress.is_learner = is_learner;
            if peer == id {
                progress.matched = last;
            }
        }
        self.pending_conf_index = 0;
        self.pending_reads.clear();
        self.read_queue.clear();
        self.reads_before_commit.clear();
    }

    pub fn become_follower(&mut self, term: u64, leader: u64) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "a leader cannot become a pre-candidate"
        );
        // The term does not change: a pre-vote round must not disturb anyone.
        self.tracker.votes.clear();
        self.role = Role::PreCandidate;
        self.leader = 0;
    }

    fn become_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "a leader cannot become a candidate"
        );
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert!(
            self.role != Role::Follower,
            "a follower cannot become leader directly"
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
            // The leader's own log trivially matches itself.
            progress.become_replicate();
            progress.recent_active = true;
        }
        // Configuration changes in the uncommitted tail count as pending.
        self.pending_conf_index = self.log.last_index();
        // An empty entry of the new term: committing it commits everything before it
        // (Raft §5.4.2, §8).
        self.append_entries(vec![Entry::default()]);
    }

    fn append_entries(&mut self, mut entries: Vec<Entry>) {
        let last = self.log.last_index();
        for (offset, entry) in entries.iter_mut().enumerate() {
            entry.term = self.term;
            entry.index = last + 1 + offset as u64;
        }
        let last = self.log.append(&entries);
        if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
            progress.maybe_update(last);
        }
        self.maybe_commit();
    }

    /// Commits what a quorum has; returns whether the commit index moved.
    fn maybe_commit(&mut self) -> bool {
        let committed = self.tracker.committed();
        let moved = self.log.maybe_commit(committed, self.term);
        if moved && self.role == Role::Leader && self.committed_in_current_term() {
            for message in std::mem::take(&mut self.reads_before_commit) {
                self.handle_read_index(message);
            }
        }
        moved
    }

    fn committed_in_current_term(&self) -> bool {
        self.log
            .term(self.log.committed)
            .is_ok_and(|t| t == self.term)
    }

    // ----- time -----

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            let _ = self.step(Self::message(MessageType::Hup, 0));
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let _ = self.step(Self::message(MessageType::CheckQuorum, 0));
            }
            if self.role == Role::Leader && self.lead_transferee.is_some() {
                // The transfer did not finish within an election timeout: give up on it.
                self.lead_transferee = None;
            }
        }
        if self.role != Role::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let _ = self.step(Self::message(MessageType::Beat, 0));
        }
    }

    // ----- elections -----

    fn hup(&mut self, kind: CampaignKind) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        // A committed but unapplied configuration change may remove this node.
        if self.log.applied < self.log.committed {
            let pending = self
                .log
                .slice(self.log.applied + 1, self.log.committed + 1, u64::MAX)
                .unwrap_or_default();
            if pending
                .iter()
                .any(|e| e.entry_type == EntryType::ConfChangeV2 as i32)
            {
                return;
            }
        }
        self.campaign(kind);
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let (vote_type, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageType::RequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::RequestVote, self.term)
        };
        if self.poll(self.id, true) == VoteResult::Won {
            // A single voter wins at once.
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        for id in self.tracker.config.voters.ids() {
            if id == self.id {
                continue;
            }
            let mut message = Self::message(vote_type, id);
            message.term = term;
            message.index = last_index;
            message.log_term = last_term;
            if kind == CampaignKind::Transfer {
                message.context = Bytes::from_static(CAMPAIGN_TRANSFER);
            }
            self.send(message);
        }
    }

    fn poll(&mut self, from: u64, granted: bool) -> VoteResult {
        self.tracker.record_vote(from, granted);
        self.tracker.tally().2
    }

    // ----- input -----

    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        let kind = message.msg_type();
        if message.term > self.term && message.term != 0 {
            if matches!(kind, MessageType::RequestVote | MessageType::RequestPreVote) {
                let forced = message.context.as_ref() == CAMPAIGN_TRANSFER;
                let in_lease = self.check_quorum
                    && self.leader != 0
                    && self.election_elapsed < self.election_timeout;
                if !forced && in_lease {
                    // A leader was heard from within the minimum election timeout: ignore
                    // the disruptive candidate (Raft thesis §4.2.3).
                    return Ok(());
                }
            }
            match kind {
                MessageType::RequestPreVote => {}
                MessageType::RequestPreVoteResponse if !message.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(message.term, message.from)
                }
                _ => self.become_follower(message.term, 0),
            }
        } else if message.term < self.term && message.term != 0 {
            if (self.check_quorum || self.pre_vote)
                && matches!(kind, MessageType::Heartbeat | MessageType::Append)
            {
                // A stale leader (perhaps back from a partition): tell it the newer term so
                // that it steps down; with check-quorum or pre-vote it would not learn it
                // from a vote request.
                let response = Self::message(MessageType::AppendResponse, message.from);
                self.send(response);
            } else if kind == MessageType::RequestPreVote {
                let mut response = Self::message(MessageType::RequestPreVoteResponse, message.from);
                response.term = self.term;
                response.reject = true;
                self.send(response);
            }
            return Ok(());
        }

        match kind {
            MessageType::Hup => {
                if self.pre_vote {
                    self.hup(CampaignKind::PreElection);
                } else {
                    self.hup(CampaignKind::Election);
                }
                Ok(())
            }
            MessageType::RequestVote | MessageType::RequestPreVote => {
                self.handle_vote_request(message);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    fn handle_vote_request(&mut self, message: Message) {
        let pre = message.msg_type() == MessageType::RequestPreVote;
        let response_type = if pre {
            MessageType::RequestPreVoteResponse
        } else {
            MessageType::RequestVoteResponse
        };
        let can_vote = self.vote == message.from
            || (self.vote == 0 && self.leader == 0)
            || (pre && message.term > self.term);
        let mut response = Self::message(response_type, message.from);
        let up_to_date = self.log.is_up_to_date(message.index, message.log_term)
            || crate::planted::active(crate::planted::Bug::VoteWithoutLogCheck);
        if can_vote && up_to_date {
            // The response carries the candidate's term: a pre-vote grant must be
            // recognisable as one even though this node's term did not move.
            response.term = message.term;
            if !pre {
                assert!(
                    self.vote == 0 || self.vote == message.from,
                    "second vote in term {}: had {}, asked by {}",
                    self.term,
                    self.vote,
                    message.from
                );
                self.election_elapsed = 0;
                self.vote = message.from;
            }
        } else {
            response.term = self.term;
            response.reject = true;
        }
        self.send(response);
    }

    fn step_leader(&mut self, message: Message) -> Result<(), Error> {
        match message.msg_type() {
            MessageType::Beat => {
                self.broadcast_heartbeat(Bytes::new());
                return Ok(());
            }
            MessageType::CheckQuorum => {
                if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
                    progress.recent_active = true;
                }
                if !self.tracker.quorum_active() {
                    tracing::debug!(
                        id = self.id,
                        term = self.term,
                        "lost contact with a quorum; stepping down"
                    );
                    self.become_follower(self.term, 0);
                }
                let id = self.id;
                for (&peer, progress) in self.tracker.progress.iter_mut() {
                    if peer != id {
                        progress.recent_active = false;
                    }
                }
                return Ok(());
            }
            MessageType::Propose => return self.propose(message),
            MessageType::ReadIndex => {
                self.handle_read_index(message);
                return Ok(());
            }
            _ => {}
        }
        let from = message.from;
        let Some(progress) = self.tracker.progress.get_mut(&from) else {
            return Ok(());
        };
        match message.msg_type() {
            MessageType::AppendResponse => {
                progress.recent_active = true;
                if message.reject {
                    let hint = if message.log_term_hint > 0 {
                        self.log
                            .find_conflict_by_term(message.reject_hint, message.log_term_hint)
                            .0
                    } else {
                        message.reject_hint
                    };
                    let progress = self.tracker.progress.get_mut(&from).expect("present");
                    if progress.maybe_decrease_to(message.index, hint) {
                        if progress.state == ProgressState::Replicate {
                            progress.become_probe();
                        }
                        self.maybe_send_append(from, true);
                    }
                } else {
                    let was_paused = progress.is_paused();
                    if progress.maybe_update(message.index) {
                        match progress.state {
                            ProgressState::Probe => progress.become_replicate(),
                            ProgressState::Snapshot => {
                                if progress.matched + 1 >= self.log.first_index() {
                                    progress.become_probe();
                                    progress.become_replicate();
                                }
                            }
                            ProgressState::Replicate => progress.inflights.free_le(message.index),
                        }
                        if self.maybe_commit() {
                            self.broadcast_append();
                        } else if was_paused {
                            self.maybe_send_append(from, false);
                        }
                        while self.maybe_send_append(from, false) {}
                        let matched = self.tracker.progress[&from].matched;
                        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
                            self.send(Self::message(MessageType::TimeoutNow, from));
                        }
                    }
                }
            }
            MessageType::HeartbeatResponse => {
                progress.recent_active = true;
                progress.probe_sent = false;
                if progress.state == ProgressState::Replicate && progress.inflights.full() {
                    progress.inflights.free_first_one();
                }
                if progress.matched < self.log.last_index() {
                    self.maybe_send_append(from, true);
                }
                if !message.context.is_empty() {
                    self.ack_read(from, &message.context);
                }
            }
            MessageType::SnapStatus => {
                if progress.state == ProgressState::Snapshot {
                    if message.reject {
                        progress.pending_snapshot = 0;
                    }
                    progress.become_probe();
                    // Wait for a heartbeat response before probing again.
                    progress.probe_sent = true;
                }
            }
            MessageType::Unreachable => {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
            }
            MessageType::TransferLeader => {
                if progress.is_learner {
                    return Ok(());
                }
                if let Some(current) = self.lead_transferee {
                    if current == from {
                        return Ok(());
                    }
                    self.lead_transferee = None;
                }
                if from == self.id {
                    return Ok(());
                }
                self.election_elapsed = 0;
                self.lead_transferee = Some(from);
                if self.tracker.progress[&from].matched == self.log.last_index() {
                    self.send(Self::message(MessageType::TimeoutNow, from));
                } else {
                    self.maybe_send_append(from, true);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn propose(&mut self, message: Message) -> Result<(), Error> {
        assert!(
            !message.entries.is_empty(),
            "an empty proposal from {}",
            message.from
        );
        if !self.tracker.progress.contains_key(&self.id) {
            // This leader was removed from the configuration.
            return Err(Error::ProposalDropped);
        }
        if self.lead_transferee.is_some() {
            return Err(Error::ProposalDropped);
        }
        let mut entries = message.entries;
        for entry in &mut entries {
            if entry.entry_type != EntryType::ConfChangeV2 as i32 {
                continue;
            }
            let change = ConfChangeV2::decode(entry.data.clone())
                .map_err(|e| Error::ConfChangeRefused(format!("does not decode: {e}")))?;
            let joint = self.tracker.config.voters.is_joint();
            let refusal = if self.pending_conf_index > self.log.applied {
                Some("another configuration change is not applied yet")
            } else if joint && !confchange::leaves_joint(&change) {
                Some("must leave the joint configuration first")
            } else if !joint && confchange::leaves_joint(&change) {
                Some("the configuration is not joint")
            } else {
                None
            };
            if let Some(reason) = refusal {
                return Err(Error::ConfChangeRefused(reason.to_string()));
            }
        }
        let last = self.log.last_index();
        for (offset, entry) in entries.iter().enumerate() {
            if entry.entry_type == EntryType::ConfChangeV2 as i32 {
                self.pending_conf_index = last + 1 + offset as u64;
            }
        }
        self.append_entries(entries);
        self.broadcast_append();
        Ok(())
    }

    fn handle_read_index(&mut self, message: Message) {
        let Some(context) = message.entries.first().map(|e| e.data.clone()) else {
            return;
        };
        if self.tracker.is_singleton() {
            self.answer_read(message.from, context, self.log.committed);
            return;
        }
        if !self.committed_in_current_term() {
            // The commit index of a new leader may lag the cluster's until its own empty
            // entry commits; answering now could miss acknowledged writes.
            self.reads_before_commit.push(message);
            return;
        }
        let index = self.log.committed;
        let mut acks = std::collections::BTreeSet::new();
        acks.insert(self.id);
        if self.pending_reads.contains_key(&context) {
            // A retry: the heartbeats of the first round, or their answers, may have been
            // lost. Ask again; the read keeps the index it was given first.
            self.broadcast_heartbeat(context);
            return;
        }
        self.pending_reads.insert(
            context.clone(),
            PendingRead {
                from: message.from,
                index,
                acks,
            },
        );
        self.read_queue.push_back(context.clone());
        self.broadcast_heartbeat(context);
    }

    fn ack_read(&mut self, from: u64, context: &Bytes) {
        let Some(pending) = self.pending_reads.get_mut(context) else {
            return;
        };
        pending.acks.insert(from);
        let acks = &pending.acks;
        if self
            .tracker
            .config
            .voters
            .vote_result(|id| acks.contains(&id).then_some(true))
            != VoteResult::Won
        {
            return;
        }
        // Leadership at the time of this request is confirmed, and so for every request
        // queued before it.
        while let Some(queued) = self.read_queue.pop_front() {
            let done = queued == *context;
            if let Some(read) = self.pending_reads.remove(&queued) {
                self.answer_read(read.from, queued, read.index);
            }
            if done {
                break;
            }
        }
    }

    fn answer_read(&mut self, from: u64, context: Bytes, index: u64) {
        if from == 0 || from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: context,
            });
        } else {
            let mut response = Self::message(MessageType::ReadIndexResponse, from);
            response.index = index;
            response.entries = vec![Entry {
                data: context,
                ..Default::default()
            }];
            self.send(response);
        }
    }

    fn step_candidate(&mut self, message: Message) -> Result<(), Error> {
        let own_response = if self.role == Role::PreCandidate {
            MessageType::RequestPreVoteResponse
        } else {
            MessageType::RequestVoteResponse
        };
        match message.msg_type() {
            MessageType::Propose => return Err(Error::ProposalDropped),
            MessageType::ReadIndex => return Err(Error::ProposalDropped),
            MessageType::Append => {
                self.become_follower(message.term, message.from);
                self.handle_append(message);
            }
            MessageType::Heartbeat => {
                self.become_follower(message.term, message.from);
                self.handle_heartbeat(message);
            }
            MessageType::Snapshot => {
                self.become_follower(message.term, message.from);
                self.handle_snapshot(message);
            }
            kind if kind == own_response => match self.poll(message.from, !message.reject) {
                VoteResult::Won => {
                    if self.role == Role::PreCandidate {
                        self.campaign(CampaignKind::Election);
                    } else {
                        self.become_leader();
                        self.broadcast_append();
                    }
                }
                VoteResult::Lost => self.become_follower(self.term, 0),
                VoteResult::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, mut message: Message) -> Result<(), Error> {
        match message.msg_type() {
            MessageType::Propose | MessageType::ReadIndex => {
                if self.leader == 0 {
                    return Err(Error::ProposalDropped);
                }
                message.to = self.leader;
                self.send(message);
            }
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_append(message);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_heartbeat(message);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_snapshot(message);
            }
            MessageType::TransferLeader => {
                if self.leader != 0 {
                    message.to = self.leader;
                    self.send(message);
                }
            }
            MessageType::TimeoutNow => self.hup(CampaignKind::Transfer),
            MessageType::ReadIndexResponse => {
                if let Some(entry) = message.entries.first() {
                    self.read_states.push(ReadState {
                        index: message.index,
                        request_ctx: entry.data.clone(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append(&mut self, message: Message) {
        // Only a follower takes entries from another node: a leader never overwrites its
        // own log.
        assert!(
            self.role == Role::Follower,
            "node {} in role {:?} was asked to append entries from {} (term {})",
            self.id,
            self.role,
            message.from,
            self.term
        );
        let mut response = Self::message(MessageType::AppendResponse, message.from);
        if message.index < self.log.committed {
            response.index = self.log.committed;
            self.send(response);
            return;
        }
        match self.log.maybe_append(
            message.index,
            message.log_term,
            message.commit,
            &message.entries,
        ) {
            Some(last) => response.index = last,
            None => {
                let hint = message.index.min(self.log.last_index());
                let (hint, hint_term) = self.log.find_conflict_by_term(hint, message.log_term);
                response.index = message.index;
                response.reject = true;
                response.reject_hint = hint;
                response.log_term_hint = hint_term;
            }
        }
        self.send(response);
    }

    fn handle_heartbeat(&mut self, message: Message) {
        // A leader never commits past what it knows a follower holds; a commit beyond this
        // log means a damaged message, or a log this member lost. Either way the entries
        // are not here to commit: the commit index stays (etcd's core panics instead), and
        // the leader's next appends bring what is missing.
        let last = self.log.last_index();
        if message.commit > last {
            tracing::warn!(
                id = self.id,
                from = message.from,
                commit = message.commit,
                last,
                "a heartbeat commits past the end of this log; commit index unchanged"
            );
        } else {
            self.log.commit_to(message.commit);
        }
        let mut response = Self::message(MessageType::HeartbeatResponse, message.from);
        response.context = message.context;
        self.send(response);
    }

    fn handle_snapshot(&mut self, message: Message) {
        let snapshot = message.snapshot.unwrap_or_default();
        let mut response = Self::message(MessageType::AppendResponse, message.from);
        if self.restore(snapshot) {
            response.index = self.log.last_index();
        } else {
            response.index = self.log.committed;
        }
        self.send(response);
    }

    /// Restores the log from a leader's snapshot; false when it brings nothing new.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let Some(metadata) = snapshot.metadata.clone() else {
            return false;
        };
        if metadata.index <= self.log.committed {
            return false;
        }
        let conf_state = metadata.conf_state.clone().unwrap_or_default();
        let config = TrackerConfig::from_conf_state(&conf_state);
        if !config.ids().contains(&self.id) {
            // A snapshot of a configuration without this node: it is being removed.
            return false;
        }
        if self.log.match_term(metadata.index, metadata.term) {
            // The log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(metadata.index);
            return false;
        }
        self.log.restore(snapshot);
        self.tracker.progress.clear();
        self.apply_config(config);
        true
    }

    // ----- membership -----

    fn apply_config(&mut self, config: TrackerConfig) {
        let next = self.log.last_index() + 1;
        self.tracker.set_config(config, next);
        self.is_learner = self
            .tracker
            .progress
            .get(&self.id)
            .is_some_and(|p| p.is_learner);
    }

    /// Applies a committed configuration change; returns the new membership.
    pub fn apply_conf_change(&mut self, change: &ConfChangeV2) -> ConfState {
        match self.try_apply_conf_change(change) {
            Ok(conf_state) => conf_state,
            Err(error) => {
                tracing::warn!(id = self.id, %error, "committed configuration change refused");
                self.conf_state()
            }
        }
    }

    /// Applies a committed membership change, or refuses it (and changes nothing) if it
    /// does not fit the current configuration. Every node refuses the same change the same
    /// way, so a refusal keeps them in agreement.
    pub fn try_apply_conf_change(&mut self, change: &ConfChangeV2) -> Result<ConfState, Error> {
        let config = confchange::apply(&self.tracker.config, change)?;
        self.apply_config(config);
        let removed = !self.tracker.progress.contains_key(&self.id);
        if self.role == Role::Leader {
            if removed || self.is_learner {
                // This leader was removed or demoted: step down; the others elect a new
                // leader after an election timeout.
                self.become_follower(self.term, 0);
                return Ok(self.conf_state());
            }
            if self.maybe_commit() {
                self.broadcast_append();
            } else {
                for id in self.peers() {
                    self.maybe_send_append(id, false);
                }
            }
            if let Some(transferee) = self.lead_transferee {
                if !self.tracker.config.voters.contains(transferee) {
                    self.lead_transferee = None;
                }
            }
            self.maybe_auto_leave();
        }
        Ok(self.conf_state())
    }

    /// The application applied the log through `index`.
    pub fn applied_to(&mut self, index: u64) {
        self.log.applied_to(index);
        self.maybe_auto_leave();
    }

    /// Leaves an auto-leave joint configuration once entering it is applied.
    fn maybe_auto_leave(&mut self) {
        let config = &self.tracker.config;
        if self.role != Role::Leader
            || !config.auto_leave
            || !config.voters.is_joint()
            || self.pending_conf_index > self.log.applied
        {
            return;
        }
        let entry = Entry {
            entry_type: EntryType::ConfChangeV2 as i32,
            data: ConfChangeV2::default().encode_to_vec().into(),
            ..Default::default()
        };
        let message = Message {
            msg_type: MessageType::Propose as i32,
            from: self.id,
            entries: vec![entry],
            ..Default::default()
        };
        if let Err(error) = self.step(message) {
            tracing::debug!(%error, "leaving the joint configuration was refused");
        }
    }
}
