//! One seeded run of a multi-member cluster under faults, and its checks.
//!
//! A run, all of it drawn from the seed:
//!
//! 1. **Plan**: 3 or 5 members, heartbeat and election timeout, snapshot count, the fault
//!    mix, the operation mix, the number of clients and keys, the watchers.
//! 2. **Fault phase**: clients and two watchers of every key (one from revision 1, one
//!    from the current revision), in some runs a third of a prefix of the byte keys, run
//!    against random members while the nemesis injects faults; the Raft observer checks
//!    its invariants on every report.
//! 3. **Liveness phase**: every fault is healed; the clients run on for a few seconds, and
//!    within a bound a write through every member must succeed.
//! 4. **End checks**: every acknowledged write is readable at its revision (durability);
//!    HashKV agrees on every member at one revision; every lease expires once nothing
//!    keeps it alive; then, outside the simulator, jepsen-lite checks the history for
//!    linearizability and the watch guarantees. Lease expiries enter the history as
//!    revokes with an unknown outcome, called at the earliest time each may happen (see
//!    [`lease_expiries`]): a lease's keys gone before then fail the check.
//!
//! A run that injected no fault or completed almost no operation fails: a vacuous pass
//! proves nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jepsen_lite::history::TxnOp;
use jepsen_lite::{CheckOptions, History, Input, Operation, Outcome};
use madsim::rand::{thread_rng, Rng};
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::lease_client::LeaseClient;
use oxcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use oxcd::proto::etcdserverpb::{HashKvRequest, LeaseLeasesRequest, PutRequest, RangeRequest};
use oxcd::server::observe::{set_observer, set_points, Point};
use oxcd::server::transport::set_message_faults;
use tokio::time::Instant;

use crate::harness::{ClusterSpec, SimMember};
use crate::nemesis::{Chaos, ClockBound, Fault, Nemesis};
use crate::observer::{Observed, RaftObserver};
use crate::points::FaultPoints;
use crate::workload::{self, Counts, Mix, Recorder};

/// Operations a run must complete at least, or it proves nothing.
const OPERATIONS_MIN: u64 = 15;
/// How long clients keep running after the faults are healed.
const CALM_PHASE: Duration = Duration::from_secs(3);
/// How long the healed cluster has to serve a write through every member.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// Client ids from here on name the lessor's expiries in the history.
const EXPIRY_CLIENTS: u64 = 1_000_000;

/// What a run drew from its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: ClusterSpec,
    pub clients: usize,
    pub keys: usize,
    pub mix: Mix,
    pub faults: Vec<(Fault, u32)>,
    pub fault_phase: Duration,
    pub watch_prev_kv: bool,
    /// The prefix of `workload::PREFIXES` a third watcher watches, if any.
    pub watch_prefix: Option<&'static [u8]>,
    /// Delay points enabled, with the chance a pass through each is delayed.
    pub delays: BTreeMap<Point, f64>,
}

impl Plan {
    pub fn from_rng(rng: &mut impl Rng) -> Plan {
        let heartbeat_ms = rng.gen_range(20..=100);
        let election_ms = heartbeat_ms * rng.gen_range(5..=12);
        // Half the runs take snapshots often; of those, half keep almost no log behind
        // them, so that a member that falls behind must catch up from a snapshot.
        let frequent_snapshots = rng.gen_bool(0.5);
        let mut plan = Plan {
            spec: ClusterSpec {
                size: if rng.gen_bool(0.7) { 3 } else { 5 },
                heartbeat_ms,
                election_ms,
                snapshot_count: if frequent_snapshots {
                    rng.gen_range(20..200)
                } else {
                    100_000
                },
                catch_up_entries: (frequent_snapshots && rng.gen_bool(0.5))
                    .then(|| rng.gen_range(0..20)),
                // Set by `run` from the seed itself, so that it draws nothing.
                strict_reconfig: true,
                // Drawn last, below.
                wal_segment_bytes: 0,
                progress_notify_ms: crate::harness::PROGRESS_NOTIFY_DEFAULT_MS,
            },
            clients: rng.gen_range(2..=6),
            keys: rng.gen_range(2..=6),
            mix: Mix::from_rng(rng),
            faults: Nemesis::mix_from_rng(rng),
            fault_phase: Duration::from_millis(rng.gen_range(5_000..12_000)),
            watch_prev_kv: rng.gen_bool(0.5),
            delays: FaultPoints::delays_from_rng(rng),
            watch_prefix: None,
        };
        // Drawn last: see `Mix::draw_ranges_and_bytes`.
        plan.mix.draw_ranges_and_bytes(rng);
        plan.watch_prefix = rng
            .gen_bool(0.5)
            .then(|| workload::PREFIXES[rng.gen_range(0..workload::PREFIXES.len())]);
        // From a segment every few dozen entries to one per run.
        plan.spec.wal_segment_bytes = [16 << 10, 256 << 10, 4 << 20][rng.gen_range(0..3)];
        // Half the runs' watchers ask for periodic progress notifications, every 100 ms to
        // a second: each one vouches that the stream missed nothing up to its revision.
        if rng.gen_bool(0.5) {
            plan.spec.progress_notify_ms = rng.gen_range(100..1_000);
        }
        plan
    }

    /// Whether the watchers ask for periodic progress notifications.
    pub fn progress_notify(&self) -> bool {
        self.spec.progress_notify_ms < crate::harness::PROGRESS_NOTIFY_DEFAULT_MS
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub seed: u64,
    pub plan: Plan,
    pub history: History,
    pub counts: Counts,
    pub injected: BTreeMap<Fault, u64>,
    /// What the clock faults allowed lease expiries to be early by.
    pub clocks: ClockBound,
    pub observed: Observed,
    /// Crashes armed, and those that fired, by point.
    pub points_armed: BTreeMap<Point, u64>,
    pub points_fired: BTreeMap<Point, u64>,
    /// Passes through delay points that were delayed, by point.
    pub delayed: BTreeMap<Point, u64>,
    /// What the in-simulation checks found (serializable reads, liveness, durability,
    /// HashKV), besides the observer's findings.
    pub violations: Vec<String>,
}

impl RunOutcome {
    /// A digest of the run for the determinism check: equal runs give equal strings.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            self.history.to_jsonl(),
            self.counts,
            self.injected,
            (&self.points_armed, &self.points_fired),
            self.delayed,
            self.clocks,
            self.observed,
            self.violations
        )
    }
}

/// Runs the scenario of `seed`. Call inside the simulator (see `harness::run_seed`).
pub async fn run(seed: u64) -> RunOutcome {
    let mut plan = Plan::from_rng(&mut thread_rng());
    // One seed in four checks reconfigurations strictly (etcd's default): it refuses most
    // of the nemesis' member replacements, which the other seeds need to cover.
    plan.spec.strict_reconfig = seed % 4 == 0;
    println!(
        "seed {seed}: {} members{}, heartbeat {} ms, election {} ms, snapshot every {} \
         keeping {:?}, WAL segments of {} KiB, {} clients on {} keys, {:.1} s of faults          from {:?}",
        plan.spec.size,
        if plan.spec.strict_reconfig {
            " (strict reconfiguration)"
        } else {
            ""
        },
        plan.spec.heartbeat_ms,
        plan.spec.election_ms,
        plan.spec.snapshot_count,
        plan.spec.catch_up_entries,
        plan.spec.wal_segment_bytes >> 10,
        plan.clients,
        plan.keys,
        plan.fault_phase.as_secs_f64(),
        plan.faults
            .iter()
            .map(|(f, _)| f.name())
            .collect::<Vec<_>>()
    );
    let observer = Arc::new(RaftObserver::default());
    let chaos = Arc::new(Chaos::default());
    let points = Arc::new(FaultPoints::with_delays(plan.delays.clone()));
    set_observer(Some(observer.clone()));
    set_message_faults(Some(chaos.clone()));
    set_points(Some(points.clone()));

    let members: Vec<SimMember> = (1..=plan.spec.size)
        .map(|index| SimMember::start(index, &plan.spec, seed))
        .collect();
    let addresses: workload::Members = Arc::new(std::sync::Mutex::new(
        members.iter().map(SimMember::client_address).collect(),
    ));
    let recorder = Recorder::new();
    let client_node = madsim::runtime::Handle::current()
        .create_node()
        .name("clients")
        .ip([10, 0, 1, 1].into())
        .build();

    let start = Instant::now();
    let deadline = start + plan.fault_phase;
    // Clients keep going for a while after the faults are healed: the cluster must serve
    // them again, and a run always ends with some operations on a healthy cluster.
    let clients_deadline = deadline + CALM_PHASE;
    let mut tasks = Vec::new();
    for _ in 0..plan.clients {
        tasks.push(client_node.spawn(workload::client(
            recorder.clone(),
            addresses.clone(),
            plan.mix.clone(),
            plan.keys,
            plan.spec.lease_ttl_min(),
            clients_deadline,
        )));
    }
    // The prefix watcher asks for no `prev_kv`: compactions do not wait for it, and etcd
    // sends an event whose previous revision was compacted without its `prev_kv`, which
    // jepsen-lite does not model.
    let watchers = [
        (true, None, plan.watch_prev_kv),
        (false, None, plan.watch_prev_kv),
    ]
    .into_iter()
    .chain(plan.watch_prefix.map(|prefix| (false, Some(prefix), false)));
    for (from_start, prefix, prev_kv) in watchers {
        tasks.push(client_node.spawn(workload::watcher(
            recorder.clone(),
            addresses.clone(),
            from_start,
            prefix,
            prev_kv,
            plan.progress_notify(),
            clients_deadline,
        )));
    }

    let election = Duration::from_millis(plan.spec.election_ms);
    let nemesis = Nemesis {
        members,
        addresses: addresses.clone(),
        spec: plan.spec.clone(),
        seed,
        next_index: plan.spec.size + 1,
        observer: observer.clone(),
        chaos,
        mix: plan.faults.clone(),
        election,
        injected: BTreeMap::new(),
        clocks: ClockBound::default(),
        points: points.clone(),
        points_armed: BTreeMap::new(),
        points_fired: BTreeMap::new(),
        contact_breaks: BTreeMap::new(),
        learners: Vec::new(),
        violations: Vec::new(),
    };
    // On a node of its own with an address: the nemesis calls the cluster's API too
    // (MoveLeader, MemberRemove, MemberAdd, MemberPromote).
    let nemesis_node = madsim::runtime::Handle::current()
        .create_node()
        .name("nemesis")
        .ip([10, 0, 1, 2].into())
        .build();
    let nemesis = nemesis_node
        .spawn(async move {
            let mut nemesis = nemesis;
            nemesis.run(deadline).await;
            nemesis
        })
        .await
        .expect("the nemesis ran");
    nemesis.heal();
    for task in tasks {
        let _ = task.await;
    }

    let mut violations = recorder.violations();
    let mut history = recorder.history();
    let checks = client_node.spawn(end_checks(
        addresses.lock().unwrap().clone(),
        history.clone(),
        nemesis.members.iter().map(|m| m.id).collect(),
    ));
    violations.extend(checks.await.expect("end checks ran"));
    violations.extend(nemesis.violations.iter().cloned());

    let counts = recorder.counts();
    let injected: u64 = nemesis.injected.values().sum();
    if injected == 0 {
        violations.push("vacuous run: no fault was injected".into());
    }
    if counts.ok < OPERATIONS_MIN {
        violations.push(format!(
            "vacuous run: only {} operations completed (at least {OPERATIONS_MIN} needed)",
            counts.ok
        ));
    }
    // Each watcher runs through the calm phase, several intervals long, on healed members:
    // a synced watcher that asked for them must have had progress notifications there.
    if plan.progress_notify() && counts.progress_notifications == 0 {
        violations.push(format!(
            "the watchers asked for a progress notification every {} ms and got none",
            plan.spec.progress_notify_ms
        ));
    }
    set_observer(None);
    set_message_faults(None);
    set_points(None);
    for expiry in lease_expiries(&history, &nemesis.clocks) {
        history.push_operation(expiry);
    }
    RunOutcome {
        seed,
        plan,
        history,
        counts,
        injected: nemesis.injected,
        clocks: nemesis.clocks,
        observed: observer.observed(),
        points_armed: nemesis.points_armed,
        points_fired: nemesis.points_fired,
        delayed: points.delayed(),
        violations,
    }
}

/// The lessor's expiries, as jepsen-lite sees them: for every lease granted, a revoke with
/// an unknown outcome (it may never have happened before the history ends), called at the
/// earliest time the expiry may take effect.
///
/// A leader renews a lease no earlier than a client asked it to (the grant, or a keep-alive
/// it acknowledged), and revokes it no earlier than when its own clock has measured the
/// TTL since; a new leader restarts every deadline. So the expiry is no earlier than the
/// newest such call plus the TTL as the fastest clock measured it, less the most any one
/// clock jumped forward.
pub fn lease_expiries(history: &History, clocks: &ClockBound) -> Vec<Operation> {
    // Lease id → (TTL in seconds, newest call that renewed it).
    let mut leases: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for operation in &history.operations {
        match &operation.input {
            Input::LeaseGrant { id, ttl } => {
                leases.entry(*id).or_insert((*ttl, operation.call));
            }
            Input::LeaseKeepAlive { id } => {
                let renewed = operation.is_known()
                    && operation.output.as_ref().is_some_and(|o| o.error.is_none());
                if let (true, Some(lease)) = (renewed, leases.get_mut(id)) {
                    lease.1 = lease.1.max(operation.call);
                }
            }
            _ => {}
        }
    }
    leases
        .into_iter()
        .enumerate()
        .map(|(n, (id, (ttl, renewed)))| {
            let shortest = clocks.shortest(Duration::from_secs(ttl.max(0) as u64));
            Operation {
                client: EXPIRY_CLIENTS + n as u64,
                call: renewed + shortest.as_nanos() as i64,
                return_time: None,
                input: Input::LeaseRevoke { id },
                output: None,
            }
        })
        .collect()
}

/// Liveness, durability, HashKV and lease expiry, on the healed cluster.
/// Once healed, every member serves a linearizable read, and that read sees the last
/// liveness write, acknowledged at `revision` before the read was sent. During the fault
/// phase a read that fails is dropped from the history (it may fail for good reasons), so
/// without this a read path that never answers, or one that answers from a member's own
/// stale store, would pass every other check.
async fn linearizable_reads(addresses: &[SocketAddr], ids: &[u64], revision: i64) -> Vec<String> {
    let key = Bytes::from(format!("live/{}", addresses.len() - 1));
    let mut violations = Vec::new();
    for (index, &address) in addresses.iter().enumerate() {
        let mut answer = None;
        let member_bound = Instant::now() + LIVENESS_BOUND;
        while Instant::now() < member_bound {
            if let Some(channel) = workload::channel(address).await {
                let request = RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                let mut client = KvClient::new(channel);
                let call = client.range(request);
                if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                    answer = Some(response.into_inner());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let id = ids[index];
        match answer {
            None => violations.push(format!(
                "liveness: no linearizable read through member {id:x} within {LIVENESS_BOUND:?} of trying, after healing"
            )),
            Some(response) => {
                let at = response.header.map_or(0, |h| h.revision);
                let seen = response.kvs.first().map(|kv| kv.mod_revision);
                if at < revision || seen.is_none() {
                    violations.push(format!(
                        "stale read: member {id:x} answered a linearizable read of {key:?} at revision {at} (the key's mod revision {seen:?}) after a write was acknowledged at {revision}"
                    ));
                }
            }
        }
    }
    violations
}

async fn end_checks(addresses: Vec<SocketAddr>, history: History, ids: Vec<u64>) -> Vec<String> {
    let mut violations = Vec::new();
    // Liveness: a write through every member, each within the bound from when it is
    // tried (one member that never answers must not use up the others' time).
    let mut revision = 0;
    for (index, &address) in addresses.iter().enumerate() {
        let key = format!("live/{index}");
        let mut written = false;
        let member_bound = Instant::now() + LIVENESS_BOUND;
        while Instant::now() < member_bound {
            if let Some(channel) = workload::channel(address).await {
                let request = PutRequest {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from_static(b"up"),
                    ..Default::default()
                };
                let mut client = KvClient::new(channel);
                let call = client.put(request);
                if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                    revision = response.into_inner().header.map_or(0, |h| h.revision);
                    written = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !written {
            violations.push(format!(
                "liveness: no write through member {:x} within {LIVENESS_BOUND:?} of trying, after healing",
                ids[index]
            ));
        }
    }
    if !violations.is_empty() {
        return violations;
    }
    violations.extend(linearizable_reads(&addresses, &ids, revision).await);
    if !violations.is_empty() {
        return violations;
    }

    let bound = Instant::now();
    // HashKV at one revision on every member (each first catches up to it).
    let mut hashes = Vec::new();
    for (index, &address) in addresses.iter().enumerate() {
        let mut hash = None;
        while Instant::now() < bound + LIVENESS_BOUND {
            if let Some(channel) = workload::channel(address).await {
                let mut client = MaintenanceClient::new(channel);
                let call = client.hash_kv(HashKvRequest { revision });
                if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                    hash = Some(response.into_inner().hash);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match hash {
            Some(hash) => hashes.push((ids[index], hash)),
            None => violations.push(format!(
                "liveness: member {:x} never reached revision {revision}",
                ids[index]
            )),
        }
    }
    if hashes.windows(2).any(|pair| pair[0].1 != pair[1].1) {
        violations.push(format!(
            "HashKV differs between members at revision {revision}: {}",
            hashes
                .iter()
                .map(|(id, hash)| format!("{id:x}={hash:08x}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }

    // Durability: every acknowledged write is there at the revision it was told.
    let Some(channel) = workload::channel(addresses[0]).await else {
        violations.push("durability: cannot connect for the final reads".into());
        return violations;
    };
    let kv_channel = channel.clone();
    let mut kv = KvClient::new(channel);
    for operation in &history.operations {
        let Some(output) = &operation.output else {
            continue;
        };
        let Some(at) = output.revision else { continue };
        if operation.return_time.is_none() || output.error.is_some() {
            continue;
        }
        let write = match &operation.input {
            Input::Put { key, value, .. } => Some((key, value)),
            Input::Txn { success, .. } if output.succeeded == Some(true) => {
                success.iter().find_map(|op| match op {
                    TxnOp::Put { key, value, .. } => Some((key, value)),
                    _ => None,
                })
            }
            _ => None,
        };
        let Some((key, value)) = write else { continue };
        let request = RangeRequest {
            key: workload::raw(key),
            revision: at,
            ..Default::default()
        };
        let read = tokio::time::timeout(Duration::from_secs(5), kv.range(request)).await;
        let stored = match read {
            Ok(Ok(response)) => response
                .into_inner()
                .kvs
                .first()
                .map(|kv| jepsen_lite::bytes::from_bytes(&kv.value)),
            // A compaction the clients asked for removed that revision; the history's
            // reads saw the write while it was there.
            Ok(Err(status))
                if status.code() == tonic::Code::OutOfRange
                    && status.message().contains("compacted") =>
            {
                continue
            }
            other => {
                violations.push(format!(
                    "durability: read of {}@{at} failed: {other:?}",
                    jepsen_lite::bytes::display(key)
                ));
                break;
            }
        };
        if stored.as_deref() != Some(value.as_str()) {
            violations.push(format!(
                "durability: acknowledged write {}={value} at revision {at} reads back as \
                 {stored:?}",
                jepsen_lite::bytes::display(key)
            ));
        }
    }

    // Expiry: with no client left to keep them alive, every lease goes within its TTL
    // (plus the deadline restart of a leader change).
    let mut leases = LeaseClient::new(kv_channel.clone());
    let mut left = None;
    while Instant::now() < bound + LIVENESS_BOUND * 2 {
        let call = leases.lease_leases(LeaseLeasesRequest {});
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            let ids: Vec<i64> = response.into_inner().leases.iter().map(|l| l.id).collect();
            if ids.is_empty() {
                left = None;
                break;
            }
            left = Some(ids);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(ids) = left {
        violations.push(format!("liveness: leases never expired: {ids:?}"));
    }
    violations
}

/// Checks a finished run: the in-simulation findings, then the history through
/// jepsen-lite. `Ok` carries a one-line summary.
pub fn check(outcome: &RunOutcome) -> Result<String, String> {
    let mut failures: Vec<String> = outcome.observed.violations.clone();
    failures.extend(outcome.violations.iter().cloned());
    let options = CheckOptions {
        timeout: Some(Duration::from_secs(60)),
        cache_entries_max: None,
    };
    let verdict = match jepsen_lite::check(&outcome.history, &options) {
        Ok(result) => {
            match result.outcome() {
                Outcome::Ok => {}
                Outcome::Violation => failures.push(format!("jepsen-lite: {result}")),
                Outcome::Unknown => failures.push(format!("jepsen-lite gave up: {result}")),
            }
            format!("checked in {:.2} s", result.elapsed.as_secs_f64())
        }
        Err(error) => {
            failures.push(format!("jepsen-lite rejected the history: {error}"));
            String::new()
        }
    };
    let summary = format!(
        "seed {}: {} ok, {} failed, {} unknown, {} serializable reads, {} watch events \
         ({} of {} streams named by server process; {} progress notifications), \
         {} past-revision reads ({} compacted), {} compactions; \
         {} elections, {} entries committed, {} member starts, {} snapshots installed; \
         faults {}; {verdict}",
        outcome.seed,
        outcome.counts.ok,
        outcome.counts.failed,
        outcome.counts.unknown,
        outcome.counts.serializable_reads,
        outcome.counts.watch_events,
        outcome
            .history
            .watch_origins
            .iter()
            .filter(|origin| origin.member.is_some())
            .count(),
        outcome.history.watches.len(),
        outcome.counts.progress_notifications,
        outcome.counts.past_reads + outcome.counts.compacted_reads,
        outcome.counts.compacted_reads,
        outcome.counts.compactions,
        outcome.observed.elections,
        outcome.observed.committed_entries,
        outcome.observed.member_starts,
        outcome.observed.snapshots_installed,
        outcome
            .injected
            .iter()
            .map(|(fault, count)| format!("{}={count}", fault.name()))
            .collect::<Vec<_>>()
            .join(",")
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}\n{}", failures.join("\n")))
    }
}
