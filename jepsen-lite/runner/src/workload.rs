//! The clients and watchers of a run.
//!
//! Each client is bound to one member and sends one request at a time until its deadline:
//! gets, prefix ranges, reads at a revision it saw earlier, puts, deletes, compare-and-swap
//! txns guarded on a key's mod revision, txns over several keys, and leases (grants, puts
//! attached to them, keep-alives, revokes), all over a few keys so that clients conflict. Values are unique (client id and sequence number), so every read
//! names the write it saw. A request gets a short timeout: a fault then makes an unknown
//! outcome, not a hang. After anything but an answer or a definite refusal the client drops
//! its connection and dials again.
//!
//! Each member has one watcher of every key from revision 1 with `prev_kv`: the checker's
//! reference watch. When its stream fails or goes quiet, the record so far is kept and the
//! watcher opens a new one on the same member from the revision after the last event it
//! saw (the checker chains the records). At the end it reads on until it has seen the run's
//! final revision, so that its record is complete.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jepsen_lite::history::{
    Compare as HCompare, CompareOperand, CompareResult, CompareTarget, Event, EventType, KeyValue,
    RangeRequest as HRange, TxnOp, Watch, WatchResponse,
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
    compare, watch_request, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use oxcd::proto::mvccpb;
use oxcd::server::ReceiverStream;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Status;

use crate::record::{outcome_of_status, Outcome, Recorder};

/// How long a client waits for one answer before calling its outcome unknown. Short next
/// to a fault (seconds), long next to a request on loopback (milliseconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a dial may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A watch stream silent for this long is closed and opened again: under steady traffic
/// silence means a paused or cut-off member.
const WATCH_QUIET: Duration = Duration::from_secs(3);

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

fn raw(text: &str) -> Vec<u8> {
    jepsen_lite::bytes::to_bytes(text).expect("built from ASCII")
}

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
    /// TTL of the leases clients grant: longer than the run, so that none expires (the
    /// history has no expiry in it; see `docs/real-faults.md`).
    pub lease_ttl: i64,
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
    CompareAndSwap,
    MultiKeyTxn,
    Lease,
}

const MIX: [(u32, Pick); 8] = [
    (15, Pick::Get),
    (5, Pick::Prefix),
    (5, Pick::PastRead),
    (20, Pick::Put),
    (5, Pick::Delete),
    (8, Pick::CompareAndSwap),
    (6, Pick::MultiKeyTxn),
    (4, Pick::Lease),
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
    let mut seen = vec![0i64; shared.keys];
    // Some header revisions this client was told: what its past-revision reads pick from.
    let mut revisions: Vec<i64> = Vec::new();
    // Leases this client was told it granted, and has not revoked or seen gone.
    let mut leases: Vec<i64> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        sequence += 1;
        let which = pick(&mut rng);
        let key_index = rng.random_range(0..shared.keys);
        let key = format!("k{key_index}");
        let value = format!("c{client}-{sequence}");
        let (input, request) = match which {
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
                Input::LeaseGrant { id, .. } => leases.push(*id),
                Input::LeaseRevoke { id } => leases.retain(|lease| lease != id),
                Input::LeaseKeepAlive { id } if output.error.is_some() => {
                    leases.retain(|lease| lease != id)
                }
                _ => {}
            }
        }
        let failed = !matches!(outcome, Outcome::Ok(_) | Outcome::Failed(_));
        recorder.record(&mut client, member, input, call, return_time, outcome);
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

/// Remembers what an answer says about keys and revisions.
fn learn(
    output: &Output,
    input: &Input,
    seen: &mut [i64],
    revisions: &mut Vec<i64>,
    rng: &mut SmallRng,
) {
    let present = !matches!(input, Input::Range(range) if range.revision > 0);
    let mut note = |kv: &KeyValue| {
        if let (Some(index), Some(revision)) = (
            kv.key
                .strip_prefix('k')
                .and_then(|n| n.parse::<usize>().ok()),
            kv.mod_revision,
        ) {
            if present && index < seen.len() {
                seen[index] = revision;
            }
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
    seen: &[i64],
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
        Pick::Prefix => (
            Input::Get {
                key: "k".into(),
                range_end: None,
                prefix: true,
            },
            Request::Range(range_request("k", "l", 0)),
        ),
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
                key: if prefix { "k".into() } else { key.to_string() },
                prefix,
                revision,
                ..HRange::default()
            };
            let end = if prefix { "l" } else { "" };
            (
                Input::Range(range.clone()),
                Request::Range(range_request(&range.key, end, revision)),
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
            let index: usize = key[1..].parse().unwrap_or(0);
            let guard = seen.get(index).copied().unwrap_or(0);
            let (success, success_ops) = put_op(key, value);
            let (failure, failure_ops) = get_op(key);
            txn(
                vec![(CompareTarget::ModRevision, CompareOperand::Int(guard), key)],
                vec![(success, success_ops)],
                vec![(failure, failure_ops)],
            )
        }
        Pick::Lease => unreachable!("lease requests are built by `lease_request`"),
        Pick::MultiKeyTxn => {
            // Three different keys: if the first exists, write the second and delete the
            // third; if not, create the first and read the other two.
            let first: usize = key[1..].parse().unwrap_or(0);
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

/// What a watcher shares with the end of the run.
pub struct WatchControl {
    /// 0 until the run's final revision is known; then the watcher stops once it has seen
    /// it.
    pub final_revision: AtomicI64,
    /// Stop now, complete or not.
    pub abort: AtomicBool,
}

/// One watcher of every key from revision 1 on `member` (see the module doc). Returns the
/// next revision it would have asked for (one past the last event it saw).
pub async fn watcher(
    recorder: Arc<Recorder>,
    address: SocketAddr,
    control: Arc<WatchControl>,
) -> i64 {
    let mut next_revision = 1i64;
    let mut last_seen = 0i64;
    let done = |last_seen: i64| {
        let target = control.final_revision.load(Ordering::Relaxed);
        control.abort.load(Ordering::Relaxed) || (target > 0 && last_seen >= target)
    };
    while !done(last_seen) {
        let Ok(channel) = connect(address).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut watch = Watch {
            client: recorder.new_client(),
            watch_id: 0,
            key: String::new(),
            range_end: Some("\0".into()),
            prefix: false,
            start_revision: next_revision,
            filters: Vec::new(),
            prev_kv: true,
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
                    key: vec![0u8].into(),
                    range_end: vec![0u8].into(),
                    start_revision: next_revision,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let _ = requests.send(create).await;
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
        let mut quiet_since = Instant::now();
        loop {
            if done(last_seen) || quiet_since.elapsed() > WATCH_QUIET {
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
            }
            if message.canceled {
                watch.canceled = true;
                watch.compact_revision = message.compact_revision;
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
            watch.responses.push(WatchResponse {
                revision,
                progress_notify: events.is_empty(),
                events,
                fragment: message.fragment,
            });
        }
        drop(requests);
        if created {
            recorder.push_watch(watch);
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
