//! A limit on password guessing, which etcd does not have: after
//! [`FREE_FAILURES`] wrong passwords in a row for one user, that user's logins are refused
//! for a while — 1 s after the next failure, doubling with each further one up to
//! [`MAX_LOCKOUT`] — without a bcrypt round, and with the same answer as a wrong password
//! (a guesser learns nothing). A correct password outside a lockout resets the count.
//!
//! The count is per member and in memory: a guesser spreading attempts over members gets
//! each member's allowance, and a restart forgets. Only users that exist are counted, so
//! guessing names costs no memory. The trade-off: someone who keeps failing can keep a user
//! locked out, one window at a time, on the members they reach.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wrong passwords in a row that cost nothing but the bcrypt round.
pub const FREE_FAILURES: u32 = 5;
/// The lockout after the first failure past the free ones.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Failures {
    in_a_row: u32,
    locked_until: Option<Instant>,
}

/// Failed logins per user.
#[derive(Debug, Default)]
pub struct FailedLogins {
    users: HashMap<String, Failures>,
}

impl FailedLogins {
    /// Whether `user` may try a password now; `Err` with the time left when it is locked.
    pub fn check(&self, user: &str, now: Instant) -> Result<(), Duration> {
        match self
            .users
            .get(user)
            .and_then(|failures| failures.locked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong password for `user`; answers the lockout it starts, if any.
    pub fn failed(&mut self, user: &str, now: Instant) -> Option<Duration> {
        let failures = self.users.entry(user.to_string()).or_default();
        failures.in_a_row = failures.in_a_row.saturating_add(1);
        let past_free = failures.in_a_row.checked_sub(FREE_FAILURES + 1)?;
        let lockout = FIRST_LOCKOUT
            .checked_mul(1u32.checked_shl(past_free).unwrap_or(u32::MAX))
            .unwrap_or(MAX_LOCKOUT)
            .min(MAX_LOCKOUT);
        failures.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// A correct password for `user`: the count starts again.
    pub fn succeeded(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Forgets `user` (deleted).
    pub fn forget(&mut self, user: &str) {
        self.users.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        let start = Instant::now();
        let mut logins = FailedLogins::default();
        for _ in 0..FREE_FAILURES {
            assert_eq!(logins.failed("alice", start), None);
            assert_eq!(logins.check("alice", start), Ok(()));
        }
        assert_eq!(logins.failed("alice", start), Some(FIRST_LOCKOUT));
        assert_eq!(logins.check("alice", start), Err(FIRST_LOCKOUT));
        // Other users are not affected.
        assert_eq!(logins.check("bob", start), Ok(()));
        let later = start + FIRST_LOCKOUT;
        assert_eq!(logins.check("alice", later), Ok(()));
        assert_eq!(logins.failed("alice", later), Some(FIRST_LOCKOUT * 2));
        assert_eq!(logins.failed("alice", later), Some(FIRST_LOCKOUT * 4));
        for _ in 0..100 {
            logins.failed("alice", later);
        }
        assert_eq!(logins.check("alice", later), Err(MAX_LOCKOUT));
        logins.succeeded("alice");
        assert_eq!(logins.check("alice", later), Ok(()));
        assert_eq!(logins.failed("alice", later), None);
    }
}
