//! The clients and watchers of a run.
//!
//! Each client is bound to one member and sends one request at a time until its deadline:
//! gets, prefix reads and deletes, reads at a revision it saw earlier, puts, deletes,
//! compare-and-swap txns guarded on a key's mod revision, txns over several keys, leases
//! (grants, puts attached to them, keep-alives, revokes), leases left to expire, and
//! compactions, all over a few keys so that clients conflict. A quarter of the keys are
//! byte strings ([`BYTE_KEYS`]: a two-byte last character, bytes that are not UTF-8), and
//! the prefixes ([`PREFIXES`]) end on bytes as etcd's client computes them. Values are
//! unique (client id and sequence number), so every read names the write it saw. A request gets a short timeout: a fault then makes an unknown
//! outcome, not a hang. After anything but an answer or a definite refusal the client drops
//! its connection and dials again.
//!
//! Each member has one watcher of every key from revision 1 with `prev_kv`: the checker's
//! reference watch. When its stream fails or goes quiet, the record so far is kept and the
//! watcher opens a new one on the same member from the revision after the last event it
//! saw (the checker chains the records). At the end it reads on until it has seen the run's
//! final revision, so that its record is complete. Compactions stay below the next
//! revision any of these may ask for, so they are never cancelled. One more watcher, of a
//! prefix from the current revision, is not spared: it opens a new stream every
//! [`PREFIX_WATCH_LIFETIME`], every other one [`PREFIX_WATCH_BACK`] revisions back, and a
//! compaction that cancels it makes it resume after the compaction's revision. Every watch record carries when its create
//! request was sent and which server process served it, and every compaction which process
//! answered it, so the checker can hold a watch created after a compaction to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jepsen_lite::history::{
    prefix_end, Compare as HCompare, CompareOperand, CompareResult, CompareTarget, Event,
    EventType, KeyValue, RangeRequest as HRange, TxnOp, Watch, WatchOrigin, WatchResponse,
};
use jepsen_lite::{Input, Output};
use oxcd::net::dial::Dialer;
use oxcd::proto::etcdserverpb::compare::{CompareResult as PbResult, CompareTarget as PbTarget};
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::lease_client::LeaseClient;
use oxcd::proto::etcdserverpb::request_op::Request as PbOp;
use oxcd::proto::etcdserverpb::response_op::Response as PbOpResponse;
use oxcd::proto::etcdserverpb::watch_client::WatchClient;
use oxcd::proto::etcdserverpb::{
    compare, watch_request, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use oxcd::proto::mvccpb;
use oxcd::server::ReceiverStream;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Status;

use crate::cluster::Incarnations;
use crate::record::{outcome_of_status, Outcome, Recorder};

/// How long a client waits for one answer before calling its outcome unknown. Short next
/// to a fault (seconds), long next to a request on loopback (milliseconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a dial may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A watch stream silent for this long is closed and opened again: under steady traffic
/// silence means a paused or cut-off member.
const WATCH_QUIET: Duration = Duration::from_secs(3);
/// How long a stream of the prefix watcher lives before it is opened again.
const PREFIX_WATCH_LIFETIME: Duration = Duration::from_millis(1500);
/// How many revisions every other stream of the prefix watcher goes back.
const PREFIX_WATCH_BACK: i64 = 40;

/// Dials `address`, within [`CONNECT_TIMEOUT`].
pub async fn connect(address: SocketAddr) -> Result<Channel, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, Dialer::Plain.connect(&address.to_string())).await {
        Ok(result) => result,
        Err(_) => Err(format!("connecting to {address}: timed out")),
    }
}

/// A call within [`REQUEST_TIMEOUT`]; a timeout is an unknown outcome.
pub async fn within<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Outcome> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(outcome_of_status(&status)),
        Err(_) => Err(Outcome::Unknown("timed out".into())),
    }
}

/// Keys and values as the checker holds them (one character per byte).
fn text(bytes: &[u8]) -> String {
    jepsen_lite::bytes::from_bytes(bytes)
}

/// The bytes of a key or value held as the checker holds them.
fn raw(text: &str) -> Vec<u8> {
    jepsen_lite::bytes::to_bytes(text).expect("built from bytes")
}

/// Keys that are byte strings, besides `k0`, `k1`, ...: a last character of two bytes
/// (`k¿`, `c2 bf`), a key after it (`k¿0`), `k c2 c0` (past the prefix `k¿` on bytes yet
/// below `kÀ`, where a prefix end computed on characters would put it), and keys that
/// are not UTF-8 (`k ff`, `k ff fe`, `k fe`; a lossy decoding turns `ff` into U+FFFD).
pub const BYTE_KEYS: &[&[u8]] = &[
    b"k\xc2\xbf",
    b"k\xc2\xbf0",
    b"k\xc2\xc0",
    b"k\xff",
    b"k\xff\xfe",
    b"k\xfe",
];

/// The prefixes of prefix reads, deletes and watches: `k¿`, half a character (`k c2`),
/// `k ff` (its range end drops the `ff`: `l`), `k fe`, and `k` (every key of the run).
pub const PREFIXES: &[&[u8]] = &[b"k\xc2\xbf", b"k\xc2", b"k\xff", b"k\xfe", b"k"];

/// A key for one operation: a quarter of them a byte string of [`BYTE_KEYS`].
fn pick_key(rng: &mut SmallRng, keys: usize) -> String {
    if rng.random_bool(0.25) {
        text(BYTE_KEYS[rng.random_range(0..BYTE_KEYS.len())])
    } else {
        format!("k{}", rng.random_range(0..keys))
    }
}

fn pick_prefix(rng: &mut SmallRng) -> String {
    text(PREFIXES[rng.random_range(0..PREFIXES.len())])
}

/// The wire range end of a prefix, computed on bytes as etcd's client does.
fn prefix_range_end(prefix: &str) -> String {
    prefix_end(prefix)
}

/// TTL of the leases left to expire, seconds: above etcd's minimum lease TTL (1.5 x the
/// election timeout) and short next to a run.
pub const EXPIRING_TTL: i64 = 3;

fn key_value(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: text(&kv.key),
        value: Some(text(&kv.value)),
        version: Some(kv.version),
        create_revision: Some(kv.create_revision),
        mod_revision: Some(kv.mod_revision),
        lease: Some(kv.lease),
    }
}

pub fn range_output(response: &RangeResponse) -> Output {
    Output {
        revision: response.header.as_ref().map(|h| h.revision),
        kvs: Some(response.kvs.iter().map(key_value).collect()),
        count: Some(response.count),
        more: Some(response.more),
        ..Output::default()
    }
}

fn revision_output(header: Option<ResponseHeader>) -> Output {
    Output {
        revision: header.map(|h| h.revision),
        ..Output::default()
    }
}

fn txn_output(response: &TxnResponse) -> Output {
    let responses = response
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(PbOpResponse::ResponseRange(range)) => Output {
                kvs: Some(range.kvs.iter().map(key_value).collect()),
                ..Output::default()
            },
            Some(PbOpResponse::ResponseDeleteRange(delete)) => Output {
                deleted: Some(delete.deleted),
                ..Output::default()
            },
            _ => Output::default(),
        })
        .collect();
    Output {
        succeeded: Some(response.succeeded),
        responses: Some(responses),
        ..revision_output(response.header)
    }
}

/// A range over `[key, range_end)` (one key when `range_end` is empty) at `revision`.
fn range_request(key: &str, range_end: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        key: raw(key).into(),
        range_end: raw(range_end).into(),
        revision,
        ..Default::default()
    }
}

/// A linearizable read of one key (or of every key with the prefix `k`), recorded.
pub async fn read(
    recorder: &Recorder,
    client: &mut u64,
    member: usize,
    channel: Channel,
    key: &str,
    prefix: bool,
) -> Result<Output, Outcome> {
    let input = Input::Get {
        key: key.to_string(),
        range_end: None,
        prefix,
    };
    let end = if prefix {
        jepsen_lite::history::prefix_end(key)
    } else {
        String::new()
    };
    let call = recorder.now();
    let result = within(KvClient::new(channel).range(range_request(key, &end, 0))).await;
    let return_time = recorder.now();
    let outcome = match &result {
        Ok(response) => Outcome::Ok(range_output(response)),
        Err(outcome) => outcome.clone(),
    };
    recorder.record(client, member, input, call, return_time, outcome.clone());
    match outcome {
        Outcome::Ok(output) => Ok(output),
        other => Err(other),
    }
}

/// A put, recorded; returns its revision.
pub async fn write(
    recorder: &Recorder,
    client: &mut u64,
    member: usize,
    channel: Channel,
    key: &str,
    value: &str,
) -> Result<Output, Outcome> {
    let input = Input::Put {
        key: key.to_string(),
        value: value.to_string(),
        lease: None,
    };
    let request = PutRequest {
        key: raw(key).into(),
        value: raw(value).into(),
        ..Default::default()
    };
    let call = recorder.now();
    let result = within(KvClient::new(channel).put(request)).await;
    let return_time = recorder.now();
    let outcome = match result {
        Ok(response) => Outcome::Ok(revision_output(response.header)),
        Err(outcome) => outcome,
    };
    recorder.record(client, member, input, call, return_time, outcome.clone());
    match outcome {
        Outcome::Ok(output) => Ok(output),
        other => Err(other),
    }
}

/// What the clients share.
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub endpoints: Vec<SocketAddr>,
    pub keys: usize,
    /// TTL of the leases clients grant and keep: longer than the run, so that none of
    /// them expires (the leases left to expire have [`EXPIRING_TTL`]).
    pub lease_ttl: i64,
    /// The watchers of every key: compactions stay below where they resume.
    pub watch: Arc<WatchControl>,
    /// Which process of each member serves (see `cluster::Incarnations`).
    pub incarnations: Incarnations,
    /// The least time between two operations of one client (`--rate`), if any.
    pub pace: Option<Duration>,
    /// Clients stop when this is set.
    pub stop: AtomicBool,
}

/// What a client picks, with relative weights roughly those of etcd's robustness traffic
/// (reads and puts most, then txns, deletes, ranges).
#[derive(Clone, Copy, Debug)]
enum Pick {
    Get,
    Prefix,
    PastRead,
    Put,
    Delete,
    PrefixDelete,
    CompareAndSwap,
    MultiKeyTxn,
    Lease,
    ExpiringLease,
    Compact,
}

const MIX: [(u32, Pick); 11] = [
    (15, Pick::Get),
    (5, Pick::Prefix),
    (5, Pick::PastRead),
    (20, Pick::Put),
    (5, Pick::Delete),
    (1, Pick::PrefixDelete),
    (8, Pick::CompareAndSwap),
    (6, Pick::MultiKeyTxn),
    (4, Pick::Lease),
    (2, Pick::ExpiringLease),
    (1, Pick::Compact),
];

fn pick(rng: &mut SmallRng) -> Pick {
    let total: u32 = MIX.iter().map(|(weight, _)| weight).sum();
    let mut roll = rng.random_range(0..total);
    for (weight, pick) in MIX {
        if roll < weight {
            return pick;
        }
        roll -= weight;
    }
    Pick::Get
}

/// One client bound to `member`, until `shared.stop`.
pub async fn client(shared: Arc<Shared>, member: usize, seed: u64) {
    let recorder = &shared.recorder;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut client = recorder.new_client();
    let mut sequence = 0u64;
    let mut channel: Option<Channel> = None;
    // The newest mod revision this client saw per key: the guards of its compare-and-swaps.
    let mut seen: HashMap<String, i64> = HashMap::new();
    // Leases this client granted to expire (see `EXPIRING_TTL`): puts attach to them, and
    // nothing renews or revokes them.
    let mut expiring: Vec<i64> = Vec::new();
    // Some header revisions this client was told: what its past-revision reads pick from.
    let mut revisions: Vec<i64> = Vec::new();
    // Leases this client was told it granted, and has not revoked or seen gone.
    let mut leases: Vec<i64> = Vec::new();
    // When the next operation may start. A client held up (a fault, a slow answer) starts
    // its next operation at once but does not make up for the time lost with a burst.
    let mut next_start = tokio::time::Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(pace) = shared.pace {
            let now = tokio::time::Instant::now();
            if next_start > now {
                tokio::time::sleep_until(next_start).await;
            }
            next_start = next_start.max(now) + pace;
        }
        sequence += 1;
        let which = pick(&mut rng);
        let key = pick_key(&mut rng, shared.keys);
        let value = format!("c{client}-{sequence}");
        let (input, request) = match which {
            Pick::ExpiringLease => {
                expiring_lease_request(&expiring, client, sequence, &key, &value, &mut rng)
            }
            Pick::Compact => compact_request(&revisions, shared.watch.floor(), &key, &mut rng),
            Pick::Lease => lease_request(
                &leases,
                client,
                sequence,
                shared.lease_ttl,
                &key,
                &value,
                &mut rng,
            ),
            _ => build(
                which,
                &key,
                &value,
                &seen,
                &revisions,
                shared.keys,
                &mut rng,
            ),
        };
        let incarnation = shared.incarnations.get(member);
        let channel_now = match &channel {
            Some(channel) => channel.clone(),
            None => match connect(shared.endpoints[member]).await {
                Ok(connected) => {
                    channel = Some(connected.clone());
                    connected
                }
                Err(error) => {
                    let now = recorder.now();
                    recorder.record(
                        &mut client,
                        member,
                        input,
                        now,
                        now,
                        Outcome::NotSent(error),
                    );
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..150))).await;
                    continue;
                }
            },
        };
        let call = recorder.now();
        let outcome = send(channel_now, request).await;
        let return_time = recorder.now();
        if let Outcome::Ok(output) = &outcome {
            learn(output, &input, &mut seen, &mut revisions, &mut rng);
            match &input {
                Input::LeaseGrant { id, ttl } if *ttl == EXPIRING_TTL => {
                    // Granted no earlier than the call: it cannot expire before the TTL
                    // has run from there (a server may only lengthen a TTL).
                    recorder.record_expiry(*id, call + EXPIRING_TTL * 1_000_000_000);
                    expiring.push(*id);
                    if expiring.len() > 4 {
                        expiring.remove(0);
                    }
                }
                Input::LeaseGrant { id, .. } => leases.push(*id),
                Input::LeaseRevoke { id } => leases.retain(|lease| lease != id),
                Input::LeaseKeepAlive { id } if output.error.is_some() => {
                    leases.retain(|lease| lease != id)
                }
                _ => {}
            }
        }
        let failed = !matches!(outcome, Outcome::Ok(_) | Outcome::Failed(_));
        // A compaction names the process that answered it: a watch created there
        // afterwards must not start below it (jepsen-lite's `compacted` guarantee).
        let process = match input {
            Input::Compact { .. } => Some(
                shared
                    .incarnations
                    .process(member, incarnation)
                    .unwrap_or_else(|| format!("m{member}.restarted-{call}")),
            ),
            _ => None,
        };
        recorder.record_on(
            &mut client,
            member,
            process,
            input,
            call,
            return_time,
            outcome,
        );
        if failed {
            channel = None;
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
        }
    }
}

/// A request on the wire.
enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    /// One keep-alive of the lease, on a stream of its own.
    KeepAlive(i64),
    Compact(CompactionRequest),
}

async fn send(channel: Channel, request: Request) -> Outcome {
    let mut kv = KvClient::new(channel.clone());
    let result = match request {
        Request::Range(request) => within(kv.range(request)).await.map(|r| range_output(&r)),
        Request::Put(request) => within(kv.put(request))
            .await
            .map(|r| revision_output(r.header)),
        Request::Delete(request) => within(kv.delete_range(request)).await.map(|r| Output {
            deleted: Some(r.deleted),
            ..revision_output(r.header)
        }),
        Request::Txn(request) => within(kv.txn(request)).await.map(|r| txn_output(&r)),
        Request::Compact(request) => within(kv.compact(request))
            .await
            .map(|r| revision_output(r.header)),
        Request::LeaseGrant(request) => within(LeaseClient::new(channel).lease_grant(request))
            .await
            .map(|r| revision_output(r.header)),
        Request::LeaseRevoke(request) => within(LeaseClient::new(channel).lease_revoke(request))
            .await
            .map(|r| revision_output(r.header)),
        // The header's revision is not recorded: a follower answers with its own, which
        // may lag the leader that renewed the lease. TTL 0 is how a lease that is gone is
        // answered.
        Request::KeepAlive(id) => within(keep_alive_once(channel, id))
            .await
            .map(|ttl| Output {
                error: (ttl <= 0).then(|| "lease not found".to_string()),
                ..Output::default()
            }),
    };
    match result {
        Ok(output) => Outcome::Ok(output),
        Err(outcome) => outcome,
    }
}

/// One keep-alive of lease `id` on a stream of its own; the TTL it was renewed for, 0 when
/// the lease is gone.
async fn keep_alive_once(channel: Channel, id: i64) -> Result<tonic::Response<i64>, Status> {
    // A channel of one: one request, then the sender drops and the stream ends.
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    let _ = requests.send(LeaseKeepAliveRequest { id }).await;
    let response = LeaseClient::new(channel)
        .lease_keep_alive(ReceiverStream(receiver))
        .await?;
    match response.into_inner().message().await? {
        Some(response) => Ok(tonic::Response::new(response.ttl)),
        None => Err(Status::unavailable("keep-alive stream ended")),
    }
}

/// A lease request: a grant (always when the client holds none), a put attached to one
/// of its leases, a keep-alive or a revoke. Lease ids are the client's and sequence
/// number's, so unique in the run.
fn lease_request(
    leases: &[i64],
    client: u64,
    sequence: u64,
    ttl: i64,
    key: &str,
    value: &str,
    rng: &mut SmallRng,
) -> (Input, Request) {
    let choice = rng.random_range(0..4);
    if choice == 0 || leases.is_empty() {
        let id = ((client as i64) << 24) | (sequence as i64 & 0xff_ffff);
        return (
            Input::LeaseGrant { id, ttl },
            Request::LeaseGrant(LeaseGrantRequest { ttl, id }),
        );
    }
    let id = leases[rng.random_range(0..leases.len())];
    match choice {
        1 => (
            Input::Put {
                key: key.to_string(),
                value: value.to_string(),
                lease: Some(id),
            },
            Request::Put(PutRequest {
                key: raw(key).into(),
                value: raw(value).into(),
                lease: id,
                ..Default::default()
            }),
        ),
        2 => (Input::LeaseKeepAlive { id }, Request::KeepAlive(id)),
        _ => (
            Input::LeaseRevoke { id },
            Request::LeaseRevoke(LeaseRevokeRequest { id }),
        ),
    }
}

/// A lease left to expire: a grant with [`EXPIRING_TTL`] (always when the client holds
/// none, else now and then), or a put attached to one.
fn expiring_lease_request(
    expiring: &[i64],
    client: u64,
    sequence: u64,
    key: &str,
    value: &str,
    rng: &mut SmallRng,
) -> (Input, Request) {
    if expiring.is_empty() || rng.random_bool(0.3) {
        let id = ((client as i64) << 24) | (sequence as i64 & 0xff_ffff);
        let ttl = EXPIRING_TTL;
        return (
            Input::LeaseGrant { id, ttl },
            Request::LeaseGrant(LeaseGrantRequest { ttl, id }),
        );
    }
    let id = expiring[rng.random_range(0..expiring.len())];
    (
        Input::Put {
            key: key.to_string(),
            value: value.to_string(),
            lease: Some(id),
        },
        Request::Put(PutRequest {
            key: raw(key).into(),
            value: raw(value).into(),
            lease: id,
            ..Default::default()
        }),
    )
}

/// The revision a compaction asks for: one this client was told (newer ones more often),
/// kept below `floor`, the next revision a watcher of every key may ask for, so that
/// those watchers are never cancelled and the revision before each of their events keeps
/// its key-value for `prev_kv`. `None` when that leaves nothing to compact.
fn compaction_revision(revisions: &[i64], floor: i64, rng: &mut SmallRng) -> Option<i64> {
    if revisions.is_empty() {
        return None;
    }
    let a = rng.random_range(0..revisions.len());
    let b = rng.random_range(0..revisions.len());
    let revision = revisions[a].max(revisions[b]).min(floor - 1);
    (revision >= 2).then_some(revision)
}

/// A compaction (see [`compaction_revision`]), logical only (`physical` false); a get of
/// `key` when there is nothing to compact.
fn compact_request(
    revisions: &[i64],
    floor: i64,
    key: &str,
    rng: &mut SmallRng,
) -> (Input, Request) {
    match compaction_revision(revisions, floor, rng) {
        Some(revision) => (
            Input::Compact {
                revision,
                physical: false,
            },
            Request::Compact(CompactionRequest {
                revision,
                physical: false,
            }),
        ),
        None => (
            Input::Get {
                key: key.to_string(),
                range_end: None,
                prefix: false,
            },
            Request::Range(range_request(key, "", 0)),
        ),
    }
}

/// Remembers what an answer says about keys and revisions.
fn learn(
    output: &Output,
    input: &Input,
    seen: &mut HashMap<String, i64>,
    revisions: &mut Vec<i64>,
    rng: &mut SmallRng,
) {
    let present = !matches!(input, Input::Range(range) if range.revision > 0);
    let mut note = |kv: &KeyValue| {
        if let (true, Some(revision)) = (present, kv.mod_revision) {
            seen.insert(kv.key.clone(), revision);
        }
    };
    output.kvs.iter().flatten().for_each(&mut note);
    for response in output.responses.iter().flatten() {
        response.kvs.iter().flatten().for_each(&mut note);
    }
    if let Some(revision) = output.revision {
        const KEPT: usize = 32;
        if revisions.len() < KEPT {
            revisions.push(revision);
        } else {
            let at = rng.random_range(0..KEPT);
            revisions[at] = revision;
        }
    }
}

fn get_op(key: &str) -> (TxnOp, RequestOp) {
    (
        TxnOp::Get {
            key: key.to_string(),
            range_end: None,
            prefix: false,
        },
        RequestOp {
            request: Some(PbOp::RequestRange(range_request(key, "", 0))),
        },
    )
}

fn put_op(key: &str, value: &str) -> (TxnOp, RequestOp) {
    (
        TxnOp::Put {
            key: key.to_string(),
            value: value.to_string(),
            lease: None,
        },
        RequestOp {
            request: Some(PbOp::RequestPut(PutRequest {
                key: raw(key).into(),
                value: raw(value).into(),
                ..Default::default()
            })),
        },
    )
}

fn delete_op(key: &str) -> (TxnOp, RequestOp) {
    (
        TxnOp::Delete {
            key: key.to_string(),
            range_end: None,
            prefix: false,
        },
        RequestOp {
            request: Some(PbOp::RequestDeleteRange(DeleteRangeRequest {
                key: raw(key).into(),
                ..Default::default()
            })),
        },
    )
}

/// The history's input and the wire request of one pick.
fn build(
    which: Pick,
    key: &str,
    value: &str,
    seen: &HashMap<String, i64>,
    revisions: &[i64],
    keys: usize,
    rng: &mut SmallRng,
) -> (Input, Request) {
    match which {
        Pick::Get => (
            Input::Get {
                key: key.to_string(),
                range_end: None,
                prefix: false,
            },
            Request::Range(range_request(key, "", 0)),
        ),
        Pick::Prefix => {
            let prefix = pick_prefix(rng);
            (
                Input::Get {
                    key: prefix.clone(),
                    range_end: None,
                    prefix: true,
                },
                Request::Range(range_request(&prefix, &prefix_range_end(&prefix), 0)),
            )
        }
        Pick::PrefixDelete => {
            let prefix = pick_prefix(rng);
            (
                Input::Delete {
                    key: prefix.clone(),
                    range_end: None,
                    prefix: true,
                },
                Request::Delete(DeleteRangeRequest {
                    key: raw(&prefix).into(),
                    range_end: raw(&prefix_range_end(&prefix)).into(),
                    ..Default::default()
                }),
            )
        }
        Pick::PastRead => {
            // A revision this client was told (so never a future one), newer ones more often.
            let revision = if revisions.is_empty() {
                1
            } else {
                let a = rng.random_range(0..revisions.len());
                let b = rng.random_range(0..revisions.len());
                revisions[a].max(revisions[b])
            };
            let prefix = rng.random_bool(0.5);
            let range = HRange {
                key: if prefix {
                    pick_prefix(rng)
                } else {
                    key.to_string()
                },
                prefix,
                revision,
                ..HRange::default()
            };
            let end = if prefix {
                prefix_range_end(&range.key)
            } else {
                String::new()
            };
            (
                Input::Range(range.clone()),
                Request::Range(range_request(&range.key, &end, revision)),
            )
        }
        Pick::Put => (
            Input::Put {
                key: key.to_string(),
                value: value.to_string(),
                lease: None,
            },
            Request::Put(PutRequest {
                key: raw(key).into(),
                value: raw(value).into(),
                ..Default::default()
            }),
        ),
        Pick::Delete => (
            Input::Delete {
                key: key.to_string(),
                range_end: None,
                prefix: false,
            },
            Request::Delete(DeleteRangeRequest {
                key: raw(key).into(),
                ..Default::default()
            }),
        ),
        Pick::CompareAndSwap => {
            let guard = seen.get(key).copied().unwrap_or(0);
            let (success, success_ops) = put_op(key, value);
            let (failure, failure_ops) = get_op(key);
            txn(
                vec![(CompareTarget::ModRevision, CompareOperand::Int(guard), key)],
                vec![(success, success_ops)],
                vec![(failure, failure_ops)],
            )
        }
        Pick::Lease | Pick::ExpiringLease | Pick::Compact => {
            unreachable!("lease requests and compactions are built by their own functions")
        }
        Pick::MultiKeyTxn => {
            // Three different keys of `k0`, `k1`, ...: if the first exists, write the second
            // and delete the third; if not, create the first and read the other two.
            let first: usize = rng.random_range(0..keys);
            let key = &format!("k{first}");
            let second = (first + 1 + rng.random_range(0..keys - 2)) % keys;
            let mut third = (second + 1) % keys;
            if third == first {
                third = (third + 1) % keys;
            }
            let (a, b, c) = (key.to_string(), format!("k{second}"), format!("k{third}"));
            txn(
                vec![(CompareTarget::Version, CompareOperand::Int(0), &a)],
                vec![put_op(&b, value), delete_op(&c)],
                vec![put_op(&a, value), get_op(&b), get_op(&c)],
            )
        }
    }
}

/// A txn of compares `(target, operand, key)` (each `>` for a version, `=` otherwise) and
/// two branches.
fn txn(
    compares: Vec<(CompareTarget, CompareOperand, &str)>,
    success: Vec<(TxnOp, RequestOp)>,
    failure: Vec<(TxnOp, RequestOp)>,
) -> (Input, Request) {
    let mut history_compares = Vec::new();
    let mut wire_compares = Vec::new();
    for (target, operand, key) in compares {
        let (result, wire_result) = match target {
            CompareTarget::Version => (CompareResult::Greater, PbResult::Greater),
            _ => (CompareResult::Equal, PbResult::Equal),
        };
        let (wire_target, union) = match (&target, &operand) {
            (CompareTarget::Version, CompareOperand::Int(n)) => {
                (PbTarget::Version, compare::TargetUnion::Version(*n))
            }
            (_, CompareOperand::Int(n)) => (PbTarget::Mod, compare::TargetUnion::ModRevision(*n)),
            (_, CompareOperand::Str(value)) => (
                PbTarget::Value,
                compare::TargetUnion::Value(raw(value).into()),
            ),
        };
        history_compares.push(HCompare {
            key: key.to_string(),
            range_end: None,
            target,
            result,
            value: operand,
        });
        wire_compares.push(Compare {
            result: wire_result as i32,
            target: wire_target as i32,
            key: raw(key).into(),
            range_end: Default::default(),
            target_union: Some(union),
        });
    }
    let (success, success_ops): (Vec<_>, Vec<_>) = success.into_iter().unzip();
    let (failure, failure_ops): (Vec<_>, Vec<_>) = failure.into_iter().unzip();
    (
        Input::Txn {
            compare: history_compares,
            success,
            failure,
        },
        Request::Txn(TxnRequest {
            compare: wire_compares,
            success: success_ops,
            failure: failure_ops,
        }),
    )
}

/// What a watcher shares with the end of the run and with the clients.
pub struct WatchControl {
    /// 0 until the run's final revision is known; then a watcher of every key stops once
    /// it has seen it, and any other watcher stops at once.
    pub final_revision: AtomicI64,
    /// Stop now, complete or not.
    pub abort: AtomicBool,
    /// Per watcher of every key, the next revision it would ask for: compactions stay
    /// below the smallest (see `compaction_revision`).
    pub floors: Vec<AtomicI64>,
}

impl WatchControl {
    /// `watchers` watchers of every key, each from revision 1.
    pub fn new(watchers: usize) -> WatchControl {
        WatchControl {
            final_revision: AtomicI64::new(0),
            abort: AtomicBool::new(false),
            floors: (0..watchers).map(|_| AtomicI64::new(1)).collect(),
        }
    }

    /// The smallest next revision of a watcher of every key.
    pub fn floor(&self) -> i64 {
        self.floors
            .iter()
            .map(|floor| floor.load(Ordering::SeqCst))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// What one watcher watches.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// The key (or prefix), as the checker holds it; empty with `range_end` `"\0"` is
    /// every key.
    pub key: String,
    pub prefix: bool,
    pub prev_kv: bool,
    /// Index in `WatchControl::floors` for a watcher of every key from revision 1 (the
    /// checker's reference watch); `None` for a watcher of a prefix from the current
    /// revision.
    pub floor: Option<usize>,
}

impl WatchSpec {
    /// Every key from revision 1 with `prev_kv`, holding floor `index`.
    pub fn everything(index: usize) -> WatchSpec {
        WatchSpec {
            key: String::new(),
            prefix: false,
            prev_kv: true,
            floor: Some(index),
        }
    }

    /// The keys with `prefix`, from the current revision, without `prev_kv`.
    pub fn prefix(prefix: &[u8]) -> WatchSpec {
        WatchSpec {
            key: text(prefix),
            prefix: true,
            prev_kv: false,
            floor: None,
        }
    }
}

/// One watcher on `member` (see the module doc). Returns the next revision it would
/// have asked for (one past the last event it saw).
pub async fn watcher(
    recorder: Arc<Recorder>,
    address: SocketAddr,
    member: usize,
    incarnations: Incarnations,
    spec: WatchSpec,
    control: Arc<WatchControl>,
) -> i64 {
    // 0: from the current revision, until the first event says where the watch is.
    let mut next_revision = if spec.floor.is_some() { 1i64 } else { 0 };
    let mut last_seen = 0i64;
    let reference = spec.floor.is_some();
    let done = |last_seen: i64| {
        let target = control.final_revision.load(Ordering::Relaxed);
        control.abort.load(Ordering::Relaxed) || (target > 0 && (last_seen >= target || !reference))
    };
    let (range_key, range_end) = if spec.prefix {
        (raw(&spec.key), raw(&prefix_range_end(&spec.key)))
    } else {
        (vec![0u8], vec![0u8])
    };
    let mut streams = 0u64;
    while !done(last_seen) {
        let Ok(channel) = connect(address).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        streams += 1;
        // Every other stream of the prefix watcher goes back a little: it sees events its
        // previous record saw again (a record of its own), and, when a compaction passed
        // that start, must be cancelled.
        let start = if !reference && streams % 2 == 0 && next_revision > 1 {
            (next_revision - PREFIX_WATCH_BACK).max(1)
        } else {
            next_revision
        };
        let mut watch = Watch {
            client: recorder.new_client(),
            watch_id: 0,
            key: if spec.prefix {
                spec.key.clone()
            } else {
                String::new()
            },
            range_end: (!spec.prefix).then(|| "\0".into()),
            prefix: spec.prefix,
            start_revision: start,
            filters: Vec::new(),
            prev_kv: spec.prev_kv,
            responses: Vec::new(),
            canceled: false,
            compact_revision: 0,
        };
        // A channel of one: the create request is all the runner ever sends; dropping the
        // sender at the end closes the stream.
        let (requests, receiver) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: range_key.clone().into(),
                    range_end: range_end.clone().into(),
                    start_revision: start,
                    prev_kv: spec.prev_kv,
                    ..Default::default()
                },
            )),
        };
        let _ = requests.send(create).await;
        // The creation's call time and process (see jepsen-lite's `WatchOrigin`): taken
        // before the stream opens, so no later than the server saw the request.
        let incarnation = incarnations.get(member);
        let call = recorder.now();
        let opened = tokio::time::timeout(
            REQUEST_TIMEOUT,
            WatchClient::new(channel).watch(ReceiverStream(receiver)),
        )
        .await;
        let Ok(Ok(response)) = opened else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = response.into_inner();
        let mut created = false;
        let mut origin = WatchOrigin::default();
        let mut quiet_since = Instant::now();
        let opened_at = Instant::now();
        loop {
            if done(last_seen) || quiet_since.elapsed() > WATCH_QUIET {
                break;
            }
            // A watcher that compactions do not spare opens a new stream now and then,
            // so that some are created after a compaction passed where it resumes.
            if !reference && opened_at.elapsed() > PREFIX_WATCH_LIFETIME {
                break;
            }
            let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            let message = match next {
                Err(_) => continue,
                Ok(Ok(Some(message))) => message,
                Ok(_) => break,
            };
            quiet_since = Instant::now();
            if message.created && !created {
                created = true;
                watch.watch_id = message.watch_id;
                if let Some(process) = incarnations.process(member, incarnation) {
                    origin = WatchOrigin {
                        call: Some(call),
                        member: Some(process),
                    };
                }
            }
            if message.canceled {
                watch.canceled = true;
                watch.compact_revision = message.compact_revision;
                if message.compact_revision > 0 {
                    // Resume after the compaction: a compaction at `r` removes a delete
                    // made at `r` too.
                    next_revision = next_revision.max(message.compact_revision + 1);
                }
                break;
            }
            if message.created && message.events.is_empty() {
                continue;
            }
            let revision = message.header.as_ref().map_or(0, |h| h.revision);
            let events: Vec<Event> = message.events.iter().map(event).collect();
            if let Some(last) = events.last() {
                next_revision = next_revision.max(last.mod_revision + 1);
                last_seen = last_seen.max(last.mod_revision);
            } else {
                last_seen = last_seen.max(revision);
            }
            if let Some(index) = spec.floor {
                control.floors[index].store(next_revision, Ordering::SeqCst);
            }
            watch.responses.push(WatchResponse {
                revision,
                progress_notify: events.is_empty(),
                events,
                fragment: message.fragment,
            });
        }
        drop(requests);
        if created {
            recorder.push_watch(watch, origin);
        }
    }
    next_revision
}

fn event(event: &mvccpb::Event) -> Event {
    let kv = event.kv.clone().unwrap_or_default();
    let put = event.r#type == mvccpb::event::EventType::Put as i32;
    Event {
        kind: if put {
            EventType::Put
        } else {
            EventType::Delete
        },
        key: text(&kv.key),
        value: put.then(|| text(&kv.value)),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: (kv.lease != 0).then_some(kv.lease),
        prev_kv: event.prev_kv.as_ref().map(key_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_ends_are_computed_on_bytes() {
        // (prefix, its wire range end)
        let cases: [(&[u8], &[u8]); 5] = [
            (b"k\xc2\xbf", b"k\xc2\xc0"),
            (b"k\xc2", b"k\xc3"),
            (b"k\xff", b"l"),
            (b"k\xfe", b"k\xff"),
            (b"k", b"l"),
        ];
        for (prefix, end) in cases {
            assert_eq!(
                raw(&prefix_range_end(&text(prefix))),
                end.to_vec(),
                "{prefix:?}"
            );
        }
        // `k c2 c0` is past the prefix `k¿` on bytes, though below `kÀ` on characters.
        let past = text(b"k\xc2\xc0");
        assert!(past >= prefix_range_end(&text(b"k\xc2\xbf")));
        // Every byte key lies under the prefix `k`, and the ones that are not UTF-8 stay
        // bytes through the history (written as `key_b64`).
        for key in BYTE_KEYS {
            assert!(text(key) < prefix_range_end("k"));
            assert_eq!(raw(&text(key)), key.to_vec());
        }
    }

    #[test]
    fn keys_are_byte_strings_a_quarter_of_the_time() {
        let mut rng = SmallRng::seed_from_u64(3);
        let keys: Vec<String> = (0..2000).map(|_| pick_key(&mut rng, 8)).collect();
        let bytes = keys
            .iter()
            .filter(|k| !k[1..].chars().all(|c| c.is_ascii_digit()))
            .count();
        assert!((350..650).contains(&bytes), "{bytes} byte keys of 2000");
        assert!(keys.iter().any(|k| std::str::from_utf8(&raw(k)).is_err()));
    }

    #[test]
    fn compactions_stay_below_the_watchers() {
        let mut rng = SmallRng::seed_from_u64(5);
        assert_eq!(compaction_revision(&[], 100, &mut rng), None);
        // Nothing below the floor to compact.
        assert_eq!(compaction_revision(&[5, 9], 2, &mut rng), None);
        for _ in 0..100 {
            let revision = compaction_revision(&[5, 9, 40], 20, &mut rng).unwrap();
            assert!([5, 9, 19].contains(&revision), "{revision}");
        }
        let control = WatchControl::new(3);
        control.floors[0].store(7, Ordering::SeqCst);
        control.floors[1].store(4, Ordering::SeqCst);
        control.floors[2].store(9, Ordering::SeqCst);
        assert_eq!(control.floor(), 4);
        let (input, request) = compact_request(&[30], control.floor(), "k1", &mut rng);
        assert_eq!(
            input,
            Input::Compact {
                revision: 3,
                physical: false
            }
        );
        assert!(matches!(
            request,
            Request::Compact(CompactionRequest {
                revision: 3,
                physical: false
            })
        ));
    }

    #[test]
    fn expiring_leases_are_granted_then_used() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (input, _) = expiring_lease_request(&[], 3, 9, "k1", "v", &mut rng);
        assert_eq!(
            input,
            Input::LeaseGrant {
                id: (3 << 24) | 9,
                ttl: EXPIRING_TTL
            }
        );
        let puts = (0..100)
            .filter(|_| {
                matches!(
                    expiring_lease_request(&[42], 3, 9, "k1", "v", &mut rng).0,
                    Input::Put {
                        lease: Some(42),
                        ..
                    }
                )
            })
            .count();
        assert!((50..95).contains(&puts), "{puts}");
    }
}
