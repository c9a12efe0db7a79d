//! [`SnapshotFiles`]: the newest few Raft snapshots, each in its own file.
//!
//! A file is named `{index:016x}-{term:016x}.snap`, so names sort by index, and holds:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "OXCDSNAP"
//!      8     4  format version, u32 little endian (1)
//!     12     4  CRC32C of the payload, u32 little endian
//!     16     8  payload length, u64 little endian
//!     24     n  payload: the protobuf encoding of the Raft Snapshot
//! ```
//!
//! A snapshot is written to `<name>.tmp`, synced, renamed and the directory synced, so a
//! `.snap` file is whole once visible; damage to one is corruption, and loading the newest
//! fails rather than fall back to an older one silently.
//!
//! A snapshot received from the leader comes with the leader's backend image. The image is
//! saved first, as `{index:016x}.snap.db`: written as it arrives to a `.snap.db.tmp` file of
//! its own ([`IncomingImage`]), synced, renamed and the directory synced. Then come the
//! snapshot file and the WAL marker; the applier then moves the image over the member's
//! backend. A restart that finds the image of the newest snapshot still there finishes that
//! move before it opens the backend; any other image is left over from a save a crash
//! interrupted, or from a snapshot the Raft core turned down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::{io_error, WalError};
use crate::io::Disk;
use crate::raft::Snapshot;

const MAGIC: &[u8; 8] = b"OXCDSNAP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 24;
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";
const DB_SUFFIX: &str = ".snap.db";

/// Where the backend image of the snapshot at `index` waits in the snapshot directory `dir`.
pub fn snapshot_db_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}{DB_SUFFIX}"))
}

/// A backend image being received, written piece by piece to a temporary file; `finish`
/// makes it the image of its snapshot. Dropped unfinished, the file is removed.
pub struct IncomingImage {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    index: u64,
    tmp: PathBuf,
    file: Option<Box<dyn crate::io::DiskFile>>,
    written: u64,
}

impl IncomingImage {
    /// Starts receiving the image of the snapshot at `index` into `dir`. `transfer` tells
    /// concurrent transfers of one snapshot apart.
    pub fn create(
        disk: Arc<dyn Disk>,
        dir: &Path,
        index: u64,
        transfer: u64,
    ) -> Result<IncomingImage, WalError> {
        let tmp = dir.join(format!("{index:016x}-{transfer}{DB_SUFFIX}{TMP_SUFFIX}"));
        let file = disk.open(&tmp, true).map_err(io_error("create", &tmp))?;
        file.set_len(0).map_err(io_error("truncate", &tmp))?;
        Ok(IncomingImage {
            disk,
            dir: dir.to_path_buf(),
            index,
            tmp,
            file: Some(file),
            written: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Writes the next piece.
    pub fn append(&mut self, data: &[u8]) -> Result<(), WalError> {
        let file = self
            .file
            .as_ref()
            .expect("an image is written until finished");
        file.write_at(self.written, data)
            .map_err(io_error("write", &self.tmp))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Makes the image durable under its snapshot's name.
    pub fn finish(mut self) -> Result<(), WalError> {
        let file = self.file.take().expect("an image is finished once");
        file.sync_data().map_err(io_error("fdatasync", &self.tmp))?;
        drop(file);
        let path = snapshot_db_path(&self.dir, self.index);
        self.disk
            .rename(&self.tmp, &path)
            .map_err(io_error("rename", &self.tmp))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(io_error("fsync directory", &self.dir))
    }
}

impl Drop for IncomingImage {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.disk.remove(&self.tmp);
        }
    }
}

/// Removes the backend images in `dir` of snapshots before `index`, once the image of the
/// snapshot at `index` is installed: a snapshot the Raft core turned down leaves its image
/// behind. Later ones may belong to snapshots on their way.
pub fn remove_images_before(disk: &dyn Disk, dir: &Path, index: u64) -> Result<(), WalError> {
    for name in disk.list(dir).map_err(io_error("list", dir))? {
        let older = name
            .strip_suffix(DB_SUFFIX)
            .and_then(|stem| u64::from_str_radix(stem, 16).ok())
            .is_some_and(|at| at < index);
        if older {
            let path = dir.join(&name);
            disk.remove(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// The snapshot directory of one member.
#[derive(Debug)]
pub struct SnapshotFiles {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// How many snapshot files to keep. Invariant: at least 1.
    keep: usize,
}

impl SnapshotFiles {
    /// Opens (creating if needed) the snapshot directory `dir`, keeping the newest `keep`
    /// snapshots (at least one) on every save.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, keep: usize) -> Result<Self, WalError> {
        disk.create_dir_all(dir)
            .map_err(io_error("create directory", dir))?;
        let names = disk.list(dir).map_err(io_error("list", dir))?;
        for name in names {
            if name.ends_with(&format!("{SUFFIX}{TMP_SUFFIX}")) {
                // A save a crash interrupted before its rename: never part of the set.
                let path = dir.join(&name);
                disk.remove(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(Self {
            disk,
            dir: dir.to_path_buf(),
            keep: keep.max(1),
        })
    }

    /// Writes `snapshot` durably, then removes all but the newest `keep` snapshots.
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), WalError> {
        let metadata = snapshot
            .metadata
            .as_ref()
            .ok_or(WalError::SnapshotWithoutMetadata)?;
        let name = format!("{:016x}-{:016x}{SUFFIX}", metadata.index, metadata.term);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));

        let payload = snapshot.encode_to_vec();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&payload);
        self.write_durably(&tmp, &path, &bytes)?;
        self.purge()
    }

    /// Writes `bytes` to `tmp`, syncs, renames it to `path` and syncs the directory.
    fn write_durably(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), WalError> {
        let file = self.disk.open(tmp, true).map_err(io_error("create", tmp))?;
        file.set_len(0).map_err(io_error("truncate", tmp))?;
        file.write_at(0, bytes).map_err(io_error("write", tmp))?;
        file.sync_data().map_err(io_error("fdatasync", tmp))?;
        drop(file);
        self.disk
            .rename(tmp, path)
            .map_err(io_error("rename", tmp))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(io_error("fsync directory", &self.dir))
    }

    /// Where the backend image that came with the snapshot at `index` is kept until the
    /// applier moves it over the backend.
    pub fn db_path(&self, index: u64) -> PathBuf {
        snapshot_db_path(&self.dir, index)
    }

    /// Removes every backend image but the one of the snapshot at `keep` (whose move over
    /// the backend a crash interrupted). Returns that one's path if it is there.
    pub fn settle_dbs(&self, keep: Option<u64>) -> Result<Option<PathBuf>, WalError> {
        let mut kept = None;
        for name in self
            .disk
            .list(&self.dir)
            .map_err(io_error("list", &self.dir))?
        {
            let path = self.dir.join(&name);
            if Some(&path) == keep.map(|index| self.db_path(index)).as_ref() {
                kept = Some(path);
            } else if name.ends_with(DB_SUFFIX)
                || name.ends_with(&format!("{DB_SUFFIX}{TMP_SUFFIX}"))
            {
                self.disk.remove(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(kept)
    }

    /// The newest snapshot, or `None` if there is none. A damaged newest snapshot is an
    /// error naming its file.
    pub fn load_newest(&self) -> Result<Option<Snapshot>, WalError> {
        let Some(name) = self.names()?.pop() else {
            return Ok(None);
        };
        let path = self.dir.join(name);
        let bytes = self.disk.read_all(&path).map_err(io_error("read", &path))?;
        let corrupt = |offset: u64, reason: String| WalError::Corrupt {
            file: path.clone(),
            offset,
            reason,
        };
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(0, format!("only {} bytes", bytes.len())));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(corrupt(8, format!("unknown format version {version}")));
        }
        let stored_crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let mut len_bytes = [0; 8];
        len_bytes.copy_from_slice(&bytes[16..24]);
        let len = u64::from_le_bytes(len_bytes);
        let payload = &bytes[HEADER_BYTES..];
        if len != payload.len() as u64 {
            return Err(corrupt(
                16,
                format!(
                    "header says {len} payload bytes, file has {}",
                    payload.len()
                ),
            ));
        }
        let crc = crc32c::crc32c(payload);
        if crc != stored_crc {
            return Err(corrupt(
                HEADER_BYTES as u64,
                format!("CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"),
            ));
        }
        let snapshot = Snapshot::decode(payload).map_err(|error| {
            corrupt(
                HEADER_BYTES as u64,
                format!("undecodable snapshot: {error}"),
            )
        })?;
        Ok(Some(snapshot))
    }

    /// Snapshot file names, oldest first.
    fn names(&self) -> Result<Vec<String>, WalError> {
        let mut names: Vec<String> = self
            .disk
            .list(&self.dir)
            .map_err(io_error("list", &self.dir))?
            .into_iter()
            .filter(|name| name.ends_with(SUFFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    fn purge(&self) -> Result<(), WalError> {
        let names = self.names()?;
        let excess = names.len().saturating_sub(self.keep);
        if excess == 0 {
            return Ok(());
        }
        for name in &names[..excess] {
            let path = self.dir.join(name);
            self.disk.remove(&path).map_err(io_error("remove", &path))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .map_err(io_error("fsync directory", &self.dir))
    }
}
