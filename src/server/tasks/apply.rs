//! The applier: committed Raft entries → the MVCC store, the lessor and the alarms.
//!
//! Entries arrive in log order from the Raft task. Each normal entry carries an
//! `InternalRequest`; applying it is deterministic, so every member computes the same
//! revision and the same response from the same entry. The member that proposed the entry
//! also completes the client's waiter with that response. A request reaches the state
//! through the applier chain (`apply_chain`), whose decorators may refuse it first.
//!
//! The applied index is written into the same backend batch as the data it describes, and
//! the backend commits only between entries, so a crash can never leave the backend with
//! data from an entry but an older applied index (or the reverse): on restart the member
//! replays the WAL after the stored index, and every entry is applied exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;

use crate::proto::oxcdpb::{ConfChangeContext, InternalRequest};
use crate::raft::{ConfChangeType, ConfChangeV2, Entry, EntryType};
use crate::server::state::server::Server;
use crate::server::state::store::Store;
use crate::server::tasks::apply_chain;
use crate::server::types::error::ServerError;
use crate::server::types::metrics::SLOW_APPLY;
#[cfg(madsim)]
use crate::server::types::observe;
use crate::server::types::request::{Applied, ApplyBatch, NodeInput, REMOVED};

pub(crate) struct Applier {
    pub(crate) server: Arc<Server>,
    pub(crate) backend: Store,
    pub(crate) batches: mpsc::UnboundedReceiver<ApplyBatch>,
    /// Invariant: only grows; equals the index of the last entry applied.
    pub(crate) applied_index: u64,
    /// The backend already holds the effects of every entry up to here (after a restart the
    /// log is replayed from the last snapshot; these entries only re-apply membership).
    pub(crate) backend_index: u64,
    /// The index of the newest Raft snapshot.
    pub(crate) snapshot_index: u64,
    /// Entries applied since the last backend commit.
    pub(crate) uncommitted_entries: u64,
}

impl Applier {
    pub(crate) async fn run(mut self) -> Result<(), ServerError> {
        let interval = Duration::from_millis(self.server.config.backend_batch_interval.max(1));
        let mut commit_timer = tokio::time::interval(interval);
        commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Why `select!`: batches and the commit timer are independent; whichever comes
            // first is served, and shutdown interrupts both.
            tokio::select! {
                biased;
                batch = self.batches.recv() => {
                    let Some(batch) = batch else { break };
                    #[cfg(madsim)]
                    observe::delay_point(self.server.id, observe::Point::ApplyBatch).await;
                    if let Err(error) = self.apply_batch(batch) {
                        // The state machine cannot go on from here (a snapshot that would
                        // not install, an entry that does not decode): stop the member
                        // rather than serve from a state that stopped following the log.
                        tracing::error!(%error, "applying failed; stopping the member");
                        self.server.lifecycle.stop_with_error(error.to_string());
                        return Err(error);
                    }
                }
                _ = commit_timer.tick() => self.commit()?,
                _ = self.server.lifecycle.stopped() => break,
            }
        }
        // A clean stop leaves the backend committed, so the next start replays nothing.
        self.commit()
    }

    fn apply_batch(&mut self, batch: ApplyBatch) -> Result<(), ServerError> {
        // A copy of the backend (a snapshot for a peer or a client) waits for the batch to
        // end: it then holds the effects of every entry up to the consistent index and of
        // none after it.
        let gate = self.backend.batch_gate();
        let _batch = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match batch {
            ApplyBatch::Entries(entries) => {
                #[cfg(madsim)]
                let count = entries.len();
                for (_position, entry) in entries.into_iter().enumerate() {
                    #[cfg(madsim)]
                    if _position > 0 && _position < count {
                        observe::crash_point(self.server.id, observe::Point::ApplyMidBatch);
                    }
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
        self.server.set_applied(self.applied_index);
        if self.uncommitted_entries >= self.server.config.backend_batch_limit {
            self.commit()?;
        }
        if self.applied_index - self.snapshot_index >= self.server.config.snapshot_count {
            self.commit()?;
            self.snapshot_index = self.applied_index;
            let conf_state = self.server.membership.conf_state();
            self.server.proposer.try_send(NodeInput::Snapshot {
                index: self.applied_index,
                conf_state,
            })?;
        }
        Ok(())
    }

    /// Replaces the state machine with the leader's backend image that came with the
    /// snapshot at `index` (the Raft task saved it). The image was taken at or after
    /// `index`; entries up to its own applied index only re-apply membership.
    fn restore(&mut self, index: u64) -> Result<(), ServerError> {
        let dir = self.server.config.snap_dir();
        let image = crate::wal::snapshot_db_path(&dir, index);
        self.backend.restore(&image).map_err(|error| {
            ServerError::Internal(format!("restoring the snapshot at index {index}: {error}"))
        })?;
        #[cfg(madsim)]
        observe::crash_point(self.server.id, observe::Point::SnapshotRestored);
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
        if records.members.is_empty() {
            // An image saved before the member list ever was (older members): keep the
            // list this member knows rather than dropping every peer.
            tracing::warn!(index, "the snapshot image has no member list; keeping ours");
        } else {
            self.server
                .membership
                .replace(records.members, records.removed);
        }
        self.server.alarms.reload();
        self.server.auth.reload()?;
        #[cfg(madsim)]
        observe::report(
            self.server.id,
            observe::Observation::Loaded {
                index: self.backend_index,
                revision: self.backend.current_revision(),
                digest: self.backend.state_digest(),
            },
        );
        tracing::info!(
            index,
            backend_index = self.backend_index,
            revision = self.backend.current_revision(),
            "restored the store from the leader's snapshot"
        );
        Ok(())
    }

    /// The membership side of a committed configuration change: the member list (kept in
    /// the backend), the transport's peers, and the client waiting for it. A member that
    /// learns it was removed stops.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), ServerError> {
        let change = ConfChangeV2::decode(entry.data.clone()).map_err(|error| {
            ServerError::Internal(format!("entry {} does not decode: {error}", entry.index))
        })?;
        let refusal = self.server.membership.conf_change_refusal(entry.index);
        // Bootstrap entries and the leader's automatic leave of a joint configuration carry
        // no context: there is no record to change and nobody waiting. The member list is
        // saved all the same, so that every backend image from here on carries it: a
        // member restored from an image taken before any publication would otherwise
        // learn an empty list and lose its routes to every peer.
        let record = ConfChangeContext::decode(change.context.clone())
            .ok()
            .and_then(|context| context.member.map(|member| (context.request_id, member)));
        let Some((request_id, record)) = record else {
            if entry.index > self.backend_index {
                self.server.membership.save();
            }
            return Ok(());
        };
        if let Some(error) = refusal {
            // The Raft task refused it: the membership stays as it was.
            self.server
                .proposer
                .waiters
                .complete(request_id, Err(error));
            return Ok(());
        }
        let mut removed_self = false;
        if entry.index > self.backend_index {
            for single in &change.changes {
                let Ok(kind) = ConfChangeType::try_from(single.change_type) else {
                    continue;
                };
                removed_self |= self.server.membership.apply_change(kind, &record);
            }
            self.server.membership.save();
        }
        let revision = self.backend.current_revision();
        self.server
            .proposer
            .waiters
            .complete(request_id, Ok((Applied::Membership, revision)));
        if removed_self {
            // Make the removal durable before stopping, so a restart does not rejoin.
            self.commit()?;
            self.server.lifecycle.stop_with_error(REMOVED.to_string());
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<(), ServerError> {
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
                        return Err(ServerError::Internal(format!(
                            "entry {} does not decode: {error}",
                            entry.index
                        )))
                    }
                };
                let started = Instant::now();
                let result = apply_chain::apply(
                    &self.server,
                    &self.backend,
                    entry.index,
                    request.request,
                    request.header,
                );
                let took = started.elapsed();
                if took > SLOW_APPLY {
                    tracing::warn!(?took, expected = ?SLOW_APPLY, index = entry.index, "apply request took too long");
                    self.server.metrics.slow_applies.inc();
                }
                self.server.proposer.waiters.complete(request.id, result);
            }
            Ok(EntryType::ConfChangeV2) => {
                // Applied to the core by the Raft task before it handed the entry over;
                // here the member list, the transport and the waiting client follow.
                self.apply_conf_change(&entry)?;
            }
            Err(_) => {
                return Err(ServerError::Internal(format!(
                    "entry {} has unknown type {}",
                    entry.index, entry.entry_type
                )))
            }
        }
        #[cfg(madsim)]
        if entry.index > self.backend_index {
            observe::report(
                self.server.id,
                observe::Observation::Applied {
                    index: entry.index,
                    revision: self.backend.current_revision(),
                    digest: self.backend.state_digest(),
                },
            );
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ServerError> {
        if self.uncommitted_entries == 0 {
            return Ok(());
        }
        self.backend.commit().map_err(|error| {
            tracing::error!(%error, "backend commit failed; stopping the member");
            self.server.lifecycle.stop_with_error(error.to_string());
            ServerError::Stopped
        })?;
        #[cfg(madsim)]
        observe::crash_point(self.server.id, observe::Point::BackendCommitted);
        self.uncommitted_entries = 0;
        Ok(())
    }
}
