//! The write-ahead log and the snapshot files: what makes an acknowledged write survive a
//! crash.
//!
//! # Design
//!
//! The log is a directory of segment files (`segment.rs`), each a sequence of records
//! (`record.rs`): entries, hard states, snapshot markers and the member's metadata, every
//! one framed with its length, type and a CRC32C chained from the record before it, across
//! segments too. [`Wal::save`] writes one batch (a Ready's entries and hard state) with one
//! write and, when asked, one fdatasync: group commit. A segment past
//! [`WalOptions::segment_bytes`] is sealed (synced) and a new one is cut, written whole
//! under a temporary name, synced, renamed and the directory synced, so a segment is never
//! visible half made. [`Wal::release_to`] drops whole segments below a snapshot.
//!
//! [`SnapshotFiles`] keeps the newest few Raft snapshots, each written to a temporary file,
//! synced, renamed and the directory synced, and CRC-checked when loaded.
//!
//! # Invariants
//!
//! - Only the last segment can end in a torn write: every earlier one was synced before its
//!   successor got a name. Recovery ([`Wal::open`]) cuts a torn tail off the last segment
//!   (keeping the damaged bytes in a `.broken` file) and refuses to open on any other damage,
//!   naming the file and offset. Nothing is skipped silently.
//! - Once an I/O call of the log fails, every later call fails with [`WalError::Latched`]
//!   (see `log.rs` for why).
//!
//! `docs/wal-format.md` has the byte layout and every crash case. Start reading at `log.rs`.

mod log;
mod record;
mod segment;
mod snapshot;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use log::{SyncObserver, Wal};
pub use snapshot::{remove_images_before, snapshot_db_path, IncomingImage, SnapshotFiles};

use crate::raft::{Entry, HardState};

/// Who wrote a WAL: stored in every segment and checked on open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalMetadata {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// Tuning of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is cut once it holds this many bytes.
    pub segment_bytes: u64,
    /// Extend new segments to `segment_bytes` up front, so that appends do not change the
    /// file's size (and fdatasync has no size to write).
    pub preallocate: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            preallocate: true,
        }
    }
}

/// What a WAL held when it was opened.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    pub metadata: WalMetadata,
    /// The last hard state written, if any.
    pub hard_state: Option<HardState>,
    /// Every entry still in the log, in index order. A later entry with an index already
    /// seen replaced that entry and all after it (a new leader overwrote the tail). The
    /// caller skips those at or below its snapshot.
    pub entries: Vec<Entry>,
    /// The last snapshot marker written: (index, term).
    pub snapshot_marker: Option<(u64, u64)>,
}

/// Failures of the log and the snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt at offset {offset}: {reason}", .file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier I/O failure stopped the log; the member must restart and recover.
    #[error("WAL stopped after an earlier I/O failure ({0})")]
    Latched(String),
    #[error("{} already holds a WAL", .0.display())]
    AlreadyExists(PathBuf),
    #[error("no WAL in {}", .0.display())]
    NotFound(PathBuf),
    #[error("a record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    #[error("snapshot has no metadata")]
    SnapshotWithoutMetadata,
}

/// Maps an I/O error of `op` on `path` to [`WalError::Io`].
fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { op, path, source }
}
