//! [`Wal`]: creating, recovering, appending to, cutting and releasing the log.
//!
//! A segment starts with a fixed header of records: the crc record (the CRC the previous
//! segment ended with, so the chain runs across segments), the metadata, and the latest
//! hard state and snapshot marker. Any single segment therefore says who wrote it and what
//! the state was when it was cut, so older segments can be deleted freely.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::record::{
    self, CrcRecord, MetadataRecord, RecordType, SnapshotMarkerRecord, PAYLOAD_BYTES_MAX,
};
use super::segment::{self, SegmentName, BROKEN_SUFFIX, SEGMENT_SUFFIX, TMP_SUFFIX};
use super::{io_error, Recovered, WalError, WalMetadata, WalOptions};
use crate::io::{Disk, DiskFile};
use crate::raft::{Entry, HardState};

/// The write-ahead log of one member.
///
/// # Latching
///
/// The first failed I/O call stops the log for good: every later call returns
/// [`WalError::Latched`]. After a failed fsync the page cache can no longer be trusted:
/// Linux reports a writeback error once and marks the dirty pages clean (or drops them), so
/// a retried fsync may succeed although the data never reached the disk, while reads keep
/// serving the cached bytes as if they had. Carrying on would acknowledge writes that a
/// crash loses. A failed write latches too: it may have written part of the batch, so the
/// offset and CRC chain kept here no longer describe the file. The way out is a restart,
/// which recovers from what is really on disk.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    options: WalOptions,
    metadata: WalMetadata,
    /// Segments on disk, oldest first. Invariant: non-empty, consecutive sequence numbers.
    segments: Vec<SegmentName>,
    /// The last segment, open for appending.
    tail: Box<dyn DiskFile>,
    /// Where the next record goes in `tail`.
    tail_offset: u64,
    /// CRC of the last record written: the seed of the next one.
    crc: u32,
    /// Index of the last entry written (0 before any).
    last_index: u64,
    hard_state: Option<HardState>,
    snapshot_marker: Option<(u64, u64)>,
    /// Whether `tail` holds writes not yet synced.
    dirty: bool,
    /// Why the log stopped, once an I/O call failed.
    latched: Option<String>,
    /// Encoding buffer, reused across batches.
    buf: Vec<u8>,
    /// Told how long each fdatasync of the tail took (the member's fsync histogram).
    sync_observer: Option<SyncObserver>,
}

/// Receives the duration of every fdatasync of the log's tail.
pub type SyncObserver = Box<dyn FnMut(Duration) + Send>;

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("tail_offset", &self.tail_offset)
            .field("last_index", &self.last_index)
            .field("latched", &self.latched)
            .finish()
    }
}

impl Wal {
    /// Whether `dir` holds a WAL (at least one segment).
    pub fn exists(disk: &dyn Disk, dir: &Path) -> bool {
        disk.list(dir)
            .is_ok_and(|names| names.iter().any(|name| SegmentName::parse(name).is_some()))
    }

    /// Creates a new, empty WAL in `dir` (made if missing). Fails if one is already there.
    /// The first segment appears whole or not at all.
    pub fn create(
        disk: Arc<dyn Disk>,
        dir: &Path,
        metadata: WalMetadata,
        options: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        if Self::exists(disk.as_ref(), dir) {
            return Err(WalError::AlreadyExists(dir.to_path_buf()));
        }
        disk.create_dir_all(dir)
            .map_err(io_error("create directory", dir))?;
        remove_leftovers(disk.as_ref(), dir)?;
        let name = SegmentName {
            sequence: 0,
            first_index: 1,
        };
        let (tail, tail_offset, crc) =
            write_segment(disk.as_ref(), dir, &options, &name, metadata, None, None, 0)?;
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            options,
            metadata,
            segments: vec![name],
            tail,
            tail_offset,
            crc,
            last_index: 0,
            hard_state: None,
            snapshot_marker: None,
            dirty: false,
            latched: None,
            buf: Vec::new(),
            sync_observer: None,
        };
        let recovered = Recovered {
            metadata,
            hard_state: None,
            entries: Vec::new(),
            snapshot_marker: None,
        };
        Ok((wal, recovered))
    }

    /// Opens the WAL in `dir` and reads it all back.
    ///
    /// A torn write at the end of the last segment is cut off (its bytes are kept in a
    /// `.broken` file next to the segment); any other damage fails with
    /// [`WalError::Corrupt`] naming the file and the offset.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let names = disk.list(dir).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                WalError::NotFound(dir.to_path_buf())
            } else {
                io_error("list", dir)(source)
            }
        })?;
        remove_leftovers(disk.as_ref(), dir)?;
        let mut segments: Vec<SegmentName> = names
            .iter()
            .filter_map(|name| SegmentName::parse(name))
            .collect();
        segments.sort_by_key(|name| name.sequence);
        for pair in segments.windows(2) {
            if pair[1].sequence != pair[0].sequence + 1 {
                return Err(WalError::Corrupt {
                    file: dir.join(pair[1].file_name()),
                    offset: 0,
                    reason: format!("segment {} before it is missing", pair[0].sequence + 1),
                });
            }
        }
        let Some(last) = segments.last().cloned() else {
            return Err(WalError::NotFound(dir.to_path_buf()));
        };

        let mut replay = Replay::default();
        let mut previous_crc = None;
        for name in &segments[..segments.len() - 1] {
            let path = dir.join(name.file_name());
            let bytes = disk.read_all(&path).map_err(io_error("read", &path))?;
            let end = segment::scan(&path, &bytes, previous_crc, false, |kind, payload, at| {
                replay.apply(&path, kind, payload, at)
            })?;
            previous_crc = Some(end.crc);
        }
        let path = dir.join(last.file_name());
        let bytes = disk.read_all(&path).map_err(io_error("read", &path))?;
        let end = segment::scan(&path, &bytes, previous_crc, true, |kind, payload, at| {
            replay.apply(&path, kind, payload, at)
        })?;
        let Some(metadata) = replay.metadata else {
            return Err(WalError::Corrupt {
                file: dir.join(segments[0].file_name()),
                offset: 0,
                reason: "no metadata record".into(),
            });
        };

        let tail = disk.open(&path, false).map_err(io_error("open", &path))?;
        if let Some((reason, damaged_end)) = &end.torn {
            repair_tail(
                disk.as_ref(),
                dir,
                &path,
                tail.as_ref(),
                &bytes[end.end..*damaged_end],
                end.end as u64,
                reason,
                &options,
            )?;
        }
        drop(bytes);
        // What was read back is what the caller will build on (and may acknowledge to the
        // leader), so it must be durable even if the last writer never synced it.
        tail.sync_data().map_err(io_error("fdatasync", &path))?;

        let last_index = replay
            .entries
            .last()
            .map_or(last.first_index.saturating_sub(1), |entry| entry.index);
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            options,
            metadata,
            segments,
            tail,
            tail_offset: end.end as u64,
            crc: end.crc,
            last_index,
            hard_state: replay.hard_state,
            snapshot_marker: replay.snapshot_marker,
            dirty: false,
            latched: None,
            buf: Vec::new(),
            sync_observer: None,
        };
        let recovered = Recovered {
            metadata,
            hard_state: replay.hard_state,
            entries: replay.entries,
            snapshot_marker: replay.snapshot_marker,
        };
        Ok((wal, recovered))
    }

    /// Appends a batch: `entries` (consecutive indices; an index at or below the last one
    /// written replaces the tail from there) and then `hard_state`, with one write, and
    /// with one fdatasync when `must_sync`. The batch is durable when this returns `Ok`
    /// with `must_sync` set.
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        must_sync: bool,
    ) -> Result<(), WalError> {
        self.check_latched()?;
        for pair in entries.windows(2) {
            assert!(
                pair[1].index == pair[0].index + 1,
                "WAL batch indices must be consecutive: {} then {}",
                pair[0].index,
                pair[1].index
            );
        }
        for entry in entries {
            let bytes = entry.encoded_len();
            if bytes > PAYLOAD_BYTES_MAX {
                return Err(WalError::RecordTooLarge {
                    bytes,
                    limit: PAYLOAD_BYTES_MAX,
                });
            }
        }
        self.buf.clear();
        let mut crc = self.crc;
        for entry in entries {
            record::encode(&mut self.buf, RecordType::Entry, entry, &mut crc);
        }
        if let Some(hard_state) = hard_state {
            record::encode(&mut self.buf, RecordType::HardState, hard_state, &mut crc);
        }
        if !self.buf.is_empty() {
            self.append_buf(crc)?;
            if let Some(last) = entries.last() {
                self.last_index = last.index;
            }
            if let Some(hard_state) = hard_state {
                self.hard_state = Some(*hard_state);
            }
        }
        if must_sync && !crate::planted::active(crate::planted::Bug::SkipFsync) {
            self.sync()?;
        }
        self.cut_if_full()
    }

    /// Records that a snapshot at (`index`, `term`) is durable, and syncs.
    pub fn save_snapshot_marker(&mut self, index: u64, term: u64) -> Result<(), WalError> {
        self.check_latched()?;
        self.buf.clear();
        let mut crc = self.crc;
        record::encode(
            &mut self.buf,
            RecordType::SnapshotMarker,
            &SnapshotMarkerRecord { index, term },
            &mut crc,
        );
        self.append_buf(crc)?;
        self.snapshot_marker = Some((index, term));
        self.sync()?;
        self.cut_if_full()
    }

    /// Removes the oldest segments whose entries are all below `index`. The segment that
    /// holds `index`, and the last segment, are always kept.
    pub fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        self.check_latched()?;
        let mut count = 0;
        while count + 1 < self.segments.len() && self.segments[count + 1].first_index <= index {
            count += 1;
        }
        for _ in 0..count {
            let name = self.segments[0].clone();
            // One at a time, oldest first, each removal made durable before the next: a
            // crash then leaves a run of consecutive segments, never one with a hole.
            let path = self.dir.join(name.file_name());
            let removed = self.disk.remove(&path);
            self.check_io("remove", &path, removed)?;
            let synced = self.disk.sync_dir(&self.dir);
            self.check_io("fsync directory", &self.dir.clone(), synced)?;
            self.segments.remove(0);
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_latched()?;
        if !self.dirty {
            return Ok(());
        }
        let path = self.tail_path();
        let started = Instant::now();
        let synced = self.tail.sync_data();
        if let Some(observer) = self.sync_observer.as_mut() {
            observer(started.elapsed());
        }
        self.check_io("fdatasync", &path, synced)?;
        self.dirty = false;
        Ok(())
    }

    /// Has `observer` told the duration of every later fdatasync of the tail (the syncs
    /// that make appended entries durable, which etcd's WAL fsync metric measures).
    pub fn observe_syncs(&mut self, observer: SyncObserver) {
        self.sync_observer = Some(observer);
    }

    pub fn metadata(&self) -> WalMetadata {
        self.metadata
    }

    /// Index of the last entry written (0 if none).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    fn tail_path(&self) -> PathBuf {
        let last = self
            .segments
            .last()
            .expect("a WAL has at least one segment");
        self.dir.join(last.file_name())
    }

    fn check_latched(&self) -> Result<(), WalError> {
        match &self.latched {
            Some(reason) => Err(WalError::Latched(reason.clone())),
            None => Ok(()),
        }
    }

    /// Latches the log if `result` is an error (see the type's docs for why).
    fn check_io<T>(
        &mut self,
        op: &'static str,
        path: &Path,
        result: io::Result<T>,
    ) -> Result<T, WalError> {
        result.map_err(|source| self.latch(io_error(op, path)(source)))
    }

    fn latch(&mut self, error: WalError) -> WalError {
        tracing::error!(%error, dir = %self.dir.display(), "WAL stopped");
        self.latched = Some(error.to_string());
        error
    }

    /// Writes `self.buf` at the tail; `crc` is the chain value after its last record.
    fn append_buf(&mut self, crc: u32) -> Result<(), WalError> {
        let path = self.tail_path();
        let written = self.tail.write_at(self.tail_offset, &self.buf);
        self.check_io("write", &path, written)?;
        self.tail_offset += self.buf.len() as u64;
        self.crc = crc;
        self.dirty = true;
        Ok(())
    }

    fn cut_if_full(&mut self) -> Result<(), WalError> {
        if self.tail_offset < self.options.segment_bytes {
            return Ok(());
        }
        // Seal the full segment first: once its successor exists, only the successor may
        // end in a torn write, which is what recovery relies on.
        self.sync()?;
        let sequence = self.segments.last().map_or(0, |last| last.sequence + 1);
        let name = SegmentName {
            sequence,
            first_index: self.last_index + 1,
        };
        let written = write_segment(
            self.disk.as_ref(),
            &self.dir,
            &self.options,
            &name,
            self.metadata,
            self.hard_state.as_ref(),
            self.snapshot_marker,
            self.crc,
        );
        let (tail, tail_offset, crc) = written.map_err(|error| self.latch(error))?;
        self.segments.push(name);
        self.tail = tail;
        self.tail_offset = tail_offset;
        self.crc = crc;
        self.dirty = false;
        Ok(())
    }
}

/// Writes a new segment under a temporary name, syncs it, renames it into place and syncs
/// the directory. Returns the open file, the offset after its header records and the CRC
/// of the last of them.
#[allow(clippy::too_many_arguments)]
fn write_segment(
    disk: &dyn Disk,
    dir: &Path,
    options: &WalOptions,
    name: &SegmentName,
    metadata: WalMetadata,
    hard_state: Option<&HardState>,
    snapshot_marker: Option<(u64, u64)>,
    previous_crc: u32,
) -> Result<(Box<dyn DiskFile>, u64, u32), WalError> {
    let mut buf = Vec::new();
    let mut crc = previous_crc;
    record::encode(
        &mut buf,
        RecordType::Crc,
        &CrcRecord { previous_crc },
        &mut crc,
    );
    record::encode(
        &mut buf,
        RecordType::Metadata,
        &MetadataRecord {
            member_id: metadata.member_id,
            cluster_id: metadata.cluster_id,
        },
        &mut crc,
    );
    if let Some(hard_state) = hard_state {
        record::encode(&mut buf, RecordType::HardState, hard_state, &mut crc);
    }
    if let Some((index, term)) = snapshot_marker {
        record::encode(
            &mut buf,
            RecordType::SnapshotMarker,
            &SnapshotMarkerRecord { index, term },
            &mut crc,
        );
    }

    let path = dir.join(name.file_name());
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", name.file_name()));
    if disk.exists(&tmp) {
        disk.remove(&tmp).map_err(io_error("remove", &tmp))?;
    }
    let file = disk.open(&tmp, true).map_err(io_error("create", &tmp))?;
    file.write_at(0, &buf).map_err(io_error("write", &tmp))?;
    if options.preallocate {
        file.preallocate(options.segment_bytes)
            .map_err(io_error("preallocate", &tmp))?;
    }
    file.sync_data().map_err(io_error("fdatasync", &tmp))?;
    disk.rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
    disk.sync_dir(dir)
        .map_err(io_error("fsync directory", dir))?;
    Ok((file, buf.len() as u64, crc))
}

/// Removes segments a crash left under their temporary name (never renamed, so never part
/// of the log).
fn remove_leftovers(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
    let names = disk.list(dir).map_err(io_error("list", dir))?;
    for name in names {
        if name.ends_with(&format!("{SEGMENT_SUFFIX}{TMP_SUFFIX}")) {
            let path = dir.join(&name);
            tracing::info!(file = %path.display(), "removing an unfinished WAL segment");
            disk.remove(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// Cuts a torn write off the end of the last segment at `end`, first copying the damaged
/// bytes aside, then syncing.
#[allow(clippy::too_many_arguments)]
fn repair_tail(
    disk: &dyn Disk,
    dir: &Path,
    path: &Path,
    tail: &dyn DiskFile,
    damaged: &[u8],
    end: u64,
    reason: &str,
    options: &WalOptions,
) -> Result<(), WalError> {
    tracing::warn!(
        file = %path.display(),
        offset = end,
        damaged_bytes = damaged.len(),
        reason,
        "cutting a torn write off the end of the WAL"
    );
    if !damaged.is_empty() {
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let broken = dir.join(format!("{file_name}.{end:016x}{BROKEN_SUFFIX}"));
        let file = disk
            .open(&broken, true)
            .map_err(io_error("create", &broken))?;
        file.set_len(0).map_err(io_error("truncate", &broken))?;
        file.write_at(0, damaged)
            .map_err(io_error("write", &broken))?;
        file.sync_data().map_err(io_error("fdatasync", &broken))?;
        disk.sync_dir(dir)
            .map_err(io_error("fsync directory", dir))?;
    }
    tail.set_len(end).map_err(io_error("truncate", path))?;
    if options.preallocate {
        tail.preallocate(options.segment_bytes)
            .map_err(io_error("preallocate", path))?;
    }
    tail.sync_data().map_err(io_error("fdatasync", path))?;
    Ok(())
}

/// The state rebuilt from the records, in log order.
#[derive(Default)]
struct Replay {
    metadata: Option<WalMetadata>,
    hard_state: Option<HardState>,
    /// Invariant: strictly increasing indices.
    entries: Vec<Entry>,
    snapshot_marker: Option<(u64, u64)>,
}

impl Replay {
    fn apply(
        &mut self,
        file: &Path,
        record_type: RecordType,
        payload: &[u8],
        offset: u64,
    ) -> Result<(), WalError> {
        let undecodable = |error: prost::DecodeError| WalError::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: format!("undecodable {record_type:?} record: {error}"),
        };
        match record_type {
            RecordType::Crc => {}
            RecordType::Metadata => {
                let record = MetadataRecord::decode(payload).map_err(undecodable)?;
                let metadata = WalMetadata {
                    member_id: record.member_id,
                    cluster_id: record.cluster_id,
                };
                match self.metadata {
                    Some(known) if known != metadata => {
                        return Err(WalError::Corrupt {
                            file: file.to_path_buf(),
                            offset,
                            reason: format!(
                                "metadata {metadata:?} differs from {known:?} in earlier segments"
                            ),
                        })
                    }
                    _ => self.metadata = Some(metadata),
                }
            }
            RecordType::Entry => {
                let entry = Entry::decode(payload).map_err(undecodable)?;
                if self
                    .entries
                    .last()
                    .is_some_and(|last| entry.index <= last.index)
                {
                    // A new leader overwrote the log from here (Raft §5.3).
                    let keep = self
                        .entries
                        .partition_point(|kept| kept.index < entry.index);
                    self.entries.truncate(keep);
                }
                self.entries.push(entry);
            }
            RecordType::HardState => {
                self.hard_state = Some(HardState::decode(payload).map_err(undecodable)?);
            }
            RecordType::SnapshotMarker => {
                let marker = SnapshotMarkerRecord::decode(payload).map_err(undecodable)?;
                self.snapshot_marker = Some((marker.index, marker.term));
            }
        }
        Ok(())
    }
}
