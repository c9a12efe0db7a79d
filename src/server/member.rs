//! The state one member shares between its tasks and its gRPC handlers.
//!
//! Tasks: the Raft task (`node.rs`) owns the consensus core and the WAL; the applier
//! (`apply.rs`) owns writes to the backend; the read loop (`read.rs`) batches ReadIndex
//! rounds; the lease loop revokes expired leases. Handlers reach them through `Member`:
//! proposals go to the Raft task through a bounded channel, and each proposal's result comes
//! back through a one-shot channel registered in `waiters` under the request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::apply::{Applied, ApplyResult};
use super::config::Config;
use super::error::EtcdError;
use super::node::NodeInput;
use super::progress::Progress;
use super::read::ReadBatcher;
use super::store::Store;
use super::transport::Transport;
use crate::proto::etcdserverpb::{AlarmMember, AlarmType, ResponseHeader};
use crate::proto::oxcdpb::ConfChangeContext;
use crate::proto::oxcdpb::MemberRecord;
use crate::proto::oxcdpb::{internal_request::Request, InternalRequest};
use crate::raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};

/// What the Raft task last published about the core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    /// 0 while no leader is known.
    pub leader: u64,
    pub commit: u64,
    pub is_leader: bool,
}

/// Proposals waiting for their entry to be applied, by request id.
#[derive(Default)]
pub struct Waiters {
    /// A `std` mutex: held only to insert or remove one sender, never across an await.
    pending: Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>,
}

impl Waiters {
    fn register(&self, id: u64) -> oneshot::Receiver<ApplyResult> {
        let (done, wait) = oneshot::channel();
        let previous = self
            .pending
            .lock()
            .expect("waiters lock poisoned")
            .insert(id, done);
        assert!(previous.is_none(), "request id {id:#x} registered twice");
        wait
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
    }

    /// Completes the waiter of `id`, if this member proposed it and the client still waits.
    pub fn complete(&self, id: u64, result: ApplyResult) {
        if id == 0 {
            return;
        }
        let waiter = self
            .pending
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().expect("waiters lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Proposals in flight at most before new ones are refused with "too many requests"; the
/// bound keeps memory and apply latency in check when clients outrun the disk.
pub const PROPOSALS_PENDING_MAX: usize = 50_000;

/// Membership changes remembered by log index (see `Member::conf_state_at`).
const CONF_HISTORY_MAX: usize = 64;

pub struct Member {
    pub id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub config: Config,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub store: Store,
    pub waiters: Waiters,
    pub reads: Arc<ReadBatcher>,
    pub transport: Arc<dyn Transport>,
    /// To the Raft task. Bounded: a full queue makes handlers wait, which is the back-pressure
    /// that keeps a flood of clients from growing memory without limit.
    node: mpsc::Sender<NodeInput>,
    /// The high 16 bits of every request id are the member id's low bits; the rest counts up
    /// from a start derived from the clock, so ids stay unique across restarts.
    next_request_id: AtomicU64,
    raft_status: Mutex<RaftStatus>,
    alarms: Mutex<Vec<AlarmMember>>,
    /// Every member's name and URLs: the initial cluster, updated by what members publish.
    members: Mutex<std::collections::BTreeMap<u64, MemberRecord>>,
    /// Members removed from the cluster.
    removed: Mutex<std::collections::BTreeSet<u64>>,
    /// The membership after each recent configuration change, by log index; the newest is
    /// the one in force. A snapshot sent to a peer carries the membership as of the backend
    /// image it ships.
    conf_history: Mutex<std::collections::BTreeMap<u64, ConfState>>,
    /// The Raft log (shared with the Raft task), for the terms of the entries a snapshot
    /// sent to a peer stops at.
    pub raft_log: std::sync::OnceLock<crate::raft::MemStorage>,
    /// The connection to the leader's peer service (leader id, client), reused across the
    /// requests a follower forwards.
    pub leader_connection: Mutex<Option<(u64, super::peer::PeerClient)>>,
    /// Committed membership changes the Raft task refused, by log index, with why; the
    /// applier answers their proposers with it.
    conf_refusals: Mutex<HashMap<u64, EtcdError>>,
    /// When each peer's current run of contact began, and when it was last heard from.
    peer_contact: Mutex<HashMap<u64, (Instant, Instant)>>,
    applied: Progress,
    /// Flips to true once when the member stops; every task watches it.
    stopping: Progress,
    stop_reason: Mutex<Option<String>>,
}

impl Member {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        id: u64,
        cluster_id: u64,
        store: Store,
        transport: Arc<dyn Transport>,
        node: mpsc::Sender<NodeInput>,
        applied_index: u64,
        conf_state: ConfState,
        alarms: Vec<AlarmMember>,
        request_id_seed: u64,
    ) -> Member {
        let request_id_start = ((id & 0xffff) << 48) | ((request_id_seed & 0xff_ffff_ffff) << 8);
        Member {
            id,
            cluster_id,
            name: config.name.clone(),
            peer_urls: config.advertise_peer_urls(),
            client_urls: config.advertise_client_urls(),
            config,
            store,
            waiters: Waiters::default(),
            reads: Arc::new(ReadBatcher::default()),
            transport,
            node,
            next_request_id: AtomicU64::new(request_id_start),
            raft_status: Mutex::new(RaftStatus::default()),
            alarms: Mutex::new(alarms),
            members: Mutex::new(Default::default()),
            removed: Mutex::new(Default::default()),
            conf_history: Mutex::new([(applied_index, conf_state)].into()),
            raft_log: std::sync::OnceLock::new(),
            leader_connection: Mutex::new(None),
            peer_contact: Mutex::new(HashMap::new()),
            conf_refusals: Mutex::new(HashMap::new()),
            applied: Progress::new(applied_index),
            stopping: Progress::new(0),
            stop_reason: Mutex::new(None),
        }
    }

    /// Every known member, in id order.
    pub fn members(&self) -> Vec<MemberRecord> {
        self.members
            .lock()
            .expect("members lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The record of member `id`, if it is a member.
    pub fn member(&self, id: u64) -> Option<MemberRecord> {
        self.members
            .lock()
            .expect("members lock poisoned")
            .get(&id)
            .cloned()
    }

    /// Records a member (from the initial cluster, the backend, or an applied publication).
    pub fn set_member(&self, record: MemberRecord) {
        let mut members = self.members.lock().expect("members lock poisoned");
        match members.get_mut(&record.id) {
            // A publication may lack what the bootstrap knew, and the reverse.
            Some(known) => {
                if !record.name.is_empty() {
                    known.name = record.name;
                }
                if !record.peer_urls.is_empty() {
                    known.peer_urls = record.peer_urls;
                }
                if !record.client_urls.is_empty() {
                    known.client_urls = record.client_urls;
                }
                // Learner status changes only through a membership change
                // (`apply_membership`), never through what a member publishes.
            }
            None => {
                members.insert(record.id, record);
            }
        }
    }

    /// Applies a committed membership change about `record` to the member list and the
    /// transport. Returns whether this member was removed.
    pub fn apply_membership(&self, change: ConfChangeType, record: &MemberRecord) -> bool {
        let mut members = self.members.lock().expect("members lock poisoned");
        match change {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = change == ConfChangeType::AddLearnerNode;
                let entry = members.entry(record.id).or_insert_with(|| record.clone());
                entry.is_learner = learner;
                if entry.peer_urls.is_empty() {
                    entry.peer_urls = record.peer_urls.clone();
                }
                let url = entry.peer_urls.first().cloned();
                drop(members);
                if let (Some(url), true) = (url, record.id != self.id) {
                    self.transport.add_peer(record.id, url);
                }
                false
            }
            ConfChangeType::RemoveNode => {
                members.remove(&record.id);
                drop(members);
                self.removed
                    .lock()
                    .expect("removed lock poisoned")
                    .insert(record.id);
                self.transport.remove_peer(record.id);
                record.id == self.id
            }
        }
    }

    /// New peer URLs for a member (MemberUpdate).
    pub fn update_peer_urls(&self, id: u64, peer_urls: Vec<String>) -> bool {
        let mut members = self.members.lock().expect("members lock poisoned");
        let Some(known) = members.get_mut(&id) else {
            return false;
        };
        known.peer_urls = peer_urls.clone();
        drop(members);
        if id != self.id {
            if let Some(url) = peer_urls.first() {
                self.transport.remove_peer(id);
                self.transport.add_peer(id, url.clone());
            }
        }
        true
    }

    /// Members removed from the cluster (their ids may never return).
    pub fn removed(&self) -> Vec<u64> {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .iter()
            .copied()
            .collect()
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .contains(&id)
    }

    /// Replaces the member list with the one of a leader's snapshot (`records`, `removed`):
    /// members it does not list are gone, and the transport follows. The changes that made
    /// the difference were folded into the snapshot, so they never apply here one by one.
    pub fn replace_members(&self, records: Vec<MemberRecord>, removed: Vec<u64>) {
        self.set_removed(removed);
        let listed: std::collections::BTreeSet<u64> = records.iter().map(|r| r.id).collect();
        let dropped: Vec<u64> = {
            let mut members = self.members.lock().expect("members lock poisoned");
            let dropped: Vec<u64> = members
                .keys()
                .copied()
                .filter(|id| !listed.contains(id))
                .collect();
            for id in &dropped {
                members.remove(id);
            }
            dropped
        };
        for id in dropped.into_iter().filter(|&id| id != self.id) {
            self.transport.remove_peer(id);
        }
        for record in records {
            let (id, learner, url) = (
                record.id,
                record.is_learner,
                record.peer_urls.first().cloned(),
            );
            self.set_member(record);
            if let Some(known) = self
                .members
                .lock()
                .expect("members lock poisoned")
                .get_mut(&id)
            {
                known.is_learner = learner;
            }
            if let (Some(url), true) = (url, id != self.id) {
                self.transport.add_peer(id, url);
            }
        }
    }

    pub fn set_removed(&self, removed: impl IntoIterator<Item = u64>) {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .extend(removed);
    }

    /// Proposes a membership change about `record` and waits until it is applied.
    pub async fn propose_membership(
        &self,
        change: ConfChangeType,
        record: MemberRecord,
    ) -> Result<(Applied, i64), EtcdError> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let context = ConfChangeContext {
            request_id: id,
            member: Some(record.clone()),
        };
        let change = ConfChangeV2 {
            transition: ConfChangeTransition::Auto as i32,
            changes: vec![ConfChangeSingle {
                change_type: change as i32,
                node_id: record.id,
            }],
            context: context.encode_to_vec().into(),
        };
        let wait = self.waiters.register(id);
        let (accepted, acceptance) = oneshot::channel();
        let input = NodeInput::ProposeConfChange {
            change,
            done: accepted,
        };
        self.await_applied(id, input, acceptance, wait).await
    }

    /// Hands `input` to the Raft task and waits for the entry of request `id` to apply.
    async fn await_applied(
        &self,
        id: u64,
        input: NodeInput,
        acceptance: oneshot::Receiver<Result<(), EtcdError>>,
        wait: oneshot::Receiver<ApplyResult>,
    ) -> Result<(Applied, i64), EtcdError> {
        let sent = self.send_to_node_async(input);
        let outcome = tokio::time::timeout(self.request_timeout(), async {
            sent.await?;
            acceptance.await.map_err(|_| EtcdError::Stopped)??;
            wait.await.map_err(|_| EtcdError::Stopped)?
        })
        .await;
        match outcome {
            Ok(result) => {
                if result.is_err() {
                    self.waiters.forget(id);
                }
                result
            }
            Err(_) => {
                self.waiters.forget(id);
                Err(EtcdError::Timeout)
            }
        }
    }

    /// On the leader: how far learner `id` has replicated the log, and the log's last index.
    pub async fn learner_progress(&self, id: u64) -> Result<(u64, u64), EtcdError> {
        let (reply, answer) = oneshot::channel();
        self.send_to_node_async(NodeInput::Progress { id, reply })
            .await?;
        answer
            .await
            .map_err(|_| EtcdError::Stopped)?
            .ok_or(EtcdError::NotLeader)
    }

    /// Records that the membership change at `index` was refused (by the Raft task, before
    /// the applier reaches it).
    pub fn refuse_conf_change(&self, index: u64, error: EtcdError) {
        self.conf_refusals
            .lock()
            .expect("refusals lock poisoned")
            .insert(index, error);
    }

    /// Why the membership change at `index` was refused, if it was (asked once).
    pub fn conf_change_refusal(&self, index: u64) -> Option<EtcdError> {
        self.conf_refusals
            .lock()
            .expect("refusals lock poisoned")
            .remove(&index)
    }

    /// Records that Raft messages arrived from peer `id`.
    pub fn heard_from(&self, id: u64) {
        let now = Instant::now();
        let silence = self.config.election();
        let mut contact = self
            .peer_contact
            .lock()
            .expect("peer contact lock poisoned");
        let entry = contact.entry(id).or_insert((now, now));
        if now.duration_since(entry.1) > silence {
            // Silent for longer than an election timeout: contact was lost in between.
            entry.0 = now;
        }
        entry.1 = now;
    }

    /// Since when peer `id` has been heard from without a break of an election timeout;
    /// `None` if it is not heard from now. The leader hears from every member.
    pub fn in_contact_since(&self, id: u64) -> Option<Instant> {
        let contact = self
            .peer_contact
            .lock()
            .expect("peer contact lock poisoned");
        let (since, last) = *contact.get(&id)?;
        (last.elapsed() <= self.config.election()).then_some(since)
    }

    /// This member's own record, as it publishes it.
    pub fn own_record(&self) -> MemberRecord {
        MemberRecord {
            id: self.id,
            name: self.name.clone(),
            peer_urls: self.peer_urls.clone(),
            client_urls: self.client_urls.clone(),
            is_learner: false,
        }
    }

    /// etcd's request timeout: 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * Duration::from_millis(self.config.election_timeout)
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft_status().term,
        }
    }

    /// Proposes a write and waits until it is applied.
    pub async fn propose(&self, request: Request) -> Result<(Applied, i64), EtcdError> {
        if self.waiters.len() >= PROPOSALS_PENDING_MAX {
            return Err(EtcdError::TooManyRequests);
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let envelope = InternalRequest {
            id,
            request: Some(request),
        };
        let data = envelope.encode_to_vec();
        if data.len() as u64 > self.config.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let wait = self.waiters.register(id);
        let (accepted, acceptance) = oneshot::channel();
        let input = NodeInput::Propose {
            data: data.into(),
            done: accepted,
        };
        self.await_applied(id, input, acceptance, wait).await
    }

    async fn send_to_node_async(&self, input: NodeInput) -> Result<(), EtcdError> {
        self.node.send(input).await.map_err(|_| EtcdError::Stopped)
    }

    /// Sends to the Raft task without waiting for room (for tasks that must not block on it;
    /// a full queue means the member is overloaded, and the caller retries or times out).
    pub fn send_to_node(&self, input: NodeInput) -> Result<(), EtcdError> {
        self.node.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => EtcdError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => EtcdError::Stopped,
        })
    }

    /// Waits until a read issued now may be served locally (linearizable reads).
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        if crate::planted::active(crate::planted::Bug::StaleRead) {
            return Ok(());
        }
        self.reads.barrier().await
    }

    pub fn raft_status(&self) -> RaftStatus {
        *self.raft_status.lock().expect("raft status lock poisoned")
    }

    pub fn set_raft_status(&self, status: RaftStatus) {
        *self.raft_status.lock().expect("raft status lock poisoned") = status;
    }

    pub fn applied_index(&self) -> u64 {
        self.applied.get()
    }

    pub fn set_applied(&self, index: u64) {
        self.applied.advance(index);
    }

    /// Returns once the applier has applied `index`.
    pub async fn applied_reached(&self, index: u64) {
        self.applied.reached(index).await
    }

    /// The membership in force now: the newest one recorded.
    pub fn conf_state(&self) -> ConfState {
        let history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history.values().next_back().cloned().unwrap_or_default()
    }

    /// Records the membership in force from log index `index` on.
    pub fn record_conf_state(&self, index: u64, conf_state: ConfState) {
        let mut history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history.insert(index, conf_state);
        // Only recent changes matter: a snapshot ships an image at or after the newest
        // applied index, never far behind the newest change.
        while history.len() > CONF_HISTORY_MAX {
            history.pop_first();
        }
    }

    /// The membership in force at log index `index`.
    pub fn conf_state_at(&self, index: u64) -> Option<ConfState> {
        let history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history
            .range(..=index)
            .next_back()
            .map(|(_, cs)| cs.clone())
    }

    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.lock().expect("alarms lock poisoned").clone()
    }

    pub fn alarm_active(&self, alarm: AlarmType) -> bool {
        self.alarms
            .lock()
            .expect("alarms lock poisoned")
            .iter()
            .any(|active| active.alarm == alarm as i32)
    }

    /// The alarms restored with a snapshot replace the ones raised before it.
    pub fn replace_alarms(&self, alarms: Vec<AlarmMember>) {
        *self.alarms.lock().expect("alarms lock poisoned") = alarms;
    }

    /// Returns whether the alarm was not already raised.
    pub fn activate_alarm(&self, alarm: AlarmMember) -> bool {
        let mut alarms = self.alarms.lock().expect("alarms lock poisoned");
        if alarms.contains(&alarm) {
            return false;
        }
        alarms.push(alarm);
        true
    }

    /// Returns whether the alarm was raised.
    pub fn deactivate_alarm(&self, alarm: AlarmMember) -> bool {
        let mut alarms = self.alarms.lock().expect("alarms lock poisoned");
        let before = alarms.len();
        alarms.retain(|active| *active != alarm);
        alarms.len() != before
    }

    /// Returns once the member starts stopping.
    pub async fn stopped(&self) {
        self.stopping.reached(1).await
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get() > 0
    }

    pub fn stop(&self) {
        self.stopping.advance(1);
    }

    /// Stops the member because something it cannot recover from happened.
    pub fn stop_with_error(&self, reason: String) {
        self.stop_reason
            .lock()
            .expect("stop reason lock poisoned")
            .get_or_insert(reason);
        self.stop();
    }

    pub fn stop_reason(&self) -> Option<String> {
        self.stop_reason
            .lock()
            .expect("stop reason lock poisoned")
            .clone()
    }
}
