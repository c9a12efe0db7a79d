//! Lease expiry: the leader revokes leases whose deadline passed, through Raft, so every
//! member drops their keys at the same revision. Deadlines are measured on the member's
//! clock; a member that becomes leader restarts every deadline from now with the full TTL,
//! since it cannot know when the old leader last renewed them (etcd's promotion rule).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::io::Ticker;
use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::oxcdpb::internal_request::Request as Internal;
use crate::proto::oxcdpb::{v2_request::Method, V2Request};
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Revocations proposed per check at most (etcd revokes up to 1,000 leases a second).
const EXPIRED_REVOKES_PER_CHECK_MAX: usize = 500;

/// What the lessor does at a check, given the term it was taken over in (if this member
/// led at the last check) and the Raft status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Promote,
    Demote,
    Keep,
}

/// Leadership is judged by term, not by a flag: a member that lost leadership and won it
/// back between two checks (a leader transfer and back, a quick re-election) leads in a
/// new term, and the leases renewed by the leader in between must not expire by the
/// deadlines it kept from its earlier term.
fn transition(leading: Option<u64>, is_leader: bool, term: u64) -> Transition {
    match (leading, is_leader) {
        (Some(was), true) if was == term => Transition::Keep,
        (_, true) => Transition::Promote,
        (Some(_), false) => Transition::Demote,
        (None, false) => Transition::Keep,
    }
}

/// Revokes expired leases while this member leads. Runs until the member stops.
pub(crate) async fn run(server: Arc<Server>) {
    let mut ticker = Ticker::new(server.store.clock(), EXPIRY_CHECK_INTERVAL);
    // The term this member last took the lessor over in, while it still leads.
    let mut leading: Option<u64> = None;
    let v2_sync = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {}
            _ = server.lifecycle.stopped() => return,
        }
        let status = server.raft_status();
        match transition(leading, status.is_leader, status.term) {
            // A new leader cannot know how long ago the old one last renewed a lease, so
            // every deadline restarts from now with the full TTL (etcd's promotion rule).
            Transition::Promote => server.store.promote_lessor(),
            Transition::Demote => server.store.demote_lessor(),
            Transition::Keep => {}
        }
        leading = status.is_leader.then_some(status.term);
        if !status.is_leader {
            continue;
        }
        #[cfg(madsim)]
        crate::server::types::observe::delay_point(
            server.id,
            crate::server::types::observe::Point::LeaseExpiryCheck,
        )
        .await;
        let expired = server.store.expired_leases(EXPIRED_REVOKES_PER_CHECK_MAX);
        if expired.is_empty() {
            expire_v2_nodes(&server, &v2_sync, status.term);
            continue;
        }
        // A leader that was cut off or paused still believes it leads, and by its own
        // clock the leases ran out while the new leader kept renewing them. Two guards keep
        // its revocations from taking effect: each is proposed pinned to the term the
        // deadlines were checked in (a member no longer leading in it refuses the proposal
        // rather than forwarding it to the new leader, and an entry appended in a deposed
        // term never commits); and first, a quorum of heartbeats confirms that it still
        // leads, so that a leader cut off from the others does not fill its log with
        // revocations that will be thrown away (etcd 3.5's `ensureLeadership`).
        if server.read_barrier().await.is_err() {
            continue;
        }
        let confirmed = server.raft_status();
        if !confirmed.is_leader || confirmed.term != status.term {
            continue;
        }
        for id in expired {
            let server = server.clone();
            let term = status.term;
            tokio::spawn(async move {
                let revoke = Internal::LeaseRevoke(LeaseRevokeRequest { id });
                match server.proposer.propose_leading_in(revoke, term).await {
                    Ok(_) => tracing::debug!(lease = id, "revoked expired lease"),
                    Err(ServerError::LeaseNotFound) => {}
                    Err(error) => tracing::warn!(lease = id, %error, "failed to revoke lease"),
                }
            });
        }
        expire_v2_nodes(&server, &v2_sync, status.term);
    }
}

/// On the leader: when a node of the v2 keyspace has expired by the wall clock, proposes
/// a sync at the clock's time, which every member applies by expiring the same nodes
/// (etcd's leader does the same every 500 ms), pinned to the term the leader checked it in.
/// One sync in flight at a time.
fn expire_v2_nodes(server: &Arc<Server>, in_flight: &Arc<AtomicBool>, term: u64) {
    if in_flight.load(Ordering::Acquire) {
        return;
    }
    let now = crate::v2::unix_nanos_now();
    if server.store.v2_next_expiry().is_none_or(|at| at > now) {
        return;
    }
    let server = server.clone();
    let in_flight = in_flight.clone();
    in_flight.store(true, Ordering::Release);
    tokio::spawn(async move {
        let sync = Internal::V2(V2Request {
            method: Method::Sync as i32,
            time: now,
            ..V2Request::default()
        });
        if let Err(error) = server.proposer.propose_leading_in(sync, term).await {
            tracing::warn!(%error, "failed to expire v2 keys");
        }
        in_flight.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_leads_again_in_a_new_term_restarts_every_deadline() {
        assert_eq!(transition(None, true, 3), Transition::Promote);
        assert_eq!(transition(Some(3), true, 3), Transition::Keep);
        // Lost and won back between two checks: a new term, a new promotion.
        assert_eq!(transition(Some(3), true, 5), Transition::Promote);
        assert_eq!(transition(Some(5), false, 6), Transition::Demote);
        assert_eq!(transition(None, false, 6), Transition::Keep);
    }
}
