//! Tests of the log and the snapshot files: round trips, crash points, a model-based
//! property test, corruption, I/O failures, and a process killed on the real disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::record::{decode, Frame};
use super::*;
use crate::io::{Disk, FaultConfig, SimDisk, StdDisk};
use crate::raft::{Snapshot, SnapshotMetadata};

const WAL_DIR: &str = "/member/wal";
const SNAP_DIR: &str = "/member/snap";

fn metadata() -> WalMetadata {
    WalMetadata {
        member_id: 0x1111,
        cluster_id: 0x2222,
    }
}

/// Small segments so that a few dozen entries cross several cuts.
fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 2048,
        preallocate: true,
    }
}

/// An entry whose data (never containing a zero byte) depends on index and term.
fn entry(index: u64, term: u64) -> Entry {
    let len = 20 + (index * 37 + term * 11) % 300;
    let data: Vec<u8> = (0..len)
        .map(|i| ((i + index * 7 + term * 13) % 255) as u8 + 1)
        .collect();
    Entry {
        entry_type: 0,
        term,
        index,
        data: data.into(),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

fn sim_disk(seed: u64) -> (SimDisk, Arc<dyn Disk>) {
    let disk = SimDisk::new(seed);
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    (disk, shared)
}

fn segment_paths(disk: &dyn Disk) -> Vec<PathBuf> {
    disk.list(Path::new(WAL_DIR))
        .expect("list")
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| Path::new(WAL_DIR).join(name))
        .collect()
}

/// (start, end) of the records of a segment's bytes, in order.
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut offset = 0;
    let mut crc = None;
    while offset < bytes.len() {
        match decode(bytes, offset, crc) {
            Frame::Record {
                crc: record_crc,
                next,
                ..
            } => {
                spans.push((offset, next));
                crc = Some(record_crc);
                offset = next;
            }
            Frame::End => break,
            Frame::Bad { reason, .. } => panic!("bad record at {offset}: {reason}"),
        }
    }
    spans
}

fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    record_spans(bytes)
        .into_iter()
        .map(|(start, _)| start)
        .collect()
}

/// Compares entry lists, printing (index, term) pairs rather than whole entries.
fn assert_entries(actual: &[Entry], expected: &[Entry], context: &str) {
    assert_eq!(indices(actual), indices(expected), "{context}");
    assert!(
        actual == expected,
        "{context}: same indices and terms, different data"
    );
}

/// Entry indices, for short assertion messages.
fn indices(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|entry| (entry.index, entry.term))
        .collect()
}

/// Overwrites bytes of a file on the disk and syncs them.
fn overwrite(disk: &dyn Disk, path: &Path, offset: u64, bytes: &[u8]) {
    let file = disk.open(path, false).expect("open");
    file.write_at(offset, bytes).expect("write");
    file.sync_data().expect("sync");
}

#[test]
fn round_trip_across_segments() {
    let (_sim, disk) = sim_disk(1);
    let dir = Path::new(WAL_DIR);
    assert!(!Wal::exists(disk.as_ref(), dir));
    let (mut wal, recovered) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    assert_eq!(recovered.metadata, metadata());
    assert!(recovered.entries.is_empty());
    for batch in 0..20u64 {
        let first = batch * 3 + 1;
        wal.save(
            Some(&hard_state(1, first)),
            &entries(first..=first + 2, 1),
            true,
        )
        .expect("save");
    }
    wal.save_snapshot_marker(30, 1).expect("marker");
    assert_eq!(wal.last_index(), 60);
    drop(wal);
    assert!(Wal::exists(disk.as_ref(), dir));
    assert!(segment_paths(disk.as_ref()).len() > 3, "cuts happened");
    assert!(matches!(
        Wal::create(disk.clone(), dir, metadata(), small_segments()),
        Err(WalError::AlreadyExists(_))
    ));

    let (wal, recovered) = Wal::open(disk.clone(), dir, small_segments()).expect("open");
    assert_eq!(recovered.metadata, metadata());
    assert_entries(&recovered.entries, &entries(1..=60, 1), "");
    assert_eq!(recovered.hard_state, Some(hard_state(1, 58)));
    assert_eq!(recovered.snapshot_marker, Some((30, 1)));
    assert_eq!(wal.last_index(), 60);
    assert_eq!(wal.metadata(), metadata());
}

#[test]
fn every_sync_is_observed_and_nothing_else() {
    let (_sim, disk) = sim_disk(2);
    let (mut wal, _) =
        Wal::create(disk, Path::new(WAL_DIR), metadata(), small_segments()).expect("create");
    let observed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = observed.clone();
    wal.observe_syncs(Box::new(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let count = || observed.load(std::sync::atomic::Ordering::Relaxed);
    wal.save(Some(&hard_state(1, 0)), &entries(1..=2, 1), true)
        .expect("save");
    assert_eq!(count(), 1, "a synced batch");
    wal.save(None, &entries(3..=3, 1), false).expect("save");
    assert_eq!(count(), 1, "a batch that need not sync");
    wal.sync().expect("sync");
    assert_eq!(count(), 2, "the sync that made it durable");
    wal.sync().expect("sync");
    assert_eq!(count(), 2, "nothing left to sync");
    wal.save_snapshot_marker(2, 1).expect("marker");
    assert_eq!(count(), 3);
}

#[test]
fn open_without_a_wal_fails() {
    let (_sim, disk) = sim_disk(2);
    assert!(matches!(
        Wal::open(disk.clone(), Path::new(WAL_DIR), small_segments()),
        Err(WalError::NotFound(_))
    ));
    disk.create_dir_all(Path::new(WAL_DIR)).expect("mkdir");
    assert!(matches!(
        Wal::open(disk, Path::new(WAL_DIR), small_segments()),
        Err(WalError::NotFound(_))
    ));
}

#[test]
fn later_entries_replace_the_tail() {
    let (_sim, disk) = sim_disk(3);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    wal.save(None, &entries(1..=10, 1), true).expect("save");
    wal.save(Some(&hard_state(2, 5)), &entries(6..=8, 2), true)
        .expect("save");
    wal.save(None, &entries(9..=9, 2), false).expect("save");
    wal.sync().expect("sync");
    drop(wal);
    let (_, recovered) = Wal::open(disk, dir, small_segments()).expect("open");
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=9, 2));
    assert_entries(&recovered.entries, &expected, "");
    assert_eq!(recovered.hard_state, Some(hard_state(2, 5)));
}

#[test]
fn release_keeps_the_segment_holding_the_index() {
    let (_sim, disk) = sim_disk(4);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    for index in 1..=80 {
        wal.save(Some(&hard_state(1, index)), &[entry(index, 1)], true)
            .expect("save");
    }
    wal.save_snapshot_marker(50, 1).expect("marker");
    let before = segment_paths(disk.as_ref()).len();
    wal.release_to(50).expect("release");
    let after = segment_paths(disk.as_ref()).len();
    assert!(after < before, "{before} -> {after} segments");
    // Nothing after the last segment is removed, whatever the index.
    wal.release_to(u64::MAX).expect("release");
    assert_eq!(segment_paths(disk.as_ref()).len(), 1);
    wal.save(None, &[entry(81, 1)], true).expect("save");
    drop(wal);

    let (_, recovered) = Wal::open(disk.clone(), dir, small_segments()).expect("open");
    // Metadata, hard state and marker survive in the headers of the kept segment.
    assert_eq!(recovered.metadata, metadata());
    assert_eq!(recovered.hard_state, Some(hard_state(1, 80)));
    assert_eq!(recovered.snapshot_marker, Some((50, 1)));
    let first = recovered.entries.first().map_or(82, |entry| entry.index);
    assert!(first > 50);
    assert_entries(&recovered.entries, &entries(first..=81, 1), "");
}

#[test]
fn release_stops_at_the_first_segment_to_keep() {
    let (_sim, disk) = sim_disk(5);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    for index in 1..=40 {
        wal.save(None, &[entry(index, 1)], true).expect("save");
    }
    let count = segment_paths(disk.as_ref()).len();
    wal.release_to(1).expect("release");
    assert_eq!(segment_paths(disk.as_ref()).len(), count);
    drop(wal);
    let (_, recovered) = Wal::open(disk, dir, small_segments()).expect("open");
    assert_entries(&recovered.entries, &entries(1..=40, 1), "");
}

#[test]
fn flipped_bit_in_an_earlier_segment_names_file_and_offset() {
    let (_sim, disk) = sim_disk(6);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    wal.save(None, &entries(1..=60, 1), true).expect("save");
    wal.save(None, &entries(61..=70, 1), true).expect("save");
    drop(wal);
    let paths = segment_paths(disk.as_ref());
    assert!(paths.len() >= 2);
    let victim = &paths[0];
    let bytes = disk.read_all(victim).expect("read");
    let offsets = record_offsets(&bytes);
    let record = offsets[4];
    overwrite(
        disk.as_ref(),
        victim,
        (record + 20) as u64,
        &[bytes[record + 20] ^ 0x08],
    );

    match Wal::open(disk, dir, small_segments()) {
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(&file, victim);
            assert_eq!(offset, record as u64, "{reason}");
            let message = WalError::Corrupt {
                file,
                offset,
                reason,
            }
            .to_string();
            assert!(message.contains(&victim.display().to_string()), "{message}");
            assert!(message.contains(&format!("offset {record}")), "{message}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn flipped_bit_mid_last_segment_is_corruption_not_a_torn_tail() {
    let (_sim, disk) = sim_disk(7);
    let dir = Path::new(WAL_DIR);
    let options = WalOptions {
        segment_bytes: 1 << 20,
        preallocate: true,
    };
    let (mut wal, _) = Wal::create(disk.clone(), dir, metadata(), options.clone()).expect("create");
    wal.save(None, &entries(1..=30, 1), true).expect("save");
    drop(wal);
    let path = segment_paths(disk.as_ref()).remove(0);
    let bytes = disk.read_all(&path).expect("read");
    let offsets = record_offsets(&bytes);
    let record = offsets[10];
    // Flip a bit of the length: its check catches it.
    overwrite(disk.as_ref(), &path, record as u64, &[bytes[record] ^ 0x40]);
    match Wal::open(disk.clone(), dir, options.clone()) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, record as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Restore it and flip a payload bit instead.
    overwrite(disk.as_ref(), &path, record as u64, &[bytes[record]]);
    overwrite(
        disk.as_ref(),
        &path,
        (record + 30) as u64,
        &[bytes[record + 30] ^ 1],
    );
    match Wal::open(disk, dir, options) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, record as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn zeroed_tail_is_cut_off_and_kept_aside() {
    for preallocate in [true, false] {
        let (_sim, disk) = sim_disk(8);
        let dir = Path::new(WAL_DIR);
        let options = WalOptions {
            segment_bytes: 1 << 20,
            preallocate,
        };
        let (mut wal, _) =
            Wal::create(disk.clone(), dir, metadata(), options.clone()).expect("create");
        for index in 1..=20 {
            wal.save(None, &[entry(index, 1)], true).expect("save");
        }
        drop(wal);
        let path = segment_paths(disk.as_ref()).remove(0);
        let bytes = disk.read_all(&path).expect("read");
        let spans = record_spans(&bytes);
        // Zero from a sector boundary inside the last record that spans one, as a lost
        // sector of an append reads; the records after it are lost with it.
        let (position, boundary) = spans
            .iter()
            .enumerate()
            .rev()
            .find_map(|(position, &(start, end))| {
                let boundary = (start / 512 + 1) * 512;
                (start + 16 < boundary && boundary < end).then_some((position, boundary))
            })
            .expect("a record spanning a sector boundary");
        // The crc and metadata records come first.
        let surviving = position - 2;
        let zeros = vec![0; bytes.len() - boundary];
        overwrite(disk.as_ref(), &path, boundary as u64, &zeros);

        let (mut wal, recovered) =
            Wal::open(disk.clone(), dir, options.clone()).expect("torn tail is repaired");
        assert_eq!(
            indices(&recovered.entries),
            indices(&entries(1..=surviving as u64, 1)),
            "preallocate {preallocate}"
        );
        let names = disk.list(dir).expect("list");
        assert!(
            names.iter().any(|name| name.ends_with(".broken")),
            "damaged bytes kept aside: {names:?}"
        );
        // The log goes on from the cut, and a second open finds nothing to repair.
        let next = surviving as u64 + 1;
        wal.save(None, &[entry(next, 2)], true)
            .expect("save after repair");
        drop(wal);
        let (_, recovered) = Wal::open(disk.clone(), dir, options).expect("reopen");
        let mut expected = entries(1..=surviving as u64, 1);
        expected.push(entry(next, 2));
        assert_entries(&recovered.entries, &expected, "");
    }
}

#[test]
fn missing_middle_segment_is_corruption() {
    let (_sim, disk) = sim_disk(9);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    for index in 1..=80 {
        wal.save(None, &[entry(index, 1)], true).expect("save");
    }
    drop(wal);
    let paths = segment_paths(disk.as_ref());
    assert!(paths.len() >= 3);
    disk.remove(&paths[1]).expect("remove");
    assert!(matches!(
        Wal::open(disk, dir, small_segments()),
        Err(WalError::Corrupt { .. })
    ));
}

/// An operator's copy mistake: a segment of another member's log (same cluster, same
/// sequence numbers) put in place of one of this member's. Each segment carries the CRC
/// the one before it ended with, so the foreign segment breaks the chain wherever it
/// lands and is named, whatever its metadata says.
#[test]
fn a_segment_of_another_members_log_is_refused() {
    let write = |member_id: u64| {
        let (_sim, disk) = sim_disk(12);
        let meta = WalMetadata {
            member_id,
            ..metadata()
        };
        let (mut wal, _) =
            Wal::create(disk.clone(), Path::new(WAL_DIR), meta, small_segments()).expect("create");
        for index in 1..=80 {
            wal.save(None, &[entry(index, 1)], true).expect("save");
        }
        drop(wal);
        disk
    };
    let ours = segment_paths(write(0x1111).as_ref());
    assert!(ours.len() >= 3, "{ours:?}");
    for swapped in 0..ours.len() {
        let disk = write(0x1111);
        let theirs = write(0x3333);
        let foreign = theirs.read_all(&ours[swapped]).expect("read theirs");
        let mine = disk.read_all(&ours[swapped]).expect("read ours");
        assert_ne!(foreign, mine);
        overwrite(disk.as_ref(), &ours[swapped], 0, &foreign);
        // The chain breaks at the foreign segment, or (the first one has no predecessor)
        // at the one after it.
        let named = if swapped == 0 {
            &ours[1]
        } else {
            &ours[swapped]
        };
        match Wal::open(disk, Path::new(WAL_DIR), small_segments()) {
            Err(WalError::Corrupt { file, .. }) => assert_eq!(&file, named, "segment {swapped}"),
            other => panic!("segment {swapped}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn zeroed_records_in_a_sealed_segment_break_the_chain() {
    let (_sim, disk) = sim_disk(10);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    for index in 1..=60 {
        wal.save(None, &[entry(index, 1)], true).expect("save");
    }
    drop(wal);
    let paths = segment_paths(disk.as_ref());
    let bytes = disk.read_all(&paths[0]).expect("read");
    let offsets = record_offsets(&bytes);
    let last = *offsets.last().expect("records");
    let zeros = vec![0; bytes.len() - last];
    overwrite(disk.as_ref(), &paths[0], last as u64, &zeros);
    match Wal::open(disk, dir, small_segments()) {
        Err(WalError::Corrupt { file, .. }) => assert_eq!(file, paths[1]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn failed_fsync_latches() {
    let (sim, disk) = sim_disk(11);
    let dir = Path::new(WAL_DIR);
    let (mut wal, _) =
        Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
    wal.save(None, &entries(1..=3, 1), true).expect("save");
    sim.set_faults(FaultConfig {
        sync_error_probability: 1.0,
        ..FaultConfig::default()
    });
    assert!(matches!(
        wal.save(None, &entries(4..=4, 1), true),
        Err(WalError::Io {
            op: "fdatasync",
            ..
        })
    ));
    sim.set_faults(FaultConfig::default());
    // The disk works again, but the log must not: the failed batch may be lost.
    assert!(matches!(
        wal.save(None, &entries(5..=5, 1), true),
        Err(WalError::Latched(_))
    ));
    assert!(matches!(wal.sync(), Err(WalError::Latched(_))));
    assert!(matches!(
        wal.save_snapshot_marker(1, 1),
        Err(WalError::Latched(_))
    ));
    assert!(matches!(wal.release_to(1), Err(WalError::Latched(_))));
    drop(wal);
    sim.crash();
    let (_, recovered) = Wal::open(disk, dir, small_segments()).expect("open");
    assert_entries(&recovered.entries, &entries(1..=3, 1), "");
}

#[test]
fn write_error_and_full_disk_latch() {
    for faults in [
        FaultConfig {
            write_error_probability: 1.0,
            ..FaultConfig::default()
        },
        FaultConfig {
            space_bytes: Some(6000),
            ..FaultConfig::default()
        },
    ] {
        let (sim, disk) = sim_disk(12);
        let dir = Path::new(WAL_DIR);
        let (mut wal, _) =
            Wal::create(disk.clone(), dir, metadata(), small_segments()).expect("create");
        sim.set_faults(faults.clone());
        let mut acked = 0;
        let mut failed = false;
        for index in 1..=100 {
            match wal.save(None, &[entry(index, 1)], true) {
                Ok(()) => acked = index,
                Err(WalError::Io { .. }) => {
                    failed = true;
                    break;
                }
                Err(other) => panic!("{faults:?}: unexpected {other}"),
            }
        }
        assert!(failed, "{faults:?}: the fault must surface");
        assert!(matches!(
            wal.save(None, &[entry(acked + 1, 1)], true),
            Err(WalError::Latched(_))
        ));
        drop(wal);
        sim.set_faults(FaultConfig::default());
        sim.crash();
        let (_, recovered) = Wal::open(disk, dir, small_segments()).expect("open");
        // The failing call may have made its entry durable before failing (a cut after a
        // successful sync), so one more entry may be there.
        let recovered_last = recovered.entries.len() as u64;
        assert!(
            recovered_last == acked || recovered_last == acked + 1,
            "{faults:?}: {acked} acknowledged, {recovered_last} recovered"
        );
        assert_entries(
            &recovered.entries,
            &entries(1..=recovered_last, 1),
            &format!("{faults:?}"),
        );
    }
}

#[test]
fn oversized_record_is_refused_without_latching() {
    let (_sim, disk) = sim_disk(13);
    let (mut wal, _) =
        Wal::create(disk, Path::new(WAL_DIR), metadata(), small_segments()).expect("create");
    let huge = Entry {
        entry_type: 0,
        term: 1,
        index: 1,
        data: vec![1; record::PAYLOAD_BYTES_MAX + 1].into(),
    };
    assert!(matches!(
        wal.save(None, &[huge], true),
        Err(WalError::RecordTooLarge { .. })
    ));
    wal.save(None, &[entry(1, 1)], true).expect("still usable");
}

// ---------------------------------------------------------------------------------------
// Crash at every sync point.

/// What a run of [`crash_scenario`] got acknowledged before it stopped.
#[derive(Debug, Default)]
struct Acknowledged {
    created: bool,
    /// Every entry written, in order (the scenario never overwrites).
    written: Vec<Entry>,
    /// How many of `written` a successful sync covered.
    synced: usize,
    hard_state: Option<HardState>,
    snapshot_saved: Option<u64>,
    marker: Option<u64>,
    /// The index a release was started for.
    release_started: Option<u64>,
}

fn snapshot_at(index: u64) -> Snapshot {
    Snapshot {
        data: vec![index as u8; 700].into(),
        metadata: Some(SnapshotMetadata {
            conf_state: None,
            index,
            term: 1,
        }),
    }
}

/// Appends (synced and not), cuts, saves two snapshots with markers and releases, stopping
/// at the first error.
fn crash_scenario(disk: Arc<dyn Disk>, acked: &mut Acknowledged) -> Result<(), WalError> {
    let (mut wal, _) = Wal::create(
        disk.clone(),
        Path::new(WAL_DIR),
        metadata(),
        small_segments(),
    )?;
    acked.created = true;
    let snapshots = SnapshotFiles::open(disk, Path::new(SNAP_DIR), 1)?;
    let mut index = 0;
    for batch in 0..16u64 {
        let count = batch % 4 + 1;
        let batch_entries = entries(index + 1..=index + count, 1);
        index += count;
        let state = hard_state(1, index - 1);
        let sync = batch % 3 != 2;
        acked.written.extend(batch_entries.iter().cloned());
        wal.save(Some(&state), &batch_entries, sync)?;
        if sync {
            acked.synced = acked.written.len();
            acked.hard_state = Some(state);
        }
        if batch == 7 || batch == 13 {
            let at = index - 2;
            snapshots.save(&snapshot_at(at))?;
            acked.snapshot_saved = Some(at);
            wal.save_snapshot_marker(at, 1)?;
            acked.marker = Some(at);
            acked.synced = acked.written.len();
            acked.release_started = Some(at);
            wal.release_to(at)?;
        }
    }
    Ok(())
}

fn check_recovery(disk: &Arc<dyn Disk>, acked: &Acknowledged, context: &str) {
    let dir = Path::new(WAL_DIR);
    if !Wal::exists(disk.as_ref(), dir) {
        assert!(!acked.created, "{context}: created WAL vanished");
        return;
    }
    let (mut wal, recovered) = Wal::open(disk.clone(), dir, small_segments())
        .unwrap_or_else(|error| panic!("{context}: open failed: {error}"));
    assert_eq!(recovered.metadata, metadata(), "{context}");

    // Recovered entries are a consecutive run of what was written…
    for pair in recovered.entries.windows(2) {
        assert_eq!(pair[1].index, pair[0].index + 1, "{context}");
    }
    for entry in &recovered.entries {
        assert_eq!(
            Some(entry),
            acked.written.get(entry.index as usize - 1),
            "{context}: entry {} differs from what was written",
            entry.index
        );
    }
    // …holding every synced entry that no release may have removed.
    let keep_from = acked.release_started.unwrap_or(1);
    let last = recovered.entries.last().map_or(0, |entry| entry.index);
    assert!(
        last as usize >= acked.synced,
        "{context}: {} synced entries, recovered up to {last}",
        acked.synced
    );
    if let Some(first) = recovered.entries.first() {
        assert!(
            first.index <= keep_from,
            "{context}: starts at {}",
            first.index
        );
    } else {
        assert!(
            acked.synced as u64 <= keep_from,
            "{context}: all entries gone"
        );
    }
    if let Some(state) = acked.hard_state {
        let found = recovered
            .hard_state
            .unwrap_or_else(|| panic!("{context}: hard state lost"));
        assert!(
            found.commit >= state.commit,
            "{context}: {found:?} < {state:?}"
        );
    }
    if let Some(marker) = acked.marker {
        let (index, _) = recovered
            .snapshot_marker
            .unwrap_or_else(|| panic!("{context}: marker lost"));
        assert!(index >= marker, "{context}");
    }
    let snapshots = SnapshotFiles::open(disk.clone(), Path::new(SNAP_DIR), 1)
        .unwrap_or_else(|error| panic!("{context}: snapshot dir: {error}"));
    let newest = snapshots
        .load_newest()
        .unwrap_or_else(|error| panic!("{context}: snapshot load: {error}"));
    if let Some(saved) = acked.snapshot_saved {
        let index = newest
            .and_then(|snapshot| snapshot.metadata)
            .map(|metadata| metadata.index);
        assert!(
            index >= Some(saved),
            "{context}: snapshot {index:?} < {saved}"
        );
    }

    // The repaired log takes appends and reopens to the same state plus them.
    let next = last + 1;
    wal.save(None, &[entry(next, 9)], true)
        .unwrap_or_else(|error| panic!("{context}: append after recovery: {error}"));
    drop(wal);
    let (_, again) = Wal::open(disk.clone(), dir, small_segments())
        .unwrap_or_else(|error| panic!("{context}: second open failed: {error}"));
    let mut expected = recovered.entries.clone();
    expected.push(entry(next, 9));
    assert_entries(
        &again.entries,
        &expected,
        &format!("{context}: second open differs"),
    );
}

#[test]
fn crash_at_every_sync_point() {
    let (dry_sim, dry) = sim_disk(0);
    let mut acked = Acknowledged::default();
    crash_scenario(dry.clone(), &mut acked).expect("scenario runs without crashes");
    let syncs = dry_sim.sync_count();
    assert!(syncs > 20, "only {syncs} sync points");
    check_recovery(&dry, &acked, "no crash");

    for halt_at in 0..=syncs {
        for seed in 0..8 {
            let (sim, disk) = sim_disk(halt_at * 100 + seed);
            sim.set_halt_after_syncs(Some(halt_at));
            let mut acked = Acknowledged::default();
            let result = crash_scenario(disk.clone(), &mut acked);
            assert!(
                result.is_err() || halt_at == syncs,
                "halt at {halt_at}: scenario did not stop"
            );
            sim.crash();
            check_recovery(
                &disk,
                &acked,
                &format!("halt at sync {halt_at}, seed {seed}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Model-based property test.

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (overwriting them).
    Append {
        count: u64,
        back: u64,
        sync: bool,
    },
    Sync,
    /// A power cut, then reopen.
    Crash,
    /// A clean close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6u64, 0..4u64, any::<bool>())
            .prop_map(|(count, back, sync)| Op::Append { count, back, sync }),
        2 => Just(Op::Sync),
        2 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After any sequence of appends, syncs and crashes the log recovers to a state the
    /// model allows: the state at the last sync, or one reached by a prefix of the records
    /// written since (a tear may cut a batch anywhere between records).
    #[test]
    fn recovery_matches_the_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..40)) {
        let (sim, disk) = sim_disk(seed);
        let dir = Path::new(WAL_DIR);
        let options = WalOptions { segment_bytes: 2048, preallocate: seed % 2 == 0 };
        let (mut wal, _) = Wal::create(disk.clone(), dir, metadata(), options.clone()).expect("create");
        let mut log: Vec<Entry> = Vec::new();
        // The states a crash may recover to: the last synced one first.
        let mut allowed: Vec<Vec<Entry>> = vec![Vec::new()];
        let mut term = 1;
        for op in ops {
            match op {
                Op::Append { count, back, sync } => {
                    term += 1;
                    let last = log.last().map_or(0, |entry| entry.index);
                    let first = (last + 1).saturating_sub(back).max(1);
                    let batch = entries(first..=first + count - 1, term);
                    wal.save(None, &batch, sync).expect("save");
                    for entry in batch {
                        log.truncate(entry.index as usize - 1);
                        log.push(entry);
                        allowed.push(log.clone());
                    }
                    if sync {
                        allowed = vec![log.clone()];
                    }
                }
                Op::Sync => {
                    wal.sync().expect("sync");
                    allowed = vec![log.clone()];
                }
                Op::Crash => {
                    drop(wal);
                    sim.crash();
                    let (reopened, recovered) = Wal::open(disk.clone(), dir, options.clone()).expect("open after crash");
                    prop_assert!(
                        allowed.contains(&recovered.entries),
                        "recovered {:?} not among allowed {:?}",
                        recovered.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
                        allowed.iter().map(|state| state.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>()).collect::<Vec<_>>()
                    );
                    wal = reopened;
                    log = recovered.entries;
                    allowed = vec![log.clone()];
                }
                Op::Reopen => {
                    drop(wal);
                    let (reopened, recovered) = Wal::open(disk.clone(), dir, options.clone()).expect("reopen");
                    prop_assert_eq!(&recovered.entries, &log);
                    // Opening syncs what it read.
                    allowed = vec![log.clone()];
                    wal = reopened;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot files.

#[test]
fn snapshots_keep_the_newest() {
    let (_sim, disk) = sim_disk(20);
    let dir = Path::new(SNAP_DIR);
    let snapshots = SnapshotFiles::open(disk.clone(), dir, 2).expect("open");
    assert_eq!(snapshots.load_newest().expect("load"), None);
    for index in [10, 20, 30] {
        snapshots.save(&snapshot_at(index)).expect("save");
    }
    assert_eq!(disk.list(dir).expect("list").len(), 2);
    assert_eq!(
        snapshots.load_newest().expect("load"),
        Some(snapshot_at(30))
    );
    assert!(matches!(
        snapshots.save(&Snapshot::default()),
        Err(WalError::SnapshotWithoutMetadata)
    ));
}

#[test]
fn corrupt_newest_snapshot_names_the_file() {
    let (_sim, disk) = sim_disk(21);
    let dir = Path::new(SNAP_DIR);
    let snapshots = SnapshotFiles::open(disk.clone(), dir, 3).expect("open");
    snapshots.save(&snapshot_at(10)).expect("save");
    snapshots.save(&snapshot_at(20)).expect("save");
    let newest = dir.join(disk.list(dir).expect("list").pop().expect("a file"));
    let bytes = disk.read_all(&newest).expect("read");
    overwrite(disk.as_ref(), &newest, 100, &[bytes[100] ^ 0x20]);
    match snapshots.load_newest() {
        Err(error @ WalError::Corrupt { .. }) => {
            assert!(
                error.to_string().contains(&newest.display().to_string()),
                "{error}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn unfinished_snapshot_is_removed_on_open() {
    let (sim, disk) = sim_disk(22);
    let dir = Path::new(SNAP_DIR);
    let snapshots = SnapshotFiles::open(disk.clone(), dir, 2).expect("open");
    snapshots.save(&snapshot_at(10)).expect("save");
    // Halt before the rename's directory sync of the second save.
    sim.set_halt_after_syncs(Some(1));
    assert!(snapshots.save(&snapshot_at(20)).is_err());
    let file = disk.open(&dir.join("leftover.snap.tmp"), true);
    assert!(file.is_err(), "halted disk refuses work");
    sim.crash();
    let leftover = dir.join("0000000000000014-0000000000000001.snap.tmp");
    disk.open(&leftover, true)
        .expect("create")
        .write_at(0, b"partial")
        .expect("write");
    disk.sync_dir(dir).expect("sync dir");
    let snapshots = SnapshotFiles::open(disk.clone(), dir, 2).expect("open");
    assert!(!disk.exists(&leftover));
    assert_eq!(
        snapshots.load_newest().expect("load"),
        Some(snapshot_at(10))
    );
}

// ---------------------------------------------------------------------------------------
// The real disk: a process killed in the middle of appending.

const CHILD_DIR_ENV: &str = "OXCD_WAL_TEST_CHILD_DIR";

/// Not a test on its own: run by `sigkill_while_appending_keeps_the_synced_prefix` as the
/// child process, which appends and reports each synced index until it is killed.
#[test]
fn appender_child() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let disk: Arc<dyn Disk> = Arc::new(StdDisk);
    let options = WalOptions {
        segment_bytes: 32 << 10,
        preallocate: true,
    };
    let (mut wal, _) = Wal::create(disk, Path::new(&dir), metadata(), options).expect("create");
    let mut stdout = std::io::stdout().lock();
    for index in 1..1_000_000 {
        wal.save(Some(&hard_state(1, index)), &[entry(index, 1)], true)
            .expect("save");
        writeln!(stdout, "acked {index}").expect("report");
        stdout.flush().expect("flush");
    }
}

#[test]
fn sigkill_while_appending_keeps_the_synced_prefix() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("wal");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "wal::tests::appender_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = 0u64;
    let mut killed = false;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(index) = line.strip_prefix("acked ") {
            acked = index.parse().expect("index");
        }
        if acked >= 400 && !killed {
            child.kill().expect("SIGKILL");
            killed = true;
        }
    }
    let status = child.wait().expect("wait");
    assert!(
        killed,
        "child exited on its own ({status}) after {acked} appends"
    );

    let disk: Arc<dyn Disk> = Arc::new(StdDisk);
    let options = WalOptions {
        segment_bytes: 32 << 10,
        preallocate: true,
    };
    let (_, recovered) = Wal::open(disk, &dir, options).expect("open after SIGKILL");
    assert!(
        recovered.entries.len() as u64 >= acked,
        "{} entries recovered, {acked} acknowledged",
        recovered.entries.len()
    );
    assert_entries(
        &recovered.entries,
        &entries(1..=recovered.entries.len() as u64, 1),
        "after SIGKILL",
    );
    assert!(recovered
        .hard_state
        .is_some_and(|state| state.commit >= acked));
}
