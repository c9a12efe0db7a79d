//! Layer 3, tasks: the loops that run for the life of a member — the Raft loop (the only
//! owner of the consensus core and the WAL), the applier, the read-index rounds, lease
//! expiry, and the peer transport that carries Raft messages out.

pub(crate) mod apply;
pub(crate) mod apply_chain;
pub(crate) mod lease_expiry;
#[cfg(madsim)]
pub(crate) mod message_faults;
pub(crate) mod peer_transport;
pub(crate) mod raft_node;
pub(crate) mod read_index;
