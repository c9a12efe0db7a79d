//! Entry points of the fuzz targets (`tests/fuzz`), one per decoder of outside input: what
//! a peer sends, what a client sends (gRPC's HTTP/2 headers, the JSON gateway's bodies,
//! auth tokens, and its requests themselves, through a member in process), and what is
//! read back from disk at start (WAL segments, snapshot files), or handed in by an operator
//! (bbolt snapshot files), and the v2 API's requests.
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

/// Client requests (KV, Lease and Auth) sent one after another to a member in process
/// (`server::InProcessMember`): each goes through its gRPC service's checks and, if it
/// writes, through the applier into a real store. Beyond not panicking: a refused request
/// is refused in one of etcd's words and changes nothing; an accepted one moves the
/// revision by at most one (a put by exactly one); ranges answer keys in order within the
/// range asked for; the backend reopened holds the same keyspace; and the same requests
/// sent to a second, fresh member meet the same answers and leave the same HashKV.
pub fn client_requests(data: &[u8]) {
    use crate::server::InProcessMember;
    let mut input = RequestBytes {
        data,
        logins_left: crate::auth::attempts::FREE_FAILURES,
    };
    let flags = member_flags(input.byte());
    let disk = Arc::new(SimDisk::new(0));
    let mut member =
        InProcessMember::open(disk.clone(), &flags).expect("a member on a healthy disk");
    let mut steps = Vec::new();
    let mut outcomes = Vec::new();
    let mut last_lease = 0;
    while !input.data.is_empty() && steps.len() < CLIENT_REQUESTS_MAX {
        let step = input.step(last_lease);
        let (outcome, granted) = take_step(&mut member, &step);
        last_lease = granted.unwrap_or(last_lease);
        outcomes.push(outcome);
        steps.push(step);
    }
    let hash = member.hash_kv().expect("the HashKV of the keyspace");
    member.close().expect("a clean stop");

    let reopened = InProcessMember::open(disk, &flags).expect("the member reopened");
    assert_eq!(
        reopened
            .hash_kv()
            .expect("the HashKV of the reopened keyspace"),
        hash,
        "the backend reopened holds another keyspace"
    );
    drop(reopened);

    let mut second = InProcessMember::open(Arc::new(SimDisk::new(0)), &flags)
        .expect("a second member on a healthy disk");
    for (at, (step, outcome)) in steps.iter().zip(&outcomes).enumerate() {
        let (again, _) = take_step(&mut second, step);
        assert_eq!(
            &again, outcome,
            "request {at} ({step:?}) met another answer"
        );
    }
    assert_eq!(
        second.hash_kv().expect("the HashKV of the second keyspace"),
        hash,
        "the same requests left another keyspace"
    );
}

/// Requests one input sends at most.
const CLIENT_REQUESTS_MAX: usize = 48;

/// The member's operations in a transaction at most (`--max-txn-ops`): low, so that the
/// limit is within the fuzzer's reach.
const FUZZ_TXN_OPS_MAX: usize = 8;

/// The member's flags, chosen by the input's first byte: a backend quota the first few
/// writes exhaust, or none to speak of.
fn member_flags(choice: u8) -> Vec<&'static str> {
    let mut flags = vec![
        "--max-txn-ops",
        "8",
        "--max-request-bytes",
        "1024",
        "--bcrypt-cost",
        "4",
    ];
    if choice & 1 == 1 {
        flags.extend(["--quota-backend-bytes", FUZZ_SMALL_QUOTA]);
    }
    flags
}

/// A backend quota a few kilobytes above what an empty backend takes.
const FUZZ_SMALL_QUOTA: &str = "80000";

/// What one step of an input does: forget the token of the last Authenticate, or send a
/// request.
#[derive(Clone, Debug)]
enum Step {
    LogOut,
    Send(crate::server::ClientRequest),
}

/// What a step came to, as the second member must meet it too: the error's text, or the
/// revision after the request.
type StepOutcome = Result<i64, String>;

/// Takes `step` on `member` and checks what it did; answers its outcome and the id of the
/// lease it granted, if it granted one.
fn take_step(
    member: &mut crate::server::InProcessMember,
    step: &Step,
) -> (StepOutcome, Option<i64>) {
    use crate::server::ClientResponse;
    let request = match step {
        Step::LogOut => {
            member.log_out();
            return (Ok(member.revision()), None);
        }
        Step::Send(request) => request,
    };
    let revision = member.revision();
    let hash = member.hash_kv().expect("the HashKV before a request");
    let answer = member.call(request.clone());
    let after = member.revision();
    let response = match answer {
        Err(status) => {
            assert!(
                is_etcd_refusal(status.message()),
                "{request:?} was refused in words not etcd's: {status:?}"
            );
            assert_eq!(
                after, revision,
                "{request:?} was refused but moved the revision"
            );
            assert_eq!(
                member.hash_kv().expect("the HashKV after a refusal"),
                hash,
                "{request:?} was refused but changed the keyspace"
            );
            return (Err(status.message().to_owned()), None);
        }
        Ok(response) => response,
    };
    assert!(
        after == revision || after == revision + 1,
        "{request:?} moved the revision from {revision} to {after}"
    );
    use crate::server::ClientRequest as Q;
    let header_revision = |header: &Option<pb::ResponseHeader>| header.as_ref().map(|h| h.revision);
    let mut granted = None;
    match (request, &response) {
        (Q::Range(range), ClientResponse::Range(answer)) => {
            assert_eq!(after, revision, "a range moved the revision");
            check_range_answer(range, answer);
            assert_eq!(header_revision(&answer.header), Some(after));
        }
        (Q::Put(_), ClientResponse::Put(answer)) => {
            assert_eq!(
                after,
                revision + 1,
                "a put did not move the revision by one"
            );
            assert_eq!(header_revision(&answer.header), Some(after));
        }
        (Q::DeleteRange(_), ClientResponse::DeleteRange(answer)) => {
            let moved = i64::from(answer.deleted > 0);
            assert_eq!(
                after,
                revision + moved,
                "a delete of {} keys",
                answer.deleted
            );
            assert_eq!(header_revision(&answer.header), Some(after));
        }
        (Q::Txn(txn), ClientResponse::Txn(answer)) => {
            check_txn_answer(txn, answer);
            assert_eq!(header_revision(&answer.header), Some(after));
        }
        (Q::LeaseGrant(_), ClientResponse::LeaseGrant(answer)) => {
            assert_eq!(after, revision, "a lease grant moved the revision");
            granted = Some(answer.id);
        }
        (_, ClientResponse::Other { revision: answered }) => {
            assert_eq!(*answered, after, "{request:?} answered another revision");
        }
        (request, response) => panic!("{request:?} was answered with {response:?}"),
    }
    (Ok(after), granted)
}

/// The texts etcd refuses a client request with: its server errors and grpc-go's limit on
/// a message's size.
fn is_etcd_refusal(message: &str) -> bool {
    const REFUSALS: &[&str] = &[
        "etcdserver: key is not provided",
        "etcdserver: key not found",
        "etcdserver: value is provided",
        "etcdserver: lease is provided",
        "etcdserver: too many operations in txn request",
        "etcdserver: duplicate key given in txn request",
        "etcdserver: request is too large",
        "etcdserver: mvcc: required revision has been compacted",
        "etcdserver: mvcc: required revision is a future revision",
        "etcdserver: mvcc: database space exceeded",
        "etcdserver: requested lease not found",
        "etcdserver: lease already exists",
        "etcdserver: too large lease TTL",
        "etcdserver: root user does not exist",
        "etcdserver: root user does not have root role",
        "etcdserver: user name already exists",
        "etcdserver: user name is empty",
        "etcdserver: user name not found",
        "etcdserver: role name already exists",
        "etcdserver: role name not found",
        "etcdserver: role name is empty",
        "etcdserver: permission not given",
        "etcdserver: authentication failed, invalid user ID or password",
        "auth: authentication failed, password was given for no password user",
        "etcdserver: permission denied",
        "etcdserver: role is not granted to the user",
        "etcdserver: permission is not granted to the role",
        "etcdserver: authentication is not enabled",
        "etcdserver: revision of auth store is old",
        "etcdserver: invalid auth token",
        "etcdserver: invalid auth management",
    ];
    REFUSALS.contains(&message) || message.starts_with("grpc: received message larger than max (")
}

/// A range's answer: keys within the range asked for, each once, in the order asked for,
/// no more than the limit, values left out when asked.
fn check_range_answer(request: &pb::RangeRequest, answer: &pb::RangeResponse) {
    use pb::range_request::{SortOrder, SortTarget};
    let key = request.key.as_ref();
    let in_range = |found: &[u8]| match request.range_end.as_ref() {
        [] => found == key,
        [0] => found >= key,
        end => found >= key && found < end,
    };
    for kv in &answer.kvs {
        assert!(in_range(&kv.key), "{:?} is outside {request:?}", kv.key);
        if request.keys_only {
            assert!(kv.value.is_empty(), "a keys-only range answered a value");
        }
    }
    if request.count_only {
        assert!(answer.kvs.is_empty(), "a count-only range answered keys");
    }
    if request.limit > 0 {
        assert!(answer.kvs.len() as i64 <= request.limit, "past the limit");
    }
    assert!(
        answer.kvs.len() as i64 <= answer.count,
        "more keys than counted"
    );
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    if !filtered && !request.count_only {
        // Every key counted is answered, up to the limit; `more` says whether any was not.
        let limit = if request.limit > 0 {
            request.limit
        } else {
            i64::MAX
        };
        assert_eq!(
            answer.kvs.len() as i64,
            answer.count.min(limit),
            "{request:?} answered {} of {} keys",
            answer.kvs.len(),
            answer.count
        );
        assert_eq!(answer.more, answer.count > limit, "{request:?}: more");
    }
    let mut keys: Vec<&[u8]> = answer.kvs.iter().map(|kv| kv.key.as_ref()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), answer.kvs.len(), "a key answered twice");
    let (Ok(order), Ok(target)) = (
        SortOrder::try_from(request.sort_order),
        SortTarget::try_from(request.sort_target),
    ) else {
        return;
    };
    // Without an order, etcd answers keys ascending, and sorts ascending by any other
    // target.
    let order = match order {
        SortOrder::None => SortOrder::Ascend,
        order => order,
    };
    for pair in answer.kvs.windows(2) {
        let ordering = match target {
            SortTarget::Key => pair[0].key.cmp(&pair[1].key),
            SortTarget::Version => pair[0].version.cmp(&pair[1].version),
            SortTarget::Create => pair[0].create_revision.cmp(&pair[1].create_revision),
            SortTarget::Mod => pair[0].mod_revision.cmp(&pair[1].mod_revision),
            SortTarget::Value => pair[0].value.cmp(&pair[1].value),
        };
        let wrong = match order {
            SortOrder::Descend => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        assert_ne!(ordering, wrong, "{request:?} answered out of order");
    }
}

/// A transaction's answer: one response per operation of the branch it took, each of the
/// operation's kind, ranges answered as ranges must be.
fn check_txn_answer(request: &pb::TxnRequest, answer: &pb::TxnResponse) {
    use pb::request_op::Request as Op;
    use pb::response_op::Response as Answer;
    let branch = if answer.succeeded {
        &request.success
    } else {
        &request.failure
    };
    assert_eq!(
        branch.len(),
        answer.responses.len(),
        "one response per operation"
    );
    for (op, response) in branch.iter().zip(&answer.responses) {
        match (&op.request, &response.response) {
            (Some(Op::RequestRange(range)), Some(Answer::ResponseRange(answer))) => {
                check_range_answer(range, answer)
            }
            (Some(Op::RequestPut(_)), Some(Answer::ResponsePut(_)))
            | (Some(Op::RequestDeleteRange(_)), Some(Answer::ResponseDeleteRange(_))) => {}
            (Some(Op::RequestTxn(txn)), Some(Answer::ResponseTxn(answer))) => {
                check_txn_answer(txn, answer)
            }
            (op, response) => panic!("{op:?} was answered with {response:?}"),
        }
    }
}

/// The structured decoder of `client_requests`: every byte chooses something, and running
/// out of bytes reads as zeros, so every input decodes. Keys come mostly from a few short
/// ones, so that requests meet each other's keys.
struct RequestBytes<'a> {
    data: &'a [u8],
    /// Authenticate requests left to send. No more than the failures a user may have
    /// before a lockout: a lockout lasts for a time on the clock, so past it the two
    /// members could meet the same requests with different answers.
    logins_left: u32,
}

/// Transactions nest this deep at most.
const FUZZ_TXN_DEPTH_MAX: u8 = 2;

impl RequestBytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A small number that may be negative, for revisions, limits and versions.
    fn small(&mut self) -> i64 {
        i64::from(self.byte() as i8) % 16
    }

    fn key(&mut self) -> bytes::Bytes {
        const KEYS: [&[u8]; 10] = [
            b"a", b"a/1", b"a/2", b"a0", b"b", b"b/1", b"c", b"\0", b"\xff", b"a/",
        ];
        let choice = self.byte();
        match choice % 16 {
            0 => bytes::Bytes::new(),
            15 => {
                let len = usize::from(self.byte() % 9);
                bytes::Bytes::copy_from_slice(self.take(len))
            }
            n => bytes::Bytes::from_static(KEYS[usize::from(n) % KEYS.len()]),
        }
    }

    /// The end of a range starting at `key`: none (the key alone), `\0` (every key from
    /// `key` on), the end of the prefix `key`, or another key.
    fn range_end(&mut self, key: &[u8]) -> bytes::Bytes {
        match self.byte() % 6 {
            0 | 1 => bytes::Bytes::new(),
            2 => bytes::Bytes::from_static(b"\0"),
            3 => prefix_end(key),
            _ => self.key(),
        }
    }

    fn value(&mut self) -> bytes::Bytes {
        match self.byte() {
            0 => bytes::Bytes::new(),
            choice @ 1..=200 => bytes::Bytes::from(vec![b'v'; usize::from(choice % 8)]),
            // Up to 1,320 bytes: past the request size limit from 243 on.
            choice => bytes::Bytes::from(vec![choice; usize::from(choice - 200) * 24]),
        }
    }

    fn lease(&mut self, last_lease: i64) -> i64 {
        match self.byte() % 6 {
            0 | 1 => 0,
            2 => last_lease,
            choice => i64::from(choice) - 2,
        }
    }

    fn name(&mut self) -> String {
        ["root", "alice", "", "app"][usize::from(self.byte() % 4)].to_owned()
    }

    fn password(&mut self) -> String {
        ["pw", "", "other"][usize::from(self.byte() % 3)].to_owned()
    }

    /// A bcrypt hash as a client may send it instead of a password (base64, as the auth
    /// store keeps it): none, one of "pw" at cost 4, or something that is no hash at all.
    fn hashed_password(&mut self) -> String {
        const PW_COST_4: &str =
            "JDJhJDA0JEpmN1pFL0oyMkMvQk1xY3FlWlRWaS5SQTFzV3RhZC8zZXBqZDNpOGt3VFhUbTM3NHZ6RHVD";
        ["", "", PW_COST_4, "JDJiJDA0JA==", "not base64"][usize::from(self.byte() % 5)].to_owned()
    }

    fn step(&mut self, last_lease: i64) -> Step {
        use crate::server::ClientRequest as Q;
        let request = match self.byte() % 32 {
            0..=4 => Q::Range(self.range()),
            5..=8 => Q::Put(self.put(last_lease)),
            9..=10 => Q::DeleteRange(self.delete()),
            11..=15 => Q::Txn(self.txn(last_lease, 0)),
            16 => Q::Compaction(pb::CompactionRequest {
                revision: self.small(),
                physical: self.flag(),
            }),
            17 => Q::LeaseGrant(pb::LeaseGrantRequest {
                ttl: match self.byte() % 4 {
                    0 => 9_000_000_001,
                    choice => i64::from(choice) * 30 - 40,
                },
                id: self.lease(last_lease),
            }),
            18 => Q::LeaseRevoke(pb::LeaseRevokeRequest {
                id: self.lease(last_lease),
            }),
            19 => Q::LeaseTimeToLive(pb::LeaseTimeToLiveRequest {
                id: self.lease(last_lease),
                keys: self.flag(),
            }),
            20 => Q::LeaseLeases(pb::LeaseLeasesRequest {}),
            21 => Q::UserAdd(pb::AuthUserAddRequest {
                name: self.name(),
                password: self.password(),
                options: Some(crate::proto::authpb::UserAddOptions {
                    no_password: self.flag(),
                }),
                hashed_password: self.hashed_password(),
            }),
            22 => Q::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: self.name(),
                role: self.name(),
            }),
            23 => Q::RoleAdd(pb::AuthRoleAddRequest { name: self.name() }),
            24 => {
                let key = self.key();
                Q::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                    name: self.name(),
                    perm: Some(crate::proto::authpb::Permission {
                        perm_type: i32::from(self.byte() % 4),
                        range_end: self.range_end(&key),
                        key,
                    }),
                })
            }
            25 => match self.byte() % 3 {
                0 => Q::AuthEnable(pb::AuthEnableRequest {}),
                1 => Q::AuthDisable(pb::AuthDisableRequest {}),
                _ => return Step::LogOut,
            },
            26 if self.logins_left == 0 => return Step::LogOut,
            26 => {
                self.logins_left -= 1;
                Q::Authenticate(pb::AuthenticateRequest {
                    name: self.name(),
                    password: self.password(),
                })
            }
            27 => {
                let key = self.key();
                Q::RoleRevokePermission(pb::AuthRoleRevokePermissionRequest {
                    role: self.name(),
                    range_end: self.range_end(&key),
                    key,
                })
            }
            28 => match self.byte() % 4 {
                0 => Q::UserDelete(pb::AuthUserDeleteRequest { name: self.name() }),
                1 => Q::RoleDelete(pb::AuthRoleDeleteRequest { role: self.name() }),
                2 => Q::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
                    name: self.name(),
                    role: self.name(),
                }),
                _ => Q::UserChangePassword(pb::AuthUserChangePasswordRequest {
                    name: self.name(),
                    password: self.password(),
                    hashed_password: self.hashed_password(),
                }),
            },
            29 => match self.byte() % 4 {
                0 => Q::UserGet(pb::AuthUserGetRequest { name: self.name() }),
                1 => Q::RoleGet(pb::AuthRoleGetRequest { role: self.name() }),
                2 => Q::UserList(pb::AuthUserListRequest {}),
                _ => Q::RoleList(pb::AuthRoleListRequest {}),
            },
            _ => Q::Range(self.range()),
        };
        Step::Send(request)
    }

    fn range(&mut self) -> pb::RangeRequest {
        let key = self.key();
        let range_end = self.range_end(&key);
        let options = self.byte();
        let mut request = pb::RangeRequest {
            key,
            range_end,
            serializable: options & 1 == 1,
            keys_only: options & 2 == 2,
            count_only: options & 4 == 4,
            ..Default::default()
        };
        if options & 8 == 8 {
            request.limit = self.small();
        }
        if options & 16 == 16 {
            request.revision = self.small();
        }
        if options & 32 == 32 {
            // Values past the enums' end too: a client may send any number.
            request.sort_order = i32::from(self.byte() % 4);
            request.sort_target = i32::from(self.byte() % 6);
        }
        if options & 64 == 64 {
            request.min_mod_revision = self.small();
            request.max_mod_revision = self.small();
        }
        if options & 128 == 128 {
            request.min_create_revision = self.small();
            request.max_create_revision = self.small();
        }
        request
    }

    fn put(&mut self, last_lease: i64) -> pb::PutRequest {
        let options = self.byte();
        pb::PutRequest {
            key: self.key(),
            value: self.value(),
            lease: self.lease(last_lease),
            prev_kv: options & 1 == 1,
            ignore_value: options & 2 == 2,
            ignore_lease: options & 4 == 4,
        }
    }

    fn delete(&mut self) -> pb::DeleteRangeRequest {
        let key = self.key();
        pb::DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.flag(),
        }
    }

    fn txn(&mut self, last_lease: i64, depth: u8) -> pb::TxnRequest {
        use pb::compare::TargetUnion;
        let counts = self.byte();
        // Up to one past the limit, so that the limit is met.
        let count = |bits: u8| usize::from(bits) % (FUZZ_TXN_OPS_MAX + 2);
        let compares = (0..count(counts & 0x0f))
            .map(|_| {
                let choice = self.byte();
                let key = self.key();
                pb::Compare {
                    result: i32::from(choice % 5),
                    target: i32::from(choice / 5 % 6),
                    range_end: self.range_end(&key),
                    key,
                    target_union: match self.byte() % 6 {
                        0 => Some(TargetUnion::Version(self.small())),
                        1 => Some(TargetUnion::CreateRevision(self.small())),
                        2 => Some(TargetUnion::ModRevision(self.small())),
                        3 => Some(TargetUnion::Value(self.value())),
                        4 => Some(TargetUnion::Lease(self.lease(last_lease))),
                        _ => None,
                    },
                }
            })
            .collect();
        let success = self.ops(count(counts >> 4), last_lease, depth);
        let failure_count = count(self.byte());
        let failure = self.ops(failure_count, last_lease, depth);
        pb::TxnRequest {
            compare: compares,
            success,
            failure,
        }
    }

    fn ops(&mut self, count: usize, last_lease: i64, depth: u8) -> Vec<pb::RequestOp> {
        use pb::request_op::Request as Op;
        (0..count)
            .map(|_| pb::RequestOp {
                request: match self.byte() % 8 {
                    0..=1 => Some(Op::RequestRange(self.range())),
                    2..=3 => Some(Op::RequestPut(self.put(last_lease))),
                    4 => Some(Op::RequestDeleteRange(self.delete())),
                    5..=6 if depth < FUZZ_TXN_DEPTH_MAX => {
                        Some(Op::RequestTxn(self.txn(last_lease, depth + 1)))
                    }
                    _ => None,
                },
            })
            .collect()
    }
}

/// The end of the range of every key with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> bytes::Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return bytes::Bytes::from(end);
        }
    }
    bytes::Bytes::from_static(b"\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash the decoder offers as a client's `hashedPassword` is one of "pw", so that
    /// a user added with it can log in.
    #[test]
    fn the_offered_hash_is_one_of_the_offered_password() {
        use base64::Engine as _;
        let mut input = RequestBytes {
            data: &[2],
            logins_left: 0,
        };
        let offered = input.hashed_password();
        let hash = base64::engine::general_purpose::STANDARD
            .decode(offered)
            .expect("base64");
        let hash = String::from_utf8(hash).expect("a bcrypt hash is text");
        assert!(bcrypt::verify("pw", &hash).expect("a hash bcrypt reads"));
        assert!(!bcrypt::verify("other", &hash).expect("a hash bcrypt reads"));
    }
}
