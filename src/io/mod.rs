//! The disk and clock seams: everything oxcd writes goes through [`Disk`] and
//! [`DiskFile`], and every duration a member measures goes through its [`Clock`] (see
//! `clock.rs`).
//!
//! Two implementations sit behind the disk traits:
//!
//! - [`StdDisk`]: the real file system through `std::fs` (never `tokio::fs`, which does not
//!   run under madsim). `sync_data` is fdatasync, `sync_dir` fsyncs the directory itself so
//!   that created, renamed and removed names survive a power cut.
//! - [`SimDisk`]: an in-memory disk for tests and the simulator. Every file has a *durable*
//!   image (what a power cut keeps) and a *volatile* image (what reads see). Directory
//!   entries are durable only after `sync_dir` of their parent. [`SimDisk::crash`] throws
//!   away everything volatile and may tear the unsynced writes at 512-byte sectors, and
//!   [`FaultConfig`] injects EIO on write, EIO on sync and ENOSPC, all from a seeded RNG.
//!
//! [`DiskBackend`] puts redb on top of a [`DiskFile`], so that the MVCC backend runs, and
//! crashes, on `SimDisk` in simulation exactly as it runs on `StdDisk` in production.
//!
//! # The contract callers may rely on
//!
//! 1. Data written to a file is durable only after `sync_data` on that file returned `Ok`.
//!    `sync_data` also makes the file's length durable (as fdatasync does).
//! 2. A new, renamed or removed name is durable only after `sync_dir` of its parent
//!    directory returned `Ok`. `rename` is atomic: after a crash either the old or the new
//!    name is visible, never neither.
//! 3. Directories made by `create_dir_all` are durable when it returns.
//! 4. A write that was not synced may survive a crash whole, partly (a prefix of its
//!    512-byte sectors, the rest old contents or zeros), or not at all.
//! 5. After an error from `sync_data` nothing may be assumed about the unsynced data: the
//!    kernel may have dropped it while still serving it from the page cache.

mod clock;
mod redb_backend;
mod sim_disk;
mod std_disk;

use std::fmt::Debug;
use std::io;
use std::path::Path;

pub use clock::{Clock, SimClock, SystemClock, Ticker, SIM_RATE_MAX, SIM_RATE_MIN};
pub use redb_backend::DiskBackend;
pub use sim_disk::{FaultConfig, SimDisk};
pub use std_disk::StdDisk;

/// The size of a disk sector: the unit a torn write keeps or loses.
pub const SECTOR_BYTES: u64 = 512;

/// A file system: names, directories and their durability. Object safe, shared as
/// `Arc<dyn Disk>`.
pub trait Disk: Send + Sync + Debug {
    /// Creates `path` and any missing parents, durably.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;

    /// The names of the entries of `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Opens the file at `path` for reading and writing, creating it (empty) when `create`
    /// is set and it does not exist. A created name is durable only after
    /// [`Disk::sync_dir`] of the parent.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>>;

    /// Atomically renames the file `from` to `to`, replacing `to`. Durable after
    /// [`Disk::sync_dir`] of the parent(s).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`. Durable after [`Disk::sync_dir`] of the parent.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Reads a whole file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, false)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0; len];
        file.read_exact_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// An open file. Every method takes `&self` (positioned I/O), so one handle can be shared,
/// as redb's storage backend requires.
pub trait DiskFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// The current length of the file.
    fn len(&self) -> io::Result<u64>;

    /// Truncates or extends (with zeros) the file to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the written data and the length durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(offset, buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the file",
                    ))
                }
                Ok(read) => {
                    buf = &mut buf[read..];
                    offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Appends `data` at the end of the file; returns the offset it was written at.
    fn append(&self, data: &[u8]) -> io::Result<u64> {
        let offset = self.len()?;
        self.write_at(offset, data)?;
        Ok(offset)
    }

    /// Grows the file to at least `len` bytes of zeros so that later writes inside it do
    /// not change the file's size. Never shrinks.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }
}
