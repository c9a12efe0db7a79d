//! Entry points of the fuzz targets (`tests/fuzz`), one per decoder of outside input: what
//! a peer sends, what a client sends (gRPC's HTTP/2 headers, the JSON gateway's bodies,
//! auth tokens), and what is read back from disk at start (WAL segments, snapshot files),
//! or handed in by an operator (bbolt snapshot files), and the v2 API's requests.
//!
//! Each takes arbitrary bytes and must return without panicking, hanging or allocating
//! without bound. Where a decoder promises more than that (a decoded value encodes back to
//! itself; a connection that is not HTTP/2 passes through untouched), the entry point
//! asserts it. The same functions replay the committed corpora in `tests/fuzz_corpora.rs`,
//! so every input a fuzzer kept stays a case of the ordinary test suite.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prost::Message as _;

use crate::auth::jwt::JwtTokens;
use crate::auth::tokens::{token_index, SimpleTokens};
use crate::io::{Disk, SimDisk};
use crate::proto::etcdserverpb as pb;
use crate::proto::oxcdpb::RaftBatch;
use crate::raft::Message;
use crate::server::validate;
use crate::wal::{SnapshotFiles, Wal, WalOptions};

/// A batch of Raft messages as a peer's stream carries it: the batch and each message
/// decode or are refused, and a decoded message encodes back to itself.
pub fn peer_batch(data: &[u8]) {
    let Ok(batch) = RaftBatch::decode(data) else {
        return;
    };
    for bytes in &batch.messages {
        if let Ok(message) = Message::decode(bytes.as_ref()) {
            let again = Message::decode(message.encode_to_vec().as_slice())
                .expect("an encoded message decodes");
            assert_eq!(
                again, message,
                "a message changed on its way through encoding"
            );
        }
    }
}

/// Peer messages stepped into a live Raft core (member 1 of three), with ticks between
/// them and the Ready contract followed after each: whatever a peer sends (any type, term,
/// index, entries, snapshot), the core handles or refuses it without panicking, commits
/// entries in order, and never hands out two different entries as committed at one index.
pub fn raft_step(data: &[u8]) {
    use crate::raft::{self, ConfChangeV2, EntryType, MemStorage, RawNode};
    let Ok(batch) = RaftBatch::decode(data) else {
        return;
    };
    let storage = MemStorage::new_with_voters(&[1, 2, 3]);
    let config = raft::Config {
        election_ticks: 10,
        heartbeat_ticks: 1,
        ..raft::Config::new(1)
    };
    let Ok(mut node) = RawNode::new(&config, storage.clone(), 7) else {
        return;
    };
    let mut committed_terms = std::collections::BTreeMap::new();
    let mut applied = 0u64;
    for (at, bytes) in batch.messages.iter().take(64).enumerate() {
        let Ok(mut message) = Message::decode(bytes.as_ref()) else {
            continue;
        };
        message.to = 1;
        message.from = 2 + message.from % 2;
        for _ in 0..(at % 3) {
            node.tick();
        }
        let _ = node.step(message);
        while node.has_ready() {
            let ready = node.ready();
            if let Some(snapshot) = &ready.snapshot {
                let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
                if storage.apply_snapshot(snapshot.clone()).is_ok() {
                    applied = applied.max(index);
                }
            }
            storage
                .append(&ready.entries)
                .expect("the core hands out entries its storage takes");
            if let Some(hard_state) = ready.hard_state {
                storage.set_hard_state(hard_state);
            }
            for entry in &ready.committed_entries {
                if entry.index <= applied {
                    continue;
                }
                assert_eq!(entry.index, applied + 1, "committed entries come in order");
                if let Some(term) = committed_terms.insert(entry.index, entry.term) {
                    assert_eq!(term, entry.term, "two entries committed at {}", entry.index);
                }
                if entry.entry_type == EntryType::ConfChangeV2 as i32 {
                    if let Ok(change) = ConfChangeV2::decode(entry.data.clone()) {
                        if let Ok(conf_state) = node.try_apply_conf_change(&change) {
                            storage.set_conf_state(conf_state);
                        }
                    }
                }
                applied = entry.index;
            }
            node.advance(ready);
        }
    }
}

/// The bytes a client sends on a gRPC connection, through the `:authority` rewriting,
/// read in chunks whose sizes the input's first byte chooses. A connection that does not
/// open with the HTTP/2 preface passes through byte for byte.
pub fn client_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1);
    let rewritten = crate::net::authority::rewrite(rest.chunks(chunk));
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let could_be_http2 =
        rest.len() >= PREFACE.len() && rest.starts_with(PREFACE) || PREFACE.starts_with(rest);
    if !could_be_http2 {
        assert_eq!(
            rewritten.expect("a pass-through cannot fail"),
            rest,
            "a connection that is not HTTP/2 was changed"
        );
    }
}

/// A JSON gateway body for the request type the input's first byte chooses: it decodes or
/// is refused; a decoded request that encodes as JSON decodes back to itself, and the
/// KV requests go through the checks a gRPC request meets.
pub fn gateway_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 16 {
        0 => {
            if let Some(request) = json_round_trip::<pb::RangeRequest>(body) {
                let _ = validate::check_range(&request);
            }
        }
        1 => {
            if let Some(request) = json_round_trip::<pb::PutRequest>(body) {
                let _ = validate::check_put(&request);
            }
        }
        2 => {
            if let Some(request) = json_round_trip::<pb::DeleteRangeRequest>(body) {
                let _ = validate::check_delete(&request);
            }
        }
        3 => {
            if let Some(request) = json_round_trip::<pb::TxnRequest>(body) {
                let _ = validate::check_txn(&request, 128);
            }
        }
        4 => drop(json_round_trip::<pb::CompactionRequest>(body)),
        5 => drop(json_round_trip::<pb::LeaseGrantRequest>(body)),
        6 => drop(json_round_trip::<pb::LeaseTimeToLiveRequest>(body)),
        7 => drop(json_round_trip::<pb::AuthenticateRequest>(body)),
        8 => drop(json_round_trip::<pb::AuthUserAddRequest>(body)),
        9 => drop(json_round_trip::<pb::AuthRoleGrantPermissionRequest>(body)),
        10 => drop(json_round_trip::<pb::MemberAddRequest>(body)),
        11 => drop(json_round_trip::<pb::AlarmRequest>(body)),
        12 => drop(json_round_trip::<pb::MoveLeaderRequest>(body)),
        13 => drop(json_round_trip::<pb::HashKvRequest>(body)),
        // The streaming calls' bodies: JSON objects one after another.
        14 => {
            for request in serde_json::Deserializer::from_slice(body)
                .into_iter::<pb::WatchRequest>()
                .map_while(Result::ok)
            {
                json_round_trip_value(&request);
            }
        }
        _ => {
            for request in serde_json::Deserializer::from_slice(body)
                .into_iter::<pb::LeaseKeepAliveRequest>()
                .map_while(Result::ok)
            {
                json_round_trip_value(&request);
            }
        }
    }
}

fn json_round_trip<T>(body: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let request: T = serde_json::from_slice(body).ok()?;
    json_round_trip_value(&request);
    Some(request)
}

fn json_round_trip_value<T>(value: &T)
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    // An enum number no variant has decodes but does not encode: only the decoding is
    // the gateway's business.
    if let Ok(json) = serde_json::to_vec(value) {
        let again: T = serde_json::from_slice(&json).expect("encoded JSON decodes");
        assert_eq!(&again, value, "a request changed on its way through JSON");
    }
}

/// A token from a client's `authorization` metadata, looked up as a simple token and
/// verified as a signed one.
pub fn auth_token(data: &[u8]) {
    static SIGNED: OnceLock<JwtTokens> = OnceLock::new();
    let signed = SIGNED.get_or_init(|| {
        JwtTokens::from_options("jwt,sign-method=HS256,priv-key=key,ttl=1h", |_| {
            Ok(b"a fuzzing secret".to_vec())
        })
        .expect("HS256 options")
    });
    let token = String::from_utf8_lossy(data);
    let _ = token_index(&token);
    let now = Instant::now();
    let mut simple = SimpleTokens::new(std::time::Duration::from_secs(300));
    let issued = simple.assign("abcdefghijklmnop", 7, "alice", now);
    assert_eq!(token_index(&issued), Some(7));
    if token != issued {
        assert_eq!(
            simple.user(&token, now),
            None,
            "a token never issued was accepted"
        );
    }
    if let Some(info) = signed.info(&token) {
        // A signature that verified came from this key: it must name a user.
        assert!(!info.username.is_empty());
    }
}

/// A WAL directory whose segments are the input, split where its first two bytes say.
pub fn wal_segments(data: &[u8]) {
    let (split, segments) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let disk = Arc::new(SimDisk::new(0));
    let dir = Path::new("/fuzz/wal");
    disk.create_dir_all(dir)
        .expect("a directory on a healthy disk");
    let (first, second) = segments.split_at(split.min(segments.len()));
    write(
        disk.as_ref(),
        &dir.join(format!("{:016x}-{:016x}.wal", 0, 0)),
        first,
    );
    if !second.is_empty() {
        write(
            disk.as_ref(),
            &dir.join(format!("{:016x}-{:016x}.wal", 1, 1)),
            second,
        );
    }
    let options = WalOptions {
        segment_bytes: 1 << 20,
        preallocate: false,
    };
    let _ = Wal::open(disk, dir, options);
}

/// A snapshot file read back at start.
pub fn snapshot_file(data: &[u8]) {
    let disk = Arc::new(SimDisk::new(0));
    let dir = Path::new("/fuzz/snap");
    let files = SnapshotFiles::open(disk.clone(), dir, 1).expect("a directory on a healthy disk");
    write(
        disk.as_ref(),
        &dir.join("0000000000000002-0000000000000009.snap"),
        data,
    );
    let _ = files.load_newest();
}

fn write(disk: &dyn Disk, path: &Path, data: &[u8]) {
    let file = disk.open(path, true).expect("a file on a healthy disk");
    file.write_at(0, data).expect("a write on a healthy disk");
}

/// A bbolt file (an etcd snapshot or backend): every bucket and entry is read or the file
/// is refused; a file read whole writes back, through the writer, as the same buckets and
/// entries.
pub fn bolt_file(data: &[u8]) {
    type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;
    let read = |bytes: &[u8]| -> Option<Buckets> {
        let mut reader = crate::bolt::Reader::new(std::io::Cursor::new(bytes)).ok()?;
        let _ = reader.verify_trailer();
        let mut buckets = Vec::new();
        for bucket in reader.buckets().ok()? {
            let mut entries = Vec::new();
            for entry in reader.entries(&bucket) {
                let entry = entry.ok()?;
                if entry.nested_bucket {
                    // The writer makes top-level buckets only, as etcd uses.
                    return None;
                }
                entries.push((entry.key, entry.value));
            }
            buckets.push((bucket.name, entries));
        }
        Some(buckets)
    };
    let Some(buckets) = read(data) else {
        return;
    };
    let mut writer = crate::bolt::Writer::new(std::io::Cursor::new(Vec::new()), 4096)
        .expect("a writer in memory");
    for (name, entries) in &buckets {
        writer.begin_bucket(name).expect("bucket names come sorted");
        for (key, value) in entries {
            writer.put(key, value).expect("keys come sorted");
        }
    }
    let written = writer.finish().expect("a finished file").into_inner();
    assert_eq!(
        read(&written).as_ref(),
        Some(&buckets),
        "a file changed on its way through the writer"
    );
}

/// A snapshot file given to `oxctl snapshot status` and `restore`: its status is read and
/// its contents restored into a new backend, or it is refused; never a panic.
pub fn etcd_snapshot(data: &[u8]) {
    let Ok(mut reader) = crate::bolt::Reader::new(std::io::Cursor::new(data)) else {
        return;
    };
    let _ = crate::server::fuzz_snapshot_status(&mut reader);
    let disk = Arc::new(SimDisk::new(0));
    let path = Path::new("/fuzz/restore/db");
    let Ok(mut backend) = crate::mvcc::Backend::open(disk, path) else {
        return;
    };
    let _ = crate::server::fuzz_snapshot_restore(&mut reader, &mut backend, &mut |_| {});
}

/// Lines of v2 requests (`METHOD-BYTE path?query<TAB>form body`), parsed as the v2 API
/// parses them and applied to one v2 store: parsing refuses or accepts without panicking,
/// every answer and error is valid JSON, a write that succeeds moves the store's index by
/// one, and the nodes the store persisted rebuild the same tree.
pub fn v2_requests(data: &[u8]) {
    use crate::server::v2http::{error_json, event_json, parse_key_request};
    use crate::v2::{NodeRecord, V2Store};
    const NOW: i64 = 1_800_000_000_000_000_000;
    let mut store = V2Store::default();
    let mut table: std::collections::BTreeMap<String, NodeRecord> = Default::default();
    for (at, line) in data.split(|byte| *byte == b'\n').take(64).enumerate() {
        let Some((&method, rest)) = line.split_first() else {
            continue;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            continue;
        };
        let (target, body) = rest.split_once('\t').unwrap_or((rest, ""));
        let method = match method % 4 {
            0 => http::Method::GET,
            1 => http::Method::PUT,
            2 => http::Method::POST,
            _ => http::Method::DELETE,
        };
        let Ok(request) = http::Request::builder()
            .method(method)
            .uri(format!("/v2/keys/{target}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(bytes::Bytes::from(body.to_owned()))
        else {
            continue;
        };
        let now = NOW + at as i64 * 1_000_000_000;
        let parsed = match parse_key_request(&request, now) {
            Ok(parsed) => parsed,
            Err(error) => {
                assert_json(&error_json(&error));
                continue;
            }
        };
        let before = store.index();
        let is_read =
            parsed.request.method == crate::proto::oxcdpb::v2_request::Method::Qget as i32;
        match store.apply(&parsed.request, now) {
            Ok(event) => {
                assert_json(&event_json(&event, false));
                if !is_read {
                    assert_eq!(store.index(), before + 1, "a write moves the index by one");
                }
            }
            Err(error) => {
                assert_json(&error_json(&error));
                assert_eq!(store.index(), before, "a refused request changes nothing");
            }
        }
        // Expiry at this request's time, as the leader's sync would.
        for event in store.expire(now, now) {
            assert_json(&event_json(&event, false));
        }
        for (path, record) in store.take_changes() {
            match record {
                Some(record) => table.insert(path, record),
                None => table.remove(&path),
            };
        }
    }
    let rebuilt = V2Store::from_records(table, store.index()).expect("persisted nodes rebuild");
    assert_eq!(
        rebuilt.get("/", true, true, NOW).map(|event| event.node),
        store.get("/", true, true, NOW).map(|event| event.node),
        "the persisted nodes rebuild another tree"
    );
}

fn assert_json(text: &str) {
    if let Err(error) = serde_json::from_str::<serde_json::Value>(text) {
        panic!("not JSON ({error}): {text}");
    }
}
