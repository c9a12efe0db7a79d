//! The nemesis: the faults of a simulated run, all drawn from the seed.
//!
//! Network faults act at two levels. madsim's network clogs links between member nodes
//! (partitions, one-way links, an isolated leader, flapping); connections over a clogged
//! link stall and new ones are refused, as with a real partition. Message faults act on the
//! Raft messages themselves, through oxcd's transport seam: drop, duplicate, and delay with
//! a long tail (which reorders). Clients are never cut off, so a member on the minority
//! side keeps answering them — exactly when stale reads would show.
//!
//! Clock faults act on a member's `SimClock` (its lease deadlines and Raft ticks): it runs
//! fast or slow for a while, or jumps forward. The nemesis keeps the worst of them in a
//! [`ClockBound`], which is what the checker allows a lease expiry to be early by.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use oxcd::io::FaultConfig;
use oxcd::proto::etcdserverpb::cluster_client::ClusterClient;
use oxcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use oxcd::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest,
};
use oxcd::raft::{Message, MessageType};
use oxcd::server::transport::{Delivery, MessageFaults};
use tokio::time::Instant;

use crate::harness::{ClusterSpec, SimMember};
use crate::observer::RaftObserver;
use crate::points::{FaultPoints, CRASH_POINTS};
use oxcd::server::observe::Point;

/// The kinds of fault, as counted in a run's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    Partition,
    OneWayLink,
    IsolateLeader,
    Flapping,
    MessageChaos,
    Crash,
    CrashAll,
    Pause,
    DiskEio,
    LeaderTransfer,
    ReplaceMember,
    StaleFollowerTakeover,
    ClockSkew,
    ClockJump,
    CrashAtPoint,
    LagPastSnapshot,
}

impl Fault {
    pub const ALL: [Fault; 16] = [
        Fault::Partition,
        Fault::OneWayLink,
        Fault::IsolateLeader,
        Fault::Flapping,
        Fault::MessageChaos,
        Fault::Crash,
        Fault::CrashAll,
        Fault::Pause,
        Fault::DiskEio,
        Fault::LeaderTransfer,
        Fault::ReplaceMember,
        Fault::StaleFollowerTakeover,
        Fault::ClockSkew,
        Fault::ClockJump,
        Fault::CrashAtPoint,
        Fault::LagPastSnapshot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::OneWayLink => "one-way-link",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Flapping => "flapping",
            Fault::MessageChaos => "message-drop-dup-delay",
            Fault::Crash => "crash-restart",
            Fault::CrashAll => "power-loss-all",
            Fault::Pause => "pause",
            Fault::DiskEio => "disk-eio-on-fsync",
            Fault::LeaderTransfer => "leader-transfer",
            Fault::ReplaceMember => "replace-member",
            Fault::StaleFollowerTakeover => "stale-follower-then-leader-crash",
            Fault::ClockSkew => "clock-rate-skew",
            Fault::ClockJump => "clock-jump-forward",
            Fault::CrashAtPoint => "crash-at-point",
            Fault::LagPastSnapshot => "lag-past-snapshot",
        }
    }
}

/// Probabilities of the message faults while a chaos window is open, and members whose
/// Raft messages are all lost.
#[derive(Default)]
pub struct Chaos {
    window: Mutex<Option<(f64, f64, f64)>>,
    /// Every message to or from these members is dropped: a partition that also resets
    /// the connections, so that nothing queued during it arrives after it heals (madsim
    /// holds what is written to a clogged connection and delivers it once unclogged).
    isolated: Mutex<Vec<u64>>,
}

impl MessageFaults for Chaos {
    fn decide(&self, message: &Message) -> Delivery {
        let isolated = self.isolated.lock().unwrap();
        if isolated.contains(&message.from) || isolated.contains(&message.to) {
            return Delivery::Drop;
        }
        drop(isolated);
        let Some((drop, duplicate, delay)) = *self.window.lock().unwrap() else {
            return Delivery::Deliver;
        };
        let mut rng = thread_rng();
        let roll: f64 = rng.gen();
        if roll < drop {
            Delivery::Drop
        } else if roll < drop + duplicate && message.msg_type() != MessageType::Propose {
            // Every Raft message but a forwarded proposal is idempotent. A proposal is
            // delivered at most once by the real transport (one HTTP/2 call, never
            // retried); duplicated, it would be a second client request.
            Delivery::Duplicate
        } else if roll < drop + duplicate + delay {
            // A long tail: mostly a few milliseconds, sometimes beyond an election timeout.
            let millis = if rng.gen_bool(0.1) {
                rng.gen_range(500..3_000)
            } else {
                rng.gen_range(1..50)
            };
            Delivery::Delay(Duration::from_millis(millis))
        } else {
            Delivery::Deliver
        }
    }
}

/// The most the clock faults of a run can have shortened a lease: the fastest rate any
/// member's clock ran at, and the most any one member's clock jumped forward in all.
/// A leader measures a lease's TTL on its own clock alone (a new leader restarts every
/// deadline), so one member's jumps are what can cut a lease short.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockBound {
    pub rate_max: f64,
    /// Forward jumps by member index.
    pub jumped: BTreeMap<u8, Duration>,
}

impl Default for ClockBound {
    fn default() -> Self {
        ClockBound {
            rate_max: 1.0,
            jumped: BTreeMap::new(),
        }
    }
}

impl ClockBound {
    /// The most one member's clock jumped forward.
    pub fn jumped_max(&self) -> Duration {
        self.jumped.values().copied().max().unwrap_or_default()
    }

    /// The least real time a member's clock can take to measure `ttl`.
    pub fn shortest(&self, ttl: Duration) -> Duration {
        ttl.div_f64(self.rate_max).saturating_sub(self.jumped_max())
    }
}

pub struct Nemesis {
    pub members: Vec<SimMember>,
    /// The client addresses the workload picks from; kept in step with `members`.
    pub addresses: crate::workload::Members,
    pub spec: ClusterSpec,
    pub seed: u64,
    /// The index the next added member gets.
    pub next_index: u8,
    pub observer: Arc<RaftObserver>,
    pub chaos: Arc<Chaos>,
    /// Faults this run may inject, with weights.
    pub mix: Vec<(Fault, u32)>,
    pub election: Duration,
    pub injected: BTreeMap<Fault, u64>,
    pub clocks: ClockBound,
    /// The run's crash and delay points.
    pub points: Arc<FaultPoints>,
    /// Crashes armed, and those that fired, by point.
    pub points_armed: BTreeMap<Point, u64>,
    pub points_fired: BTreeMap<Point, u64>,
    /// (member, member), lower id first → when a cut between them that outlasted the
    /// election timeout last healed: the earliest either can have heard from the other
    /// again after a break the strict reconfiguration check counts.
    pub contact_breaks: BTreeMap<(u64, u64), Instant>,
    /// Members added as learners and not (yet) promoted.
    pub learners: Vec<u64>,
    /// Rules of the cluster's own checks the nemesis saw broken.
    pub violations: Vec<String>,
}

/// How long the leader must have been in touch with every voter before it accepts a
/// member under `--strict-reconfig-check` (etcd's five seconds).
const STRICT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

impl Nemesis {
    /// Draws the fault mix of a run: a random subset of the kinds, never empty.
    pub fn mix_from_rng(rng: &mut impl Rng) -> Vec<(Fault, u32)> {
        let mut mix = Vec::new();
        for fault in Fault::ALL {
            if rng.gen_bool(0.6) {
                mix.push((fault, rng.gen_range(1..5)));
            }
        }
        if mix.is_empty() {
            mix.push((Fault::ALL[rng.gen_range(0..Fault::ALL.len())], 1));
        }
        mix
    }

    /// Injects faults until `deadline`, healing each before the next.
    pub async fn run(&mut self, deadline: Instant) {
        let total: u32 = self.mix.iter().map(|(_, weight)| weight).sum();
        while Instant::now() < deadline {
            let calm = thread_rng().gen_range(100..1_500);
            tokio::time::sleep(Duration::from_millis(calm)).await;
            let mut roll = thread_rng().gen_range(0..total);
            let mut fault = self.mix[0].0;
            for &(kind, weight) in &self.mix {
                if roll < weight {
                    fault = kind;
                    break;
                }
                roll -= weight;
            }
            tracing::info!(fault = fault.name(), "injecting");
            if self.inject(fault).await {
                *self.injected.entry(fault).or_default() += 1;
            }
        }
    }

    fn hold(&self) -> Duration {
        let max = self.election.as_millis() as u64 * 4;
        Duration::from_millis(thread_rng().gen_range(50..max))
    }

    fn net(&self) -> Arc<NetSim> {
        NetSim::current()
    }

    fn random_member(&self) -> usize {
        thread_rng().gen_range(0..self.members.len())
    }

    /// A member other than `index`, at random.
    fn other_member(&self, index: usize) -> usize {
        (index + thread_rng().gen_range(1..self.members.len())) % self.members.len()
    }

    /// The nodes at the two ends of a random link between two members.
    fn random_link(&self) -> (madsim::task::NodeId, madsim::task::NodeId) {
        let from = self.random_member();
        let to = self.other_member(from);
        (self.members[from].node.id(), self.members[to].node.id())
    }

    /// The leader half the time (a random member if there is none), else a random member.
    fn leader_or_random(&self) -> usize {
        if thread_rng().gen_bool(0.5) {
            self.leader_index().unwrap_or_else(|| self.random_member())
        } else {
            self.random_member()
        }
    }

    /// Notes that members `a` and `b` could not hear each other from `since` until now,
    /// if that was long enough for a member to count contact as lost (an election
    /// timeout, and a margin for messages in flight).
    fn note_break(&mut self, a: u64, b: u64, since: Instant) {
        if a != b && since.elapsed() > self.election + Duration::from_millis(200) {
            self.contact_breaks
                .insert((a.min(b), a.max(b)), Instant::now());
        }
    }

    /// `note_break` for every pair across `side`.
    fn note_breaks_across(&mut self, side: &[bool], since: Instant) {
        let ids: Vec<(u64, bool)> = self
            .members
            .iter()
            .zip(side)
            .map(|(member, &side)| (member.id, side))
            .collect();
        for &(a, side_a) in &ids {
            for &(b, side_b) in &ids {
                if side_a && !side_b {
                    self.note_break(a, b, since);
                }
            }
        }
    }

    /// `note_break` between the member at `index` and every other.
    fn note_breaks_of(&mut self, index: usize, since: Instant) {
        let side: Vec<bool> = (0..self.members.len()).map(|i| i == index).collect();
        self.note_breaks_across(&side, since);
    }

    /// The strict reconfiguration check: a member added at or before `answered` by
    /// `leader` means the leader had been in touch with every voter for five seconds.
    /// Contact with a voter resumed no earlier than its last noted break healed.
    fn check_strict_add(&mut self, leader: u64, answered: Instant) {
        if !self.spec.strict_reconfig {
            return;
        }
        for member in &self.members {
            if member.id == leader || self.learners.contains(&member.id) {
                continue;
            }
            let pair = (leader.min(member.id), leader.max(member.id));
            if let Some(&healed) = self.contact_breaks.get(&pair) {
                if answered < healed + STRICT_HEALTH_INTERVAL {
                    self.violations.push(format!(
                        "strict reconfiguration: leader {leader:x} accepted a member {:.2} s \
                         after its contact with voter {:x} came back (it must wait {} s)",
                        (answered - healed).as_secs_f64(),
                        member.id,
                        STRICT_HEALTH_INTERVAL.as_secs()
                    ));
                }
            }
        }
    }

    fn leader_index(&self) -> Option<usize> {
        let leader = self.observer.latest_leader()?;
        self.members.iter().position(|member| member.id == leader)
    }

    /// Injects `fault` and heals it; returns whether it could be injected at all.
    async fn inject(&mut self, fault: Fault) -> bool {
        let net = self.net();
        match fault {
            Fault::Partition => {
                // Split into two sides; every link across is cut both ways.
                let side: Vec<bool> = (0..self.members.len())
                    .map(|_| thread_rng().gen_bool(0.5))
                    .collect();
                let cut = self.cross_links(&side);
                let since = Instant::now();
                for &(a, b) in &cut {
                    net.clog_link(a, b);
                }
                tokio::time::sleep(self.hold()).await;
                for &(a, b) in &cut {
                    net.unclog_link(a, b);
                }
                self.note_breaks_across(&side, since);
            }
            Fault::OneWayLink => {
                let (a, b) = self.random_link();
                net.clog_link(a, b);
                tokio::time::sleep(self.hold()).await;
                net.unclog_link(a, b);
            }
            Fault::IsolateLeader => {
                let index = self.leader_index().unwrap_or_else(|| self.random_member());
                let side: Vec<bool> = (0..self.members.len()).map(|i| i == index).collect();
                let cut = self.cross_links(&side);
                let since = Instant::now();
                for &(a, b) in &cut {
                    net.clog_link(a, b);
                }
                let hold = self.hold() + self.election;
                // Reads through the election the isolation forces, and just after it.
                crate::workload::read_burst(since + hold + self.election * 3);
                tokio::time::sleep(hold).await;
                for &(a, b) in &cut {
                    net.unclog_link(a, b);
                }
                self.note_breaks_across(&side, since);
            }
            Fault::Flapping => {
                let (a, b) = self.random_link();
                for _ in 0..thread_rng().gen_range(3..10) {
                    net.clog_link(a, b);
                    net.clog_link(b, a);
                    tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(20..400)))
                        .await;
                    net.unclog_link(a, b);
                    net.unclog_link(b, a);
                    tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(20..400)))
                        .await;
                }
            }
            Fault::MessageChaos => {
                let drop = thread_rng().gen_range(0.0..0.3);
                let duplicate = thread_rng().gen_range(0.0..0.2);
                let delay = thread_rng().gen_range(0.0..0.3);
                *self.chaos.window.lock().unwrap() = Some((drop, duplicate, delay));
                tokio::time::sleep(self.hold()).await;
                *self.chaos.window.lock().unwrap() = None;
            }
            Fault::Crash => {
                let index = self.leader_or_random();
                let since = Instant::now();
                self.members[index].crash();
                tokio::time::sleep(self.hold()).await;
                self.members[index].restart();
                self.note_breaks_of(index, since);
            }
            Fault::CrashAll => {
                let since = Instant::now();
                for member in &self.members {
                    member.crash();
                }
                tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(10..1_000))).await;
                for member in &self.members {
                    member.restart();
                }
                for index in 0..self.members.len() {
                    self.note_breaks_of(index, since);
                }
            }
            Fault::Pause => {
                let index = self.leader_index().unwrap_or_else(|| self.random_member());
                let node = self.members[index].node.id();
                let since = Instant::now();
                Handle::current().pause(node);
                let hold = self.election + self.hold();
                crate::workload::read_burst(since + hold + self.election * 3);
                tokio::time::sleep(hold).await;
                Handle::current().resume(node);
                self.note_breaks_of(index, since);
            }
            Fault::DiskEio => {
                let index = self.random_member();
                let disk = &self.members[index].disk;
                disk.set_faults(FaultConfig {
                    sync_error_probability: thread_rng().gen_range(0.05..0.5),
                    ..FaultConfig::default()
                });
                tokio::time::sleep(self.hold()).await;
                disk.set_faults(FaultConfig::default());
            }
            Fault::ReplaceMember => return self.replace_member().await,
            Fault::CrashAtPoint => return self.crash_at_point().await,
            Fault::LagPastSnapshot => return self.lag_then_install().await,
            Fault::StaleFollowerTakeover => {
                // A follower is cut off while writes go on, then comes back just as the
                // leader dies: only the vote's log check keeps it from leading with a
                // stale log.
                let Some(leader) = self.leader_index() else {
                    return false;
                };
                let stale = self.other_member(leader);
                let side: Vec<bool> = (0..self.members.len()).map(|i| i == stale).collect();
                let cut = self.cross_links(&side);
                for &(a, b) in &cut {
                    net.clog_link(a, b);
                }
                tokio::time::sleep(self.election * thread_rng().gen_range(2..6)).await;
                for &(a, b) in &cut {
                    net.unclog_link(a, b);
                }
                let leader = self.leader_index().unwrap_or(leader);
                self.members[leader].crash();
                tokio::time::sleep(self.hold() + self.election).await;
                self.members[leader].restart();
            }
            Fault::ClockSkew => {
                // Mostly the leader: its clock is the one lease deadlines run on.
                let index = self.leader_or_random();
                let rate = if thread_rng().gen_bool(0.5) {
                    thread_rng().gen_range(1.05..2.0)
                } else {
                    thread_rng().gen_range(0.5..0.95)
                };
                self.clocks.rate_max = self.clocks.rate_max.max(rate);
                let clock = self.members[index].clock.clone();
                clock.set_rate(rate);
                tokio::time::sleep(self.hold() * 2).await;
                clock.set_rate(1.0);
            }
            Fault::ClockJump => {
                let index = self.leader_or_random();
                let by = Duration::from_millis(thread_rng().gen_range(50..1_000));
                self.members[index].clock.jump(by);
                *self
                    .clocks
                    .jumped
                    .entry(self.members[index].index)
                    .or_default() += by;
            }
            Fault::LeaderTransfer => {
                let Some(index) = self.leader_index() else {
                    return false;
                };
                let target = self.other_member(index);
                let address = self.members[index].client_address();
                let target_id = self.members[target].id;
                // Reads go on through the handover: the old leader must stop serving them
                // from its own state once it let go, the new one must not serve them
                // before it committed an entry of its term.
                crate::workload::read_burst(Instant::now() + self.election * 4);
                if let Some(channel) = crate::workload::channel(address).await {
                    let request = MoveLeaderRequest { target_id };
                    let mut client = MaintenanceClient::new(channel);
                    let call = client.move_leader(request);
                    let result = tokio::time::timeout(self.election * 3, call).await;
                    tracing::debug!(?result, "move-leader");
                }
            }
        }
        true
    }

    /// Crashes a member at a chosen point of its work (see `points`): arms the point, brings
    /// the moment about where waiting alone rarely would (an election for a vote, a lagging
    /// follower for a snapshot transfer), and restarts the member once the crash fired.
    async fn crash_at_point(&mut self) -> bool {
        // Points this run's configuration can reach: snapshots are taken only with a small
        // snapshot count, and sent to followers only when little log is kept behind them.
        // Those of a snapshot transfer weigh three times: runs that can reach them are few.
        let reachable: Vec<Point> = CRASH_POINTS
            .into_iter()
            .flat_map(|point| {
                let copies = match point {
                    Point::SnapshotTaken if self.spec.snapshot_count >= 100_000 => 0,
                    Point::SnapshotChunkReceived
                    | Point::SnapshotImageSaved
                    | Point::SnapshotRecorded
                    | Point::SnapshotRestored => {
                        if self.spec.catch_up_entries.is_some() {
                            3
                        } else {
                            0
                        }
                    }
                    _ => 1,
                };
                std::iter::repeat_n(point, copies)
            })
            .collect();
        let point = reachable[thread_rng().gen_range(0..reachable.len())];
        let leader = self.leader_index();
        let on_follower = matches!(
            point,
            Point::VoteSent
                | Point::SnapshotChunkReceived
                | Point::SnapshotImageSaved
                | Point::SnapshotRecorded
                | Point::SnapshotRestored
        );
        let index = match leader {
            Some(leader) if on_follower => self.other_member(leader),
            _ => self.leader_or_random(),
        };
        let member = &self.members[index];
        let skip = thread_rng().gen_range(0..3);
        self.points.arm(
            member.id,
            point,
            skip,
            member.node.id(),
            member.disk.clone(),
        );
        match point {
            Point::VoteSent | Point::HardStateSaved => {
                // An election: the leader pauses past an election timeout. The member may
                // be the candidate rather than a voter, and the crash may be armed for a
                // later pass: up to four elections, until it fired.
                let mut leader = leader;
                for _ in 0..4 {
                    let Some(paused) = leader.filter(|&leader| leader != index) else {
                        break;
                    };
                    let node = self.members[paused].node.id();
                    Handle::current().pause(node);
                    tokio::time::sleep(self.election * 2).await;
                    Handle::current().resume(node);
                    if self.points.has_fired() {
                        break;
                    }
                    tokio::time::sleep(self.election).await;
                    leader = self.leader_index();
                }
            }
            Point::SnapshotChunkReceived
            | Point::SnapshotImageSaved
            | Point::SnapshotRecorded
            | Point::SnapshotRestored => {
                self.lag_past_snapshot(index).await;
            }
            _ => {}
        }
        // A follower that was cut off hears from the leader again only once the leader's
        // reconnection backoff lets it, and its image takes a while to send.
        let wait = if on_follower && point != Point::VoteSent {
            Duration::from_secs(8)
        } else {
            Duration::from_secs(2)
        };
        let deadline = Instant::now() + self.election * 4 + wait;
        let fired = loop {
            if let Some(fired) = self.points.take_fired() {
                break Some(fired);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.points.disarm();
        *self.points_armed.entry(point).or_default() += 1;
        tracing::info!(?point, fired = fired.is_some(), "crash at a point");
        if fired.is_some() {
            *self.points_fired.entry(point).or_default() += 1;
        }
        // A point the member did not reach in time gets an ordinary power loss now.
        tokio::time::sleep(Duration::from_millis(
            thread_rng().gen_range(10..=self.election.as_millis() as u64),
        ))
        .await;
        // The node is dead and its disk off since the crash; the machine comes back.
        let member = &self.members[index];
        member.crash();
        member.restart();
        true
    }

    /// Cuts the member at `index` off from the others until the leader has compacted its
    /// log past everything the member holds, so that it can only catch up from the
    /// leader's image, then heals. Gives up after ten seconds (writes may have stopped).
    /// Returns whether the leader got that far.
    async fn lag_past_snapshot(&mut self, index: usize) -> bool {
        let net = self.net();
        let side: Vec<bool> = (0..self.members.len()).map(|i| i == index).collect();
        let cut = self.cross_links(&side);
        let since = Instant::now();
        for &(a, b) in &cut {
            net.clog_link(a, b);
        }
        let member_id = self.members[index].id;
        self.chaos.isolated.lock().unwrap().push(member_id);
        // The member's log ends at most a few proposals past the newest commit anyone
        // reported (a member reports commits only as it hands them to its applier, so its
        // own report lags its log). The leader compacts to its snapshot index less the
        // catch-up entries it keeps.
        let (_, newest) = self.observer.commit_progress(member_id);
        let held = newest + 16;
        let needed = held + self.spec.catch_up_entries.unwrap_or(0) + 1;
        let give_up = Instant::now() + Duration::from_secs(10);
        let compacted = loop {
            let leader = self
                .observer
                .latest_leader()
                .filter(|&leader| leader != member_id);
            if leader.is_some_and(|leader| self.observer.snapshot_taken(leader) >= needed) {
                break true;
            }
            if Instant::now() >= give_up {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.chaos
            .isolated
            .lock()
            .unwrap()
            .retain(|&m| m != member_id);
        for &(a, b) in &cut {
            net.unclog_link(a, b);
        }
        self.note_breaks_of(index, since);
        tracing::debug!(member = %format!("{member_id:x}"), held, needed, compacted, "cut off past a snapshot; healed");
        compacted
    }

    /// Cuts a follower off until the leader compacted its log past it, heals, and waits
    /// for the follower to install the leader's image while it runs: the path a running
    /// store is replaced by.
    async fn lag_then_install(&mut self) -> bool {
        if self.spec.catch_up_entries.is_none() {
            return false;
        }
        let Some(leader) = self.leader_index() else {
            return false;
        };
        let index = self.other_member(leader);
        let installed = self.observer.snapshots_installed();
        if !self.lag_past_snapshot(index).await {
            return false;
        }
        let give_up = Instant::now() + self.election * 4 + Duration::from_secs(8);
        while Instant::now() < give_up && self.observer.snapshots_installed() == installed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Removes a member (MemberRemove), then adds a new one in its place (MemberAdd, as a
    /// voter or as a learner promoted once it caught up) and starts it with
    /// `--initial-cluster-state existing`. Returns whether the member was replaced.
    async fn replace_member(&mut self) -> bool {
        // A replacement whose addition keeps failing leaves one member fewer; never go
        // below two, which the faults that cut links between members need.
        if self.members.len() < 3 {
            return false;
        }
        let index = self.random_member();
        let old = self.members[index].id;
        if self.spec.strict_reconfig && thread_rng().gen_bool(0.5) {
            // Replaced right after an outage, as operators do: another member is cut off
            // for longer than an election timeout first, so that the addition below comes
            // while the strict check must still refuse it.
            let other = self.other_member(index);
            let side: Vec<bool> = (0..self.members.len()).map(|i| i == other).collect();
            let cut = self.cross_links(&side);
            let net = self.net();
            let since = Instant::now();
            for &(a, b) in &cut {
                net.clog_link(a, b);
            }
            tokio::time::sleep(self.election * 2 + Duration::from_millis(300)).await;
            for &(a, b) in &cut {
                net.unclog_link(a, b);
            }
            self.note_breaks_of(other, since);
        }
        let removed = self
            .cluster_call(|mut cluster| async move {
                cluster.member_remove(MemberRemoveRequest { id: old }).await
            })
            .await;
        if removed.is_none() {
            // The answer may have been lost (the removed member itself stops as it
            // answers), or the change may still commit: ask until the list is known.
            let mut gone = None;
            for _ in 0..10 {
                let listed = self
                    .cluster_call(|mut cluster| async move {
                        cluster
                            .member_list(MemberListRequest { linearizable: true })
                            .await
                    })
                    .await;
                if let Some(list) = listed {
                    gone = Some(list.members.iter().all(|m| m.id != old));
                    tracing::info!(removed = ?gone, members = ?list.members.iter().map(|m| m.id).collect::<Vec<_>>(), "member list after a removal without an answer");
                    break;
                }
                tokio::time::sleep(self.election).await;
            }
            if gone != Some(true) {
                return false;
            }
        }
        let gone = self.members.remove(index);
        Handle::current().kill(gone.node.id());
        self.sync_addresses();

        let new_index = self.next_index;
        self.next_index += 1;
        let mut learner = thread_rng().gen_bool(0.5);
        if learner {
            // One learner at a time: a learner never promoted is still there.
            let listed = self
                .cluster_call(|mut cluster| async move {
                    cluster
                        .member_list(MemberListRequest {
                            linearizable: false,
                        })
                        .await
                })
                .await;
            learner = listed.is_some_and(|list| list.members.iter().all(|m| !m.is_learner));
        }
        let peer_url = ClusterSpec::peer_url(new_index);
        // The removal may have cost the cluster its leader, and the leader refuses additions
        // until it has been in touch with every member for five seconds (the strict
        // reconfiguration check): keep trying a while.
        let mut added = None;
        let give_up = Instant::now() + Duration::from_secs(10) + self.election * 10;
        while Instant::now() < give_up {
            let leader = self.observer.latest_term_leader();
            added = self
                .cluster_call(|mut cluster| {
                    let peer_url = peer_url.clone();
                    async move {
                        let request = MemberAddRequest {
                            peer_ur_ls: vec![peer_url],
                            is_learner: learner,
                        };
                        cluster.member_add(request).await
                    }
                })
                .await;
            if added.is_some() {
                // Checked only when one leader ruled from the call to the answer.
                if let Some((_, leader)) =
                    leader.filter(|&known| self.observer.latest_term_leader() == Some(known))
                {
                    self.check_strict_add(leader, Instant::now());
                }
                break;
            }
            tokio::time::sleep(self.election).await;
        }
        let Some(added) = added.and_then(|response| response.member) else {
            return true;
        };
        let indexes: Vec<u8> = self.members.iter().map(|m| m.index).collect();
        let initial = ClusterSpec::cluster_of(indexes.into_iter().chain([new_index]));
        tracing::info!(old = %format!("{old:x}"), new = %format!("{:x}", added.id), learner, "replacing a member");
        let joined = SimMember::join(new_index, &self.spec, &initial, self.seed, added.id);
        self.members.push(joined);
        self.sync_addresses();
        if learner {
            self.learners.push(added.id);
            // Promotion is refused until the learner has caught up; keep asking a while.
            for _ in 0..20 {
                tokio::time::sleep(self.election).await;
                let promoted = self
                    .cluster_call(|mut cluster| async move {
                        cluster
                            .member_promote(MemberPromoteRequest { id: added.id })
                            .await
                    })
                    .await;
                if promoted.is_some() {
                    self.learners.retain(|&id| id != added.id);
                    break;
                }
            }
        }
        true
    }

    /// Calls the Cluster service of members in turn until one answers `Ok`.
    async fn cluster_call<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: Fn(ClusterClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        for member in &self.members {
            let Some(channel) = crate::workload::channel(member.client_address()).await else {
                continue;
            };
            let attempt =
                tokio::time::timeout(self.election * 10, call(ClusterClient::new(channel)));
            match attempt.await {
                Ok(Ok(response)) => return Some(response.into_inner()),
                Ok(Err(status)) => tracing::info!(%status, "membership call failed"),
                Err(_) => tracing::info!("membership call timed out"),
            }
        }
        None
    }

    fn sync_addresses(&self) {
        *self.addresses.lock().unwrap() =
            self.members.iter().map(SimMember::client_address).collect();
    }

    /// Every member-to-member link between the two sides of `side`, both directions.
    fn cross_links(&self, side: &[bool]) -> Vec<(madsim::task::NodeId, madsim::task::NodeId)> {
        let mut links = Vec::new();
        for (i, a) in self.members.iter().enumerate() {
            for (j, b) in self.members.iter().enumerate() {
                if side[i] != side[j] {
                    links.push((a.node.id(), b.node.id()));
                }
            }
        }
        links
    }

    /// Ends every fault: links unclogged, message faults off, disks healthy, clocks at the
    /// runtime's rate (a jump stays: a monotonic clock does not go back).
    pub fn heal(&self) {
        let net = self.net();
        for a in &self.members {
            net.unclog_node(a.node.id());
            for b in &self.members {
                net.unclog_link(a.node.id(), b.node.id());
            }
            a.disk.set_faults(FaultConfig::default());
            a.clock.set_rate(1.0);
        }
        *self.chaos.window.lock().unwrap() = None;
    }
}
