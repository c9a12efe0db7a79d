//! The applier: committed Raft entries → the MVCC store, the lessor and the alarms.
//!
//! Entries arrive in log order from the Raft task. Each normal entry carries an
//! `InternalRequest`; applying it is deterministic, so every member computes the same
//! revision and the same response from the same entry. The member that proposed the entry
//! also completes the client's waiter with that response.
//!
//! The applied index is written into the same backend batch as the data it describes, and
//! the backend commits only between entries, so a crash can never leave the backend with
//! data from an entry but an older applied index (or the reverse): on restart the member
//! replays the WAL after the stored index, and every entry is applied exactly once.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;

use super::error::EtcdError;
use super::member::Member;
use super::node::{ApplyBatch, NodeInput};
use super::store::Backend;
use super::txn;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    CompactionRequest, CompactionResponse, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutResponse, TxnResponse,
};
use crate::proto::oxcdpb::{internal_request::Request, ConfChangeContext, InternalRequest};
use crate::raft::{ConfChangeType, ConfChangeV2, Entry, EntryType};

/// The response to one applied request, before the member fills in the header.
#[derive(Debug, Clone)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    LeaseCheckpoint,
    /// A change of the member list (a publication, an update, a configuration change).
    Membership,
}

/// What a waiter receives: the response and the store's revision right after the apply.
pub type ApplyResult = Result<(Applied, i64), EtcdError>;

pub struct Applier {
    pub member: Arc<Member>,
    pub backend: Backend,
    pub batches: mpsc::UnboundedReceiver<ApplyBatch>,
    /// Invariant: only grows; equals the index of the last entry applied.
    pub applied_index: u64,
    /// The backend already holds the effects of every entry up to here (after a restart the
    /// log is replayed from the last snapshot; these entries only re-apply membership).
    pub backend_index: u64,
    /// The index of the newest Raft snapshot.
    pub snapshot_index: u64,
    /// Entries applied since the last backend commit.
    pub uncommitted_entries: u64,
}

impl Applier {
    pub async fn run(mut self) -> Result<(), EtcdError> {
        let interval = Duration::from_millis(self.member.config.backend_batch_interval.max(1));
        let mut commit_timer = tokio::time::interval(interval);
        commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Why `select!`: batches and the commit timer are independent; whichever comes
            // first is served, and shutdown interrupts both.
            tokio::select! {
                biased;
                batch = self.batches.recv() => {
                    let Some(batch) = batch else { break };
                    if let Err(error) = self.apply_batch(batch) {
                        // The state machine cannot go on from here (a snapshot that would
                        // not install, an entry that does not decode): stop the member
                        // rather than serve from a state that stopped following the log.
                        tracing::error!(%error, "applying failed; stopping the member");
                        self.member.stop_with_error(error.to_string());
                        return Err(error);
                    }
                }
                _ = commit_timer.tick() => self.commit()?,
                _ = self.member.stopped() => break,
            }
        }
        // A clean stop leaves the backend committed, so the next start replays nothing.
        self.commit()
    }

    fn apply_batch(&mut self, batch: ApplyBatch) -> Result<(), EtcdError> {
        // A copy of the backend (a snapshot for a peer or a client) waits for the batch to
        // end: it then holds the effects of every entry up to the consistent index and of
        // none after it.
        let gate = self.backend.batch_gate();
        let _batch = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match batch {
            ApplyBatch::Entries(entries) => {
                for entry in entries {
                    self.apply_entry(entry)?;
                }
            }
            ApplyBatch::Snapshot(snapshot) => {
                let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
                if index > self.applied_index {
                    self.restore(index)?;
                }
            }
        }
        self.backend
            .set_consistent_index(self.applied_index.max(self.backend_index));
        self.member.set_applied(self.applied_index);
        if self.uncommitted_entries >= self.member.config.backend_batch_limit {
            self.commit()?;
        }
        if self.applied_index - self.snapshot_index >= self.member.config.snapshot_count {
            self.commit()?;
            self.snapshot_index = self.applied_index;
            let conf_state = self.member.conf_state();
            self.member.send_to_node(NodeInput::Snapshot {
                index: self.applied_index,
                conf_state,
            })?;
        }
        Ok(())
    }

    /// Replaces the state machine with the leader's backend image that came with the
    /// snapshot at `index` (the Raft task saved it). The image was taken at or after
    /// `index`; entries up to its own applied index only re-apply membership.
    fn restore(&mut self, index: u64) -> Result<(), EtcdError> {
        let dir = self.member.config.snap_dir();
        let image = crate::wal::snapshot_db_path(&dir, index);
        self.backend.restore(&image).map_err(|error| {
            EtcdError::Internal(format!("restoring the snapshot at index {index}: {error}"))
        })?;
        if let Err(error) =
            crate::wal::remove_images_before(self.backend.disk().as_ref(), &dir, index)
        {
            tracing::warn!(%error, "cannot remove older snapshot images");
        }
        self.applied_index = index;
        self.snapshot_index = index;
        self.backend_index = self.backend.consistent_index();
        self.uncommitted_entries = 0;
        let records = self.backend.member_records();
        self.member
            .replace_members(records.members, records.removed);
        self.member.replace_alarms(self.backend.alarms());
        tracing::info!(
            index,
            backend_index = self.backend_index,
            revision = self.backend.current_revision(),
            "restored the store from the leader's snapshot"
        );
        Ok(())
    }

    fn save_members(&self) {
        self.backend
            .save_members(&self.member.members(), &self.member.removed());
    }

    /// The membership side of a committed configuration change: the member list (kept in
    /// the backend), the transport's peers, and the client waiting for it. A member that
    /// learns it was removed stops.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), EtcdError> {
        let change = ConfChangeV2::decode(entry.data.clone()).map_err(|error| {
            EtcdError::Internal(format!("entry {} does not decode: {error}", entry.index))
        })?;
        let refusal = self.member.conf_change_refusal(entry.index);
        // Bootstrap entries and the leader's automatic leave of a joint configuration carry
        // no context: there is no record to change and nobody waiting.
        let Ok(context) = ConfChangeContext::decode(change.context.clone()) else {
            return Ok(());
        };
        let Some(record) = context.member else {
            return Ok(());
        };
        if let Some(error) = refusal {
            // The Raft task refused it: the membership stays as it was.
            self.member.waiters.complete(context.request_id, Err(error));
            return Ok(());
        }
        let mut removed_self = false;
        if entry.index > self.backend_index {
            for single in &change.changes {
                let Ok(kind) = ConfChangeType::try_from(single.change_type) else {
                    continue;
                };
                removed_self |= self.member.apply_membership(kind, &record);
            }
            self.save_members();
        }
        let revision = self.backend.current_revision();
        self.member
            .waiters
            .complete(context.request_id, Ok((Applied::Membership, revision)));
        if removed_self {
            // Make the removal durable before stopping, so a restart does not rejoin.
            self.commit()?;
            self.member
                .stop_with_error(super::peer::REMOVED.to_string());
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<(), EtcdError> {
        assert!(
            entry.index > self.applied_index,
            "entry {} applied twice (applied index {})",
            entry.index,
            self.applied_index
        );
        self.applied_index = entry.index;
        self.uncommitted_entries += 1;
        match EntryType::try_from(entry.entry_type) {
            Ok(EntryType::Normal) if entry.data.is_empty() => {
                // The empty entry a new leader appends to commit its term (Raft §5.4.2).
            }
            Ok(EntryType::Normal) if entry.index <= self.backend_index => {}
            Ok(EntryType::Normal) => {
                let request = match InternalRequest::decode(entry.data.clone()) {
                    Ok(request) => request,
                    Err(error) => {
                        return Err(EtcdError::Internal(format!(
                            "entry {} does not decode: {error}",
                            entry.index
                        )))
                    }
                };
                let result = self.apply_request(request.request);
                self.member.waiters.complete(request.id, result);
                #[cfg(madsim)]
                super::observe::report(
                    self.member.id,
                    super::observe::Observation::Applied {
                        index: entry.index,
                        revision: self.backend.current_revision(),
                    },
                );
            }
            Ok(EntryType::ConfChangeV2) => {
                // Applied to the core by the Raft task before it handed the entry over;
                // here the member list, the transport and the waiting client follow.
                self.apply_conf_change(&entry)?;
            }
            Err(_) => {
                return Err(EtcdError::Internal(format!(
                    "entry {} has unknown type {}",
                    entry.index, entry.entry_type
                )))
            }
        }
        Ok(())
    }

    fn apply_request(&mut self, request: Option<Request>) -> ApplyResult {
        let no_space = self.member.alarm_active(AlarmType::Nospace);
        match request {
            Some(Request::Put(request)) => {
                if no_space {
                    return Err(EtcdError::NoSpace);
                }
                self.backend
                    .write(|txn_view| txn::put(txn_view, &request).map(Applied::Put))
            }
            Some(Request::DeleteRange(request)) => self
                .backend
                .write(|txn_view| txn::delete_range(txn_view, &request).map(Applied::DeleteRange)),
            Some(Request::Txn(request)) => {
                if no_space && txn::txn_has_puts(&request) {
                    return Err(EtcdError::NoSpace);
                }
                self.backend
                    .write(|txn_view| txn::txn(txn_view, &request).map(Applied::Txn))
            }
            Some(Request::Compaction(CompactionRequest { revision, .. })) => {
                self.backend.compact(revision)?;
                Ok((
                    Applied::Compaction(CompactionResponse::default()),
                    self.backend.current_revision(),
                ))
            }
            Some(Request::LeaseGrant(LeaseGrantRequest { ttl, id })) => {
                if no_space {
                    return Err(EtcdError::NoSpace);
                }
                let granted_ttl = self.backend.grant_lease(id, ttl)?;
                Ok((
                    Applied::LeaseGrant(LeaseGrantResponse {
                        header: None,
                        id,
                        ttl: granted_ttl,
                        error: String::new(),
                    }),
                    self.backend.current_revision(),
                ))
            }
            Some(Request::LeaseRevoke(LeaseRevokeRequest { id })) => {
                let revision = self.backend.revoke_lease(id)?;
                Ok((
                    Applied::LeaseRevoke(LeaseRevokeResponse::default()),
                    revision,
                ))
            }
            Some(Request::LeaseCheckpoint(request)) => {
                for checkpoint in request.checkpoints {
                    self.backend
                        .checkpoint_lease(checkpoint.id, checkpoint.remaining_ttl);
                }
                Ok((Applied::LeaseCheckpoint, self.backend.current_revision()))
            }
            Some(Request::Alarm(request)) => {
                let alarms = self.apply_alarm(&request);
                Ok((
                    Applied::Alarm(AlarmResponse {
                        header: None,
                        alarms,
                    }),
                    self.backend.current_revision(),
                ))
            }
            Some(Request::MemberAttributes(record)) => {
                // A member removed meanwhile does not come back by publishing.
                if !self.member.is_removed(record.id) {
                    self.member.set_member(record);
                    self.save_members();
                }
                Ok((Applied::Membership, self.backend.current_revision()))
            }
            Some(Request::MemberUpdate(record)) => {
                if !self.member.update_peer_urls(record.id, record.peer_urls) {
                    return Err(EtcdError::MemberNotFound);
                }
                self.save_members();
                Ok((Applied::Membership, self.backend.current_revision()))
            }
            None => Err(EtcdError::Internal("empty request in the log".into())),
        }
    }

    fn apply_alarm(&mut self, request: &AlarmRequest) -> Vec<AlarmMember> {
        let alarm = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Activate) if request.alarm != AlarmType::None as i32 => {
                let changed = self.member.activate_alarm(alarm);
                if changed {
                    self.backend.save_alarms(&self.member.alarms());
                    tracing::warn!(
                        member = request.member_id,
                        alarm = request.alarm,
                        "alarm raised"
                    );
                }
                vec![alarm]
            }
            Ok(AlarmAction::Deactivate) => {
                let removed = self.member.deactivate_alarm(alarm);
                if removed {
                    self.backend.save_alarms(&self.member.alarms());
                    tracing::info!(
                        member = request.member_id,
                        alarm = request.alarm,
                        "alarm cleared"
                    );
                    vec![alarm]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    fn commit(&mut self) -> Result<(), EtcdError> {
        if self.uncommitted_entries == 0 {
            return Ok(());
        }
        self.backend.commit().map_err(|error| {
            tracing::error!(%error, "backend commit failed; stopping the member");
            self.member.stop_with_error(error.to_string());
            EtcdError::Stopped
        })?;
        self.uncommitted_entries = 0;
        Ok(())
    }
}
