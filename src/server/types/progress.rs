//! A number that only grows, and tasks waiting for it to reach a value.
//!
//! The member's applied index and its stop flag are such numbers. `tokio::sync::watch`
//! would do, but it spreads its waiters over randomly chosen shards, drawn from a
//! process-wide counter, so two runs of one simulator seed in the same process would wake
//! tasks in different orders. Here waiters are woken in the order they started waiting.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

pub(crate) struct Progress {
    value: AtomicU64,
    changed: Notify,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new(0)
    }
}

impl Progress {
    pub(crate) fn new(value: u64) -> Progress {
        Progress {
            value: AtomicU64::new(value),
            changed: Notify::new(),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Raises the value to `value` (a lower value changes nothing) and wakes the waiters.
    pub(crate) fn advance(&self, value: u64) {
        if self.value.fetch_max(value, Ordering::AcqRel) < value {
            self.changed.notify_waiters();
        }
    }

    /// Returns once the value is at least `target`.
    pub(crate) async fn reached(&self, target: u64) {
        loop {
            // Registered before the check: an `advance` between the check and the await
            // still wakes this waiter.
            let changed = self.changed.notified();
            if self.get() >= target {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_wake_when_the_value_reaches_their_target() {
        let progress = Arc::new(Progress::new(3));
        progress.reached(2).await;
        let waiter = {
            let progress = progress.clone();
            tokio::spawn(async move { progress.reached(5).await })
        };
        progress.advance(4);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        progress.advance(1);
        assert_eq!(progress.get(), 4, "the value never goes back");
        progress.advance(5);
        waiter.await.unwrap();
    }
}
