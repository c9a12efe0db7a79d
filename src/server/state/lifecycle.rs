//! Whether the member is running, and why it stopped.

use std::sync::Mutex;

use crate::server::types::progress::Progress;

#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Moves from 0 to 1 once, when the member starts stopping; every task waits on it.
    stopping: Progress,
    /// What made the member stop, when it stopped because of a failure.
    reason: Mutex<Option<String>>,
}

impl Lifecycle {
    /// Returns once the member starts stopping.
    pub(crate) async fn stopped(&self) {
        self.stopping.reached(1).await
    }

    /// Whether the member has started stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get() >= 1
    }

    pub(crate) fn stop(&self) {
        self.stopping.advance(1);
    }

    /// Stops the member because something it cannot recover from happened. The first
    /// reason given is the one kept.
    pub(crate) fn stop_with_error(&self, reason: String) {
        self.reason
            .lock()
            .expect("stop reason lock poisoned")
            .get_or_insert(reason);
        self.stop();
    }

    pub(crate) fn stop_reason(&self) -> Option<String> {
        self.reason
            .lock()
            .expect("stop reason lock poisoned")
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_the_reason() {
        let lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.stop_reason(), None);
        lifecycle.stop_with_error("disk".into());
        lifecycle.stop_with_error("network".into());
        assert_eq!(lifecycle.stopping.get(), 1);
        assert_eq!(lifecycle.stop_reason().as_deref(), Some("disk"));
    }

    #[test]
    fn a_clean_stop_has_no_reason() {
        let lifecycle = Lifecycle::default();
        lifecycle.stop();
        assert_eq!(lifecycle.stopping.get(), 1);
        assert_eq!(lifecycle.stop_reason(), None);
    }
}
