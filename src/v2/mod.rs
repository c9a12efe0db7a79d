//! etcd's v2 keyspace (served with `--enable-v2`): a tree of directories and string
//! values with TTLs, separate from the v3 keyspace, as etcd 3.4 keeps it.
//!
//! - [`store`]: the tree and its operations (get, set, create, update, compare-and-swap,
//!   delete, compare-and-delete, expiry), each numbered by the store's own index, and
//!   the history of the last 1000 events that watches start from. Pure and
//!   deterministic: every member applies the same requests from the log to the same tree.
//! - [`error`]: etcd's v2 error codes, messages and HTTP statuses.
//!
//! Every change travels through Raft as a `V2Request` and is persisted node by node in
//! the backend's `v2` table in the same transaction as the applied index, so the tree
//! survives restarts and travels in the snapshots members send each other.

pub mod error;
pub mod store;

pub use error::V2Error;
pub use store::{Action, Event, NodeRecord, NodeView, Op, Stats, V2Store};

/// The smallest expiration a request may carry: earlier ones mean "never" (etcd's
/// `minExpireTime`, 2000-01-01T00:00:00Z, in nanoseconds since the Unix epoch).
pub const MIN_EXPIRE_UNIX_NANOS: i64 = 946_684_800_000_000_000;

/// Events a watch may start from: the newest this many.
pub const HISTORY_EVENTS: usize = 1000;

/// The wall clock in Unix nanoseconds: expirations are chosen, and TTLs rendered, by it.
pub fn unix_nanos_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos().min(i64::MAX as u128) as i64)
}

/// Go's `path.Clean(path.Join("/", p))`: an absolute path without `.`, `..`, repeated or
/// trailing slashes.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut cleaned = String::with_capacity(path.len() + 1);
    for part in &parts {
        cleaned.push('/');
        cleaned.push_str(part);
    }
    if cleaned.is_empty() {
        cleaned.push('/');
    }
    cleaned
}

/// The directory and the last component of a clean path (`/a/b` → `/a`, `b`).
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(at) => (&path[..at], &path[at + 1..]),
        None => ("/", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_as_go_cleans_them() {
        assert_eq!(clean_path(""), "/");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("foo"), "/foo");
        assert_eq!(clean_path("/foo/"), "/foo");
        assert_eq!(clean_path("//foo//bar/"), "/foo/bar");
        assert_eq!(clean_path("/foo/./bar/../baz"), "/foo/baz");
        assert_eq!(clean_path("/../.."), "/");
        assert_eq!(split_path("/a/b"), ("/a", "b"));
        assert_eq!(split_path("/a"), ("/", "a"));
    }
}
