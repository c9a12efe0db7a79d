//! The member's metrics, under etcd's names, and their Prometheus text encoding.
//!
//! Operators watch etcd through `/metrics`; dashboards and alerts written for etcd name its
//! metrics, so oxcd uses etcd's names, types, labels, units and histogram buckets wherever it
//! has the same quantity (`etcd_disk_wal_fsync_duration_seconds`, `grpc_server_handled_total`,
//! …). Help texts are etcd's too.
//!
//! # Design
//!
//! One [`Metrics`] per member, created before the store and shared (`Arc`) by everything
//! that counts: the Raft task (leader changes, heartbeat delays, WAL fsyncs), the applier
//! (slow applies, backend commits), the store (puts, deletes, ranges, txns), the proposer
//! (failed proposals), the peer transport and service (peer bytes), and the gRPC layer
//! (`services::grpc_metrics`). Counting is a relaxed atomic add on a field known at compile
//! time: no lock, no map lookup, no allocation on any request path. The per-peer counters sit
//! in a map, but a peer's sender and receiver look theirs up once per connection.
//!
//! What already exists elsewhere is read when a page is rendered rather than counted twice:
//! the Raft status (leader, commit index), the applied index, the backend's size, the number
//! of keys and watchers, the waiting proposals. The service that renders the page gathers
//! those into a [`Scrape`]. No `static` holds any of it: simulated members share a process.
//!
//! A histogram keeps one atomic count per bucket (not cumulative) and a sum in nanoseconds;
//! the encoder accumulates the buckets and takes the `+Inf` count from their total, so a
//! page is always self-consistent even while observations race with it.

// The simulator counts but never renders a page (it has no HTTP/1.1 clients), so the
// encoder and what only it reads are unused in simulation builds.
#![cfg_attr(madsim, allow(dead_code))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::ProcessStats;

/// The text format's content type (Prometheus exposition format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An apply slower than this counts in `etcd_server_slow_apply_total` (etcd's
/// `warningApplyDuration`).
pub(crate) const SLOW_APPLY: Duration = Duration::from_millis(100);

/// A count that only grows.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn add(&self, n: u64) {
        // Relaxed: a counter orders nothing; a scrape may see it a moment late.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution of durations over fixed buckets, in seconds.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bounds of the buckets, increasing; `+Inf` is implied after the last.
    bounds: Vec<f64>,
    /// Observations per bucket, not cumulative; one more than `bounds` (the `+Inf` bucket).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn new(bounds: Vec<f64>) -> Histogram {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "histogram bounds must increase: {bounds:?}"
        );
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// `count` buckets from `start`, each `factor` times the one before (Prometheus'
    /// `ExponentialBuckets`).
    pub(crate) fn exponential(start: f64, factor: f64, count: usize) -> Histogram {
        let mut bounds = Vec::with_capacity(count);
        let mut bound = start;
        for _ in 0..count {
            bounds.push(bound);
            bound *= factor;
        }
        Histogram::new(bounds)
    }

    /// Prometheus' default buckets (`prometheus.DefBuckets`), which grpc-prometheus uses.
    pub(crate) fn default_buckets() -> Histogram {
        Histogram::new(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The gRPC status codes by number, as grpc-prometheus names them in `grpc_code`.
pub(crate) const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// How a gRPC method streams, as grpc-prometheus names it in `grpc_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcType {
    Unary,
    ServerStream,
    BidiStream,
}

impl GrpcType {
    fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
        }
    }
}

/// Every method the client listener serves: (service, method, type), sorted by the request
/// path `/service/method` so that a path is found by binary search. grpc-prometheus
/// registers every method of a server with zero counts, so a dashboard sees each one from
/// the start; these are the ones that get that treatment here.
const GRPC_METHODS: &[(&str, &str, GrpcType)] = &[
    ("etcdserverpb.Cluster", "MemberAdd", GrpcType::Unary),
    ("etcdserverpb.Cluster", "MemberList", GrpcType::Unary),
    ("etcdserverpb.Cluster", "MemberPromote", GrpcType::Unary),
    ("etcdserverpb.Cluster", "MemberRemove", GrpcType::Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", GrpcType::Unary),
    ("etcdserverpb.KV", "Compact", GrpcType::Unary),
    ("etcdserverpb.KV", "DeleteRange", GrpcType::Unary),
    ("etcdserverpb.KV", "Put", GrpcType::Unary),
    ("etcdserverpb.KV", "Range", GrpcType::Unary),
    ("etcdserverpb.KV", "Txn", GrpcType::Unary),
    ("etcdserverpb.Lease", "LeaseGrant", GrpcType::Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", GrpcType::BidiStream),
    ("etcdserverpb.Lease", "LeaseLeases", GrpcType::Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", GrpcType::Unary),
    ("etcdserverpb.Lease", "LeaseTimeToLive", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "Alarm", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "Defragment", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "Downgrade", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "Hash", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "HashKV", GrpcType::Unary),
    ("etcdserverpb.Maintenance", "MoveLeader", GrpcType::Unary),
    (
        "etcdserverpb.Maintenance",
        "Snapshot",
        GrpcType::ServerStream,
    ),
    ("etcdserverpb.Maintenance", "Status", GrpcType::Unary),
    ("etcdserverpb.Watch", "Watch", GrpcType::BidiStream),
    ("grpc.health.v1.Health", "Check", GrpcType::Unary),
    ("grpc.health.v1.Health", "Watch", GrpcType::ServerStream),
];

/// The counters of one gRPC method.
#[derive(Debug)]
pub(crate) struct GrpcMethod {
    pub(crate) started: Counter,
    /// Finished calls by status code (the index is the code's number).
    pub(crate) handled: [Counter; 17],
    /// Time from the request to its status; observed only with `--metrics extensive`.
    pub(crate) handling: Histogram,
}

impl GrpcMethod {
    fn new() -> GrpcMethod {
        GrpcMethod {
            started: Counter::default(),
            handled: Default::default(),
            handling: Histogram::default_buckets(),
        }
    }

    /// Records a finished call with status `code` (a number outside the known codes counts
    /// as `Unknown`, as grpc-go treats it) after `elapsed`.
    pub(crate) fn finished(&self, code: usize, elapsed: Option<Duration>) {
        let code = if code < GRPC_CODES.len() { code } else { 2 };
        self.handled[code].inc();
        if let Some(elapsed) = elapsed {
            self.handling.observe(elapsed);
        }
    }
}

/// What is counted for one peer.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    pub(crate) sent_bytes: Counter,
    pub(crate) received_bytes: Counter,
    /// Round trips of the probes sent to the peer (etcd's buckets: 0.1 ms doubling 16
    /// times).
    pub(crate) round_trip: Histogram,
    /// The probes' outcomes and latencies (the v2 leader statistics).
    pub(crate) probes: std::sync::Mutex<ProbeStats>,
}

impl Default for PeerMetrics {
    fn default() -> Self {
        PeerMetrics {
            sent_bytes: Counter::default(),
            received_bytes: Counter::default(),
            round_trip: Histogram::exponential(0.0001, 2.0, 16),
            probes: std::sync::Mutex::default(),
        }
    }
}

impl PeerMetrics {
    /// A probe answered after `elapsed`.
    pub(crate) fn probe_answered(&self, elapsed: Duration) {
        self.round_trip.observe(elapsed);
        let millis = elapsed.as_secs_f64() * 1000.0;
        let mut stats = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        if stats.success == 0 || millis < stats.minimum {
            stats.minimum = millis;
        }
        stats.maximum = stats.maximum.max(millis);
        stats.success += 1;
        stats.current = millis;
        stats.sum += millis;
        stats.sum_of_squares += millis * millis;
    }

    /// A probe that failed or timed out.
    pub(crate) fn probe_failed(&self) {
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).fail += 1;
    }
}

/// Probes of one peer: counts, and latencies in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct ProbeStats {
    pub(crate) success: u64,
    pub(crate) fail: u64,
    pub(crate) current: f64,
    pub(crate) minimum: f64,
    pub(crate) maximum: f64,
    sum: f64,
    sum_of_squares: f64,
}

impl ProbeStats {
    pub(crate) fn average(&self) -> f64 {
        if self.success == 0 {
            0.0
        } else {
            self.sum / self.success as f64
        }
    }

    pub(crate) fn standard_deviation(&self) -> f64 {
        if self.success == 0 {
            return 0.0;
        }
        let average = self.average();
        (self.sum_of_squares / self.success as f64 - average * average)
            .max(0.0)
            .sqrt()
    }
}

/// Every metric one member counts. See the module documentation.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// `--metrics extensive`: gRPC handling-time histograms too.
    pub(crate) extensive: bool,
    pub(crate) leader_changes: Counter,
    pub(crate) heartbeat_send_failures: Counter,
    pub(crate) slow_applies: Counter,
    pub(crate) proposals_failed: Counter,
    pub(crate) health_success: Counter,
    pub(crate) health_failures: Counter,
    pub(crate) wal_fsync: Histogram,
    pub(crate) backend_commit: Histogram,
    pub(crate) backend_snapshot: Histogram,
    pub(crate) mvcc_range: Counter,
    pub(crate) mvcc_put: Counter,
    pub(crate) mvcc_delete: Counter,
    pub(crate) mvcc_txn: Counter,
    pub(crate) client_sent_bytes: Counter,
    pub(crate) client_received_bytes: Counter,
    grpc: Vec<GrpcMethod>,
    /// By member id. A mutex: touched when a peer connection opens and when a page renders.
    peers: Mutex<BTreeMap<u64, Arc<PeerMetrics>>>,
}

impl Metrics {
    pub(crate) fn new(extensive: bool) -> Metrics {
        Metrics {
            extensive,
            leader_changes: Counter::default(),
            heartbeat_send_failures: Counter::default(),
            slow_applies: Counter::default(),
            proposals_failed: Counter::default(),
            health_success: Counter::default(),
            health_failures: Counter::default(),
            // etcd's buckets: 1 ms to 8 s for the WAL and backend commits, 10 ms to 655 s
            // for backend snapshots.
            wal_fsync: Histogram::exponential(0.001, 2.0, 14),
            backend_commit: Histogram::exponential(0.001, 2.0, 14),
            backend_snapshot: Histogram::exponential(0.01, 2.0, 17),
            mvcc_range: Counter::default(),
            mvcc_put: Counter::default(),
            mvcc_delete: Counter::default(),
            mvcc_txn: Counter::default(),
            client_sent_bytes: Counter::default(),
            client_received_bytes: Counter::default(),
            grpc: GRPC_METHODS.iter().map(|_| GrpcMethod::new()).collect(),
            peers: Mutex::new(BTreeMap::new()),
        }
    }

    /// The counters of the method a request `path` (`/package.Service/Method`) calls.
    #[cfg(test)]
    pub(crate) fn grpc_method(&self, path: &str) -> Option<&GrpcMethod> {
        self.grpc_method_at(self.grpc_method_index(path)?)
    }

    /// Where the method a request `path` calls sits in the method table.
    pub(crate) fn grpc_method_index(&self, path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS
            .binary_search_by(|(known_service, known_method, _)| {
                (*known_service, *known_method).cmp(&(service, method))
            })
            .ok()
    }

    /// The counters of the method at `at` in the method table.
    pub(crate) fn grpc_method_at(&self, at: usize) -> Option<&GrpcMethod> {
        self.grpc.get(at)
    }

    /// The counters of peer `id`, created on first use.
    pub(crate) fn peer(&self, id: u64) -> Arc<PeerMetrics> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(id).or_default().clone()
    }

    /// The records of one mvcc transaction: etcd counts each operation, and the
    /// transaction itself when it held more than one.
    pub(crate) fn mvcc_txn_ended(&self, ranges: u64, puts: u64, deletes: u64) {
        if ranges > 0 {
            self.mvcc_range.add(ranges);
        }
        if puts > 0 {
            self.mvcc_put.add(puts);
        }
        if deletes > 0 {
            self.mvcc_delete.add(deletes);
        }
        if ranges + puts + deletes > 1 {
            self.mvcc_txn.inc();
        }
    }

    /// The page: every metric in the Prometheus text format.
    pub(crate) fn render(&self, scrape: &Scrape) -> String {
        let mut page = Page::default();
        self.render_server(&mut page, scrape);
        self.render_storage(&mut page, scrape);
        self.render_network(&mut page);
        self.render_grpc(&mut page);
        if let Some(process) = &scrape.process {
            render_process(&mut page, process);
        }
        page.out
    }

    fn render_server(&self, page: &mut Page, scrape: &Scrape) {
        let flag = |on: bool| u64::from(on);
        page.single(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            "gauge",
            flag(scrape.leader != 0),
        );
        page.single(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            "gauge",
            flag(scrape.is_leader),
        );
        page.single(
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            "gauge",
            flag(scrape.is_learner),
        );
        page.single(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            "counter",
            self.leader_changes.get(),
        );
        page.single("etcd_server_heartbeat_send_failures_total", "The total number of leader heartbeat send failures (likely overloaded from slow disk).", "counter", self.heartbeat_send_failures.get());
        page.single(
            "etcd_server_slow_apply_total",
            "The total number of slow apply requests (likely overloaded from slow disk).",
            "counter",
            self.slow_applies.get(),
        );
        page.single(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            "gauge",
            scrape.committed_index,
        );
        page.single(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            "gauge",
            scrape.applied_index,
        );
        page.single(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            "gauge",
            scrape.proposals_pending,
        );
        page.single(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            "counter",
            self.proposals_failed.get(),
        );
        page.single(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            "gauge",
            scrape.quota_backend_bytes,
        );
        page.labelled(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "gauge",
            &[("server_id", &format!("{:x}", scrape.member_id))],
            1,
        );
        page.labelled(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "gauge",
            &[("server_version", scrape.server_version)],
            1,
        );
        page.labelled(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "gauge",
            &[("cluster_version", scrape.cluster_version)],
            1,
        );
        page.single(
            "etcd_server_health_success",
            "The total number of successful health checks",
            "counter",
            self.health_success.get(),
        );
        page.single(
            "etcd_server_health_failures",
            "The total number of failed health checks",
            "counter",
            self.health_failures.get(),
        );
    }

    fn render_storage(&self, page: &mut Page, scrape: &Scrape) {
        page.histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            &[],
            &self.wal_fsync,
        );
        page.histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            &[],
            &self.backend_commit,
        );
        page.histogram(
            "etcd_disk_backend_snapshot_duration_seconds",
            "The latency distribution of backend snapshots.",
            &[],
            &self.backend_snapshot,
        );
        page.single(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            "gauge",
            scrape.db_size_bytes,
        );
        page.single(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            "gauge",
            scrape.db_size_in_use_bytes,
        );
        page.single(
            "etcd_debugging_auth_revision",
            "The current revision of auth store.",
            "gauge",
            scrape.auth_revision,
        );
        page.single(
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            "gauge",
            scrape.keys,
        );
        page.single(
            "etcd_mvcc_range_total",
            "Total number of ranges seen by this member.",
            "counter",
            self.mvcc_range.get(),
        );
        page.single(
            "etcd_mvcc_put_total",
            "Total number of puts seen by this member.",
            "counter",
            self.mvcc_put.get(),
        );
        page.single(
            "etcd_mvcc_delete_total",
            "Total number of deletes seen by this member.",
            "counter",
            self.mvcc_delete.get(),
        );
        page.single(
            "etcd_mvcc_txn_total",
            "Total number of txns seen by this member.",
            "counter",
            self.mvcc_txn.get(),
        );
        page.single(
            "etcd_debugging_mvcc_watch_stream_total",
            "Total number of watch streams.",
            "gauge",
            scrape.watch_streams,
        );
        page.single(
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            "gauge",
            scrape.watchers,
        );
        page.single(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            "gauge",
            scrape.slow_watchers,
        );
    }

    fn render_network(&self, page: &mut Page) {
        let peers: Vec<(u64, Arc<PeerMetrics>)> = {
            let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.iter().map(|(id, m)| (*id, m.clone())).collect()
        };
        page.header(
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            "counter",
        );
        for (id, peer) in &peers {
            page.sample(
                "etcd_network_peer_sent_bytes_total",
                &[("To", &format!("{id:x}"))],
                peer.sent_bytes.get(),
            );
        }
        page.header(
            "etcd_network_peer_received_bytes_total",
            "The total number of bytes received from peers.",
            "counter",
        );
        for (id, peer) in &peers {
            page.sample(
                "etcd_network_peer_received_bytes_total",
                &[("From", &format!("{id:x}"))],
                peer.received_bytes.get(),
            );
        }
        page.header(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            "histogram",
        );
        for (id, peer) in &peers {
            page.histogram_samples(
                "etcd_network_peer_round_trip_time_seconds",
                &[("To", &format!("{id:x}"))],
                &peer.round_trip,
            );
        }
        page.single(
            "etcd_network_client_grpc_sent_bytes_total",
            "The total number of bytes sent to grpc clients.",
            "counter",
            self.client_sent_bytes.get(),
        );
        page.single(
            "etcd_network_client_grpc_received_bytes_total",
            "The total number of bytes received from grpc clients.",
            "counter",
            self.client_received_bytes.get(),
        );
    }

    fn render_grpc(&self, page: &mut Page) {
        let methods = || GRPC_METHODS.iter().zip(&self.grpc);
        page.header(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            "counter",
        );
        for ((service, method, kind), counters) in methods() {
            let labels = [
                ("grpc_method", *method),
                ("grpc_service", *service),
                ("grpc_type", kind.label()),
            ];
            page.sample("grpc_server_started_total", &labels, counters.started.get());
        }
        page.header(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            "counter",
        );
        for ((service, method, kind), counters) in methods() {
            for (code, count) in GRPC_CODES.iter().zip(&counters.handled) {
                let labels = [
                    ("grpc_code", *code),
                    ("grpc_method", *method),
                    ("grpc_service", *service),
                    ("grpc_type", kind.label()),
                ];
                page.sample("grpc_server_handled_total", &labels, count.get());
            }
        }
        if !self.extensive {
            return;
        }
        page.header("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.", "histogram");
        for ((service, method, kind), counters) in methods() {
            let labels = [
                ("grpc_method", *method),
                ("grpc_service", *service),
                ("grpc_type", kind.label()),
            ];
            page.histogram_samples("grpc_server_handling_seconds", &labels, &counters.handling);
        }
    }
}

/// What a page shows that is read when it renders rather than counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrape {
    pub(crate) member_id: u64,
    /// 0 while no leader is known.
    pub(crate) leader: u64,
    pub(crate) is_leader: bool,
    pub(crate) is_learner: bool,
    pub(crate) committed_index: u64,
    pub(crate) applied_index: u64,
    pub(crate) proposals_pending: u64,
    pub(crate) quota_backend_bytes: u64,
    pub(crate) server_version: &'static str,
    pub(crate) cluster_version: &'static str,
    pub(crate) db_size_bytes: u64,
    pub(crate) db_size_in_use_bytes: u64,
    pub(crate) keys: u64,
    pub(crate) watch_streams: u64,
    pub(crate) watchers: u64,
    pub(crate) slow_watchers: u64,
    /// The auth store's revision.
    pub(crate) auth_revision: u64,
    /// The process' own numbers, where the platform tells them.
    pub(crate) process: Option<ProcessStats>,
}

fn render_process(page: &mut Page, process: &ProcessStats) {
    page.single(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        process.cpu_seconds,
    );
    page.single(
        "process_open_fds",
        "Number of open file descriptors.",
        "gauge",
        process.open_fds,
    );
    if let Some(max_fds) = process.max_fds {
        page.single(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            max_fds,
        );
    }
    page.single(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        process.virtual_memory_bytes,
    );
    page.single(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        process.resident_memory_bytes,
    );
    page.single(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        process.start_time_seconds,
    );
}

/// A page of the text format being written.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (at, (label, value)) in labels.iter().enumerate() {
                if at > 0 {
                    self.out.push(',');
                }
                let value = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{label}=\"{value}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one sample without labels.
    fn single(&mut self, name: &str, help: &str, kind: &str, value: impl std::fmt::Display) {
        self.header(name, help, kind);
        self.sample(name, &[], value);
    }

    /// A family of one labelled sample.
    fn labelled(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        self.header(name, help, kind);
        self.sample(name, labels, value);
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
    ) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, labels, histogram);
    }

    fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (at, count) in histogram.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = match histogram.bounds.get(at) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            self.sample(&bucket, &with_le, cumulative);
        }
        let sum = Duration::from_nanos(histogram.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_table_is_sorted_for_binary_search() {
        for pair in GRPC_METHODS.windows(2) {
            let (a, b) = ((pair[0].0, pair[0].1), (pair[1].0, pair[1].1));
            assert!(a < b, "{a:?} must sort before {b:?}");
        }
        let metrics = Metrics::new(false);
        for (service, method, _) in GRPC_METHODS {
            let path = format!("/{service}/{method}");
            let found = metrics
                .grpc_method(&path)
                .expect("every listed method is found");
            assert!(std::ptr::eq(
                found,
                &metrics.grpc[GRPC_METHODS
                    .iter()
                    .position(|m| m.0 == *service && m.1 == *method)
                    .unwrap()]
            ));
        }
        for unknown in [
            "",
            "/",
            "/etcdserverpb.KV",
            "/etcdserverpb.KV/Nope",
            "/x/Range",
            "KV/Range",
        ] {
            assert!(metrics.grpc_method(unknown).is_none(), "{unknown:?}");
        }
    }

    #[test]
    fn etcd_wal_fsync_buckets() {
        let metrics = Metrics::new(false);
        let bounds: Vec<String> = metrics
            .wal_fsync
            .bounds
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256",
                "0.512", "1.024", "2.048", "4.096", "8.192"
            ]
        );
        assert_eq!(metrics.backend_snapshot.bounds.len(), 17);
        assert_eq!(metrics.backend_snapshot.bounds[0], 0.01);
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_and_a_consistent_count() {
        let histogram = Histogram::new(vec![0.1, 1.0]);
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_millis(100));
        histogram.observe(Duration::from_millis(500));
        histogram.observe(Duration::from_secs(3));
        let mut page = Page::default();
        page.histogram("x_seconds", "X.", &[("a", "b")], &histogram);
        assert_eq!(
            page.out,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{a=\"b\",le=\"0.1\"} 2\n\
             x_seconds_bucket{a=\"b\",le=\"1\"} 3\n\
             x_seconds_bucket{a=\"b\",le=\"+Inf\"} 4\n\
             x_seconds_sum{a=\"b\"} 3.65\n\
             x_seconds_count{a=\"b\"} 4\n"
        );
        assert_eq!(histogram.count(), 4);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut page = Page::default();
        page.header("m", "a \\ b\nc", "gauge");
        page.sample("m", &[("l", "q\"\\\n")], 1);
        assert_eq!(
            page.out,
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{l=\"q\\\"\\\\\\n\"} 1\n"
        );
    }

    #[test]
    fn mvcc_transactions_count_as_etcd_counts_them() {
        let metrics = Metrics::new(false);
        metrics.mvcc_txn_ended(0, 1, 0);
        metrics.mvcc_txn_ended(1, 0, 0);
        assert_eq!(metrics.mvcc_txn.get(), 0, "a single operation is no txn");
        metrics.mvcc_txn_ended(1, 2, 1);
        assert_eq!(
            (
                metrics.mvcc_range.get(),
                metrics.mvcc_put.get(),
                metrics.mvcc_delete.get(),
                metrics.mvcc_txn.get()
            ),
            (2, 3, 1, 1)
        );
    }

    #[test]
    fn grpc_handling_histograms_only_when_extensive() {
        for extensive in [false, true] {
            let metrics = Metrics::new(extensive);
            let put = metrics.grpc_method("/etcdserverpb.KV/Put").unwrap();
            put.started.inc();
            put.finished(0, Some(Duration::from_millis(3)));
            put.finished(99, None);
            let page = metrics.render(&Scrape::default());
            assert!(page.contains("grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"));
            assert!(page.contains("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"));
            assert!(page.contains("grpc_server_handled_total{grpc_code=\"Unknown\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"));
            assert_eq!(
                page.contains("grpc_server_handling_seconds_bucket"),
                extensive
            );
        }
    }
}
