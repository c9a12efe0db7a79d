//! WAL append throughput on the real disk: 300-byte entries in synced batches of 1, 16 and
//! 128 (one fdatasync per batch, as the Ready loop does), next to the floor: a plain
//! `write + fdatasync` of the same bytes on a preallocated file.
//!
//! The files live under `OXCD_BENCH_DIR` if set, else the system temp directory; point it
//! at the disk you care about (a tmpfs makes fdatasync free and the numbers meaningless).
//!
//! Run with `cargo bench --bench wal`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use oxcd::io::{Disk, StdDisk};
use oxcd::raft::{Entry, HardState};
use oxcd::wal::{Wal, WalMetadata, WalOptions};

const ENTRY_BYTES: usize = 300;
const GROUP_SIZES: [u64; 3] = [1, 16, 128];

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("OXCD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("oxcd-wal-bench")
        .tempdir_in(base)
        .expect("bench directory")
}

fn wal_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_synced");
    group.sample_size(20);
    for size in GROUP_SIZES {
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("entries", size), &size, |b, &size| {
            let dir = bench_dir();
            let disk: Arc<dyn Disk> = Arc::new(StdDisk);
            let metadata = WalMetadata {
                member_id: 1,
                cluster_id: 1,
            };
            let (mut wal, _) = Wal::create(
                disk,
                &dir.path().join("wal"),
                metadata,
                WalOptions::default(),
            )
            .expect("create");
            let data = bytes::Bytes::from(vec![0x5a; ENTRY_BYTES]);
            let mut index = 0u64;
            b.iter(|| {
                let batch: Vec<Entry> = (0..size)
                    .map(|_| {
                        index += 1;
                        Entry {
                            entry_type: 0,
                            term: 1,
                            index,
                            data: data.clone(),
                        }
                    })
                    .collect();
                let hard_state = HardState {
                    term: 1,
                    vote: 1,
                    commit: index,
                };
                wal.save(Some(&hard_state), black_box(&batch), true)
                    .expect("save");
            });
        });
    }
    group.finish();
}

/// The floor: the same bytes (plus a 16-byte frame per entry) written and synced, with no
/// encoding, CRC or segment management.
fn raw_write_fdatasync(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_write_fdatasync");
    group.sample_size(20);
    for size in GROUP_SIZES {
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("entries", size), &size, |b, &size| {
            let dir = bench_dir();
            let file = StdDisk.open(&dir.path().join("raw"), true).expect("create");
            let file_bytes = 64u64 << 20;
            file.preallocate(file_bytes).expect("preallocate");
            let buf = vec![0x5a; (ENTRY_BYTES + 16) * size as usize];
            let mut offset = 0u64;
            b.iter(|| {
                if offset + buf.len() as u64 > file_bytes {
                    offset = 0;
                }
                file.write_at(offset, black_box(&buf)).expect("write");
                file.sync_data().expect("fdatasync");
                offset += buf.len() as u64;
            });
        });
    }
    group.finish();
}

criterion_group!(benches, wal_append, raw_write_fdatasync);
criterion_main!(benches);
