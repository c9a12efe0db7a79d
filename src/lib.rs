//! oxcd: an etcd-compatible, distributed, reliable key-value store.
//!
//! # Layout
//!
//! - [`raft`]: the consensus core. Pure and deterministic: no async, no I/O, no clock.
//! - [`io`]: the disk seam the simulator swaps (and redb's storage over it).
//! - [`wal`]: the write-ahead log and snapshot files, over the disk seam.
//! - [`bolt`]: bbolt database files, the format of etcd's backend and snapshots: a
//!   reader and a streaming writer.
//! - [`mvcc`]: revisions, the key index, the KV store on redb, the watch hub.
//! - [`lease`]: the lessor.
//! - [`server`]: one member, in layers: shared types, state owners, tasks (the Ready
//!   loop, the applier), the gRPC services, and the wiring that starts them.
//! - `net` (production builds only): connection adapters beneath HTTP/2 (the `:authority`
//!   mending that etcdctl's `--cluster` commands need; telling gRPC from HTTP/1.1 on one
//!   port), TLS for client and peer connections, and HTTP/1.1 serving for the metrics
//!   and health endpoints.
//! - `fuzz` (production builds only): the entry points of the fuzz targets in
//!   `tests/fuzz`, one per decoder of outside input.
//! - [`v2`]: the v2 keyspace of `--enable-v2` (a tree with TTLs, separate from v3).
//! - [`planted`]: bugs planted on purpose (only with the `planted-bugs` feature), which
//!   the simulator must catch.
//! - [`proto`]: the etcd v3 API types, generated at build time from `proto/`.
//!
//! Dependencies point one way: `raft` depends on nothing of ours; `wal`, `mvcc` and
//! `lease` depend on `io` at most; `server` ties them together.

pub mod auth;
pub mod bolt;
#[cfg(not(madsim))]
pub mod fuzz;
pub mod io;
pub mod lease;
pub mod mvcc;
#[cfg(not(madsim))]
pub mod net;
pub mod planted;
pub mod proto;
pub mod raft;
pub mod server;
pub mod v2;
pub mod wal;
