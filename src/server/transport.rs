//! The Transport seam: how Raft messages reach other members.
//!
//! The Raft task hands every outgoing message to a `Transport`; delivery is best effort
//! (Raft retransmits what is lost), so `send` never blocks and never fails. A one-member
//! cluster has no peers, and its core never addresses a message to anyone else.

use crate::raft::Message;

pub trait Transport: Send + Sync {
    /// Queues `message` for its destination. A full queue or an unknown destination drops it.
    fn send(&self, message: Message);
}

/// The transport of a member that has no peers.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, message: Message) {
        tracing::warn!(to = message.to, "no route to member; message dropped");
    }
}
