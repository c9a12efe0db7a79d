//! The clients of a simulated run, and the history they record.
//!
//! Each client loops until its deadline: it picks a member (and now and then moves to
//! another), picks an operation from the run's mix, and records it in jepsen-lite's format
//! with the simulator's virtual time. Values are unique (client id and sequence number), so
//! every read names the write it saw. An operation whose outcome the client could not learn
//! (a timeout, a dropped connection, a member that lost its leader) is recorded with an
//! unknown return, and the client continues under a new client id, as in Jepsen.
//!
//! Serializable reads may be stale by design, so they are not part of the linearizable
//! history; each one is checked instead to return only values some client wrote.
//!
//! Besides plain gets, puts, deletes, txns and leases, the mix has etcd's whole `Range`
//! (limit, `count_only`, `keys_only`, sort, revision filters), reads at a revision the
//! client saw earlier, compactions (so that some of those reads fail as compacted), and
//! prefix reads, deletes and a watch over keys that end in a multi-byte character or are
//! not UTF-8 at all ([`BYTE_KEYS`]). Every range end is computed on bytes and the history
//! holds the raw bytes, so a range end computed on characters (or on a lossy decoding of
//! the prefix) anywhere between the client and the store reads or deletes the wrong keys,
//! and the checker sees it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jepsen_lite::history::{
    Compare as HCompare, CompareOperand, CompareResult, CompareTarget, Event, EventType, KeyValue,
    RangeRequest as HRange, SortOrder as HSortOrder, SortTarget as HSortTarget, TxnOp, Watch,
    WatchOrigin, WatchResponse,
};
use jepsen_lite::{History, Input, Operation, Output};
use madsim::rand::{thread_rng, Rng};
use oxcd::proto::etcdserverpb::compare::{CompareResult as PbResult, CompareTarget as PbTarget};
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::lease_client::LeaseClient;
use oxcd::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use oxcd::proto::etcdserverpb::request_op::Request as PbOp;
use oxcd::proto::etcdserverpb::response_op::Response as PbOpResponse;
use oxcd::proto::etcdserverpb::watch_client::WatchClient;
use oxcd::proto::etcdserverpb::{
    compare, watch_request, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use oxcd::proto::mvccpb;
use oxcd::server::ReceiverStream;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long a client waits for one response before calling its outcome unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Leases are granted for the members' minimum TTL plus up to this many seconds: short
/// enough that many expire within a run (the checker holds each expiry to its TTL, see
/// `cluster::lease_expiries`), long enough that keep-alives keep some alive.
const LEASE_TTL_EXTRA_SECS: i64 = 3;

/// Keys besides `k0`, `k1`, ... that a run may use: byte strings whose last character
/// takes more than one byte, or that are not UTF-8. Each comment says which prefix range
/// it tests the end of.
pub const BYTE_KEYS: [&[u8]; 6] = [
    // "k¿": its last character is two bytes, c2 bf.
    b"k\xc2\xbf",
    // Inside the prefix "k¿".
    b"k\xc2\xbf0",
    // Just past the prefix "k¿" on bytes (which ends at c2 c0), yet below "kÀ" (c3 80), where
    // a prefix end computed on characters would put it.
    b"k\xc2\xc0",
    // Not UTF-8: a lossy decoding turns ff into U+FFFD, bytes ef bf bd, and a prefix end
    // computed from that (ef bf be) falls below the key itself.
    b"k\xff",
    // Inside the prefix "k\xff", which ends at "l" (a trailing ff is dropped, not
    // incremented).
    b"k\xff\xfe",
    b"k\xfe",
];

/// The prefixes of the prefix reads, deletes and watches: the byte keys' (one of them,
/// c2 alone, is a UTF-8 character cut in half) and every key's.
pub const PREFIXES: [&[u8]; 5] = [b"k\xc2\xbf", b"k\xc2", b"k\xff", b"k\xfe", b"k"];

/// The end of the range of keys that start with `prefix`, computed on bytes as etcd's
/// client does: the last byte below ff incremented, what follows dropped; `\0` (every
/// key) when every byte is ff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Relative weights of the operations a client picks.
#[derive(Clone, Debug)]
pub struct Mix {
    pub put: u32,
    pub get: u32,
    pub serializable_get: u32,
    pub range: u32,
    pub delete: u32,
    pub txn: u32,
    pub lease: u32,
    /// A `Range` with etcd's options: limit, `count_only`, `keys_only`, sort, revision
    /// filters.
    pub range_options: u32,
    /// A `Range` at a revision the client saw earlier, with or without options.
    pub past_read: u32,
    /// A prefix read or delete over [`PREFIXES`].
    pub prefix: u32,
    /// A compaction at a revision the client saw earlier.
    pub compact: u32,
    /// Percent of the operations on one key that pick one of [`BYTE_KEYS`].
    pub byte_keys: u32,
}

impl Mix {
    /// The weights of the plain operations; those of the others are 0 until
    /// [`Mix::draw_ranges_and_bytes`].
    pub fn from_rng(rng: &mut impl Rng) -> Mix {
        Mix {
            put: rng.gen_range(2..8),
            get: rng.gen_range(2..8),
            serializable_get: rng.gen_range(0..3),
            range: rng.gen_range(0..2),
            delete: rng.gen_range(0..3),
            txn: rng.gen_range(0..4),
            lease: rng.gen_range(0..3),
            range_options: 0,
            past_read: 0,
            prefix: 0,
            compact: 0,
            byte_keys: 0,
        }
    }

    /// Draws the weights of the ranges with options, past-revision reads, prefix operations
    /// and compactions, and the share of byte keys. A plan draws them after everything
    /// else, so that operations added to the mix do not redraw the clusters and faults of
    /// existing seeds (those of `sim/regressions.txt` among them).
    pub fn draw_ranges_and_bytes(&mut self, rng: &mut impl Rng) {
        self.range_options = rng.gen_range(0..2);
        self.past_read = rng.gen_range(0..2);
        self.prefix = rng.gen_range(0..2);
        // In a third of the runs: the durability check cannot read what a compaction
        // removed, so most runs keep their whole history.
        self.compact = u32::from(rng.gen_range(0..3) == 0);
        self.byte_keys = [0, 10, 25][rng.gen_range(0..3)];
    }

    fn total(&self) -> u32 {
        self.put
            + self.get
            + self.serializable_get
            + self.range
            + self.delete
            + self.txn
            + self.lease
            + self.range_options
            + self.past_read
            + self.prefix
            + self.compact
    }
}

#[derive(Clone, Copy, Debug)]
enum Pick {
    Put,
    Get,
    SerializableGet,
    Range,
    Delete,
    Txn,
    Lease,
    RangeOptions,
    PastRead,
    Prefix,
    Compact,
}

impl Mix {
    fn pick(&self, rng: &mut impl Rng) -> Pick {
        let mut roll = rng.gen_range(0..self.total().max(1));
        for (weight, pick) in [
            (self.put, Pick::Put),
            (self.get, Pick::Get),
            (self.serializable_get, Pick::SerializableGet),
            (self.range, Pick::Range),
            (self.delete, Pick::Delete),
            (self.txn, Pick::Txn),
            (self.lease, Pick::Lease),
            (self.range_options, Pick::RangeOptions),
            (self.past_read, Pick::PastRead),
            (self.prefix, Pick::Prefix),
            (self.compact, Pick::Compact),
        ] {
            if roll < weight {
                return pick;
            }
            roll -= weight;
        }
        Pick::Put
    }

    /// The key of an operation on one key: `k0`, `k1`, ... or, now and then, a byte key.
    fn key(&self, keys: usize, rng: &mut impl Rng) -> String {
        if rng.gen_range(0..100) < self.byte_keys {
            text(BYTE_KEYS[rng.gen_range(0..BYTE_KEYS.len())])
        } else {
            format!("k{}", rng.gen_range(0..keys))
        }
    }
}

/// Counts over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub serializable_reads: u64,
    pub watch_events: u64,
    /// Reads at a past revision answered, and those refused as compacted.
    pub past_reads: u64,
    pub compacted_reads: u64,
    /// Compactions that took effect.
    pub compactions: u64,
    /// Linearizable reads answered during a read burst (around a leader transfer, right
    /// after an election).
    pub burst_reads: u64,
    /// Watch responses that carried no event: progress notifications.
    pub progress_notifications: u64,
}

thread_local! {
    /// Until when this world's clients favour linearizable reads. Thread-local: each
    /// simulated world runs on a thread of its own.
    static READ_BURST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Makes this world's clients issue mostly linearizable reads until `until`: the nemesis
/// opens a burst around a leader transfer and after the faults that force an election,
/// when a read served from a deposed leader, or by a new one before it committed in its
/// term, would show.
pub fn read_burst(until: Instant) {
    READ_BURST.with(|burst| {
        burst.set(Some(burst.get().map_or(until, |open| open.max(until))));
    });
}

fn in_read_burst() -> bool {
    READ_BURST.with(|burst| burst.get().is_some_and(|until| Instant::now() < until))
}

/// The shared record of a run: the history, and what serializable reads saw.
pub struct Recorder {
    origin: Instant,
    history: Mutex<History>,
    next_client: AtomicU64,
    /// Every value any client tried to write.
    written: Mutex<HashSet<String>>,
    counts: Mutex<Counts>,
    violations: Mutex<Vec<String>>,
    /// Per watcher of every key, the lowest revision it may still be sent an event for.
    /// Clients compact only below the lowest of them: a watcher of every key must never be
    /// cancelled by a compaction, since its unbroken record is what lets the checker place
    /// writes whose outcome is unknown; and the revision before each of its events must
    /// survive, or etcd sends the event without its `prev_kv`.
    compaction_floors: Mutex<Vec<i64>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            origin: Instant::now(),
            history: Mutex::default(),
            next_client: AtomicU64::new(1),
            written: Mutex::default(),
            counts: Mutex::default(),
            violations: Mutex::default(),
            compaction_floors: Mutex::default(),
        })
    }

    fn now(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    fn new_client(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Records `operation`, answered by the server process `member` (see
    /// `harness::process_name`) when that is known.
    fn push(&self, operation: Operation, member: Option<String>) {
        let mut counts = self.counts.lock().unwrap();
        match (&operation.return_time, &operation.output) {
            (None, _) => counts.unknown += 1,
            (Some(_), Some(Output { error: Some(_), .. })) => counts.failed += 1,
            _ => counts.ok += 1,
        }
        drop(counts);
        let mut history = self.history.lock().unwrap();
        let index = history.push_operation(operation);
        if member.is_some() {
            history.set_operation_member(index, member);
        }
    }

    pub fn history(&self) -> History {
        self.history.lock().unwrap().clone()
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Compactions stay below this revision (see `compaction_floors`).
    fn compaction_floor(&self) -> i64 {
        let floors = self.compaction_floors.lock().unwrap();
        floors.iter().copied().min().unwrap_or(i64::MAX)
    }

    /// Sets the floor of watcher `floor` (if it holds one) to `revision`.
    fn hold_compactions(&self, floor: Option<usize>, revision: i64) {
        if let Some(floor) = floor {
            self.compaction_floors.lock().unwrap()[floor] = revision;
        }
    }
}

/// Connects to `address`, or gives up after a second.
pub async fn channel(address: SocketAddr) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(1));
    match tokio::time::timeout(Duration::from_secs(1), endpoint.connect()).await {
        Ok(Ok(channel)) => Some(channel),
        _ => None,
    }
}

/// Errors that say the request had no effect; anything else leaves the outcome unknown.
fn definite_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange
    )
}

/// Keys and values as the checker holds them: byte strings, one character per
/// byte, so that keys that are not UTF-8 round-trip.
fn text(bytes: &[u8]) -> String {
    jepsen_lite::bytes::from_bytes(bytes)
}

/// The bytes a key or value held as [`text`] stands for.
pub fn raw(text: &str) -> Bytes {
    Bytes::from(jepsen_lite::bytes::to_bytes(text).expect("built by `text`: one byte a character"))
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

fn range_output(response: &RangeResponse) -> Output {
    Output {
        revision: response.header.as_ref().map(|h| h.revision),
        kvs: Some(response.kvs.iter().map(key_value).collect()),
        count: Some(response.count),
        more: Some(response.more),
        ..Output::default()
    }
}

/// The client addresses of the cluster's current members (membership changes update it).
pub type Members = Arc<Mutex<Vec<SocketAddr>>>;

/// A random current member.
fn any_member(members: &Members) -> SocketAddr {
    let members = members.lock().unwrap();
    members[thread_rng().gen_range(0..members.len())]
}

/// One client: operations against random members until `deadline`.
pub async fn client(
    recorder: Arc<Recorder>,
    members: Members,
    mix: Mix,
    keys: usize,
    lease_ttl_min: i64,
    deadline: Instant,
) {
    let mut client_id = recorder.new_client();
    let mut sequence = 0u64;
    let mut member = any_member(&members);
    let mut channels: HashMap<SocketAddr, Channel> = HashMap::new();
    // The newest mod_revision this client saw per key: the guard of its compare-and-swaps.
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut leases: Vec<i64> = Vec::new();
    // Lease → when this client last saw it renewed (the grant or a keep-alive it sent) and
    // its TTL: when its deadline falls, as far as this client knows.
    let mut renewed: HashMap<i64, (Instant, i64)> = HashMap::new();
    // Header revisions this client was told (a sample): what its past-revision reads,
    // revision filters and compactions pick from.
    let mut revisions: Vec<i64> = Vec::new();
    while Instant::now() < deadline {
        if thread_rng().gen_bool(0.1) {
            member = any_member(&members);
        }
        let channel = match channels.get(&member) {
            Some(channel) => channel.clone(),
            None => match channel(member).await {
                Some(channel) => {
                    channels.insert(member, channel.clone());
                    channel
                }
                None => {
                    member = any_member(&members);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        sequence += 1;
        let key = mix.key(keys, &mut thread_rng());
        let value = format!("c{client_id}-{sequence}");
        let life = crate::harness::process_life(member);
        let bursting = in_read_burst();
        let pick = if bursting && thread_rng().gen_bool(0.7) {
            Pick::Get
        } else {
            mix.pick(&mut thread_rng())
        };
        let (input, outcome) = match pick {
            Pick::SerializableGet => {
                serializable_get(&recorder, channel, &key).await;
                continue;
            }
            Pick::Put => put(&recorder, channel, &key, value, None).await,
            Pick::Get | Pick::Range => {
                let (input, request) = if matches!(pick, Pick::Get) {
                    let input = Input::Get {
                        key: key.clone(),
                        range_end: None,
                        prefix: false,
                    };
                    (input, range_request(&raw(&key), b""))
                } else {
                    let input = Input::Get {
                        key: "k".into(),
                        range_end: None,
                        prefix: true,
                    };
                    (input, range_request(b"k", b"l"))
                };
                let call = recorder.now();
                let result = within(KvClient::new(channel).range(request)).await;
                let outcome = result.map(|r| r.map(|response| range_output(&response)));
                if let Some(Ok(output)) = &outcome {
                    for kv in output.kvs.iter().flatten() {
                        seen.insert(kv.key.clone(), kv.mod_revision.unwrap_or(0));
                    }
                }
                (input, (call, outcome))
            }
            Pick::RangeOptions | Pick::PastRead => {
                let revision = if matches!(pick, Pick::PastRead) {
                    pick_revision(&revisions).unwrap_or(1)
                } else {
                    0
                };
                let range = range_with_options(&key, revision, &revisions, &mut thread_rng());
                let request = range_request_of(&range);
                let call = recorder.now();
                let result = within(KvClient::new(channel).range(request)).await;
                let outcome = result.map(|r| r.map(|response| range_output(&response)));
                if let Some(Ok(output)) = &outcome {
                    // What a past revision held is no guard for a compare-and-swap now.
                    if revision == 0 {
                        for kv in output.kvs.iter().flatten() {
                            seen.insert(kv.key.clone(), kv.mod_revision.unwrap_or(0));
                        }
                    }
                }
                (Input::Range(range), (call, outcome))
            }
            Pick::Prefix => {
                let prefix = PREFIXES[thread_rng().gen_range(0..PREFIXES.len())];
                let end = prefix_end(prefix);
                let call;
                let (input, result) = if thread_rng().gen_bool(0.6) {
                    let input = Input::Get {
                        key: text(prefix),
                        range_end: None,
                        prefix: true,
                    };
                    call = recorder.now();
                    let result = within(KvClient::new(channel).range(range_request(prefix, &end)))
                        .await
                        .map(|r| r.map(|response| range_output(&response)));
                    if let Some(Ok(output)) = &result {
                        for kv in output.kvs.iter().flatten() {
                            seen.insert(kv.key.clone(), kv.mod_revision.unwrap_or(0));
                        }
                    }
                    (input, result)
                } else {
                    let input = Input::Delete {
                        key: text(prefix),
                        range_end: None,
                        prefix: true,
                    };
                    let request = DeleteRangeRequest {
                        key: Bytes::from_static(prefix),
                        range_end: Bytes::from(end),
                        ..Default::default()
                    };
                    call = recorder.now();
                    let result = within(KvClient::new(channel).delete_range(request))
                        .await
                        .map(|r| {
                            r.map(|response| Output {
                                deleted: Some(response.deleted),
                                ..revision_output(response.header)
                            })
                        });
                    (input, result)
                };
                (input, (call, result))
            }
            Pick::Compact => {
                // A revision this client saw, so never a future one; below every event the
                // watchers of every key may still be sent. Revision 1 (nothing to remove)
                // when there is none: it fails as compacted once anything was.
                let floor = recorder.compaction_floor();
                let eligible: Vec<i64> = revisions.iter().copied().filter(|&r| r < floor).collect();
                let revision = pick_revision(&eligible).unwrap_or(1);
                let input = Input::Compact {
                    revision,
                    physical: false,
                };
                let request = CompactionRequest {
                    revision,
                    physical: false,
                };
                let call = recorder.now();
                let result = within(KvClient::new(channel).compact(request)).await;
                let outcome = result.map(|r| r.map(|response| revision_output(response.header)));
                (input, (call, outcome))
            }
            Pick::Delete => {
                let input = Input::Delete {
                    key: key.clone(),
                    range_end: None,
                    prefix: false,
                };
                let call = recorder.now();
                let request = DeleteRangeRequest {
                    key: raw(&key),
                    ..Default::default()
                };
                let result = within(KvClient::new(channel).delete_range(request)).await;
                let outcome = result.map(|r| {
                    r.map(|response| Output {
                        deleted: Some(response.deleted),
                        ..revision_output(response.header)
                    })
                });
                (input, (call, outcome))
            }
            Pick::Txn => {
                recorder.written.lock().unwrap().insert(value.clone());
                let guard = seen.get(&key).copied().unwrap_or(0);
                // Now and then the branch deletes every key from `key` on and then puts a
                // key, maybe one it just removed: etcd 3.4 accepts that and applies it in
                // order (issue 18); every member must agree and watchers see the deletes,
                // then the put.
                let from_key = thread_rng().gen_bool(0.25);
                let put_key = if from_key {
                    mix.key(keys, &mut thread_rng())
                } else {
                    key.clone()
                };
                let mut success = Vec::new();
                let mut success_ops = Vec::new();
                if from_key {
                    success.push(TxnOp::Delete {
                        key: key.clone(),
                        range_end: Some("\0".into()),
                        prefix: false,
                    });
                    success_ops.push(RequestOp {
                        request: Some(PbOp::RequestDeleteRange(DeleteRangeRequest {
                            key: raw(&key),
                            range_end: Bytes::from_static(b"\0"),
                            ..Default::default()
                        })),
                    });
                }
                success.push(TxnOp::Put {
                    key: put_key.clone(),
                    value: value.clone(),
                    lease: None,
                });
                success_ops.push(RequestOp {
                    request: Some(PbOp::RequestPut(PutRequest {
                        key: raw(&put_key),
                        value: raw(&value),
                        ..Default::default()
                    })),
                });
                let input = Input::Txn {
                    compare: vec![HCompare {
                        key: key.clone(),
                        range_end: None,
                        target: CompareTarget::ModRevision,
                        result: CompareResult::Equal,
                        value: CompareOperand::Int(guard),
                    }],
                    success,
                    failure: vec![TxnOp::Get {
                        key: key.clone(),
                        range_end: None,
                        prefix: false,
                    }],
                };
                let request = TxnRequest {
                    compare: vec![Compare {
                        result: PbResult::Equal as i32,
                        target: PbTarget::Mod as i32,
                        key: raw(&key),
                        range_end: Bytes::new(),
                        target_union: Some(compare::TargetUnion::ModRevision(guard)),
                    }],
                    success: success_ops,
                    failure: vec![RequestOp {
                        request: Some(PbOp::RequestRange(range_request(&raw(&key), b""))),
                    }],
                };
                let call = recorder.now();
                let result = within(KvClient::new(channel).txn(request)).await;
                let outcome = result.map(|r| {
                    r.map(|response| {
                        let responses = response
                            .responses
                            .iter()
                            .map(|op| match &op.response {
                                Some(PbOpResponse::ResponseRange(range)) => {
                                    for kv in &range.kvs {
                                        seen.insert(text(&kv.key), kv.mod_revision);
                                    }
                                    Output {
                                        kvs: Some(range.kvs.iter().map(key_value).collect()),
                                        ..Output::default()
                                    }
                                }
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
                    })
                });
                (input, (call, outcome))
            }
            Pick::Lease => {
                let choice = thread_rng().gen_range(0..4);
                if choice == 0 || leases.is_empty() {
                    let id = ((client_id as i64) << 24) | sequence as i64;
                    let ttl = lease_ttl_min + thread_rng().gen_range(0..=LEASE_TTL_EXTRA_SECS);
                    let input = Input::LeaseGrant { id, ttl };
                    let call = recorder.now();
                    let request = LeaseGrantRequest { ttl, id };
                    let sent = Instant::now();
                    let result = within(LeaseClient::new(channel).lease_grant(request)).await;
                    if let Some(Ok(_)) = &result {
                        leases.push(id);
                        renewed.insert(id, (sent, ttl));
                    }
                    let outcome =
                        result.map(|r| r.map(|response| revision_output(response.header)));
                    (input, (call, outcome))
                } else if choice == 1 {
                    let lease = leases[thread_rng().gen_range(0..leases.len())];
                    put(&recorder, channel, &key, value, Some(lease)).await
                } else if choice == 2 {
                    let at = thread_rng().gen_range(0..leases.len());
                    let id = leases[at];
                    // Often right around the lease's deadline, where a renewal races the
                    // leader's expiry check and its revocation.
                    if let Some(&(renewed_at, ttl)) = renewed.get(&id) {
                        let offset = thread_rng().gen_range(-300i64..600);
                        let due = renewed_at + Duration::from_secs(ttl.max(0) as u64);
                        let target = if offset < 0 {
                            due.checked_sub(Duration::from_millis(offset.unsigned_abs()))
                        } else {
                            Some(due + Duration::from_millis(offset as u64))
                        };
                        let now = Instant::now();
                        if let Some(target) = target.filter(|&target| {
                            thread_rng().gen_bool(0.4)
                                && target > now
                                && target < deadline
                                && target - now < Duration::from_secs(4)
                        }) {
                            tokio::time::sleep_until(target).await;
                        }
                    }
                    let input = Input::LeaseKeepAlive { id };
                    let call = recorder.now();
                    let sent = Instant::now();
                    let result = within(keep_alive_once(channel, id)).await;
                    match result {
                        Some(Ok(0)) => {
                            leases.swap_remove(at);
                            renewed.remove(&id);
                        }
                        Some(Ok(ttl)) => {
                            renewed.insert(id, (sent, ttl));
                        }
                        _ => {}
                    }
                    // The header's revision is not recorded: a follower answers with its
                    // own, which may lag the leader that renewed the lease.
                    let outcome = result.map(|r| {
                        r.map(|ttl| Output {
                            error: (ttl <= 0).then(|| "lease not found".to_string()),
                            ..Output::default()
                        })
                    });
                    (input, (call, outcome))
                } else {
                    let id = leases.swap_remove(thread_rng().gen_range(0..leases.len()));
                    let input = Input::LeaseRevoke { id };
                    let call = recorder.now();
                    let result =
                        within(LeaseClient::new(channel).lease_revoke(LeaseRevokeRequest { id }))
                            .await;
                    let outcome =
                        result.map(|r| r.map(|response| revision_output(response.header)));
                    (input, (call, outcome))
                }
            }
        };
        let (call, outcome) = outcome;
        let read_only = input.is_read_only();
        let past_read = matches!(&input, Input::Range(range) if range.revision > 0);
        match &outcome {
            Some(Ok(output)) => {
                if let Some(revision) = output.revision {
                    note_revision(&mut revisions, revision);
                }
                let mut counts = recorder.counts.lock().unwrap();
                counts.past_reads += u64::from(past_read);
                counts.burst_reads += u64::from(bursting && matches!(input, Input::Get { .. }));
                counts.compactions += u64::from(matches!(input, Input::Compact { .. }));
            }
            Some(Err(status)) if past_read && is_compacted(status) => {
                recorder.counts.lock().unwrap().compacted_reads += 1;
            }
            _ => {}
        }
        let served_by = crate::harness::process_name(member, life);
        match outcome {
            Some(Ok(output)) => recorder.push(
                Operation {
                    client: client_id,
                    call,
                    return_time: Some(recorder.now()),
                    input,
                    output: Some(output),
                },
                served_by,
            ),
            // A keep-alive that failed says nothing about its lease: the server answers a
            // lease that is gone with TTL 0, not with an error, so an error (this member or
            // the one it asked stopped leading) is no evidence the lease expired.
            Some(Err(status))
                if definite_failure(&status) && !matches!(input, Input::LeaseKeepAlive { .. }) =>
            {
                recorder.push(
                    Operation {
                        client: client_id,
                        call,
                        return_time: Some(recorder.now()),
                        input,
                        output: Some(Output {
                            error: Some(status.message().to_string()),
                            ..Output::default()
                        }),
                    },
                    served_by,
                )
            }
            failed => {
                tracing::debug!(?failed, "operation outcome unknown");
                // A read that failed constrains nothing; a write may or may not have
                // happened.
                if !read_only {
                    recorder.push(
                        Operation {
                            client: client_id,
                            call,
                            return_time: None,
                            input,
                            output: None,
                        },
                        None,
                    );
                    client_id = recorder.new_client();
                }
                channels.remove(&member);
                member = any_member(&members);
                tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(10..200))).await;
            }
        }
    }
}

/// One keep-alive of lease `id` on its own stream; returns the TTL the lease was renewed
/// for, 0 when it is gone.
async fn keep_alive_once(channel: Channel, id: i64) -> Result<tonic::Response<i64>, Status> {
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

/// What a write answered: the header revision.
fn revision_output(header: Option<ResponseHeader>) -> Output {
    Output {
        revision: header.map(|h| h.revision),
        ..Output::default()
    }
}

/// Keeps a sample of the header revisions a client was told: all of the first few, then
/// each new one in place of a random old one, so that old revisions (which compactions
/// remove) stay in it for a while.
fn note_revision(revisions: &mut Vec<i64>, revision: i64) {
    const KEPT: usize = 32;
    if revisions.contains(&revision) {
        return;
    }
    if revisions.len() < KEPT {
        revisions.push(revision);
    } else {
        let at = thread_rng().gen_range(0..KEPT);
        revisions[at] = revision;
    }
}

/// A random revision of `revisions`, the newer ones more often.
fn pick_revision(revisions: &[i64]) -> Option<i64> {
    if revisions.is_empty() {
        return None;
    }
    let mut sorted = revisions.to_vec();
    sorted.sort_unstable();
    // The larger of two draws: older revisions come up, but less often.
    let a = thread_rng().gen_range(0..sorted.len());
    let b = thread_rng().gen_range(0..sorted.len());
    Some(sorted[a.max(b)])
}

/// Whether a read failed because its revision was compacted (etcd's `ErrCompacted`).
fn is_compacted(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("compacted")
}

/// A `Range` with random options, at `revision` (0: the newest): over one key, every key
/// from `key` on, or a prefix of [`PREFIXES`]; with a limit, a sort, `keys_only` or
/// `count_only`, and revision filters drawn from `revisions`, each now and then.
fn range_with_options(key: &str, revision: i64, revisions: &[i64], rng: &mut impl Rng) -> HRange {
    let (key, range_end, prefix) = match rng.gen_range(0..4) {
        0 => (key.to_string(), None, false),
        1 => (key.to_string(), Some("\0".to_string()), false),
        _ => (text(PREFIXES[rng.gen_range(0..PREFIXES.len())]), None, true),
    };
    let [min_mod_revision, max_mod_revision, min_create_revision, max_create_revision] =
        std::array::from_fn(|_| match rng.gen_bool(0.15) {
            true => pick_revision(revisions).unwrap_or(0),
            false => 0,
        });
    let limit = [0, 0, 1, 2, 3][rng.gen_range(0..5)];
    let sort_target = [
        HSortTarget::Key,
        HSortTarget::Key,
        HSortTarget::Version,
        HSortTarget::Create,
        HSortTarget::Mod,
        HSortTarget::Value,
    ][rng.gen_range(0..6)];
    let mut sort_order =
        [HSortOrder::None, HSortOrder::Ascend, HSortOrder::Descend][rng.gen_range(0..3)];
    // etcd decides whether to push the limit down to the store before it turns a non-key
    // target with no order into an ascending sort, so such a range with a limit sorts only
    // the first limit + 1 keys (oxcd does the same); jepsen-lite models a sort of the whole
    // range, so the workload asks for the order.
    if limit > 0 && sort_order == HSortOrder::None && sort_target != HSortTarget::Key {
        sort_order = HSortOrder::Ascend;
    }
    HRange {
        key,
        range_end,
        prefix,
        limit,
        revision,
        sort_order,
        sort_target,
        serializable: false,
        keys_only: rng.gen_bool(0.3),
        count_only: rng.gen_bool(0.15),
        min_mod_revision,
        max_mod_revision,
        min_create_revision,
        max_create_revision,
    }
}

/// The request a range of the history stands for, its range end computed on bytes.
fn range_request_of(range: &HRange) -> RangeRequest {
    let key = raw(&range.key);
    let range_end = if range.prefix {
        Bytes::from(prefix_end(&key))
    } else {
        range.range_end.as_deref().map(raw).unwrap_or_default()
    };
    RangeRequest {
        key,
        range_end,
        limit: range.limit,
        revision: range.revision,
        sort_order: match range.sort_order {
            HSortOrder::None => SortOrder::None,
            HSortOrder::Ascend => SortOrder::Ascend,
            HSortOrder::Descend => SortOrder::Descend,
        } as i32,
        sort_target: match range.sort_target {
            HSortTarget::Key => SortTarget::Key,
            HSortTarget::Version => SortTarget::Version,
            HSortTarget::Create => SortTarget::Create,
            HSortTarget::Mod => SortTarget::Mod,
            HSortTarget::Value => SortTarget::Value,
        } as i32,
        serializable: range.serializable,
        keys_only: range.keys_only,
        count_only: range.count_only,
        min_mod_revision: range.min_mod_revision,
        max_mod_revision: range.max_mod_revision,
        min_create_revision: range.min_create_revision,
        max_create_revision: range.max_create_revision,
    }
}

/// A put of `value` (unique) under `key`, with `lease` attached if given.
async fn put(
    recorder: &Recorder,
    channel: Channel,
    key: &str,
    value: String,
    lease: Option<i64>,
) -> (Input, (i64, Option<Result<Output, Status>>)) {
    recorder.written.lock().unwrap().insert(value.clone());
    let input = Input::Put {
        key: key.to_string(),
        value: value.clone(),
        lease,
    };
    let call = recorder.now();
    let request = PutRequest {
        key: raw(key),
        value: raw(&value),
        lease: lease.unwrap_or(0),
        ..Default::default()
    };
    let result = within(KvClient::new(channel).put(request)).await;
    let outcome = result.map(|r| r.map(|response| revision_output(response.header)));
    (input, (call, outcome))
}

/// A call with the client's timeout: `None` when it ran out.
async fn within<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Option<Result<T, Status>> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Some(result.map(tonic::Response::into_inner)),
        Err(_) => None,
    }
}

fn range_request(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key),
        range_end: Bytes::copy_from_slice(range_end),
        ..Default::default()
    }
}

/// A serializable read may be stale, never invented: every value it returns was written by
/// some client.
async fn serializable_get(recorder: &Recorder, channel: Channel, key: &str) {
    let request = RangeRequest {
        serializable: true,
        ..range_request(&raw(key), b"")
    };
    let Some(Ok(response)) = within(KvClient::new(channel).range(request)).await else {
        return;
    };
    recorder.counts.lock().unwrap().serializable_reads += 1;
    let written = recorder.written.lock().unwrap();
    for kv in &response.kvs {
        let value = text(&kv.value);
        if !written.contains(&value) {
            recorder.violations.lock().unwrap().push(format!(
                "serializable read of {} returned {value:?}, which no client wrote",
                jepsen_lite::bytes::display(key)
            ));
        }
    }
}

/// One watcher until `deadline`: of every key, from revision 1 (`from_start`: the
/// checker's reference watch) or from the current revision; or, with `prefix`, of the keys
/// that start with it (its range end computed on bytes), from the current revision. A
/// stream that fails or goes quiet is recorded as it was, and the watcher resumes on
/// another member from the revision after the last event it saw (the checker chains such
/// records into one). A watcher of every key holds compactions below the next revision it
/// may be sent (see `Recorder::compaction_floors`); a prefix watcher that a compaction
/// cancels resumes after the compaction's revision.
pub fn watcher(
    recorder: Arc<Recorder>,
    members: Members,
    from_start: bool,
    prefix: Option<&'static [u8]>,
    prev_kv: bool,
    progress_notify: bool,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> {
    let mut next_revision = i64::from(from_start);
    // Registered before the first client runs, so that no compaction overtakes the start.
    // A watcher from the current revision holds every compaction until it knows that
    // revision.
    let floor = prefix.is_none().then(|| {
        let mut floors = recorder.compaction_floors.lock().unwrap();
        floors.push(1);
        floors.len() - 1
    });
    let (key, range_end) = match prefix {
        Some(prefix) => (Bytes::from_static(prefix), Bytes::from(prefix_end(prefix))),
        None => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
    };
    async move {
        while Instant::now() < deadline {
            let address = any_member(&members);
            let Some(channel) = channel(address).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let life = crate::harness::process_life(address);
            let mut origin = WatchOrigin::default();
            let mut watch = Watch {
                client: recorder.new_client(),
                watch_id: 0,
                key: prefix.map(text).unwrap_or_default(),
                range_end: prefix.is_none().then(|| "\0".into()),
                prefix: prefix.is_some(),
                start_revision: next_revision,
                filters: Vec::new(),
                prev_kv,
                responses: Vec::new(),
                canceled: false,
                compact_revision: 0,
            };
            let (requests, receiver) = tokio::sync::mpsc::channel(1);
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: key.clone(),
                        range_end: range_end.clone(),
                        start_revision: next_revision,
                        prev_kv,
                        progress_notify,
                        ..Default::default()
                    },
                )),
            };
            origin.call = Some(recorder.now());
            let _ = requests.send(create).await;
            let stream = oxcd::server::ReceiverStream(receiver);
            let opened =
                tokio::time::timeout(CALL_TIMEOUT, WatchClient::new(channel).watch(stream)).await;
            let Ok(Ok(response)) = opened else {
                continue;
            };
            let mut responses = response.into_inner();
            let mut created = false;
            loop {
                let quiet = Duration::from_secs(3);
                let next = tokio::time::timeout(quiet, responses.message()).await;
                let Ok(Ok(Some(message))) = next else { break };
                if message.created && !created {
                    created = true;
                    origin.member = crate::harness::process_name(address, life);
                    watch.watch_id = message.watch_id;
                    if next_revision == 0 {
                        let revision = message.header.as_ref().map_or(0, |h| h.revision);
                        recorder.hold_compactions(floor, revision + 1);
                    }
                    if message.canceled {
                        watch.canceled = true;
                        watch.compact_revision = message.compact_revision;
                        break;
                    }
                    continue;
                }
                if message.canceled {
                    watch.canceled = true;
                    watch.compact_revision = message.compact_revision;
                    break;
                }
                let revision = message.header.as_ref().map_or(0, |h| h.revision);
                let events: Vec<Event> = message.events.iter().map(event).collect();
                if let Some(last) = events.last() {
                    next_revision = next_revision.max(last.mod_revision + 1);
                    recorder.hold_compactions(floor, next_revision);
                }
                {
                    let mut counts = recorder.counts.lock().unwrap();
                    counts.watch_events += events.len() as u64;
                    counts.progress_notifications += u64::from(events.is_empty());
                }
                // Now and then, the client asks for the stream's progress too (etcd 3.4's
                // `RequestProgress`), answered when every watcher of the stream is synced.
                let ask_progress =
                    progress_notify && !events.is_empty() && thread_rng().gen_ratio(1, 8);
                watch.responses.push(WatchResponse {
                    revision,
                    progress_notify: events.is_empty(),
                    events,
                    fragment: message.fragment,
                });
                if Instant::now() >= deadline {
                    break;
                }
                if ask_progress {
                    let _ = requests.try_send(WatchRequest {
                        request_union: Some(watch_request::RequestUnion::ProgressRequest(
                            WatchProgressRequest {},
                        )),
                    });
                }
            }
            drop(requests);
            // What was compacted is gone: the watch resumes after the compaction's revision
            // (a compaction at r removes a delete made at r too, so a watch from r would not
            // see it).
            if watch.compact_revision > 0 {
                next_revision = next_revision.max(watch.compact_revision + 1);
            }
            recorder.hold_compactions(floor, next_revision.max(1));
            if created {
                // jepsen-lite takes records without a member for one server: a stream
                // whose process is not known carries no origin at all, so that it is
                // never paired with an operation whose process is not known either.
                if origin.member.is_none() {
                    origin.call = None;
                }
                let mut history = recorder.history.lock().unwrap();
                let index = history.push_watch(watch);
                history.set_watch_origin(index, origin);
            }
        }
    }
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
