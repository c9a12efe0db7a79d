//! Layer 4, services: one per etcd gRPC service (KV, Watch, Lease, Cluster, Maintenance,
//! Auth)
//! and the gRPC health service, the peer service that receives Raft traffic and answers
//! what followers forward, and forwarding itself, the middleware every client request
//! passes first, the gRPC metrics layer, and the HTTP endpoints (metrics, health,
//! version). Requests are validated here, at the edge.

pub(crate) mod auth;
pub(crate) mod cluster;
pub(crate) mod forward;
#[cfg(not(madsim))]
pub(crate) mod gateway;
#[cfg(not(madsim))]
pub(crate) mod grpc_metrics;
pub(crate) mod health;
#[cfg(not(madsim))]
pub(crate) mod http_endpoints;
pub(crate) mod kv;
pub(crate) mod lease;
pub(crate) mod limits;
pub(crate) mod maintenance;
pub(crate) mod middleware;
pub(crate) mod peer;
pub(crate) mod status;
#[cfg(not(madsim))]
pub(crate) mod v2http;
pub(crate) mod validate;
pub(crate) mod watch;
