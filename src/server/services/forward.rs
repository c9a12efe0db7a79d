//! Forwarding to the leader: a follower asks the leader's peer service for what only the
//! leader knows (lease deadlines, learner progress, whether every member is reachable),
//! over one connection kept while the leader stays.

use tonic::transport::Channel;

use crate::proto::oxcdpb::raft_transport_client::RaftTransportClient;
use crate::server::state::server::Server;
use crate::server::tasks::peer_transport::connect;
use crate::server::types::error::EtcdError;

/// A call to the leader failed: forget the connection (the leader may have changed or
/// died) and tell the client to retry.
pub(crate) fn leader_call_failed(server: &Server) -> EtcdError {
    *server
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = None;
    EtcdError::LeaderChanged
}

/// A client of another member's peer service.
pub(crate) type PeerClient = RaftTransportClient<Channel>;

/// A client of the current leader's peer service, for the few requests only the leader can
/// answer (lease deadlines live there). The connection is kept while the leader stays.
pub(crate) async fn leader_client(server: &Server) -> Result<PeerClient, EtcdError> {
    let leader = server.raft_status().leader;
    if leader == 0 {
        return Err(EtcdError::NoLeader);
    }
    let cached = server
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned")
        .clone();
    if let Some((id, client)) = cached {
        if id == leader {
            return Ok(client);
        }
    }
    let url = server
        .membership
        .member(leader)
        .and_then(|record| record.peer_urls.into_iter().next())
        .ok_or(EtcdError::NoLeader)?;
    let client = connect(&url).await.ok_or(EtcdError::NoLeader)?;
    *server
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = Some((leader, client.clone()));
    Ok(client)
}
