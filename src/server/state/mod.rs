//! Layer 2, state owners: each owns one piece of a member's state and its persistence —
//! the store (keys, leases, the backend), membership, alarms, the proposer (request ids
//! and waiters), the reads waiting for ReadIndex, the lifecycle — and [`server::Server`]
//! composes them. Nothing here runs on its own: the tasks of layer 3 drive it.

pub(crate) mod alarms;
pub(crate) mod auth;
pub(crate) mod etcd_image;
pub(crate) mod lifecycle;
pub(crate) mod membership;
pub(crate) mod proposer;
pub(crate) mod range;
pub(crate) mod reads;
pub(crate) mod server;
pub(crate) mod store;
pub(crate) mod txn;
