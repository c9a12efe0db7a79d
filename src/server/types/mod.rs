//! Layer 1, shared types: what every other layer speaks, depending on nothing above it —
//! configuration, etcd's errors, ids, the metrics registry (and the process numbers it
//! shows), the requests and results that pass between tasks, and the seams (the transport
//! trait, the simulator's observer hooks).

pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod ids;
pub(crate) mod json;
pub(crate) mod metrics;
#[cfg(madsim)]
pub mod observe;
pub(crate) mod process;
pub(crate) mod progress;
pub(crate) mod request;
pub(crate) mod stream;
pub mod transport;
