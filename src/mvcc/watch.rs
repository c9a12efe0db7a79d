//! The watch hub: delivers every change to the watchers whose range it touches, in
//! revision order, exactly once.
//!
//! Each gRPC watch stream owns one [`WatchStream`] (the receiving end) and hands
//! [`WatchController`]s to the code that creates and cancels its watchers. A watcher is
//! either *synced* — it has seen everything up to the current revision, and live changes
//! are pushed to it as they are applied — or *unsynced*: it starts in the past, or the
//! stream's bounded queue was full when a change arrived. An unsynced watcher remembers the
//! next revision it needs; the stream catches it up from the backend's history while holding
//! the store lock (so no change slips in between), then marks it synced again. A slow client
//! therefore costs bounded memory and loses or repeats nothing.
//!
//! A new watcher is *held* until the server has sent its "created" response, so that no
//! event can overtake that response.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::{in_range, KvStore};
use crate::proto::mvccpb::{event::EventType, Event};

/// Updates queued per stream before its watchers fall back to catching up from history.
/// Simulation builds queue only a few, so that watchers fall behind and catch up from
/// history often (with a thousand, a simulated run never fills a queue).
#[cfg(not(madsim))]
const STREAM_QUEUE_MAX: usize = 1024;
#[cfg(madsim)]
const STREAM_QUEUE_MAX: usize = 4;
/// The watch id of a stream-wide progress notification (etcd uses -1).
pub const NO_WATCH_ID: i64 = -1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchFilters {
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchFilters {
    fn keeps(&self, event: &Event) -> bool {
        let is_put = event.r#type == EventType::Put as i32;
        !((is_put && self.no_put) || (!is_put && self.no_delete))
    }
}

/// What a stream delivers: events for one watcher (or a progress notification when
/// `events` is empty), or its cancellation because history it needs was compacted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchUpdate {
    pub watch_id: i64,
    pub events: Vec<Event>,
    /// The store revision the update is current as of.
    pub revision: i64,
    /// Non-zero: the watcher is canceled; it needed history compacted away at this revision.
    pub compact_revision: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("the watch stream is closed")]
    Closed,
}

/// The hub's numbers at one moment (etcd's watch metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WatchCounts {
    pub streams: usize,
    pub watchers: usize,
    /// Watchers that fell behind and catch up from history.
    pub slow: usize,
}

/// Access to the store for catching up, with the store lock held.
pub trait History: Send + Sync {
    fn with_store(&self, visit: &mut dyn FnMut(&KvStore));
}

struct Watcher {
    key: Bytes,
    end: Bytes,
    filters: WatchFilters,
    synced: bool,
    held: bool,
    /// When unsynced: the first revision not yet delivered.
    next_revision: i64,
}

#[derive(Default)]
struct StreamState {
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    closed: bool,
}

struct Shared {
    id: u64,
    state: Mutex<StreamState>,
    queue: mpsc::Sender<WatchUpdate>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().expect("watch stream lock poisoned")
    }
}

#[derive(Default)]
pub struct WatchHub {
    /// Ordered, so that deliveries across streams happen in one order on every run.
    streams: Mutex<BTreeMap<u64, Arc<Shared>>>,
    next_stream: AtomicU64,
    revision: AtomicI64,
}

impl WatchHub {
    fn streams(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Shared>>> {
        self.streams.lock().expect("watch hub lock poisoned")
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.store(revision, Ordering::SeqCst);
    }

    /// The store was replaced by a snapshot at `revision`: every synced watcher has seen
    /// everything up to the old revision and now catches up from the new store's history
    /// (or is canceled if that history is compacted past it).
    pub fn restore(&self, revision: i64) {
        let seen = self.revision.load(Ordering::SeqCst);
        for shared in self.streams().values() {
            let mut state = shared.lock();
            for watcher in state.watchers.values_mut() {
                if watcher.synced {
                    watcher.synced = false;
                    watcher.next_revision = watcher.next_revision.max(seen + 1);
                }
            }
            drop(state);
            shared.wake.notify_one();
        }
        self.set_revision(revision);
    }

    pub fn new_stream(self: &Arc<Self>, history: Arc<dyn History>) -> WatchStream {
        let (queue, receiver) = mpsc::channel(STREAM_QUEUE_MAX);
        let shared = Arc::new(Shared {
            id: self.next_stream.fetch_add(1, Ordering::SeqCst),
            state: Mutex::new(StreamState {
                next_id: 0,
                ..Default::default()
            }),
            queue,
            wake: Notify::new(),
        });
        self.streams().insert(shared.id, shared.clone());
        WatchStream {
            controller: WatchController {
                shared,
                hub: self.clone(),
            },
            receiver,
            caught_up: VecDeque::new(),
            history,
        }
    }

    /// How many streams and watchers there are, and how many of the watchers are
    /// unsynced (slow: catching up from history rather than fed by the hub).
    pub fn counts(&self) -> WatchCounts {
        let streams: Vec<Arc<Shared>> = self.streams().values().cloned().collect();
        let mut counts = WatchCounts {
            streams: streams.len(),
            ..WatchCounts::default()
        };
        for shared in streams {
            let state = shared.lock();
            counts.watchers += state.watchers.len();
            counts.slow += state.watchers.values().filter(|w| !w.synced).count();
        }
        counts
    }

    /// A write transaction ended at `revision` with `events`. Called with the store lock
    /// held, so notifications go out in revision order.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        self.set_revision(revision);
        let streams: Vec<Arc<Shared>> = self.streams().values().cloned().collect();
        for shared in streams {
            let mut state = shared.lock();
            let mut fell_behind = false;
            for (&id, watcher) in state.watchers.iter_mut() {
                // A watcher from a future revision is synced but waits for its revision.
                if !watcher.synced || watcher.held || revision < watcher.next_revision {
                    continue;
                }
                let matching: Vec<Event> = events
                    .iter()
                    .filter(|event| {
                        event
                            .kv
                            .as_ref()
                            .is_some_and(|kv| in_range(&kv.key, &watcher.key, &watcher.end))
                            && watcher.filters.keeps(event)
                    })
                    .cloned()
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                let update = WatchUpdate {
                    watch_id: id,
                    events: matching,
                    revision,
                    compact_revision: 0,
                };
                if shared.queue.try_send(update).is_err() {
                    // The client is slow: catch this watcher up from history later.
                    watcher.synced = false;
                    watcher.next_revision = revision;
                    fell_behind = true;
                }
            }
            drop(state);
            if fell_behind {
                shared.wake.notify_one();
            }
        }
    }
}

/// Creates, cancels and asks for progress on the watchers of one stream.
#[derive(Clone)]
pub struct WatchController {
    shared: Arc<Shared>,
    hub: Arc<WatchHub>,
}

impl WatchController {
    /// Adds a watcher of `[key, end)` from `start_revision`; it stays held until
    /// [`WatchController::release`]. Returns its id.
    pub fn watch(
        &self,
        requested_id: Option<i64>,
        key: Bytes,
        end: Bytes,
        start_revision: i64,
        filters: WatchFilters,
    ) -> Result<i64, WatchError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(WatchError::Closed);
        }
        let id = match requested_id {
            Some(id) if state.watchers.contains_key(&id) => return Err(WatchError::DuplicateId),
            Some(id) => id,
            None => {
                while state.watchers.contains_key(&state.next_id) {
                    state.next_id += 1;
                }
                state.next_id
            }
        };
        if requested_id.is_none() {
            state.next_id += 1;
        }
        state.watchers.insert(
            id,
            Watcher {
                key,
                end,
                filters,
                synced: false,
                held: true,
                next_revision: start_revision.max(1),
            },
        );
        Ok(id)
    }

    /// The "created" response is out: the watcher may receive events.
    pub fn release(&self, id: i64) {
        if let Some(watcher) = self.shared.lock().watchers.get_mut(&id) {
            watcher.held = false;
        }
        self.shared.wake.notify_one();
    }

    pub fn cancel(&self, id: i64) -> bool {
        self.shared.lock().watchers.remove(&id).is_some()
    }

    /// A progress request for the whole stream: answered when every watcher is synced.
    pub fn request_progress(&self) {
        let state = self.shared.lock();
        if state.watchers.values().all(|w| w.synced) {
            let _ = self.shared.queue.try_send(WatchUpdate {
                watch_id: NO_WATCH_ID,
                revision: self.hub.revision.load(Ordering::SeqCst),
                ..Default::default()
            });
        }
    }

    /// Periodic progress for the listed watchers that are synced.
    pub fn notify_progress(&self, ids: &[i64]) {
        let state = self.shared.lock();
        let revision = self.hub.revision.load(Ordering::SeqCst);
        for id in ids {
            if state.watchers.get(id).is_some_and(|w| w.synced && !w.held) {
                let _ = self.shared.queue.try_send(WatchUpdate {
                    watch_id: *id,
                    revision,
                    ..Default::default()
                });
            }
        }
    }

    /// The client went away: drop every watcher of the stream.
    pub fn close(&self) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.watchers.clear();
        }
        self.hub.streams().remove(&self.shared.id);
        self.shared.wake.notify_one();
    }
}

/// The receiving end of one stream.
pub struct WatchStream {
    controller: WatchController,
    receiver: mpsc::Receiver<WatchUpdate>,
    caught_up: VecDeque<WatchUpdate>,
    history: Arc<dyn History>,
}

impl WatchStream {
    pub fn controller(&self) -> WatchController {
        self.controller.clone()
    }

    /// The next update; `None` once the stream is closed.
    pub async fn recv(&mut self) -> Option<WatchUpdate> {
        loop {
            if let Some(update) = self.caught_up.pop_front() {
                return Some(update);
            }
            if let Ok(update) = self.receiver.try_recv() {
                return Some(update);
            }
            if self.controller.shared.lock().closed {
                return None;
            }
            // The queue is empty: everything queued predates any catch-up done now.
            self.catch_up();
            if !self.caught_up.is_empty() {
                continue;
            }
            let shared = self.controller.shared.clone();
            tokio::select! {
                biased;
                update = self.receiver.recv() => return update,
                _ = shared.wake.notified() => {}
            }
        }
    }

    fn catch_up(&mut self) {
        let shared = self.controller.shared.clone();
        let caught_up = &mut self.caught_up;
        self.history.with_store(&mut |store: &KvStore| {
            let mut state = shared.lock();
            let mut canceled = Vec::new();
            for (&id, watcher) in state.watchers.iter_mut() {
                if watcher.synced || watcher.held {
                    continue;
                }
                if watcher.next_revision < store.compact_revision {
                    caught_up.push_back(WatchUpdate {
                        watch_id: id,
                        revision: store.revision,
                        compact_revision: store.compact_revision,
                        events: Vec::new(),
                    });
                    canceled.push(id);
                    continue;
                }
                if watcher.next_revision <= store.revision {
                    match store.history(
                        watcher.next_revision,
                        store.revision,
                        &watcher.key,
                        &watcher.end,
                    ) {
                        Ok(events) => {
                            let events: Vec<Event> = events
                                .into_iter()
                                .filter(|event| watcher.filters.keeps(event))
                                .collect();
                            if !events.is_empty() {
                                caught_up.push_back(WatchUpdate {
                                    watch_id: id,
                                    events,
                                    revision: store.revision,
                                    compact_revision: 0,
                                });
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, watch_id = id, "watch catch-up failed");
                            continue;
                        }
                    }
                }
                watcher.synced = true;
                // A start beyond the current revision (a member that lags the one the
                // client saw it on) stays the start: etcd delivers nothing before it.
                watcher.next_revision = watcher.next_revision.max(store.revision + 1);
            }
            for id in canceled {
                state.watchers.remove(&id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;
    use crate::mvcc::{Backend, KvStore};
    use std::path::Path;

    struct Locked(Mutex<KvStore>);

    impl History for Locked {
        fn with_store(&self, visit: &mut dyn FnMut(&KvStore)) {
            visit(&self.0.lock().unwrap());
        }
    }

    fn store() -> Arc<Locked> {
        let backend = Backend::open(Arc::new(SimDisk::new(3)), Path::new("/w/db")).unwrap();
        Arc::new(Locked(Mutex::new(KvStore::open(backend).unwrap())))
    }

    fn put(store: &Locked, key: &str, value: &str) {
        let mut kv = store.0.lock().unwrap();
        let mut txn = kv.write();
        txn.put(
            Bytes::from(key.to_string()),
            Bytes::from(value.to_string()),
            0,
        )
        .unwrap();
        txn.end();
    }

    /// A new stream with one watcher of key `k` from `start`, released; and its id.
    fn watch_k(store: &Arc<Locked>, start: i64) -> (WatchStream, i64) {
        let hub = store.0.lock().unwrap().hub.clone();
        let stream = hub.new_stream(store.clone());
        let control = stream.controller();
        let id = control
            .watch(
                None,
                Bytes::from_static(b"k"),
                Bytes::new(),
                start,
                WatchFilters::default(),
            )
            .unwrap();
        control.release(id);
        (stream, id)
    }

    fn revisions(updates: &[WatchUpdate]) -> Vec<i64> {
        updates
            .iter()
            .flat_map(|u| u.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision))
            .collect()
    }

    #[tokio::test]
    async fn a_slow_watcher_catches_up_without_gaps_or_duplicates() {
        let store = store();
        let (mut stream, _) = watch_k(&store, 2);
        // The first receive syncs the watcher (nothing to catch up yet), so the writes below
        // go through the live queue until it is full.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), stream.recv()).await;
        assert!(idle.is_err(), "nothing to deliver yet");
        // Far more changes than the queue holds, none received meanwhile.
        let writes = STREAM_QUEUE_MAX * 2 + 17;
        for i in 0..writes {
            put(&store, "k", &i.to_string());
        }
        let mut updates = Vec::new();
        while revisions(&updates).len() < writes {
            let update = tokio::time::timeout(std::time::Duration::from_secs(5), stream.recv())
                .await
                .expect("the stream delivers")
                .expect("the stream is open");
            updates.push(update);
        }
        let got = revisions(&updates);
        let want: Vec<i64> = (2..2 + writes as i64).collect();
        assert_eq!(got, want, "every revision once, in order");
    }

    #[tokio::test]
    async fn a_compacted_start_cancels_with_the_compact_revision() {
        let store = store();
        for i in 0..5 {
            put(&store, "k", &i.to_string());
        }
        store.0.lock().unwrap().compact(4).unwrap();
        let (mut stream, id) = watch_k(&store, 2);
        let update = stream.recv().await.unwrap();
        assert_eq!((update.watch_id, update.compact_revision), (id, 4));
        assert!(update.events.is_empty());
    }

    #[tokio::test]
    async fn filters_and_duplicate_ids() {
        let store = store();
        let hub = store.0.lock().unwrap().hub.clone();
        let mut stream = hub.new_stream(store.clone());
        let control = stream.controller();
        let filters = WatchFilters {
            no_put: true,
            no_delete: false,
        };
        let id = control
            .watch(
                Some(7),
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                2,
                filters,
            )
            .unwrap();
        assert_eq!(
            control.watch(
                Some(7),
                Bytes::new(),
                Bytes::new(),
                0,
                WatchFilters::default()
            ),
            Err(WatchError::DuplicateId)
        );
        control.release(id);
        put(&store, "a1", "x");
        {
            let mut kv = store.0.lock().unwrap();
            let mut txn = kv.write();
            txn.delete_range(b"a1", &[]).unwrap();
            txn.end();
        }
        let update = stream.recv().await.unwrap();
        assert_eq!(update.events.len(), 1);
        assert_eq!(update.events[0].r#type, EventType::Delete as i32);
    }

    /// A watch from a revision the store has not reached yet (the client saw it on a
    /// member ahead of this one) gets nothing before that revision.
    #[tokio::test]
    async fn a_future_start_delivers_nothing_before_it() {
        let store = store();
        put(&store, "k", "0");
        let (mut stream, _) = watch_k(&store, 5);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), stream.recv()).await;
        assert!(idle.is_err(), "nothing to deliver yet");
        for i in 1..=4 {
            put(&store, "k", &i.to_string());
        }
        let update = tokio::time::timeout(std::time::Duration::from_secs(5), stream.recv())
            .await
            .expect("the stream delivers")
            .expect("the stream is open");
        assert_eq!(
            revisions(&[update]),
            vec![5],
            "revisions 3 and 4 come before the start"
        );
    }
}
