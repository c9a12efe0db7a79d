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

/// Revokes expired leases while this member leads. Runs until the member stops.
pub(crate) async fn run(server: Arc<Server>) {
    let mut ticker = Ticker::new(server.store.clock(), EXPIRY_CHECK_INTERVAL);
    let mut was_leader = false;
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {}
            _ = server.lifecycle.stopped() => return,
        }
        let is_leader = server.raft_status().is_leader;
        if is_leader != was_leader {
            // A new leader cannot know how long ago the old one last renewed a lease, so
            // every deadline restarts from now with the full TTL (etcd's promotion rule).
            if is_leader {
                server.store.promote_lessor();
            } else {
                server.store.demote_lessor();
            }
            was_leader = is_leader;
        }
        if !is_leader {
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
