//! The Lease service, and the loop that revokes expired leases.
//!
//! Grants and revocations change the replicated state, so they go through Raft. Keep-alives
//! and expiry deadlines are the leader's business alone (etcd's design): the leader renews a
//! lease locally, and when a deadline passes it proposes the revocation, so that every
//! member deletes the lease's keys at the same revision.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::apply::Applied;
use super::error::EtcdError;
use super::kv::unexpected;
use super::member::Member;
use crate::io::Ticker;
use crate::lease::LeaseError;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::oxcdpb::internal_request::Request as Internal;

/// The largest TTL etcd accepts, in seconds.
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;
/// How often the leader looks for expired leases.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Revocations proposed per check at most (etcd revokes up to 1,000 leases a second).
const EXPIRED_REVOKES_PER_CHECK_MAX: usize = 500;
/// Responses buffered per keep-alive stream before the stream waits for the client.
const KEEP_ALIVE_BUFFER: usize = 16;

pub struct LeaseService {
    pub member: Arc<Member>,
}

/// A stream of responses fed by a task through a bounded channel.
pub struct ChannelStream<T>(pub mpsc::Receiver<Result<T, Status>>);

impl<T> Stream for ChannelStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(context)
    }
}

/// A stream of whatever arrives on a channel: the request side of a client's streaming
/// call (watch, keep-alive), for oxbench and the simulator.
pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(context)
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut request = request.into_inner();
        if request.ttl > LEASE_TTL_MAX_SECS {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        if request.id == 0 {
            request.id = self.member.store.new_lease_id();
        }
        match self.member.propose(Internal::LeaseGrant(request)).await? {
            (Applied::LeaseGrant(mut response), revision) => {
                response.header = Some(self.member.header(revision));
                Ok(Response::new(response))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let request = request.into_inner();
        match self.member.propose(Internal::LeaseRevoke(request)).await? {
            (Applied::LeaseRevoke(mut response), revision) => {
                response.header = Some(self.member.header(revision));
                Ok(Response::new(response))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = ChannelStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (responses, stream) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let member = self.member.clone();
        tokio::spawn(async move {
            loop {
                let request = match requests.message().await {
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
                let answer = keep_alive(&member, request.id).await;
                if responses.send(answer).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ChannelStream(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.member.read_barrier().await?;
        if !self.member.raft_status().is_leader {
            // Only the leader keeps deadlines: ask it.
            let mut leader = super::peer::leader_client(&self.member).await?;
            let mut response = leader
                .lease_time_to_live(request)
                .await
                .map_err(|_| super::peer::leader_call_failed(&self.member))?
                .into_inner();
            response.header = Some(self.member.header(self.member.store.current_revision()));
            return Ok(Response::new(response));
        }
        Ok(Response::new(time_to_live(&self.member, &request)))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.member.read_barrier().await?;
        let revision = self.member.store.current_revision();
        let leases = self
            .member
            .store
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.member.header(revision)),
            leases,
        }))
    }
}

/// A lease's remaining time on this member (the leader: it keeps the deadlines).
pub fn time_to_live(member: &Member, request: &LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
    let revision = member.store.current_revision();
    match member.store.lease_time_to_live(request.id, request.keys) {
        Some((ttl, granted_ttl, keys)) => LeaseTimeToLiveResponse {
            header: Some(member.header(revision)),
            id: request.id,
            ttl,
            granted_ttl,
            keys,
        },
        // etcd answers an unknown lease with TTL -1, not an error.
        None => LeaseTimeToLiveResponse {
            header: Some(member.header(revision)),
            id: request.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    }
}

/// One keep-alive: renews on the leader (a follower forwards it there); TTL 0 means the
/// lease is gone (not an error).
async fn keep_alive(member: &Member, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    if !member.raft_status().is_leader {
        let mut leader = super::peer::leader_client(member).await?;
        let renewed = leader
            .lease_renew(crate::proto::oxcdpb::LeaseRenewRequest { id })
            .await
            .map_err(|_| super::peer::leader_call_failed(member))?;
        return Ok(LeaseKeepAliveResponse {
            header: Some(member.header(member.store.current_revision())),
            id,
            ttl: renewed.into_inner().ttl,
        });
    }
    let ttl = renew_as_leader(member, id).await?;
    Ok(LeaseKeepAliveResponse {
        header: Some(member.header(member.store.current_revision())),
        id,
        ttl,
    })
}

/// Renews lease `id` on this member, the leader; returns its TTL, or 0 if it is gone.
/// Keep-alives sent to a follower arrive here through the peer service.
pub async fn renew_as_leader(member: &Member, id: i64) -> Result<i64, EtcdError> {
    // The read barrier confirms with a quorum that this member still leads (a deposed
    // leader that has not heard of its successor must not promise a TTL the new leader
    // does not know of), and makes it apply everything committed, so a lease granted a
    // moment ago is never reported gone.
    member.read_barrier().await?;
    let give_up = tokio::time::Instant::now() + member.request_timeout();
    loop {
        match member.store.renew_lease(id) {
            Ok(ttl) => return Ok(ttl),
            Err(LeaseError::NotFound) => return Ok(0),
            // Past its deadline, the lease's revocation is on its way through Raft;
            // renewing it now would promise a TTL the revocation is about to cut short
            // (etcd's rule too). Wait for the revocation and report the lease gone.
            Err(LeaseError::Expired) => {
                if !member.raft_status().is_leader {
                    return Err(EtcdError::NotLeader);
                }
                if tokio::time::Instant::now() >= give_up {
                    return Err(EtcdError::Timeout);
                }
                tokio::time::sleep(member.config.heartbeat()).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Revokes expired leases while this member leads. Runs until the member stops.
pub async fn expiry_loop(member: Arc<Member>) {
    let mut ticker = Ticker::new(member.store.clock(), EXPIRY_CHECK_INTERVAL);
    let mut was_leader = false;
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {}
            _ = member.stopped() => return,
        }
        let is_leader = member.raft_status().is_leader;
        if is_leader != was_leader {
            // A new leader cannot know how long ago the old one last renewed a lease, so
            // every deadline restarts from now with the full TTL (etcd's promotion rule).
            if is_leader {
                member.store.promote_lessor();
            } else {
                member.store.demote_lessor();
            }
            was_leader = is_leader;
        }
        if !is_leader {
            continue;
        }
        for id in member.store.expired_leases(EXPIRED_REVOKES_PER_CHECK_MAX) {
            let member = member.clone();
            tokio::spawn(async move {
                let revoke = Internal::LeaseRevoke(LeaseRevokeRequest { id });
                match member.propose(revoke).await {
                    Ok(_) => tracing::debug!(lease = id, "revoked expired lease"),
                    Err(EtcdError::LeaseNotFound) => {}
                    Err(error) => tracing::warn!(lease = id, %error, "failed to revoke lease"),
                }
            });
        }
    }
}
