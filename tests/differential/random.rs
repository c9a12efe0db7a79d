//! Random request sequences, sent over gRPC to oxcd and to a real etcd 3.4 side by side.
//!
//! Every request kind of the KV and Lease services, with every field: puts with leases and
//! the `ignore_*` flags, ranges with every option and revision condition, deletes, nested
//! transactions with every compare target and result, compactions, lease grants with
//! explicit ids (etcd would pick random ones), revocations, time-to-live and lease lists,
//! and the errors of each (empty keys, unknown leases, compacted and future revisions,
//! duplicate keys, too many operations, oversized requests). The responses must be
//! identical, with the header normalised only where the two legitimately differ (cluster
//! id, member id, Raft term) and the remaining TTL of a lease, which depends on timing.
//! After the sequence, a watch from the oldest revision still held must deliver the same
//! events from both.
//!
//! The key space is small (nine keys), so that requests collide often and every sort
//! involves at most nine key-values: etcd sorts with an unstable sort, which for that few
//! is an insertion sort and so agrees with oxcd's stable one.

use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use oxcd::proto::etcdserverpb::{
    compare::TargetUnion, kv_client::KvClient, lease_client::LeaseClient,
    request_op::Request as Op, watch_client::WatchClient, watch_request::RequestUnion,
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const KEYS: &[&[u8]] = &[
    b"a", b"a/1", b"a/2", b"b", b"b/x", b"c", b"k\0", b"\x7f", b"\xff",
];
const LEASES: &[i64] = &[1, 2, 3, 0x7fff_ffff_ffff_ffff];
/// The lease of `Step::GrantShort`, never used otherwise.
const SHORT_LEASE: i64 = 5;

/// One request of the sequence.
#[derive(Debug, Clone)]
pub enum Step {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    Grant(LeaseGrantRequest),
    /// A grant with a short TTL, then its revocation.
    GrantShort(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    Leases,
}

/// What the generator knows of the store, to aim revisions at interesting places.
struct Generator {
    rng: SmallRng,
    revision: i64,
    compacted: i64,
}

impl Generator {
    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn key(&mut self) -> Bytes {
        if self.chance(2) {
            return Bytes::new();
        }
        Bytes::from_static(KEYS[self.rng.random_range(0..KEYS.len())])
    }

    fn range_end(&mut self, key: &Bytes) -> Bytes {
        match self.rng.random_range(0..10) {
            0..=3 => Bytes::new(),
            4 | 5 => Bytes::from_static(b"\0"),
            6 => {
                // The prefix end of the key.
                let mut end = key.to_vec();
                while let Some(last) = end.pop() {
                    if last < 0xff {
                        end.push(last + 1);
                        break;
                    }
                }
                if end.is_empty() {
                    Bytes::from_static(b"\0")
                } else {
                    Bytes::from(end)
                }
            }
            _ => self.key(),
        }
    }

    fn value(&mut self) -> Bytes {
        let n = self.rng.random_range(0..4);
        Bytes::from(format!("v{n}").into_bytes()).slice(..if n == 0 { 0 } else { 2 })
    }

    fn lease(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0..=5 => 0,
            6..=8 => LEASES[self.rng.random_range(0..LEASES.len())],
            _ => 99,
        }
    }

    /// A revision: the latest, negative, held, compacted or in the future.
    fn revision(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0..=3 => 0,
            4 => -self.rng.random_range(1..3),
            5 => self.compacted + self.rng.random_range(-1..2),
            6 => self.revision + self.rng.random_range(1..3),
            _ => self.rng.random_range(1..=self.revision.max(1)),
        }
    }

    fn small_revision(&mut self) -> i64 {
        if self.chance(60) {
            0
        } else {
            self.rng.random_range(0..=self.revision + 1)
        }
    }

    fn range(&mut self) -> RangeRequest {
        let key = self.key();
        RangeRequest {
            range_end: self.range_end(&key),
            key,
            limit: if self.chance(70) {
                0
            } else {
                self.rng.random_range(-1..4)
            },
            revision: self.revision(),
            sort_order: self.rng.random_range(0..4),
            sort_target: self.rng.random_range(0..5),
            serializable: self.chance(30),
            keys_only: self.chance(20),
            count_only: self.chance(10),
            min_mod_revision: self.small_revision(),
            max_mod_revision: self.small_revision(),
            min_create_revision: self.small_revision(),
            max_create_revision: self.small_revision(),
        }
    }

    fn put(&mut self) -> PutRequest {
        let ignore_value = self.chance(15);
        let ignore_lease = self.chance(15);
        PutRequest {
            key: self.key(),
            // With the flags, a value or a lease is mostly left out (else it is an error).
            value: if ignore_value && self.chance(85) {
                Bytes::new()
            } else {
                self.value()
            },
            lease: if ignore_lease && self.chance(85) {
                0
            } else {
                self.lease()
            },
            prev_kv: self.chance(40),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.chance(50),
        }
    }

    fn compare(&mut self) -> Compare {
        let key = self.key();
        let target = if self.chance(3) {
            7
        } else {
            self.rng.random_range(0..5)
        };
        let result = if self.chance(3) {
            9
        } else {
            self.rng.random_range(0..4)
        };
        // Mostly the union field that matches the target, sometimes another one.
        let union_kind = if self.chance(80) {
            target
        } else {
            self.rng.random_range(0..6)
        };
        let number = match self.rng.random_range(0..4) {
            0 => 0,
            1 => self.rng.random_range(1..4),
            _ => self.rng.random_range(0..=self.revision + 1),
        };
        let target_union = match union_kind {
            0 => Some(TargetUnion::Version(number)),
            1 => Some(TargetUnion::CreateRevision(number)),
            2 => Some(TargetUnion::ModRevision(number)),
            3 => Some(TargetUnion::Value(self.value())),
            4 => Some(TargetUnion::Lease(
                LEASES[self.rng.random_range(0..LEASES.len())],
            )),
            _ => None,
        };
        Compare {
            range_end: if self.chance(20) {
                self.range_end(&key)
            } else {
                Bytes::new()
            },
            key,
            target,
            result,
            target_union,
        }
    }

    fn ops(&mut self, depth: u32) -> Vec<RequestOp> {
        let n = self.rng.random_range(0..4);
        (0..n)
            .map(|_| {
                let request = match self.rng.random_range(0..10) {
                    0..=2 => Op::RequestRange(self.range()),
                    3..=5 => Op::RequestPut(self.put()),
                    6..=7 => Op::RequestDeleteRange(self.delete()),
                    _ if depth < 2 => Op::RequestTxn(self.txn(depth + 1)),
                    _ => Op::RequestPut(self.put()),
                };
                RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        let compares = self.rng.random_range(0..3);
        let mut request = TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        };
        if depth == 0 && self.chance(2) {
            // Too many operations, at the top or (through the shrinking nested limit) below.
            let reads = (0..127).map(|_| RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: Bytes::from_static(b"a"),
                    ..Default::default()
                })),
            });
            request.success.extend(reads);
        }
        if self.chance(1) {
            request.failure.push(RequestOp { request: None });
        }
        request
    }

    /// A txn, minus the one shape that crashes etcd 3.4 (see `without_ignore_flags`).
    fn top_txn(&mut self) -> TxnRequest {
        let mut request = self.txn(0);
        if has_from_key_delete(&request) {
            without_ignore_flags(&mut request);
        }
        request
    }

    fn step(&mut self) -> Step {
        match self.rng.random_range(0..100) {
            0..=17 => Step::Range(self.range()),
            18..=39 => Step::Put(self.put()),
            40..=49 => Step::Delete(self.delete()),
            50..=79 => Step::Txn(self.top_txn()),
            80..=83 => Step::Compact(CompactionRequest {
                revision: match self.rng.random_range(0..4) {
                    0 => self.compacted + self.rng.random_range(-1..2),
                    1 => self.revision + self.rng.random_range(0..2),
                    _ => self.rng.random_range(1..=self.revision.max(1)),
                },
                physical: self.chance(50),
            }),
            84..=87 => Step::Grant(LeaseGrantRequest {
                ttl: match self.rng.random_range(0..10) {
                    0 => 9_000_000_001,
                    _ => self.rng.random_range(600..2000),
                },
                id: LEASES[self.rng.random_range(0..LEASES.len())],
            }),
            // A TTL under the minimum is raised to it (2 s): granted and revoked at once, so
            // that no lease expires while the sequence runs.
            88 => Step::GrantShort(LeaseGrantRequest {
                ttl: self.rng.random_range(-1..3),
                id: SHORT_LEASE,
            }),
            89..=92 => Step::Revoke(LeaseRevokeRequest {
                id: if self.chance(80) {
                    LEASES[self.rng.random_range(0..LEASES.len())]
                } else {
                    99
                },
            }),
            93..=96 => Step::TimeToLive(LeaseTimeToLiveRequest {
                id: if self.chance(80) {
                    LEASES[self.rng.random_range(0..LEASES.len())]
                } else {
                    99
                },
                keys: self.chance(50),
            }),
            97 | 98 => Step::Leases,
            _ => {
                // An oversized put: above the gRPC limit, or between it and
                // --max-request-bytes.
                let size = if self.chance(50) { 2 << 20 } else { 1_600_000 };
                Step::Put(PutRequest {
                    key: Bytes::from_static(b"big"),
                    value: Bytes::from(vec![b'x'; size]),
                    ..Default::default()
                })
            }
        }
    }
}

/// Whether a transaction deletes from a key on (`range_end = "\0"`) anywhere.
fn has_from_key_delete(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| match &op.request {
            Some(Op::RequestDeleteRange(delete)) => delete.range_end.as_ref() == b"\0",
            Some(Op::RequestTxn(nested)) => has_from_key_delete(nested),
            _ => false,
        })
}

/// Clears the `ignore_*` flags of every put in a transaction. etcd 3.4's duplicate-key
/// check lets a from-key delete and a later put of a key it removes into one branch; when
/// that put has `ignore_value` or `ignore_lease`, its applier finds the key gone and
/// panics (every member crashes). oxcd refuses such a transaction instead ("key not
/// found"; a unit test in `server::txn` covers it), so the sequences leave it out.
fn without_ignore_flags(request: &mut TxnRequest) {
    for op in request.success.iter_mut().chain(request.failure.iter_mut()) {
        match &mut op.request {
            Some(Op::RequestPut(put)) => {
                put.ignore_value = false;
                put.ignore_lease = false;
            }
            Some(Op::RequestTxn(nested)) => without_ignore_flags(nested),
            _ => {}
        }
    }
}

/// The clients of one server.
pub struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

impl Clients {
    pub async fn connect(endpoint: &str) -> Clients {
        let channel = Channel::from_shared(format!("http://{endpoint}"))
            .expect("an endpoint URL")
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connecting");
        Clients {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        }
    }
}

fn clear(header: &mut Option<ResponseHeader>) {
    if let Some(header) = header {
        header.cluster_id = 0;
        header.member_id = 0;
        header.raft_term = 0;
    }
}

fn clear_txn(response: &mut oxcd::proto::etcdserverpb::TxnResponse) {
    use oxcd::proto::etcdserverpb::response_op::Response;
    clear(&mut response.header);
    for op in &mut response.responses {
        match &mut op.response {
            Some(Response::ResponseRange(inner)) => clear(&mut inner.header),
            Some(Response::ResponsePut(inner)) => clear(&mut inner.header),
            Some(Response::ResponseDeleteRange(inner)) => clear(&mut inner.header),
            Some(Response::ResponseTxn(inner)) => clear_txn(inner),
            None => {}
        }
    }
}

/// A response or an error, as text to compare.
fn outcome<T: Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    fix: impl FnOnce(&mut T),
) -> String {
    match result {
        Ok(response) => {
            let mut response = response.into_inner();
            fix(&mut response);
            format!("{response:?}")
        }
        Err(status) => format!("error {:?}: {}", status.code(), status.message()),
    }
}

/// Sends one step; the outcome with the header normalised.
pub async fn send(clients: &mut Clients, step: &Step) -> String {
    match step.clone() {
        Step::Range(request) => outcome(clients.kv.range(request).await, |r| clear(&mut r.header)),
        Step::Put(request) => outcome(clients.kv.put(request).await, |r| clear(&mut r.header)),
        Step::Delete(request) => outcome(clients.kv.delete_range(request).await, |r| {
            clear(&mut r.header)
        }),
        Step::Txn(request) => outcome(clients.kv.txn(request).await, clear_txn),
        Step::Compact(request) => {
            outcome(clients.kv.compact(request).await, |r| clear(&mut r.header))
        }
        Step::Grant(request) => outcome(clients.lease.lease_grant(request).await, |r| {
            clear(&mut r.header)
        }),
        Step::GrantShort(request) => {
            let id = request.id;
            let granted = outcome(clients.lease.lease_grant(request).await, |r| {
                clear(&mut r.header)
            });
            let revoked = outcome(
                clients.lease.lease_revoke(LeaseRevokeRequest { id }).await,
                |r| clear(&mut r.header),
            );
            format!("{granted}; {revoked}")
        }
        Step::Revoke(request) => outcome(clients.lease.lease_revoke(request).await, |r| {
            clear(&mut r.header)
        }),
        Step::TimeToLive(request) => {
            outcome(clients.lease.lease_time_to_live(request).await, |r| {
                clear(&mut r.header);
                // The remaining TTL depends on when each server granted the lease.
                if r.ttl > 0 {
                    r.ttl = 1;
                }
                r.keys.sort();
            })
        }
        Step::Leases => outcome(
            clients.lease.lease_leases(LeaseLeasesRequest {}).await,
            |r| {
                clear(&mut r.header);
                r.leases.sort_by_key(|lease| lease.id);
            },
        ),
    }
}

/// A watch on the whole key space, with previous key-values.
pub struct Watch {
    stream: tonic::Streaming<oxcd::proto::etcdserverpb::WatchResponse>,
    /// Keeps the request side open.
    _requests: tokio::sync::mpsc::Sender<WatchRequest>,
    start: i64,
}

pub async fn watch(clients: &mut Clients, start: i64) -> Watch {
    let create = WatchCreateRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        start_revision: start,
        prev_kv: true,
        ..Default::default()
    };
    watch_with(clients, create).await.expect("a watch stream")
}

async fn watch_with(
    clients: &mut Clients,
    create: WatchCreateRequest,
) -> Result<Watch, tonic::Status> {
    let start = create.start_revision;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        })
        .await
        .expect("the watch request");
    let stream = clients
        .watch
        .watch(tokio_stream_from(receiver))
        .await?
        .into_inner();
    Ok(Watch {
        stream,
        _requests: sender,
        start,
    })
}

/// How a watch stream answers a create request over the gRPC message limit.
pub async fn oversized_watch(clients: &mut Clients) -> String {
    let create = WatchCreateRequest {
        key: Bytes::from(vec![b'k'; 2 << 20]),
        ..Default::default()
    };
    // The status may come as the stream's answer or as its first message.
    let mut watch = match watch_with(clients, create).await {
        Ok(watch) => watch,
        Err(status) => return format!("error {:?}: {}", status.code(), status.message()),
    };
    match tokio::time::timeout(Duration::from_secs(10), watch.stream.message()).await {
        Ok(Ok(message)) => format!("{message:?}"),
        Ok(Err(status)) => format!("error {:?}: {}", status.code(), status.message()),
        Err(_) => "no answer".to_string(),
    }
}

/// Every event of `watch` up to revision `last`.
pub async fn events(watch: &mut Watch, last: i64) -> Vec<String> {
    let mut events = Vec::new();
    let mut seen = watch.start - 1;
    while seen < last {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.stream.message())
            .await
            .expect("watch events in time")
            .expect("a watch response")
            .expect("an open watch");
        if message.canceled {
            events.push(format!("canceled: {}", message.cancel_reason));
            break;
        }
        for event in message.events {
            if let Some(kv) = &event.kv {
                seen = seen.max(kv.mod_revision);
            }
            events.push(format!("{event:?}"));
        }
    }
    events
}

fn compare_events(label: &str, what: &str, got: &[String], expected: &[String]) {
    for (index, (got, expected)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            got, expected,
            "{label}: {what}: event {index} differs from etcd"
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{label}: {what}: a different number of events than etcd's"
    );
}

/// A stream of watch requests from a channel (tonic wants a `Stream`).
fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures_core::Stream<Item = WatchRequest> {
    futures_stream(move |cx| receiver.poll_recv(cx))
}

fn futures_stream<T, F>(poll: F) -> impl futures_core::Stream<Item = T>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
{
    struct PollStream<F>(F);
    impl<T, F> futures_core::Stream for PollStream<F>
    where
        F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
    {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            (self.0)(cx)
        }
    }
    PollStream(poll)
}

/// Runs `steps` random requests from `seed` against both servers; panics at the first
/// difference with the seed, the step and both answers.
pub async fn run(seed: u64, steps: usize, ours: &mut Clients, theirs: &mut Clients) {
    let mut generator = Generator {
        rng: SmallRng::seed_from_u64(seed),
        revision: 1,
        compacted: 0,
    };
    let mut left = steps;
    let label = format!("seed {seed}");
    let replay = format!("DIFF_SEED={seed} cargo test --test differential random");
    compare_steps(&label, &replay, ours, theirs, |revision, compacted| {
        generator.revision = revision;
        generator.compacted = compacted;
        left = left.checked_sub(1)?;
        Some(generator.step())
    })
    .await;
}

/// Sends the steps `next` gives (it is told etcd's latest revision and compaction) to both
/// servers, etcd first; panics at the first difference. Then compares the events of a
/// watch from the oldest revision still held.
pub async fn compare_steps(
    label: &str,
    replay: &str,
    ours: &mut Clients,
    theirs: &mut Clients,
    mut next: impl FnMut(i64, i64) -> Option<Step>,
) {
    let (mut revision, mut compacted) = (1, 0);
    // Watching from before the first write: every change arrives live.
    let mut live_ours = watch(ours, 2).await;
    let mut live_theirs = watch(theirs, 2).await;
    let verbose = std::env::var_os("DIFF_VERBOSE").is_some();
    let mut index = 0;
    while let Some(step) = next(revision, compacted) {
        let expected = send(theirs, &step).await;
        let got = send(ours, &step).await;
        if verbose {
            println!("{index}: {step:?}\n  -> {expected}");
        }
        if got != expected {
            let shown = format!("{step:?}");
            let shown = if shown.len() > 4000 {
                format!("{}… ({} characters)", &shown[..4000], shown.len())
            } else {
                shown
            };
            panic!(
                "{label}: request {index} differs from etcd (replay: {replay})\n\
                 request: {shown}\netcd: {expected}\noxcd: {got}"
            );
        }
        // Track the revision and the compaction from etcd's answers.
        if let Some(seen) = revision_in(&expected) {
            revision = revision.max(seen);
        }
        if let Step::Compact(request) = &step {
            if !expected.starts_with("error") {
                compacted = request.revision;
            }
        }
        index += 1;
    }
    let expected = events(&mut live_theirs, revision).await;
    let got = events(&mut live_ours, revision).await;
    compare_events(label, "the live watch", &got, &expected);
    // Replaying the history from the oldest revision still held.
    let start = compacted.max(1);
    let expected = events(&mut watch(theirs, start).await, revision).await;
    let got = events(&mut watch(ours, start).await, revision).await;
    compare_events(
        label,
        &format!("the watch from revision {start}"),
        &got,
        &expected,
    );
}

/// The header revision in a response's text, if any.
fn revision_in(outcome: &str) -> Option<i64> {
    let start = outcome.find("revision: ")? + "revision: ".len();
    let digits: String = outcome[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
