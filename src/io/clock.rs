//! The clock seam: the time a member measures its lease deadlines and its Raft ticks by.
//!
//! Two implementations sit behind [`Clock`]:
//!
//! - [`SystemClock`]: the runtime's monotonic clock (`tokio::time`), as etcd uses the
//!   monotonic clock. Wall-clock steps (NTP, an operator's `date`) do not move it.
//! - [`SimClock`]: the runtime's clock seen through a rate and an offset that a test moves.
//!   madsim has one virtual clock for every node; a `SimClock` per member gives each its
//!   own, running fast or slow and jumping forward, as a machine's clock can (a suspended
//!   VM, a drifting oscillator).
//!
//! Only what a member *measures* goes through its clock: lease deadlines, the Raft tick and
//! the lessor's expiry checks. Timeouts that bound how long a client waits stay on the
//! runtime's clock, since the client measures them with its own.
//!
//! A monotonic clock never runs backwards, so a [`SimClock`] jumps forward only and its rate
//! is always positive.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A member's monotonic clock. Object safe, shared as `Arc<dyn Clock>`.
pub trait Clock: Send + Sync + Debug {
    /// The current time on this clock.
    fn now(&self) -> Instant;

    /// How long to wait, on the runtime's clock, for `duration` to pass on this one.
    fn wait_for(&self, duration: Duration) -> Duration;
}

/// The runtime's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait_for(&self, duration: Duration) -> Duration {
        duration
    }
}

/// A clock that runs at `rate` times the runtime's speed and has jumped forward by the sum
/// of its jumps.
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<SimClockState>,
}

#[derive(Debug, Clone, Copy)]
struct SimClockState {
    /// The runtime's time when the rate last changed...
    base_runtime: Instant,
    /// ...and this clock's reading then.
    base_local: Instant,
    rate: f64,
}

/// The slowest and fastest rates a [`SimClock`] accepts: far beyond any real oscillator,
/// and within what keeps `Duration` arithmetic finite.
pub const SIM_RATE_MIN: f64 = 0.01;
pub const SIM_RATE_MAX: f64 = 100.0;

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    /// A clock that reads what the runtime's clock reads, at the same rate.
    pub fn new() -> SimClock {
        let now = Instant::now();
        SimClock {
            state: Mutex::new(SimClockState {
                base_runtime: now,
                base_local: now,
                rate: 1.0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimClockState> {
        // The state is two instants and a number, valid after any panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// From now on the clock runs at `rate` times the runtime's speed (clamped to
    /// [`SIM_RATE_MIN`]..=[`SIM_RATE_MAX`]). Its reading does not jump.
    pub fn set_rate(&self, rate: f64) {
        self.set_rate_at(rate, Instant::now());
    }

    fn set_rate_at(&self, rate: f64, runtime: Instant) {
        let mut state = self.lock();
        state.base_local = local_at(&state, runtime);
        state.base_runtime = runtime;
        state.rate = rate.clamp(SIM_RATE_MIN, SIM_RATE_MAX);
    }

    /// The rate it runs at.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// What the clock reads when the runtime's clock reads `runtime`.
    fn read_at(&self, runtime: Instant) -> Instant {
        local_at(&self.lock(), runtime)
    }

    /// Moves the clock forward by `by` at once.
    pub fn jump(&self, by: Duration) {
        let mut state = self.lock();
        state.base_local += by;
    }
}

fn local_at(state: &SimClockState, runtime: Instant) -> Instant {
    let elapsed = runtime.saturating_duration_since(state.base_runtime);
    state.base_local + elapsed.mul_f64(state.rate)
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.read_at(Instant::now())
    }

    fn wait_for(&self, duration: Duration) -> Duration {
        duration.div_f64(self.lock().rate)
    }
}

/// Fires every `period` of `clock`'s time; a late tick delays the ones after it rather
/// than bunching them up (as `tokio::time::MissedTickBehavior::Delay`). The period is
/// converted at every tick, so a change of the clock's rate takes effect at the next one.
pub struct Ticker {
    clock: std::sync::Arc<dyn Clock>,
    period: Duration,
    /// One timer, reset at every tick: a loop that polls the ticker thousands of times a
    /// second between ticks registers no new timer each time.
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Ticker {
    /// A ticker whose first tick is one period from now.
    pub fn new(clock: std::sync::Arc<dyn Clock>, period: Duration) -> Ticker {
        let first = Instant::now() + clock.wait_for(period);
        Ticker {
            clock,
            period,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Waits for the next tick. Cancel safe: a tick not yet reached stays due.
    pub async fn tick(&mut self) {
        self.sleep.as_mut().await;
        let next = Instant::now() + self.clock.wait_for(self.period);
        self.sleep.as_mut().reset(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sim_clock_runs_at_its_rate_and_jumps_forward() {
        let clock = SimClock::new();
        let origin = clock.lock().base_runtime;
        let start = clock.read_at(origin);
        let at = |secs: u64| origin + Duration::from_secs(secs);
        assert_eq!(clock.read_at(at(1)) - start, Duration::from_secs(1));

        clock.set_rate_at(2.0, at(1));
        assert_eq!(clock.read_at(at(2)) - start, Duration::from_secs(3));
        assert_eq!(
            clock.wait_for(Duration::from_secs(4)),
            Duration::from_secs(2)
        );

        clock.jump(Duration::from_secs(10));
        assert_eq!(clock.read_at(at(2)) - start, Duration::from_secs(13));

        clock.set_rate_at(0.5, at(2));
        assert_eq!(clock.read_at(at(4)) - start, Duration::from_secs(14));

        clock.set_rate_at(0.0, at(4));
        assert_eq!(clock.rate(), SIM_RATE_MIN, "a monotonic clock never stops");
        assert!(clock.read_at(at(5)) > clock.read_at(at(4)));
    }
}
