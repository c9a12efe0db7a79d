//! One oxcd member: the Ready loop, the applier, reads, and the etcd v3 gRPC services.
//!
//! # Data path of a write
//!
//! 1. A gRPC handler (`kv.rs`, `lease.rs`, …) validates the request at the edge
//!    (`validate.rs`); a bad request gets etcd's exact error and never reaches the log.
//! 2. It wraps the request in an `InternalRequest` envelope with a unique id, registers a
//!    waiter under that id and hands the encoded envelope to the Raft task (`node.rs`).
//! 3. The Raft task drives the pure consensus core: for every `Ready` it writes the new
//!    entries and hard state to the WAL with one fdatasync (group commit: every proposal that
//!    arrived since the last Ready shares it), then passes the committed entries to the
//!    applier, then advances the core.
//! 4. The applier (`apply.rs`) applies committed entries in log order to the MVCC store and the
//!    lessor, storing the applied index in the same backend batch, and completes the waiter
//!    of each entry proposed here with its response.
//! 5. The backend commits every `--backend-batch-interval` or `--backend-batch-limit`
//!    entries. The WAL, not the backend commit, makes an acknowledged write durable: after a
//!    crash the member replays the WAL from the backend's applied index.
//!
//! # Reads
//!
//! A linearizable read waits for a ReadIndex round (`read.rs`: all reads waiting at that
//! moment share one round), then for the applier to reach that index, then reads the MVCC
//! store locally. A serializable read reads locally at once.
//!
//! # Layout
//!
//! - `config.rs`: flags and defaults (etcd's names).
//! - `member.rs`: the shared state of the member.
//! - `node.rs`: the Raft task (the Ready loop).
//! - `apply.rs`: the applier (entries → MVCC, lessor, alarms).
//! - `read.rs`: batched linearizable reads.
//! - `store.rs`: the MVCC store, lessor and backend as the member uses them.
//! - `range.rs`, `txn.rs`: etcd's Range, Put, DeleteRange and Txn semantics.
//! - `start.rs`: opening and replaying the storage, starting the tasks.
//! - `transport.rs`: the seam Raft messages leave through; `peer.rs`: the gRPC transport.
//! - `observe.rs` (simulation builds only): the hooks the simulator's invariant checks use.
//! - `kv.rs`, `watch.rs`, `lease.rs`, `maintenance.rs`, `cluster.rs`: the gRPC services.
//! - `error.rs`: etcd's error codes and messages; `validate.rs`: edge validation.
//! - `ids.rs`: etcd-compatible member and cluster ids.
//! - `grpc.rs`: serving the services on the client listeners; `authority/` (production
//!   builds only): mending client connections whose `:authority` is a URL, for h2;
//!   `limits.rs`: oversized messages refused in grpc-go's words.

pub mod apply;
#[cfg(not(madsim))]
pub mod authority;
pub mod cluster;
pub mod config;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod kv;
pub mod lease;
pub mod limits;
pub mod maintenance;
pub mod member;
pub mod node;
#[cfg(madsim)]
pub mod observe;
pub mod peer;
pub mod progress;
pub mod range;
pub mod read;
pub mod start;
pub mod store;
pub mod transport;
pub mod txn;
pub mod validate;
pub mod watch;

pub use config::Config;
pub use member::Member;
