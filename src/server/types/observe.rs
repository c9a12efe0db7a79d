//! Hooks through which the simulator watches every member's Raft core and applier.
//!
//! Only in simulation builds (`--cfg madsim`): there all members of a simulated world run
//! on one thread, so one observer sees the whole cluster and can check invariants across
//! members (one leader per term, the same entry at every committed index, the same revision
//! after applying it). The observer is per thread, so that worlds simulated side by side
//! (parallel tests) do not see each other. Production builds have no observer.

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
    /// The applier applied the entry at `index` to the store, which is now at `revision`.
    Applied { index: u64, revision: i64 },
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
