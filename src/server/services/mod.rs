//! Layer 4, services: one per etcd gRPC service (KV, Watch, Lease, Cluster, Maintenance),
//! the peer service that receives Raft traffic and answers what followers forward, and
//! forwarding itself, and the middleware every client request passes first. Requests are
//! validated here, at the edge.

pub(crate) mod cluster;
pub(crate) mod forward;
pub(crate) mod kv;
pub(crate) mod lease;
pub(crate) mod limits;
pub(crate) mod maintenance;
pub(crate) mod middleware;
pub(crate) mod peer;
pub(crate) mod status;
pub(crate) mod validate;
pub(crate) mod watch;
