//! Forwarding to the leader: a follower asks the leader's peer service for what only the
//! leader knows (lease deadlines, learner progress, whether every member is reachable),
//! over one connection kept while the leader stays.

use tonic::transport::Channel;

use crate::proto::oxcdpb::raft_transport_client::RaftTransportClient;
use crate::server::state::server::Server;
use crate::server::tasks::peer_transport::connect;
use crate::server::types::error::ServerError;
use crate::server::types::request::RaftStatus;

/// Where a request that only the leader can answer is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// This member leads: answer here.
    Here,
    /// Ask the leader, member `id`.
    Leader(u64),
    /// No leader is known: the client is told so and retries.
    NoLeader,
}

/// Decides where a leader-only request goes, from what the Raft task last published.
pub(crate) fn route(status: RaftStatus) -> Route {
    match status {
        RaftStatus {
            is_leader: true, ..
        } => Route::Here,
        RaftStatus { leader: 0, .. } => Route::NoLeader,
        RaftStatus { leader, .. } => Route::Leader(leader),
    }
}

/// The cached connection, if it is to `leader`; a connection to an old leader is not reused.
fn cached_for<C: Clone>(cached: &Option<(u64, C)>, leader: u64) -> Option<C> {
    match cached {
        Some((id, client)) if *id == leader => Some(client.clone()),
        _ => None,
    }
}

/// A call to the leader failed: forget the connection (the leader may have changed or
/// died) and tell the client to retry.
pub(crate) fn leader_call_failed(server: &Server) -> ServerError {
    *server
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = None;
    ServerError::LeaderChanged
}

/// A client of another member's peer service.
pub(crate) type PeerClient = RaftTransportClient<Channel>;

/// A client of the current leader's peer service, for the few requests only the leader can
/// answer (lease deadlines live there). The connection is kept while the leader stays.
pub(crate) async fn leader_client(server: &Server) -> Result<PeerClient, ServerError> {
    let leader = match route(server.raft_status()) {
        Route::NoLeader => return Err(ServerError::NoLeader),
        Route::Leader(id) => id,
        // Became leader since the caller looked: its own peer service answers.
        Route::Here => server.id,
    };
    let cached = cached_for(
        &server
            .leader_connection
            .lock()
            .expect("leader connection lock poisoned"),
        leader,
    );
    if let Some(client) = cached {
        return Ok(client);
    }
    let url = server
        .membership
        .member(leader)
        .and_then(|record| record.peer_urls.into_iter().next())
        .ok_or(ServerError::NoLeader)?;
    let client = connect(&url, &server.config)
        .await
        .ok_or(ServerError::NoLeader)?;
    *server
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = Some((leader, client.clone()));
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64, is_leader: bool) -> RaftStatus {
        RaftStatus {
            term: 3,
            leader,
            commit: 10,
            is_leader,
        }
    }

    #[test]
    fn the_leader_answers_itself_and_a_follower_asks_the_leader() {
        assert_eq!(route(status(1, true)), Route::Here);
        assert_eq!(route(status(2, false)), Route::Leader(2));
        assert_eq!(route(status(0, false)), Route::NoLeader);
    }

    #[test]
    fn a_connection_is_reused_only_while_its_leader_leads() {
        let cached = Some((2, "connection to 2"));
        assert_eq!(cached_for(&cached, 2), Some("connection to 2"));
        assert_eq!(cached_for(&cached, 3), None);
        assert_eq!(cached_for::<&str>(&None, 2), None);
    }
}
