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
