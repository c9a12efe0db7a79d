//! The simulator's hand at the moments a member reports (`oxcd::server::observe::Point`).
//!
//! Two things happen there:
//!
//! - **Crashes at the moments that matter.** The nemesis arms one point of one member
//!   (right after it sent a vote, between a WAL append and its acknowledgements, halfway
//!   through receiving or installing a snapshot, in the middle of an apply batch...), to
//!   fire on the n-th time the member reaches it. When it fires, the member's disk loses
//!   what was not synced and refuses every later call, and its node is killed, all inside
//!   the call: nothing the member does after that moment reaches the disk or the network.
//!   The nemesis restarts it a little later. A random crash lands at these instants only
//!   by luck; an armed one lands there every time it fires.
//! - **Delays ("buggify", after FoundationDB).** A run may enable some delay points, each
//!   with a chance that one pass through it waits a while (mostly milliseconds, sometimes
//!   beyond an election timeout). Interleavings that real machines produce rarely — an
//!   apply batch late behind its commit, a ReadIndex round that starts late, a snapshot
//!   stream that stalls, an expiry check that runs late, acknowledgements and votes held
//!   back after their sync — then come up in a normal sweep.
//!
//! Everything is drawn from madsim's seeded RNG, so a seed replays its crashes and delays.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use oxcd::io::SimDisk;
use oxcd::server::observe::{Point, Points};

/// The points where an armed crash may fire.
pub const CRASH_POINTS: [Point; 10] = [
    Point::VoteSent,
    Point::HardStateSaved,
    Point::EntriesSaved,
    Point::SnapshotChunkReceived,
    Point::SnapshotImageSaved,
    Point::SnapshotRecorded,
    Point::SnapshotRestored,
    Point::SnapshotTaken,
    Point::ApplyMidBatch,
    Point::BackendCommitted,
];

/// The points where a run may delay its members.
pub const DELAY_POINTS: [Point; 5] = [
    Point::ApplyBatch,
    Point::ReadIndexRound,
    Point::SnapshotSend,
    Point::LeaseExpiryCheck,
    Point::PersistedUnsent,
];

/// Points passed far more often than the others (every Raft ready that synced something),
/// whose chance per pass is a tenth of the others', so that a run still sees a few dozen
/// delays there rather than a member that is always late.
const HOT_DELAY_POINTS: [Point; 1] = [Point::PersistedUnsent];

/// A crash waiting at one point of one member.
struct Armed {
    member: u64,
    point: Point,
    /// Passes through the point to let go by before the crash.
    skip: u32,
    node: NodeId,
    disk: Arc<SimDisk>,
}

#[derive(Default)]
struct State {
    armed: Option<Armed>,
    /// The armed crash that fired and has not been collected by the nemesis.
    fired: Option<(u64, Point)>,
    /// Delay point → the chance one pass through it is delayed.
    delays: BTreeMap<Point, f64>,
    /// Passes delayed, by point.
    delayed: BTreeMap<Point, u64>,
}

/// The run's crash and delay points, installed with `observe::set_points`.
#[derive(Default)]
pub struct FaultPoints {
    state: Mutex<State>,
}

impl FaultPoints {
    /// Points whose passes are delayed with the given chances.
    pub fn with_delays(delays: BTreeMap<Point, f64>) -> FaultPoints {
        FaultPoints {
            state: Mutex::new(State {
                delays,
                ..State::default()
            }),
        }
    }

    /// Draws which delay points a run enables: none in half the runs; otherwise each with
    /// probability one half, at a chance per pass between 1% and 5% (more, and a member
    /// whose applier is delayed falls seconds behind for the whole run; a tenth of that at
    /// the hot points).
    pub fn delays_from_rng(rng: &mut impl Rng) -> BTreeMap<Point, f64> {
        let mut delays = BTreeMap::new();
        if rng.gen_bool(0.5) {
            for point in DELAY_POINTS {
                if rng.gen_bool(0.5) {
                    let chance = rng.gen_range(0.01..0.05);
                    let scale = if HOT_DELAY_POINTS.contains(&point) {
                        0.1
                    } else {
                        1.0
                    };
                    delays.insert(point, chance * scale);
                }
            }
        }
        delays
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms a crash of `member` (Raft id; its node and disk given) at the `skip + 1`-th
    /// pass through `point`, replacing any crash still armed.
    pub fn arm(&self, member: u64, point: Point, skip: u32, node: NodeId, disk: Arc<SimDisk>) {
        let mut state = self.lock();
        state.fired = None;
        state.armed = Some(Armed {
            member,
            point,
            skip,
            node,
            disk,
        });
    }

    /// Disarms the crash, if it has not fired.
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// The armed crash, once it has fired: the member and the point. Collecting it clears
    /// it.
    pub fn take_fired(&self) -> Option<(u64, Point)> {
        self.lock().fired.take()
    }

    /// Whether the armed crash fired (without collecting it).
    pub fn has_fired(&self) -> bool {
        self.lock().fired.is_some()
    }

    /// Passes delayed so far, by point.
    pub fn delayed(&self) -> BTreeMap<Point, u64> {
        self.lock().delayed.clone()
    }
}

impl Points for FaultPoints {
    fn crash_point(&self, member: u64, point: Point) {
        let armed = {
            let mut state = self.lock();
            match &mut state.armed {
                Some(armed) if armed.member == member && armed.point == point => {
                    if armed.skip > 0 {
                        armed.skip -= 1;
                        return;
                    }
                }
                _ => return,
            }
            state.fired = Some((member, point));
            state.armed.take()
        };
        let Some(armed) = armed else { return };
        tracing::info!(member = %format!("{member:x}"), ?point, "crashing the member at a point");
        armed.disk.power_off();
        Handle::current().kill(armed.node);
    }

    fn delay(&self, _member: u64, point: Point) -> Option<Duration> {
        let mut state = self.lock();
        let chance = *state.delays.get(&point)?;
        let mut rng = thread_rng();
        if !rng.gen_bool(chance) {
            return None;
        }
        *state.delayed.entry(point).or_default() += 1;
        let millis = if rng.gen_bool(0.1) {
            rng.gen_range(100..1_500)
        } else {
            rng.gen_range(1..100)
        };
        Some(Duration::from_millis(millis))
    }
}
