//! Hooks through which the simulator watches every member's Raft core and applier.
//!
//! Only in simulation builds (`--cfg madsim`): there all members of a simulated world run
//! on one thread, so one observer sees the whole cluster and can check invariants across
//! members (one leader per term, the same entry at every committed index, the same revision
//! after applying it). The observer is per thread, so that worlds simulated side by side
//! (parallel tests) do not see each other. Production builds have no observer.
//!
//! The same hooks let the simulator act at chosen moments of a member's work (the
//! [`Point`]s): crash it there (power loss at the instant that matters: right after a vote,
//! between a WAL append and its acknowledgement, halfway through a snapshot install), or
//! delay it there (FoundationDB's "buggify": rare interleavings made common).

use std::cell::RefCell;
use std::sync::Arc;

/// What a member reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The member (re)started; what follows belongs to a new process life.
    Started,
    /// The member became leader of `term`.
    Leader { term: u64 },
    /// The Raft core handed out the committed entry at `index`, of `term`, whose data has
    /// CRC32C `digest`. Within one life, indexes arrive in order without gaps.
    Committed { index: u64, term: u64, digest: u32 },
    /// The member, leader of `term`, moved its commit index to `index`, an entry of
    /// `entry_term`.
    LeaderCommit {
        term: u64,
        index: u64,
        entry_term: u64,
    },
    /// The member installed a snapshot from the leader at `index`: committed entries
    /// continue after it.
    Snapshot { index: u64 },
    /// The member took a snapshot of its own at `index` and compacted its log behind it
    /// (keeping its catch-up entries): a follower whose log ends before what was kept can
    /// now catch up from this member, as leader, only with an image.
    SnapshotTaken { index: u64 },
    /// The applier applied the entry at `index` (of any type) to the store, which is now at
    /// `revision` and whose whole state (keys, leases, compaction) hashes to `digest`.
    Applied {
        index: u64,
        revision: i64,
        digest: u64,
    },
    /// The member's store was loaded from disk (at start, or from a leader's snapshot
    /// image) and holds the effects of every entry up to `index`: it must equal the state
    /// every member that applied `index` had.
    Loaded {
        index: u64,
        revision: i64,
        digest: u64,
    },
    /// The member sent a vote for `candidate` in `term` (not a pre-vote): it must never
    /// vote for another candidate in that term, however often it restarts.
    Voted { term: u64, candidate: u64 },
}

/// A moment in a member's work where the simulator may step in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    /// A granted vote was just handed to the transport (its hard state is synced).
    VoteSent,
    /// A hard state without entries (a new term, a vote, a commit index) was just synced.
    HardStateSaved,
    /// Entries were appended to the WAL and synced; their acknowledgements are not sent.
    EntriesSaved,
    /// A chunk of a leader's snapshot image was written, not yet synced.
    SnapshotChunkReceived,
    /// A leader's snapshot image is synced and renamed; the Raft core has not heard of it.
    SnapshotImageSaved,
    /// A received snapshot is recorded (snapshot file and WAL marker); the store still
    /// holds the old state.
    SnapshotRecorded,
    /// The store was replaced by a leader's image; nothing after it is committed yet.
    SnapshotRestored,
    /// A local snapshot was recorded; the WAL before it is not yet released.
    SnapshotTaken,
    /// Some entries of an apply batch are applied, the rest are not.
    ApplyMidBatch,
    /// The backend just committed applied entries.
    BackendCommitted,
    /// The applier is about to apply a batch (a delay point).
    ApplyBatch,
    /// A ReadIndex round is about to start (a delay point).
    ReadIndexRound,
    /// The leader is about to send a chunk of a snapshot image (a delay point).
    SnapshotSend,
    /// The lessor is about to look for expired leases (a delay point).
    LeaseExpiryCheck,
    /// The Raft task synced entries or a hard state, and has not yet sent the messages
    /// that wait for them (acknowledgements, votes; a delay point).
    PersistedUnsent,
}

/// What the simulator does at a [`Point`].
pub trait Points: Send + Sync {
    /// Called where a crash may happen. The simulator crashes the member inside this call
    /// (its disk keeps only what was synced and refuses every later write; its node is
    /// killed), so nothing the member does after it reaches the disk or the network.
    fn crash_point(&self, member: u64, point: Point);
    /// Called where a delay may happen: how long to wait there, if at all.
    fn delay(&self, member: u64, point: Point) -> Option<std::time::Duration>;
}

thread_local! {
    static POINTS: RefCell<Option<Arc<dyn Points>>> = const { RefCell::new(None) };
}

/// Installs `points` for every member simulated on this thread (`None` removes it).
pub fn set_points(points: Option<Arc<dyn Points>>) {
    POINTS.with(|slot| *slot.borrow_mut() = points);
}

/// A moment where the simulator may crash `member`.
pub fn crash_point(member: u64, point: Point) {
    let points = POINTS.with(|slot| slot.borrow().clone());
    if let Some(points) = points {
        points.crash_point(member, point);
    }
}

/// A moment where the simulator may delay `member`: waits as long as it says.
pub async fn delay_point(member: u64, point: Point) {
    let points = POINTS.with(|slot| slot.borrow().clone());
    if let Some(wait) = points.and_then(|points| points.delay(member, point)) {
        tokio::time::sleep(wait).await;
    }
}

pub trait Observer: Send + Sync {
    fn observe(&self, member: u64, observation: Observation);
}

thread_local! {
    static OBSERVER: RefCell<Option<Arc<dyn Observer>>> = const { RefCell::new(None) };
}

/// Installs `observer` for every member simulated on this thread (`None` removes it).
pub fn set_observer(observer: Option<Arc<dyn Observer>>) {
    OBSERVER.with(|slot| *slot.borrow_mut() = observer);
}

/// Reports `observation` of `member` to the installed observer, if any.
pub fn report(member: u64, observation: Observation) {
    let observer = OBSERVER.with(|slot| slot.borrow().clone());
    if let Some(observer) = observer {
        observer.observe(member, observation);
    }
}
