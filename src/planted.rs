//! Bugs planted on purpose, to show that the simulator and its checkers catch them.
//!
//! Each bug is a one-line departure from a rule the correctness of oxcd rests on. They are
//! compiled in only with the `planted-bugs` cargo feature (the simulator's detection tests
//! turn it on); without it [`active`] is a constant `false` and every planted branch is
//! removed by the compiler. With the feature, at most one bug is active at a time, chosen at
//! run time by [`activate`], so that one build serves every detection test.

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// A linearizable read is served from the local store without a ReadIndex round: a
    /// follower (or a deposed leader) answers with stale data.
    StaleRead = 1,
    /// The WAL acknowledges appends without fdatasync: an acknowledged write (or a vote) is
    /// lost when the power goes.
    SkipFsync = 2,
    /// The leader commits an entry of an earlier term by counting replicas (Raft §5.4.2,
    /// Figure 8): a later leader may overwrite it.
    CommitOldTerm = 3,
    /// A vote (and a pre-vote) is granted without checking that the candidate's log is at
    /// least as up to date: a leader may be elected without committed entries.
    VoteWithoutLogCheck = 4,
    /// A keep-alive renews a lease already past its deadline: the revocation on its way
    /// through Raft then cuts short the TTL the client was just promised.
    RenewExpiredLease = 5,
    /// A sorted range takes its limit from the store's key order before sorting: it answers
    /// with the first keys by key, sorted, instead of the first keys in the order asked for.
    LimitBeforeSort = 6,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::StaleRead,
        Bug::SkipFsync,
        Bug::CommitOldTerm,
        Bug::VoteWithoutLogCheck,
        Bug::RenewExpiredLease,
        Bug::LimitBeforeSort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::StaleRead => "stale-read",
            Bug::SkipFsync => "skip-fsync",
            Bug::CommitOldTerm => "commit-old-term",
            Bug::VoteWithoutLogCheck => "vote-without-log-check",
            Bug::RenewExpiredLease => "renew-expired-lease",
            Bug::LimitBeforeSort => "limit-before-sort",
        }
    }
}

#[cfg(feature = "planted-bugs")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes `bug` the active planted bug (`None`: no bug).
#[cfg(feature = "planted-bugs")]
pub fn activate(bug: Option<Bug>) {
    ACTIVE.store(
        bug.map_or(0, |bug| bug as u8),
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// Whether `bug` is planted and active.
#[inline]
pub fn active(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == bug as u8
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}
