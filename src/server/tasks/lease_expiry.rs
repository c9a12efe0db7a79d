//! Lease expiry: the leader revokes leases whose deadline passed, through Raft, so every
//! member drops their keys at the same revision. Deadlines are measured on the member's
//! clock; a member that becomes leader restarts every deadline from now with the full TTL,
//! since it cannot know when the old leader last renewed them (etcd's promotion rule).

use std::sync::Arc;
use std::time::Duration;

use crate::io::Ticker;
use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::oxcdpb::internal_request::Request as Internal;
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
        for id in server.store.expired_leases(EXPIRED_REVOKES_PER_CHECK_MAX) {
            let server = server.clone();
            tokio::spawn(async move {
                let revoke = Internal::LeaseRevoke(LeaseRevokeRequest { id });
                match server.proposer.propose(revoke).await {
                    Ok(_) => tracing::debug!(lease = id, "revoked expired lease"),
                    Err(ServerError::LeaseNotFound) => {}
                    Err(error) => tracing::warn!(lease = id, %error, "failed to revoke lease"),
                }
            });
        }
    }
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
