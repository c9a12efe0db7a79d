//! The consensus core: a pure, deterministic Raft state machine.
//!
//! # Design
//!
//! The core owns no thread, socket, file or clock. Time is a [`RawNode::tick`] call, the
//! network is a [`Message`] in and a list of messages out, the disk is a [`Ready`] that the
//! caller persists and a read-only [`Storage`] the core reads the persisted log back from,
//! and randomness (election timeouts) comes from a generator seeded by the caller. The same
//! inputs therefore always give the same outputs, which is what lets the simulator replay a
//! failing seed exactly and lets the property tests drive thousands of steps per case.
//!
//! The algorithm is Raft as in Ongaro's thesis, with the extensions a production cluster
//! needs: pre-vote (§9.6) and check-quorum (§6.2) so that a partitioned node cannot disrupt
//! a healthy leader; probe / replicate / snapshot replication with a bounded in-flight
//! window and fast backtracking by term; ReadIndex (§6.4) for linearizable reads without
//! writing to the log; snapshots and log compaction (§5); membership changes by joint
//! consensus (§4.3) with learners; and leader transfer (§3.10).
//!
//! # The Ready contract
//!
//! The caller runs one loop, and must follow these steps in order for every `Ready`:
//!
//! 1. Feed input: [`RawNode::tick`] at a fixed interval, [`RawNode::step`] for every message
//!    from a peer, [`RawNode::propose`] / [`RawNode::read_index`] /
//!    [`RawNode::propose_conf_change`] / [`RawNode::transfer_leader`] for local requests.
//! 2. While [`RawNode::has_ready`], take [`RawNode::ready`].
//! 3. Send `ready.messages` at once: they promise nothing about the local disk (a leader
//!    may replicate entries to followers while it writes them itself).
//! 4. Persist `ready.snapshot` if present, then `ready.entries` and `ready.hard_state`, all
//!    durably (one fsync) when `ready.must_sync`; then add them to the [`Storage`] the core
//!    reads (for [`MemStorage`]: `apply_snapshot`, `append`, `set_hard_state`).
//! 5. Only then send `ready.persisted_messages`: vote grants and append acknowledgements
//!    promise that this node's disk holds what they acknowledge.
//! 6. Apply `ready.committed_entries` to the state machine in order; for a
//!    `ConfChangeV2` entry call [`RawNode::apply_conf_change`]. Committed entries may
//!    include entries of this same Ready: step 4 made them durable first.
//! 7. Answer the reads in `ready.read_states`: each is safe to serve once the state machine
//!    has applied through its index.
//! 8. Call [`RawNode::advance`] with the Ready.
//!
//! Restart: persist nothing else, and rebuild the [`Storage`] from the WAL and the newest
//! snapshot; the core recovers its term, vote, commit index and membership from it, and
//! `Config::applied` tells it where the state machine stands.

mod confchange;
mod core;
mod log;
mod progress;
mod quorum;
mod storage;
mod types;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use prost::Message as _;

pub use self::core::{Role, CAMPAIGN_TRANSFER};
pub use self::storage::{bootstrap_entries, MemStorage, Storage};
pub use self::types::*;

/// Why the core refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No leader is known, this node was removed, or a leader transfer is in progress: the
    /// proposal (or read) was not accepted. Retry later.
    #[error("proposal dropped: no leader, or leadership is moving")]
    ProposalDropped,
    #[error("configuration change refused: {0}")]
    ConfChangeRefused(String),
    #[error("the requested index is compacted")]
    Compacted,
    #[error("the requested entries are unavailable")]
    Unavailable,
    #[error("the snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    #[error("the snapshot is older than the current one")]
    SnapshotOutOfDate,
    #[error("a local message type came from the network")]
    LocalMessageFromPeer,
    #[error("malformed message from a peer: {0}")]
    Malformed(String),
    #[error("invalid raft configuration: {0}")]
    InvalidConfig(String),
    #[error("raft storage: {0}")]
    Storage(String),
}

/// The tunables of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns (randomized in
    /// `[election_ticks, 2 * election_ticks)`).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The index the state machine has applied through (after a restart).
    pub applied: u64,
    /// The most entry bytes in one append message (at least one entry is always sent).
    pub max_size_per_msg_bytes: u64,
    /// The most appends in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// The most entry bytes in flight to one follower (0: unlimited).
    pub max_inflight_bytes: u64,
    pub check_quorum: bool,
    pub pre_vote: bool,
}

impl Config {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            applied: 0,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            check_quorum: true,
            pre_vote: true,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: &str| Err(Error::InvalidConfig(what.to_string()));
        if self.id == 0 {
            return invalid("the node id must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat ticks must be positive");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid("election ticks must exceed heartbeat ticks");
        }
        if self.max_inflight_msgs == 0 {
            return invalid("max inflight messages must be positive");
        }
        Ok(())
    }
}

/// A confirmed ReadIndex: a read issued with `request_ctx` may be served once the state
/// machine applied through `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub request_ctx: Bytes,
}

/// Volatile state worth reporting when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    pub leader_id: u64,
    pub role: Role,
}

/// A summary of the node, for status endpoints and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub applied: u64,
    pub leader: u64,
    pub role: Role,
    pub last_index: u64,
}

/// What the caller must do next; see the module documentation for the order.
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub read_states: Vec<ReadState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub committed_entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    /// Whether the hard state or entries must reach the disk before step 5 (a change of
    /// term, vote or log must be durable; a commit index alone need not be).
    pub must_sync: bool,
}

/// The node as the application drives it.
pub struct RawNode<S: Storage> {
    raft: core::Raft<S>,
    previous_soft: SoftState,
    previous_hard: HardState,
    /// What the last `ready()` handed out, acknowledged by `advance` (the caller may take
    /// the fields out of the Ready it passes back).
    handed_out: HandedOut,
}

#[derive(Debug, Default)]
struct HandedOut {
    hard_state: Option<HardState>,
    snapshot_index: Option<u64>,
    last_entry: Option<(u64, u64)>,
    last_committed: Option<u64>,
}

/// The entries of an append follow the entry (`index`, `log_term`) it names, one index
/// after another, in terms that never go down and never pass the sender's: anything else
/// is damaged, and stepping it could overwrite what this log already committed.
fn check_appended_entries(message: &Message) -> Result<(), Error> {
    let mut previous_term = message.log_term;
    for (at, entry) in message.entries.iter().enumerate() {
        let expected = message.index.checked_add(at as u64 + 1);
        if Some(entry.index) != expected {
            return Err(Error::Malformed(format!(
                "append after index {} carries entry {} in place {at}",
                message.index, entry.index
            )));
        }
        if entry.term < previous_term || entry.term > message.term {
            return Err(Error::Malformed(format!(
                "append in term {} carries entry {} of term {} after term {previous_term}",
                message.term, entry.index, entry.term
            )));
        }
        previous_term = entry.term;
    }
    Ok(())
}

impl<S: Storage> RawNode<S> {
    /// Starts a node from what `storage` holds; `seed` drives its election timeouts.
    pub fn new(config: &Config, storage: S, seed: u64) -> Result<Self, Error> {
        let raft = core::Raft::new(config, storage, seed)?;
        let previous_hard = raft.hard_state();
        Ok(Self {
            previous_soft: SoftState {
                leader_id: raft.leader,
                role: raft.role,
            },
            previous_hard,
            raft,
            handed_out: HandedOut::default(),
        })
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now.
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.raft.step(Message {
            msg_type: MessageType::Hup as i32,
            ..Default::default()
        })
    }

    /// Feeds a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        let kind = message.msg_type();
        if matches!(
            kind,
            MessageType::Hup
                | MessageType::Beat
                | MessageType::Unreachable
                | MessageType::SnapStatus
                | MessageType::CheckQuorum
        ) {
            return Err(Error::LocalMessageFromPeer);
        }
        // Only forwarded proposals and reads travel without a term (the leader treats
        // them as its own input); every other message is sent in its sender's term, so one
        // without a term is damaged.
        let forwarded = matches!(kind, MessageType::Propose | MessageType::ReadIndex);
        if message.term == 0 && !forwarded {
            return Err(Error::Malformed(format!("{kind:?} without a term")));
        }
        if kind == MessageType::Append {
            check_appended_entries(&message)?;
        }
        self.raft.step(message)
    }

    pub fn propose(&mut self, data: Bytes) -> Result<(), Error> {
        self.raft.step(Message {
            msg_type: MessageType::Propose as i32,
            from: self.raft.id,
            entries: vec![Entry {
                data,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    pub fn propose_conf_change(&mut self, change: ConfChangeV2) -> Result<(), Error> {
        self.raft.step(Message {
            msg_type: MessageType::Propose as i32,
            from: self.raft.id,
            entries: vec![Entry {
                entry_type: EntryType::ConfChangeV2 as i32,
                data: change.encode_to_vec().into(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// Asks for a linearizable read point; the answer is a [`ReadState`] with `context`.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        self.raft.step(Message {
            msg_type: MessageType::ReadIndex as i32,
            from: self.raft.id,
            entries: vec![Entry {
                data: context,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        let _ = self.raft.step(Message {
            msg_type: MessageType::TransferLeader as i32,
            from: to,
            ..Default::default()
        });
    }

    /// Applies a committed configuration change; returns the new membership.
    pub fn apply_conf_change(&mut self, change: &ConfChangeV2) -> ConfState {
        self.raft.apply_conf_change(change)
    }

    /// As [`RawNode::apply_conf_change`], but says why a change that does not fit the
    /// current configuration was refused.
    pub fn try_apply_conf_change(&mut self, change: &ConfChangeV2) -> Result<ConfState, Error> {
        self.raft.try_apply_conf_change(change)
    }

    /// Tells the leader that `to` could not be reached (its progress falls back to probe).
    pub fn report_unreachable(&mut self, to: u64) {
        let _ = self.raft.step(Message {
            msg_type: MessageType::Unreachable as i32,
            from: to,
            ..Default::default()
        });
    }

    /// Tells the leader how sending a snapshot to `to` ended.
    pub fn report_snapshot(&mut self, to: u64, failed: bool) {
        let _ = self.raft.step(Message {
            msg_type: MessageType::SnapStatus as i32,
            from: to,
            reject: failed,
            ..Default::default()
        });
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.raft.leader,
            role: self.raft.role,
        }
    }

    pub fn has_ready(&self) -> bool {
        let hard = self.raft.hard_state();
        self.soft_state() != self.previous_soft
            || hard != self.previous_hard
            || self.raft.log.unstable_snapshot().is_some()
            || !self.raft.log.unstable_entries().is_empty()
            || self.raft.log.has_next_committed_entries()
            || !self.raft.msgs.is_empty()
            || !self.raft.msgs_after_persist.is_empty()
            || !self.raft.read_states.is_empty()
    }

    pub fn ready(&mut self) -> Ready {
        let soft = self.soft_state();
        let hard = self.raft.hard_state();
        let entries = self.raft.log.unstable_entries().to_vec();
        let hard_changed = hard != self.previous_hard;
        let must_sync = !entries.is_empty()
            || hard.term != self.previous_hard.term
            || hard.vote != self.previous_hard.vote;
        let ready = Ready {
            soft_state: (soft != self.previous_soft).then_some(soft),
            hard_state: hard_changed.then_some(hard),
            read_states: std::mem::take(&mut self.raft.read_states),
            entries,
            snapshot: self.raft.log.unstable_snapshot().cloned(),
            committed_entries: self.raft.log.next_committed_entries(),
            messages: std::mem::take(&mut self.raft.msgs),
            persisted_messages: std::mem::take(&mut self.raft.msgs_after_persist),
            must_sync,
        };
        self.previous_soft = soft;
        self.handed_out = HandedOut {
            hard_state: ready.hard_state,
            snapshot_index: ready
                .snapshot
                .as_ref()
                .map(|s| s.metadata.as_ref().map_or(0, |m| m.index)),
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            last_committed: ready.committed_entries.last().map(|e| e.index),
        };
        ready
    }

    /// The caller finished steps 3–7 for the last `ready()`. The Ready is passed back for
    /// clarity only: what was handed out is remembered, so the caller may have taken its
    /// fields.
    pub fn advance(&mut self, _ready: Ready) {
        let handed_out = std::mem::take(&mut self.handed_out);
        if let Some(hard) = handed_out.hard_state {
            self.previous_hard = hard;
        }
        if let Some(index) = handed_out.snapshot_index {
            self.raft.log.stable_snapshot_to(index);
        }
        if let Some((index, term)) = handed_out.last_entry {
            self.raft.log.stable_to(index, term);
        }
        if let Some(index) = handed_out.last_committed {
            self.raft.applied_to(index);
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.raft.id,
            term: self.raft.term,
            vote: self.raft.vote,
            commit: self.raft.log.committed,
            applied: self.raft.log.applied,
            leader: self.raft.leader,
            role: self.raft.role,
            last_index: self.raft.log.last_index(),
        }
    }

    /// On the leader, the highest log index known to be replicated on member `id`.
    pub fn match_index(&self, id: u64) -> Option<u64> {
        if self.raft.role != Role::Leader {
            return None;
        }
        self.raft.tracker.progress.get(&id).map(|p| p.matched)
    }

    /// The membership the core currently uses.
    pub fn conf_state(&self) -> ConfState {
        self.raft.conf_state()
    }

    /// The storage the core reads.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The terms of the entries in `[low, high)`, for invariant checks.
    pub fn log_terms(&self, low: u64, high: u64) -> Vec<(u64, u64)> {
        let high = high.min(self.raft.log.last_index() + 1);
        self.raft
            .log
            .slice(low, high, u64::MAX)
            .unwrap_or_default()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    pub fn first_index(&self) -> u64 {
        self.raft.log.first_index()
    }
}
