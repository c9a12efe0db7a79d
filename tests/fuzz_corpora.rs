//! Every input in the fuzz targets' committed corpora (`tests/fuzz/corpus/<target>/`),
//! replayed through the target's entry point in the ordinary test build: the cases a
//! fuzzer kept (and every crash it found, once fixed) stay tests without libFuzzer.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).expect("reading an input");
        let replayed = std::panic::catch_unwind(|| entry(&data));
        assert!(replayed.is_ok(), "{} fails {target}", input.display());
    }
}

#[test]
fn peer_batch() {
    replay("peer_batch", oxcd::fuzz::peer_batch);
}

#[test]
fn client_connection() {
    replay("client_connection", oxcd::fuzz::client_connection);
}

#[test]
fn gateway_body() {
    replay("gateway_body", oxcd::fuzz::gateway_body);
}

#[test]
fn auth_token() {
    replay("auth_token", oxcd::fuzz::auth_token);
}

#[test]
fn wal_segments() {
    replay("wal_segments", oxcd::fuzz::wal_segments);
}

#[test]
fn snapshot_file() {
    replay("snapshot_file", oxcd::fuzz::snapshot_file);
}

#[test]
fn bolt_file() {
    replay("bolt_file", oxcd::fuzz::bolt_file);
}

#[test]
fn etcd_snapshot() {
    replay("etcd_snapshot", oxcd::fuzz::etcd_snapshot);
}

/// The bbolt target's seed is a real etcd 3.4 snapshot that reads whole, so the target's
/// round trip through the writer runs from the first input on.
#[test]
fn the_bolt_seed_is_a_readable_etcd_snapshot() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/bolt_file/etcd-3.4-snapshot");
    let mut reader = oxcd::bolt::Reader::open(&path).expect("an etcd snapshot");
    reader.verify_trailer().expect("its SHA-256 trailer");
    let key = reader
        .bucket(b"key")
        .expect("buckets")
        .expect("a key bucket");
    let revisions = reader
        .entries(&key)
        .collect::<Result<Vec<_>, _>>()
        .expect("entries");
    assert!(revisions.len() >= 4, "{revisions:?}");
}

#[test]
fn v2_requests() {
    replay("v2_requests", oxcd::fuzz::v2_requests);
}

#[test]
fn raft_step() {
    replay("raft_step", oxcd::fuzz::raft_step);
}

#[test]
fn client_requests() {
    replay("client_requests", oxcd::fuzz::client_requests);
}
