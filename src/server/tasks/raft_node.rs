//! The Raft task: the one owner of the consensus core, the Raft log storage and the WAL.
//!
//! It runs the Ready loop of `crate::raft` (whose module doc lists the contract):
//!
//! 1. Collect inputs: a tick every heartbeat interval, proposals, read-index requests and
//!    configuration changes from the rest of the member. Every input that is already queued
//!    is drained before the next Ready, so that concurrent proposals share one WAL sync.
//! 2. For each Ready: send the messages that may go before persistence; persist a snapshot if
//!    there is one; append the entries and hard state to the WAL with **one** fdatasync; then
//!    add them to the in-memory log storage the core reads from; send the messages that had
//!    to wait for persistence; hand committed entries to the applier; publish read states;
//!    advance.
//!
//! A WAL error is fatal: after a failed fsync the page cache can no longer be trusted to
//! match the disk, so the task stops the member instead of continuing (the WAL latches the
//! failure too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::io::Ticker;

use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
#[cfg(madsim)]
use crate::server::types::observe;
use crate::server::types::request::{ApplyBatch, NodeInput, RaftStatus, LEARNERS_MAX};
use prost::Message as _;

use crate::raft::{
    self, ConfChangeV2, ConfState, Entry, EntryType, MemStorage, Message, MessageType, RawNode,
    Role,
};
use crate::wal::{SnapshotFiles, Wal};

/// How many queued inputs one loop turn drains before producing a Ready. Bounded so that a
/// flood of proposals cannot starve ticks, and so one WAL write stays a reasonable size.
const INPUTS_PER_READY_MAX: usize = 4_096;

/// The Raft task (etcd's `raftNode`): the one owner of the core, the log storage and the WAL.
pub(crate) struct RaftNode {
    pub(crate) raw_node: RawNode<MemStorage>,
    pub(crate) storage: MemStorage,
    pub(crate) wal: Wal,
    pub(crate) snapshots: SnapshotFiles,
    pub(crate) server: Arc<Server>,
    pub(crate) inputs: mpsc::Receiver<NodeInput>,
    pub(crate) applier: mpsc::UnboundedSender<ApplyBatch>,
    /// The configuration just applied has this member as its only voter.
    pub(crate) campaign_after_advance: bool,
    /// The leader this task last heard of (0: none), to count leader changes.
    pub(crate) known_leader: u64,
    /// When this member, as leader, last sent each follower a heartbeat.
    pub(crate) heartbeats: HeartbeatDelays,
}

/// Finds the heartbeats a leader sent late (etcd's `timeoutDetector`): when more than two
/// heartbeat intervals pass between two heartbeats to one follower, the leader was too
/// busy (most likely a slow disk holding up the Ready loop) and followers may have started
/// an election meanwhile.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatDelays {
    last_sent: HashMap<u64, Instant>,
}

impl HeartbeatDelays {
    /// Records a heartbeat to `to` at `now`; true when it came too late after the one before.
    fn late(&mut self, to: u64, now: Instant, interval: Duration) -> bool {
        self.last_sent
            .insert(to, now)
            .is_some_and(|before| now.saturating_duration_since(before) > 2 * interval)
    }

    /// Forgets every heartbeat: a new term of leadership starts its own count.
    fn reset(&mut self) {
        self.last_sent.clear();
    }
}

impl RaftNode {
    /// Runs the Ready loop until the member stops. Returns an error when the member must stop
    /// because its storage failed.
    pub(crate) async fn run(mut self) -> Result<(), ServerError> {
        // One Raft tick per heartbeat interval of this member's clock.
        let mut ticker = Ticker::new(self.server.store.clock(), self.server.config.heartbeat());
        tracing::trace!(ready = self.raw_node.has_ready(), status = ?self.raw_node.status(), "raft task started");
        loop {
            // Why `select!`: the task waits on three independent sources — time, inputs and
            // shutdown — and must react to whichever comes first.
            tokio::select! {
                biased;
                _ = ticker.tick() => self.raw_node.tick(),
                input = self.inputs.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    self.handle(input);
                    for _ in 1..INPUTS_PER_READY_MAX {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                _ = self.server.lifecycle.stopped() => return Ok(()),
            }
            self.process_ready().await?;
        }
    }

    fn handle(&mut self, input: NodeInput) {
        match input {
            NodeInput::Propose {
                data,
                done,
                leading_in,
            } => {
                let result = if leads_in(leading_in, || self.raw_node.status()) {
                    self.raw_node.propose(data).map_err(proposal_error)
                } else {
                    Err(ServerError::LeaderChanged)
                };
                let _ = done.send(result);
            }
            NodeInput::ReadIndex { context } => {
                if let Err(error) = self.raw_node.read_index(context.clone()) {
                    self.server.reads.fail(&context, proposal_error(error));
                }
            }
            NodeInput::ProposeConfChange { change, done } => {
                let result = self
                    .raw_node
                    .propose_conf_change(change)
                    .map_err(proposal_error);
                let _ = done.send(result);
            }
            NodeInput::Snapshot { index, conf_state } => {
                if let Err(error) = self.snapshot(index, conf_state) {
                    tracing::error!(%error, index, "failed to record a raft snapshot");
                    self.server.lifecycle.stop_with_error(error.to_string());
                }
            }
            NodeInput::Step(message) => {
                if message.msg_type() == MessageType::Append {
                    self.server
                        .appends_received
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Err(error) = self.raw_node.step(message) {
                    tracing::debug!(%error, "dropped a raft message");
                }
            }
            NodeInput::TransferLeader { to } => self.raw_node.transfer_leader(to),
            NodeInput::Unreachable { to } => self.raw_node.report_unreachable(to),
            NodeInput::SnapshotSent { to, failed } => self.raw_node.report_snapshot(to, failed),
            NodeInput::Progress { id, reply } => {
                let progress = self
                    .raw_node
                    .match_index(id)
                    .map(|matched| (matched, self.raw_node.status().last_index));
                let _ = reply.send(progress);
            }
        }
    }

    /// Persists, sends and hands on to the applier whatever the core has ready. (It awaits
    /// nothing in production; the simulator may delay it between persisting and sending.)
    async fn process_ready(&mut self) -> Result<(), ServerError> {
        while self.raw_node.has_ready() {
            let mut ready = self.raw_node.ready();
            tracing::trace!(
                entries = ready.entries.len(),
                committed = ready.committed_entries.len(),
                messages = ready.messages.len() + ready.persisted_messages.len(),
                "ready"
            );
            self.send(std::mem::take(&mut ready.messages));

            if let Some(snapshot) = ready.snapshot.take() {
                if let Some(stored) = self.persist_snapshot(snapshot)? {
                    #[cfg(madsim)]
                    observe::report(
                        self.server.id,
                        observe::Observation::Snapshot {
                            index: stored.metadata.as_ref().map_or(0, |m| m.index),
                        },
                    );
                    #[cfg(madsim)]
                    observe::crash_point(self.server.id, observe::Point::SnapshotRecorded);
                    let _ = self.applier.send(ApplyBatch::Snapshot(stored));
                }
            }
            let hard_state = ready.hard_state;
            if hard_state.is_some() || !ready.entries.is_empty() {
                self.wal
                    .save(hard_state.as_ref(), &ready.entries, ready.must_sync)
                    .map_err(|error| self.fatal("WAL append", error.to_string()))?;
                #[cfg(madsim)]
                observe::crash_point(
                    self.server.id,
                    if ready.entries.is_empty() {
                        observe::Point::HardStateSaved
                    } else {
                        observe::Point::EntriesSaved
                    },
                );
                if let Some(hard_state) = hard_state {
                    self.storage.set_hard_state(hard_state);
                }
                if !ready.entries.is_empty() {
                    self.storage
                        .append(&ready.entries)
                        .map_err(|error| self.fatal("log append", error.to_string()))?;
                }
                #[cfg(madsim)]
                if !ready.persisted_messages.is_empty() {
                    observe::delay_point(self.server.id, observe::Point::PersistedUnsent).await;
                }
            }
            self.send(std::mem::take(&mut ready.persisted_messages));

            if !ready.committed_entries.is_empty() {
                let entries = std::mem::take(&mut ready.committed_entries);
                #[cfg(madsim)]
                if let (Some(last), status) = (entries.last(), self.raw_node.status()) {
                    if status.leader == self.server.id {
                        observe::report(
                            self.server.id,
                            observe::Observation::LeaderCommit {
                                term: status.term,
                                index: last.index,
                                entry_term: last.term,
                            },
                        );
                    }
                }
                #[cfg(madsim)]
                for entry in &entries {
                    observe::report(
                        self.server.id,
                        observe::Observation::Committed {
                            index: entry.index,
                            term: entry.term,
                            digest: crc32c::crc32c(&entry.data),
                        },
                    );
                }
                self.apply_conf_changes(&entries);
                if self.applier.send(ApplyBatch::Entries(entries)).is_err() {
                    self.server
                        .lifecycle
                        .stop_with_error("the applier stopped".to_string());
                    return Err(ServerError::Stopped);
                }
            }
            for read_state in std::mem::take(&mut ready.read_states) {
                self.server
                    .reads
                    .confirm(&read_state.request_ctx, read_state.index);
            }
            if let Some(soft_state) = ready.soft_state.take() {
                // etcd counts a change to a known leader, not the loss of one.
                if soft_state.leader_id != 0 && soft_state.leader_id != self.known_leader {
                    self.server.metrics.leader_changes.inc();
                }
                self.known_leader = soft_state.leader_id;
                if soft_state.role == Role::Leader {
                    self.heartbeats.reset();
                }
                #[cfg(madsim)]
                if soft_state.leader_id == self.server.id {
                    observe::report(
                        self.server.id,
                        observe::Observation::Leader {
                            term: self.raw_node.status().term,
                        },
                    );
                }
                tracing::info!(
                    leader = soft_state.leader_id,
                    role = ?soft_state.role,
                    "raft role changed"
                );
            }
            self.raw_node.advance(ready);
            if std::mem::take(&mut self.campaign_after_advance) {
                if let Err(error) = self.raw_node.campaign() {
                    tracing::debug!(%error, "campaign refused");
                }
            }
            self.publish_status();
        }
        Ok(())
    }

    /// Messages to peers. A one-member cluster has none to send; the peer transport carries
    /// them in a multi-member cluster.
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            if message.to == self.server.id {
                continue;
            }
            if message.msg_type() == MessageType::Append {
                self.server
                    .appends_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if message.msg_type() == MessageType::Heartbeat {
                let now = self.server.store.clock().now();
                let interval = self.server.config.heartbeat();
                if self.heartbeats.late(message.to, now, interval) {
                    tracing::warn!(
                        to = %format!("{:x}", message.to),
                        heartbeat_interval = ?interval,
                        "leader failed to send out heartbeat on time; the leader is likely overloaded by a slow disk"
                    );
                    self.server.metrics.heartbeat_send_failures.inc();
                }
            }
            #[cfg(madsim)]
            let vote = (message.msg_type() == raft::MessageType::RequestVoteResponse
                && !message.reject)
                .then_some((message.term, message.to));
            self.server.transport.send(message);
            #[cfg(madsim)]
            if let Some((term, candidate)) = vote {
                observe::report(
                    self.server.id,
                    observe::Observation::Voted { term, candidate },
                );
                observe::crash_point(self.server.id, observe::Point::VoteSent);
            }
        }
    }

    /// Persists a snapshot received from the leader: the snapshot and the WAL marker (the
    /// peer service saved its backend image durably before the core heard of it). Returns
    /// the snapshot as stored, for the applier, which moves the image over the backend.
    fn persist_snapshot(
        &mut self,
        snapshot: raft::Snapshot,
    ) -> Result<Option<raft::Snapshot>, ServerError> {
        let Some(metadata) = snapshot.metadata else {
            return Ok(None);
        };
        let stored = raft::Snapshot {
            metadata: Some(metadata.clone()),
            data: Bytes::new(),
        };
        self.record_snapshot(&stored)?;
        self.storage
            .apply_snapshot(stored.clone())
            .map_err(|error| self.fatal("log snapshot", error.to_string()))?;
        if let Some(conf_state) = metadata.conf_state {
            self.server
                .membership
                .record_conf_state(metadata.index, conf_state);
        }
        Ok(Some(stored))
    }

    /// Records a snapshot at `index` (the backend is committed through it), then releases the
    /// WAL and the in-memory log before it, keeping some entries for lagging followers.
    fn snapshot(&mut self, index: u64, conf_state: ConfState) -> Result<(), ServerError> {
        let snapshot = self
            .storage
            .create_snapshot(index, Some(conf_state), Bytes::new())
            .map_err(|error| ServerError::Internal(error.to_string()))?;
        let Some(metadata) = snapshot.metadata.clone() else {
            return Ok(());
        };
        self.record_snapshot(&snapshot)?;
        #[cfg(madsim)]
        observe::crash_point(self.server.id, observe::Point::SnapshotTaken);
        self.wal
            .release_to(metadata.index)
            .map_err(|error| self.fatal("WAL release", error.to_string()))?;
        // Entries kept behind the snapshot let a slightly lagging follower catch up from the
        // log instead of a whole snapshot.
        let compact_to = index.saturating_sub(self.server.config.snapshot_catchup_entries);
        if compact_to > 0 {
            if let Err(error) = self.storage.compact(compact_to) {
                tracing::debug!(%error, compact_to, "log compaction skipped");
            }
        }
        #[cfg(madsim)]
        observe::report(
            self.server.id,
            observe::Observation::SnapshotTaken { index },
        );
        tracing::info!(index, term = metadata.term, "saved raft snapshot");
        Ok(())
    }

    /// Saves the snapshot file, then marks the snapshot in the WAL (the marker tells a
    /// restart which snapshot the log continues from).
    fn record_snapshot(&mut self, snapshot: &raft::Snapshot) -> Result<(), ServerError> {
        let metadata = snapshot.metadata.clone().unwrap_or_default();
        self.snapshots
            .save(snapshot)
            .map_err(|error| self.fatal("snapshot save", error.to_string()))?;
        self.wal
            .save_snapshot_marker(metadata.index, metadata.term)
            .map_err(|error| self.fatal("WAL snapshot marker", error.to_string()))
    }

    /// Applies the committed membership changes to the core here, before `advance`: the
    /// core must not campaign (or count votes) with a membership that lags its log, which it
    /// would if an asynchronous applier applied them later. A member alone in its
    /// configuration then campaigns at once: nobody else can win.
    fn apply_conf_changes(&mut self, entries: &[Entry]) {
        let mut changed = None;
        for entry in entries {
            if entry.entry_type != EntryType::ConfChangeV2 as i32 {
                continue;
            }
            match ConfChangeV2::decode(entry.data.clone()) {
                Ok(change) => {
                    let refused = match refusal(&change, &self.raw_node.conf_state()) {
                        Some(error) => Err(error),
                        None => self
                            .raw_node
                            .try_apply_conf_change(&change)
                            .map_err(|error| ServerError::Internal(error.to_string())),
                    };
                    match refused {
                        Ok(conf_state) => {
                            self.server
                                .membership
                                .record_conf_state(entry.index, conf_state.clone());
                            changed = Some(conf_state);
                        }
                        Err(error) => {
                            tracing::warn!(index = entry.index, %error, "membership change refused");
                            self.server
                                .membership
                                .refuse_conf_change(entry.index, error);
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, index = entry.index, "undecodable membership change");
                }
            }
        }
        let Some(conf_state) = changed else { return };
        self.storage.set_conf_state(conf_state.clone());
        let alone = conf_state.voters == [self.server.id] && conf_state.voters_outgoing.is_empty();
        // After `advance`: until then the core counts these changes as unapplied and
        // refuses to campaign.
        self.campaign_after_advance = alone && self.raw_node.status().leader == 0;
    }

    fn publish_status(&self) {
        let status = self.raw_node.status();
        self.server.set_raft_status(RaftStatus {
            term: status.term,
            leader: status.leader,
            commit: status.commit,
            is_leader: status.leader == self.server.id,
        });
    }

    fn fatal(&self, what: &str, error: String) -> ServerError {
        tracing::error!(what, %error, "storage failed; stopping the member");
        self.server
            .lifecycle
            .stop_with_error(format!("{what}: {error}"));
        ServerError::Stopped
    }
}

/// Whether a proposal pinned to `leading_in` (if at all) may enter the core now: only the
/// leader of that very term takes a pinned one. The status is read only for a pinned one.
fn leads_in(leading_in: Option<u64>, status: impl FnOnce() -> raft::Status) -> bool {
    leading_in.is_none_or(|term| {
        let status = status();
        status.role == Role::Leader && status.term == term
    })
}

/// Why the core refused a proposal, as the client sees it.
fn proposal_error(error: raft::Error) -> ServerError {
    match error {
        raft::Error::ProposalDropped => ServerError::NoLeader,
        other => ServerError::Internal(other.to_string()),
    }
}

/// Why a committed membership change a client asked for must not take effect, judged from
/// the configuration it would change alone, so that every member judges alike (etcd checks
/// at apply time, too: two requests may pass the proposer's checks together). The
/// bootstrap entries, which carry no request, are the core's alone to judge.
fn refusal(change: &ConfChangeV2, current: &ConfState) -> Option<ServerError> {
    use crate::raft::ConfChangeType;
    if change.context.is_empty() {
        return None;
    }
    for single in &change.changes {
        let id = single.node_id;
        let voter = current.voters.contains(&id);
        let learner = current.learners.contains(&id) || current.learners_next.contains(&id);
        match ConfChangeType::try_from(single.change_type) {
            Ok(ConfChangeType::AddNode) if voter => return Some(ServerError::MemberIdExists),
            Ok(ConfChangeType::AddLearnerNode) if voter || learner => {
                return Some(ServerError::MemberIdExists)
            }
            Ok(ConfChangeType::AddLearnerNode) if current.learners.len() >= LEARNERS_MAX => {
                return Some(ServerError::TooManyLearners)
            }
            Ok(ConfChangeType::RemoveNode) if !voter && !learner => {
                return Some(ServerError::MemberNotFound)
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfChangeSingle, ConfChangeType};

    #[test]
    fn a_heartbeat_is_late_after_two_intervals_without_one() {
        let interval = Duration::from_millis(100);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut delays = HeartbeatDelays::default();
        assert!(!delays.late(2, at(0), interval), "the first one");
        assert!(!delays.late(2, at(100), interval));
        assert!(
            !delays.late(3, at(150), interval),
            "each follower counts alone"
        );
        assert!(!delays.late(2, at(300), interval), "two intervals exactly");
        assert!(delays.late(2, at(501), interval));
        delays.reset();
        assert!(
            !delays.late(2, at(2_000), interval),
            "a new term of leadership"
        );
    }

    fn change(kind: ConfChangeType, node_id: u64) -> ConfChangeV2 {
        ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: kind as i32,
                node_id,
            }],
            context: Bytes::from_static(b"a request"),
            ..Default::default()
        }
    }

    #[test]
    fn a_pinned_proposal_enters_only_the_leader_of_its_term() {
        let status = |role, term| raft::Status {
            id: 1,
            term,
            vote: 1,
            commit: 9,
            applied: 9,
            leader: if role == Role::Leader { 1 } else { 2 },
            role,
            last_index: 9,
        };
        assert!(leads_in(Some(5), || status(Role::Leader, 5)));
        assert!(
            !leads_in(Some(5), || status(Role::Leader, 6)),
            "led again, later"
        );
        assert!(!leads_in(Some(5), || status(Role::Follower, 5)), "deposed");
        assert!(!leads_in(Some(5), || status(Role::Candidate, 6)));
        assert!(leads_in(None, || status(Role::Follower, 5)), "forwarded");
    }

    #[test]
    fn membership_changes_that_no_longer_fit_are_refused_at_apply() {
        let current = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        let refused = |kind, id| refusal(&change(kind, id), &current);
        assert_eq!(
            refused(ConfChangeType::AddLearnerNode, 5),
            Some(ServerError::TooManyLearners),
            "a second learner, added concurrently with the first"
        );
        assert_eq!(
            refused(ConfChangeType::AddNode, 2),
            Some(ServerError::MemberIdExists)
        );
        assert_eq!(
            refused(ConfChangeType::AddLearnerNode, 4),
            Some(ServerError::MemberIdExists)
        );
        assert_eq!(
            refused(ConfChangeType::RemoveNode, 9),
            Some(ServerError::MemberNotFound)
        );
        assert_eq!(refused(ConfChangeType::AddNode, 4), None, "promotion");
        assert_eq!(refused(ConfChangeType::AddNode, 5), None);
        assert_eq!(refused(ConfChangeType::RemoveNode, 4), None);
        let no_learner = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(
            refusal(&change(ConfChangeType::AddLearnerNode, 5), &no_learner),
            None
        );
        let bootstrap = ConfChangeV2 {
            context: Bytes::new(),
            ..change(ConfChangeType::AddNode, 2)
        };
        assert_eq!(
            refusal(&bootstrap, &current),
            None,
            "replayed bootstrap entry"
        );
    }
}
