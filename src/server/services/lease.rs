//! The Lease service, and the loop that revokes expired leases.
//!
//! Grants and revocations change the replicated state, so they go through Raft. Keep-alives
//! and expiry deadlines are the leader's business alone (etcd's design): the leader renews a
//! lease locally, and when a deadline passes it proposes the revocation, so that every
//! member deletes the lease's keys at the same revision.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::lease::LeaseError;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::oxcdpb::internal_request::Request as Internal;
use crate::server::services::forward;
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::request::LEASE_TTL_MAX_SECS;
use crate::server::types::stream::{ChannelStream, RequestSource};

/// Responses buffered per keep-alive stream before the stream waits for the client.
const KEEP_ALIVE_BUFFER: usize = 16;

pub(crate) struct LeaseService {
    pub(crate) server: Arc<Server>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut request = request.into_inner();
        if request.ttl > LEASE_TTL_MAX_SECS {
            return Err(ServerError::LeaseTtlTooLarge.into());
        }
        if request.id == 0 {
            request.id = self.server.store.new_lease_id();
        }
        let (mut response, revision) = self
            .server
            .proposer
            .propose_as::<LeaseGrantResponse>(Internal::LeaseGrant(request))
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // The applier checks write access to every key attached to the lease.
        let info = self.server.request_auth(&request).await?;
        let header = self.server.auth_header(info.as_ref());
        let request = request.into_inner();
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<LeaseRevokeResponse>(Internal::LeaseRevoke(request), header)
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    type LeaseKeepAliveStream = ChannelStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Ok(Response::new(keep_alive_stream(
            self.server.clone(),
            request.into_inner(),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.server.read_barrier().await?;
        if forward::route(self.server.raft_status()) != forward::Route::Here {
            // Only the leader keeps deadlines: ask it.
            let mut leader = forward::leader_client(&self.server).await?;
            let mut response = leader
                .lease_time_to_live(request)
                .await
                .map_err(|_| forward::leader_call_failed(&self.server))?
                .into_inner();
            response.header = Some(self.server.header(self.server.store.current_revision()));
            return Ok(Response::new(response));
        }
        Ok(Response::new(time_to_live(&self.server, &request)))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.server.read_barrier().await?;
        let revision = self.server.store.current_revision();
        let leases = self
            .server
            .store
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.server.header(revision)),
            leases,
        }))
    }
}

/// A lease's remaining time on this member (the leader: it keeps the deadlines).
pub(crate) fn time_to_live(
    server: &Server,
    request: &LeaseTimeToLiveRequest,
) -> LeaseTimeToLiveResponse {
    let revision = server.store.current_revision();
    match server.store.lease_time_to_live(request.id, request.keys) {
        Some((ttl, granted_ttl, keys)) => LeaseTimeToLiveResponse {
            header: Some(server.header(revision)),
            id: request.id,
            ttl,
            granted_ttl,
            keys,
        },
        // etcd answers an unknown lease with TTL -1, not an error.
        None => LeaseTimeToLiveResponse {
            header: Some(server.header(revision)),
            id: request.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    }
}

/// One keep-alive: renews on the leader (a follower forwards it there); TTL 0 means the
/// lease is gone (not an error).
async fn keep_alive(server: &Server, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    if forward::route(server.raft_status()) != forward::Route::Here {
        let mut leader = forward::leader_client(server).await?;
        let renewed = leader
            .lease_renew(crate::proto::oxcdpb::LeaseRenewRequest { id })
            .await
            .map_err(|_| forward::leader_call_failed(server))?;
        return Ok(LeaseKeepAliveResponse {
            header: Some(server.header(server.store.current_revision())),
            id,
            ttl: renewed.into_inner().ttl,
        });
    }
    let ttl = renew_as_leader(server, id).await?;
    Ok(LeaseKeepAliveResponse {
        header: Some(server.header(server.store.current_revision())),
        id,
        ttl,
    })
}

/// Renews lease `id` on this member, the leader; returns its TTL, or 0 if it is gone.
/// Keep-alives sent to a follower arrive here through the peer service.
pub(crate) async fn renew_as_leader(server: &Server, id: i64) -> Result<i64, ServerError> {
    // The read barrier confirms with a quorum that this member still leads (a deposed
    // leader that has not heard of its successor must not promise a TTL the new leader
    // does not know of), and makes it apply everything committed, so a lease granted a
    // moment ago is never reported gone.
    server.read_barrier().await?;
    let give_up = tokio::time::Instant::now() + server.request_timeout();
    loop {
        match server.store.renew_lease(id) {
            Ok(ttl) => return Ok(ttl),
            Err(LeaseError::NotFound) => return Ok(0),
            // Past its deadline, the lease's revocation is on its way through Raft;
            // renewing it now would promise a TTL the revocation is about to cut short
            // (etcd's rule too). Wait for the revocation and report the lease gone.
            Err(LeaseError::Expired) => {
                if !server.raft_status().is_leader {
                    return Err(ServerError::NotLeader);
                }
                if tokio::time::Instant::now() >= give_up {
                    return Err(ServerError::Timeout);
                }
                tokio::time::sleep(server.config.heartbeat()).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Serves one keep-alive stream, its requests from `requests`.
pub(crate) fn keep_alive_stream(
    server: Arc<Server>,
    mut requests: impl RequestSource<LeaseKeepAliveRequest>,
) -> ChannelStream<LeaseKeepAliveResponse> {
    let (responses, stream) = mpsc::channel(KEEP_ALIVE_BUFFER);
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                biased;
                request = requests.next() => request,
                // The client went away (its response stream is gone).
                _ = responses.closed() => break,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(status) => {
                    // etcd ends the stream with the receive error.
                    let _ = responses
                        .send(Err(super::limits::receive_failed(status)))
                        .await;
                    break;
                }
            };
            let answer = keep_alive(&server, request.id).await;
            if responses.send(answer).await.is_err() {
                break;
            }
        }
    });
    ChannelStream(stream)
}
