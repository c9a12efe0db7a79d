//! The MVCC store, the lessor and the backend as one member uses them.
//!
//! One lock guards the key-value store and the lessor together: a write transaction may
//! attach keys to leases, and revoking a lease deletes its keys, so both change as one.
//! The applier is the only writer; reads take the same lock briefly.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::io::{Clock, Disk};
use crate::lease::{LeaseError, Lessor};
use crate::mvcc::watch::History;
use crate::mvcc::{
    Backend as Db, BackendError, KvStore, MvccError, RangeScan, WatchStream, WriteTxn,
};
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{Event, KeyValue};
use crate::proto::oxcdpb::{Member, SavedAuth, SavedMembers};
use crate::server::state::range::{self, KvView, Scan};
use crate::server::state::txn::{self, KvWrite};
use crate::server::types::config::Config;
use crate::server::types::error::ServerError;
use crate::server::types::metrics::Metrics;
use crate::v2::{self, V2Error, V2Store};

impl From<MvccError> for ServerError {
    fn from(error: MvccError) -> Self {
        match error {
            MvccError::Compacted => ServerError::Compacted,
            MvccError::FutureRevision => ServerError::FutureRevision,
            MvccError::Backend(message) => ServerError::Internal(message),
        }
    }
}

impl From<LeaseError> for ServerError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::NotFound => ServerError::LeaseNotFound,
            LeaseError::Exists => ServerError::LeaseExists,
            // Only a renewal meets an expired lease, and it waits for the revocation.
            LeaseError::Expired => ServerError::LeaseNotFound,
        }
    }
}

fn backend_error(error: BackendError) -> ServerError {
    ServerError::Internal(error.to_string())
}

struct State {
    kv: KvStore,
    lessor: Lessor,
    /// The v2 keyspace (`--enable-v2`), persisted in the backend's v2 table.
    v2: V2Store,
}

/// A backend image copied to a file of its own; the file goes when the copy is dropped.
pub(crate) struct ImageCopy {
    disk: Arc<dyn Disk>,
    path: std::path::PathBuf,
    file: Box<dyn crate::io::DiskFile>,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// The Raft index the backend was applied through.
    pub(crate) index: u64,
    /// When the copy began: its life, to the end of its transfer, is what etcd's backend
    /// snapshot duration measures.
    started: Instant,
    metrics: Arc<Metrics>,
    /// Whether its life counts as a snapshot's duration (an intermediate copy does not).
    timed: bool,
}

impl ImageCopy {
    /// Up to `max` bytes of the image from `offset` (none at the end).
    pub(crate) fn read(&self, offset: u64, max: usize) -> Result<Bytes, ServerError> {
        let n = (self.len.saturating_sub(offset)).min(max as u64) as usize;
        let mut piece = vec![0; n];
        self.file
            .read_exact_at(offset, &mut piece)
            .map_err(|error| ServerError::Internal(format!("backend image copy: {error}")))?;
        Ok(Bytes::from(piece))
    }
}

impl Drop for ImageCopy {
    fn drop(&mut self) {
        if self.timed {
            self.metrics
                .backend_snapshot
                .observe(self.started.elapsed());
        }
        if let Err(error) = self.disk.remove(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove a backend image copy");
        }
    }
}

struct Inner {
    state: Mutex<State>,
    lease_ids: Mutex<SmallRng>,
    disk: Arc<dyn Disk>,
    /// The backend file.
    path: std::path::PathBuf,
    min_lease_ttl: i64,
    /// The member's clock: lease deadlines are measured by it.
    clock: Arc<dyn Clock>,
    /// Numbers the image copies, so that concurrent ones have files of their own.
    image_copies: AtomicU64,
    /// Held by the applier while it applies a batch and by an image copy while it copies,
    /// so that a copy never catches a batch half applied. Taken before the state lock.
    batch: Arc<Mutex<()>>,
    /// Counts puts, deletes, ranges and txns, backend commits and snapshots.
    metrics: Arc<Metrics>,
    /// Every v2 event as it is applied, for the v2 watches waiting for one.
    v2_events: tokio::sync::broadcast::Sender<Arc<v2::Event>>,
}

/// v2 events kept for watches that have not caught up; a watch that falls further
/// behind re-reads the store's history.
const V2_EVENTS_BUFFERED: usize = 1024;

/// The member's store. Clones share it.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

/// Moves a leader's backend image over the backend file at `backend`, durably (the
/// rename is atomic: a crash leaves the old backend or the new one).
pub(crate) fn install_image(disk: &dyn Disk, image: &Path, backend: &Path) -> std::io::Result<()> {
    disk.rename(image, backend)?;
    match backend.parent() {
        Some(dir) => disk.sync_dir(dir),
        None => Ok(()),
    }
}

impl Store {
    /// Opens the backend under the member's snap directory and rebuilds the index and the
    /// lessor from it.
    pub(crate) fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: &Config,
        seed: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let path = config.backend_path();
        let min_lease_ttl = config.min_lease_ttl_secs();
        let state = Self::load(disk.clone(), &path, min_lease_ttl)?;
        state.kv.hub.set_revision(state.kv.revision);
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                lease_ids: Mutex::new(SmallRng::seed_from_u64(seed ^ 0x1ea5e)),
                disk,
                path,
                min_lease_ttl,
                clock,
                image_copies: AtomicU64::new(0),
                batch: Arc::default(),
                metrics,
                v2_events: tokio::sync::broadcast::channel(V2_EVENTS_BUFFERED).0,
            }),
        })
    }

    /// Opens the backend at `path` and rebuilds the key index and the lessor from it.
    fn load(disk: Arc<dyn Disk>, path: &Path, min_lease_ttl: i64) -> Result<State, ServerError> {
        let db = Db::open(disk, path).map_err(backend_error)?;
        let kv = KvStore::open(db)?;
        let mut lessor = Lessor::new(min_lease_ttl);
        for (id, ttl, _) in kv.backend.leases().map_err(backend_error)? {
            lessor.restore(id, ttl);
        }
        for kv_pair in kv.range(b"\0", &[0], 0, 0, false)?.kvs {
            if kv_pair.lease != 0 {
                lessor.attach(kv_pair.lease, kv_pair.key.clone());
            }
        }
        let v2 = Self::load_v2(&kv.backend)?;
        Ok(State { kv, lessor, v2 })
    }

    /// The v2 tree from the backend's v2 table.
    fn load_v2(backend: &Db) -> Result<V2Store, ServerError> {
        let corrupt = |error: String| ServerError::Internal(format!("the v2 store: {error}"));
        let mut records = Vec::new();
        for (path, encoded) in backend.v2_nodes().map_err(backend_error)? {
            let record = v2::NodeRecord::decode(encoded.as_slice())
                .map_err(|error| corrupt(format!("node {path}: {error}")))?;
            records.push((path, record));
        }
        let index = backend.v2_index().map_err(backend_error)?;
        V2Store::from_records(records, index).map_err(corrupt)
    }

    /// Replaces the backend with the image at `image` (a leader's snapshot), moving the
    /// file over the backend's, and rebuilds everything from it. Watchers keep their
    /// streams and catch up from the new store's history.
    pub(crate) fn restore(&self, image: &Path) -> Result<(), ServerError> {
        let inner = &self.inner;
        let mut state = self.lock();
        install_image(inner.disk.as_ref(), image, &inner.path)
            .map_err(|error| ServerError::Internal(error.to_string()))?;
        let mut restored = Self::load(inner.disk.clone(), &inner.path, inner.min_lease_ttl)?;
        let hub = state.kv.hub.clone();
        restored.kv.hub = hub.clone();
        hub.restore(restored.kv.revision);
        *state = restored;
        Ok(())
    }

    /// Applies a v2 request from the log; its changes join the backend's pending batch.
    /// `now` (Unix nanoseconds) renders the TTLs of the answer.
    pub(crate) fn v2_apply(
        &self,
        request: &crate::proto::oxcdpb::V2Request,
        now: i64,
    ) -> Result<Arc<v2::Event>, V2Error> {
        let mut state = self.lock();
        let State { kv, v2, .. } = &mut *state;
        let before = v2.index();
        let answer = v2.apply(request, now);
        for (path, record) in v2.take_changes() {
            kv.backend
                .put_v2_node(path, record.map(|record| record.encode_to_vec()));
        }
        if v2.index() != before {
            kv.backend.set_v2_index(v2.index());
            // Every event after `before`, in order, for the waiting watches (a sync may
            // expire several nodes at once).
            for event in v2.events_after(before) {
                let _ = self.inner.v2_events.send(event);
            }
        }
        answer
    }

    /// A local read of the v2 keyspace.
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn v2_get(
        &self,
        path: &str,
        recursive: bool,
        sorted: bool,
        now: i64,
    ) -> Result<v2::Event, V2Error> {
        self.lock().v2.get(path, recursive, sorted, now)
    }

    /// The first event at or after `since` a v2 watch of `key` sees (`None` yet), and a
    /// receiver of the events applied from now on: taken under one lock, so that no
    /// event falls between the two.
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn v2_watch(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
    ) -> Result<
        (
            Option<Arc<v2::Event>>,
            u64,
            tokio::sync::broadcast::Receiver<Arc<v2::Event>>,
        ),
        V2Error,
    > {
        let state = self.lock();
        let since = if since == 0 {
            state.v2.index() + 1
        } else {
            since
        };
        let found = state.v2.scan(key, recursive, since)?;
        Ok((found, state.v2.index(), self.inner.v2_events.subscribe()))
    }

    /// The earliest expiration in the v2 keyspace (Unix nanoseconds).
    pub(crate) fn v2_next_expiry(&self) -> Option<i64> {
        self.lock().v2.next_expiry()
    }

    /// What `read` makes of the v2 store's operation counts.
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn v2_stats<T>(&self, read: impl FnOnce(&v2::Stats) -> T) -> T {
        read(self.lock().v2.stats())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("store lock poisoned")
    }

    pub(crate) fn consistent_index(&self) -> u64 {
        self.lock().kv.backend.consistent_index().unwrap_or(0)
    }

    pub(crate) fn set_consistent_index(&self, index: u64) {
        self.lock().kv.backend.set_consistent_index(index);
    }

    pub(crate) fn current_revision(&self) -> i64 {
        self.lock().kv.revision
    }

    pub(crate) fn alarms(&self) -> Vec<AlarmMember> {
        let encoded = self.lock().kv.backend.alarms().unwrap_or_default();
        AlarmResponse::decode(encoded.as_slice())
            .map(|response| response.alarms)
            .unwrap_or_default()
    }

    pub(crate) fn save_alarms(&self, alarms: &[AlarmMember]) {
        let encoded = AlarmResponse {
            header: None,
            alarms: alarms.to_vec(),
        }
        .encode_to_vec();
        self.lock().kv.backend.set_alarms(encoded);
    }

    /// The auth state saved by [`Store::save_auth`]: an error for a record that does not
    /// decode (the member must not start with its users and roles lost).
    pub(crate) fn auth(&self) -> Result<SavedAuth, ServerError> {
        let encoded = self.lock().kv.backend.auth().map_err(backend_error)?;
        SavedAuth::decode(encoded.as_slice())
            .map_err(|error| ServerError::Internal(format!("the saved auth state: {error}")))
    }

    pub(crate) fn save_auth(&self, auth: &SavedAuth) {
        self.lock().kv.backend.set_auth(auth.encode_to_vec());
    }

    /// The keys attached to lease `id` (none for a lease that does not exist).
    pub(crate) fn lease_keys(&self, id: i64) -> Vec<Bytes> {
        let state = self.lock();
        state
            .lessor
            .time_to_live(id, self.inner.clock.now())
            .map(|(_, _, keys)| keys)
            .unwrap_or_default()
    }

    /// The member records and removed member ids saved by [`Store::save_members`].
    pub(crate) fn member_records(&self) -> SavedMembers {
        let encoded = self.lock().kv.backend.members().unwrap_or_default();
        SavedMembers::decode(encoded.as_slice()).unwrap_or_default()
    }

    pub(crate) fn save_members(&self, members: &[Member], removed: &[u64]) {
        let encoded = SavedMembers {
            members: members.to_vec(),
            removed: removed.to_vec(),
        }
        .encode_to_vec();
        self.lock().kv.backend.set_members(encoded);
    }

    /// Makes everything applied so far durable in the backend.
    pub(crate) fn commit(&self) -> Result<(), BackendError> {
        let mut state = self.lock();
        let started = Instant::now();
        let committed = state.kv.backend.commit();
        self.inner.metrics.backend_commit.observe(started.elapsed());
        committed
    }

    /// The member's metrics, which the store shares with the rest of the member.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// How many keys exist now, and the watch hub's numbers (for a metrics page, which
    /// simulation builds never render).
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn key_and_watch_counts(&self) -> (usize, crate::mvcc::watch::WatchCounts) {
        let (keys, hub) = {
            let state = self.lock();
            (state.kv.index.live_keys(), state.kv.hub.clone())
        };
        // Counted without the store lock: the hub takes its own locks.
        (keys, hub.counts())
    }

    pub(crate) fn db_size_bytes(&self) -> u64 {
        self.lock().kv.backend.size_bytes()
    }

    pub(crate) fn db_size_in_use_bytes(&self) -> u64 {
        self.db_size_bytes()
    }

    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, ServerError> {
        let state = self.lock();
        let mut view = ReadView { kv: &state.kv };
        let response = range::range(&mut view, request);
        drop(state);
        self.inner.metrics.mvcc_range.inc();
        response
    }

    /// Answers a Txn that only reads; returns the response and the revision it read at.
    pub(crate) fn read_txn(&self, request: &TxnRequest) -> Result<(TxnResponse, i64), ServerError> {
        let mut state = self.lock();
        let State { kv, lessor, .. } = &mut *state;
        let revision = kv.revision;
        let mut view = ApplyTxn::new(kv.write(), lessor, true);
        let response = txn::txn(&mut view, request);
        view.record(&self.inner.metrics);
        Ok((response?, revision))
    }

    /// Runs one write through `apply`; everything it writes lands at one revision.
    pub(crate) fn write<T>(
        &self,
        apply: impl FnOnce(&mut dyn KvWrite) -> Result<T, ServerError>,
    ) -> Result<(T, i64), ServerError> {
        let mut state = self.lock();
        let State { kv, lessor, .. } = &mut *state;
        let mut view = ApplyTxn::new(kv.write(), lessor, false);
        let result = apply(&mut view);
        view.record(&self.inner.metrics);
        let revision = view.txn.end();
        result.map(|value| (value, revision))
    }

    /// A hash of the whole state the applied entries produced: the revisions, every live
    /// key with its metadata, and every lease with its TTL and keys. Two members that
    /// applied the same entries must agree on it (simulation builds: the observer compares
    /// it at every applied index). Computed afresh from the backend each time, so a write
    /// the backend lost, or an index that drifted from the backend, shows too.
    #[cfg(madsim)]
    pub(crate) fn state_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let state = self.lock();
        let mut hasher = std::hash::DefaultHasher::new();
        state.kv.revision.hash(&mut hasher);
        state.kv.compact_revision.hash(&mut hasher);
        match state.kv.range(b"\0", &[0], 0, 0, false) {
            Ok(scan) => {
                for kv in scan.kvs {
                    (&kv.key, &kv.value, kv.create_revision, kv.mod_revision).hash(&mut hasher);
                    (kv.version, kv.lease).hash(&mut hasher);
                }
            }
            Err(error) => error.to_string().hash(&mut hasher),
        }
        state
            .kv
            .backend
            .auth()
            .unwrap_or_default()
            .hash(&mut hasher);
        let now = self.inner.clock.now();
        for id in state.lessor.ids() {
            if let Some((_, ttl, keys)) = state.lessor.time_to_live(id, now) {
                (id, ttl, keys).hash(&mut hasher);
            }
        }
        hasher.finish()
    }

    pub(crate) fn compact(&self, revision: i64) -> Result<(), ServerError> {
        Ok(self.lock().kv.compact(revision)?)
    }

    pub(crate) fn grant_lease(&self, id: i64, ttl: i64) -> Result<i64, ServerError> {
        let mut state = self.lock();
        let granted = state.lessor.grant(id, ttl, self.inner.clock.now())?;
        state.kv.backend.put_lease(id, granted, granted);
        Ok(granted)
    }

    /// Revokes a lease and deletes its keys at one revision; returns the revision after.
    pub(crate) fn revoke_lease(&self, id: i64) -> Result<i64, ServerError> {
        let mut state = self.lock();
        let State { kv, lessor, .. } = &mut *state;
        let keys = lessor.revoke(id)?;
        kv.backend.delete_lease(id);
        let deletes = keys.len() as u64;
        let mut txn = kv.write();
        for key in keys {
            txn.delete_range(&key, &[])?;
        }
        self.inner.metrics.mvcc_txn_ended(0, 0, deletes);
        Ok(txn.end())
    }

    pub(crate) fn checkpoint_lease(&self, id: i64, remaining_ttl: i64) {
        let mut state = self.lock();
        if let Some((_, ttl, _)) = state.lessor.time_to_live(id, self.inner.clock.now()) {
            state.kv.backend.put_lease(id, ttl, remaining_ttl);
        }
    }

    pub(crate) fn renew_lease(&self, id: i64) -> Result<i64, LeaseError> {
        self.lock().lessor.renew(id, self.inner.clock.now())
    }

    pub(crate) fn promote_lessor(&self) {
        self.lock().lessor.promote(self.inner.clock.now());
    }

    pub(crate) fn demote_lessor(&self) {
        self.lock().lessor.demote();
    }

    pub(crate) fn expired_leases(&self, max: usize) -> Vec<i64> {
        self.lock().lessor.expired(self.inner.clock.now(), max)
    }

    /// The lock the applier holds while it applies a batch (see `copy_image`).
    pub(crate) fn batch_gate(&self) -> Arc<Mutex<()>> {
        self.inner.batch.clone()
    }

    /// The member's disk.
    pub(crate) fn disk(&self) -> Arc<dyn Disk> {
        self.inner.disk.clone()
    }

    /// The member's clock.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub(crate) fn lease_ids(&self) -> Vec<i64> {
        self.lock().lessor.ids()
    }

    pub(crate) fn lease_time_to_live(&self, id: i64, keys: bool) -> Option<(i64, i64, Vec<Bytes>)> {
        let (ttl, granted, attached) = self
            .lock()
            .lessor
            .time_to_live(id, self.inner.clock.now())?;
        Some((ttl, granted, if keys { attached } else { Vec::new() }))
    }

    /// A fresh, unused, positive lease id.
    pub(crate) fn new_lease_id(&self) -> i64 {
        let mut rng = self.inner.lease_ids.lock().expect("lease id lock poisoned");
        loop {
            let id = rng.random::<i64>() & i64::MAX;
            if id != 0 && !self.lock().lessor.exists(id) {
                return id;
            }
        }
    }

    pub(crate) fn defragment(&self) -> Result<(), ServerError> {
        self.lock().kv.backend.defragment().map_err(backend_error)
    }

    /// A hash of the whole key space history held (etcd's Hash).
    pub(crate) fn hash(&self) -> Result<u32, ServerError> {
        Ok(self.lock().kv.hash_kv(0)?)
    }

    /// etcd's HashKV: (hash, compact revision, revision hashed at).
    pub(crate) fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), ServerError> {
        let state = self.lock();
        let at = if revision <= 0 {
            state.kv.revision
        } else {
            revision
        };
        let hash = state.kv.hash_kv(at)?;
        Ok((hash, state.kv.compact_revision, at))
    }

    /// A copy of the backend image on disk, with the applied index it holds, taken between
    /// two of the applier's batches under the store's lock (so the image holds exactly the
    /// entries up to that index), to be streamed (to a client, to a peer) without holding
    /// the lock or the whole image in memory.
    pub(crate) fn copy_image(&self) -> Result<ImageCopy, ServerError> {
        let inner = &self.inner;
        let nonce = inner.image_copies.fetch_add(1, Ordering::Relaxed);
        let dir = inner.path.parent().unwrap_or(Path::new("."));
        // Named like an interrupted image save, so a restart clears a copy a crash left.
        let path = dir.join(format!("copy-{nonce}.snap.db.tmp"));
        let io =
            |error: std::io::Error| ServerError::Internal(format!("backend image copy: {error}"));
        let file = inner.disk.open(&path, true).map_err(io)?;
        // Made first, so that a failed copy removes its file.
        let mut copy = ImageCopy {
            disk: inner.disk.clone(),
            path,
            file,
            len: 0,
            index: 0,
            started: Instant::now(),
            metrics: inner.metrics.clone(),
            timed: true,
        };
        let _batch = inner
            .batch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut state = self.lock();
        copy.len = state
            .kv
            .backend
            .copy_image(copy.file.as_ref())
            .map_err(backend_error)?;
        copy.index = state.kv.backend.consistent_index().map_err(backend_error)?;
        Ok(copy)
    }

    /// A copy of the backend in etcd 3.4's format (a bbolt file, see `etcd_image`), for
    /// the Maintenance snapshot: made from a copy of this backend, so the store is locked
    /// only while that is taken.
    pub(crate) fn copy_etcd_image(&self) -> Result<ImageCopy, ServerError> {
        let mut native = self.copy_image()?;
        native.timed = false;
        let inner = &self.inner;
        let nonce = inner.image_copies.fetch_add(1, Ordering::Relaxed);
        let dir = inner.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(format!("copy-{nonce}.etcd.snap.db.tmp"));
        let io = |error: std::io::Error| ServerError::Internal(format!("etcd image: {error}"));
        let file = inner.disk.open(&path, true).map_err(io)?;
        let mut copy = ImageCopy {
            disk: inner.disk.clone(),
            path,
            file,
            len: 0,
            index: native.index,
            started: native.started,
            metrics: inner.metrics.clone(),
            timed: true,
        };
        let backend = Db::open_with_cache(inner.disk.clone(), &native.path, Some(COPY_CACHE_BYTES))
            .map_err(backend_error)?;
        let sink = FileSink {
            file: copy.file.as_ref(),
            position: 0,
        };
        let written = super::etcd_image::write(&backend, sink)
            .map_err(|error| ServerError::Internal(format!("etcd image: {error}")))?;
        copy.len = written.position;
        Ok(copy)
    }

    pub(crate) fn new_watch_stream(&self) -> WatchStream {
        let hub = self.lock().kv.hub.clone();
        hub.new_stream(Arc::new(self.clone()))
    }

    pub(crate) fn fill_prev_kvs(&self, events: &mut [Event]) {
        self.lock().kv.fill_prev_kvs(events);
    }
}

impl History for Store {
    fn with_store(&self, visit: &mut dyn FnMut(&KvStore)) {
        let state = self.lock();
        visit(&state.kv);
    }
}

/// The store's scan as etcd's Range semantics take it, with the current revision.
fn to_scan(scan: RangeScan, revision: i64) -> Scan {
    Scan {
        kvs: scan.kvs,
        count: scan.count,
        revision,
    }
}

struct ReadView<'a> {
    kv: &'a KvStore,
}

impl KvView for ReadView<'_> {
    fn scan(
        &mut self,
        key: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<Scan, ServerError> {
        let scan = self.kv.range(key, end, revision, limit, count_only)?;
        Ok(to_scan(scan, self.kv.revision))
    }
}

/// A write transaction with the lessor beside it.
struct ApplyTxn<'a> {
    txn: WriteTxn<'a>,
    lessor: &'a mut Lessor,
    read_only: bool,
    /// Operations so far, for etcd's mvcc counters.
    ranges: u64,
    puts: u64,
    deletes: u64,
}

impl<'a> ApplyTxn<'a> {
    fn new(txn: WriteTxn<'a>, lessor: &'a mut Lessor, read_only: bool) -> Self {
        ApplyTxn {
            txn,
            lessor,
            read_only,
            ranges: 0,
            puts: 0,
            deletes: 0,
        }
    }

    /// Counts the transaction's operations, as etcd does when one ends.
    fn record(&self, metrics: &Metrics) {
        metrics.mvcc_txn_ended(self.ranges, self.puts, self.deletes);
    }
}

impl KvView for ApplyTxn<'_> {
    fn scan(
        &mut self,
        key: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
        count_only: bool,
    ) -> Result<Scan, ServerError> {
        self.ranges += 1;
        let scan = self.txn.range(key, end, revision, limit, count_only)?;
        Ok(to_scan(scan, self.visible_revision()))
    }
}

impl KvWrite for ApplyTxn<'_> {
    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<Option<KeyValue>, ServerError> {
        if self.read_only {
            return Err(ServerError::Internal(
                "a write in a read-only transaction".into(),
            ));
        }
        self.puts += 1;
        let previous = self.txn.put(key.clone(), value, lease)?;
        if let Some(previous) = &previous {
            if previous.lease != 0 && previous.lease != lease {
                self.lessor.detach(previous.lease, &key);
            }
        }
        if lease != 0 {
            self.lessor.attach(lease, key);
        }
        Ok(previous)
    }

    fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, ServerError> {
        if self.read_only {
            return Err(ServerError::Internal(
                "a write in a read-only transaction".into(),
            ));
        }
        self.deletes += 1;
        let deleted = self.txn.delete_range(key, end)?;
        for kv in &deleted {
            if kv.lease != 0 {
                self.lessor.detach(kv.lease, &kv.key);
            }
        }
        Ok(deleted)
    }

    fn lease_exists(&self, lease: i64) -> bool {
        self.lessor.exists(lease)
    }

    fn compact_revision(&self) -> i64 {
        self.txn.store.compact_revision
    }

    fn current_revision(&self) -> i64 {
        self.txn.current_revision()
    }

    fn visible_revision(&self) -> i64 {
        self.txn.current_revision() + i64::from(self.txn.has_changes())
    }
}

/// redb's page cache while a backend copy is read through once (into etcd's format).
const COPY_CACHE_BYTES: usize = 16 << 20;

/// `Write` and `Seek` over a disk file, for writers that stream (the bbolt writer).
struct FileSink<'a> {
    file: &'a dyn crate::io::DiskFile,
    position: u64,
}

impl std::io::Write for FileSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file.write_at(self.position, bytes)?;
        self.position += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for FileSink<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(at) => Some(at),
            std::io::SeekFrom::End(delta) => self.file.len()?.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}
