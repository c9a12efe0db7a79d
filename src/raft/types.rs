//! The messages the Raft core consumes and produces.
//!
//! These are plain Rust structs that also derive `prost::Message`, so that the WAL, the
//! snapshot files and the peer transport can encode them as protobuf without a generated
//! module: the core stays free of build-time code generation and of any I/O. Field tags are
//! part of the on-disk format (the WAL stores encoded `Entry` and `HardState` values):
//! never renumber a field, only add new ones.

use bytes::Bytes;

/// What an entry's `data` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    /// Application data (or empty: the entry a new leader appends, Raft §5.4.2).
    Normal = 0,
    /// An encoded [`ConfChangeV2`].
    ConfChangeV2 = 1,
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Entry {
    #[prost(enumeration = "EntryType", tag = "1")]
    pub entry_type: i32,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
}

/// The state that must be durable before a node answers a vote or acknowledges an append.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct HardState {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The candidate voted for in `term`, 0 for none.
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    #[prost(uint64, tag = "3")]
    pub commit: u64,
}

/// The membership at a point of the log. In a joint configuration `voters_outgoing` is
/// non-empty and decisions need a majority of both `voters` and `voters_outgoing`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ConfState {
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub learners: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub voters_outgoing: Vec<u64>,
    /// Learners that become voters when the joint configuration is left.
    #[prost(uint64, repeated, tag = "4")]
    pub learners_next: Vec<u64>,
    /// Leave the joint configuration automatically once it is committed.
    #[prost(bool, tag = "5")]
    pub auto_leave: bool,
}

/// Where a snapshot sits in the log and the membership at that point.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SnapshotMetadata {
    #[prost(message, optional, tag = "1")]
    pub conf_state: Option<ConfState>,
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(uint64, tag = "3")]
    pub term: u64,
}

/// The application state up to `metadata.index`, in the application's own encoding.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Snapshot {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<SnapshotMetadata>,
}

/// Every kind of message the core sends or accepts.
///
/// `Hup`, `Beat`, `Propose` (when local), `Unreachable`, `SnapStatus`, `CheckQuorum` and
/// `TransferLeader` (when local) are local inputs that never travel on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    Hup = 0,
    Beat = 1,
    Propose = 2,
    Append = 3,
    AppendResponse = 4,
    RequestVote = 5,
    RequestVoteResponse = 6,
    Snapshot = 7,
    Heartbeat = 8,
    HeartbeatResponse = 9,
    Unreachable = 10,
    SnapStatus = 11,
    CheckQuorum = 12,
    TransferLeader = 13,
    TimeoutNow = 14,
    ReadIndex = 15,
    ReadIndexResponse = 16,
    RequestPreVote = 17,
    RequestPreVoteResponse = 18,
}

/// One Raft message between two members (or a local input to the core).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "MessageType", tag = "1")]
    pub msg_type: i32,
    #[prost(uint64, tag = "2")]
    pub to: u64,
    #[prost(uint64, tag = "3")]
    pub from: u64,
    #[prost(uint64, tag = "4")]
    pub term: u64,
    /// For Append: the term of the entry before `entries`; for votes: the candidate's last
    /// log term.
    #[prost(uint64, tag = "5")]
    pub log_term: u64,
    #[prost(uint64, tag = "6")]
    pub index: u64,
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<Entry>,
    #[prost(uint64, tag = "8")]
    pub commit: u64,
    #[prost(message, optional, tag = "9")]
    pub snapshot: Option<Snapshot>,
    #[prost(bool, tag = "10")]
    pub reject: bool,
    /// With a rejection: the follower's hint of where the logs may agree.
    #[prost(uint64, tag = "11")]
    pub reject_hint: u64,
    /// Opaque context: the read-index request id, or the campaign kind for a transfer.
    #[prost(bytes = "bytes", tag = "12")]
    pub context: Bytes,
    /// With a rejection: the term of the entry at `reject_hint` (fast backtracking).
    #[prost(uint64, tag = "13")]
    pub log_term_hint: u64,
}

/// What one [`ConfChangeSingle`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConfChangeType {
    AddNode = 0,
    RemoveNode = 1,
    AddLearnerNode = 2,
}

/// How a [`ConfChangeV2`] moves between configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConfChangeTransition {
    /// A single change that needs no joint step is applied directly; anything else enters
    /// a joint configuration that is left automatically once committed.
    Auto = 0,
    /// Always joint; left automatically.
    JointImplicit = 1,
    /// Always joint; left only by an explicit empty `ConfChangeV2`.
    JointExplicit = 2,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ConfChangeSingle {
    #[prost(enumeration = "ConfChangeType", tag = "1")]
    pub change_type: i32,
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
}

/// A membership change. An empty `changes` list means "leave the joint configuration".
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConfChangeV2 {
    #[prost(enumeration = "ConfChangeTransition", tag = "1")]
    pub transition: i32,
    #[prost(message, repeated, tag = "2")]
    pub changes: Vec<ConfChangeSingle>,
    /// Opaque to the core; the server puts the member's details here.
    #[prost(bytes = "bytes", tag = "3")]
    pub context: Bytes,
}
