//! The peer service, served on the peer URLs: Raft messages and snapshots from the other
//! members, and the few requests a follower forwards to the leader (lease renewals and
//! time-to-live, learner promotion, the reachability half of the strict reconfiguration
//! check), and the member list for a member that joins.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MemberPromoteRequest, MemberPromoteResponse,
};
use crate::proto::oxcdpb::raft_transport_server::RaftTransport;
use crate::proto::oxcdpb::{
    LeaseRenewRequest, LeaseRenewResponse, MembersRequest, MembersResponse, RaftAck, RaftBatch,
    ReconfigurationCheck, SnapshotChunk,
};
use crate::raft::{Message, MessageType};
use crate::server::services::{cluster, lease};
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::metrics::PeerMetrics;
use crate::server::types::request::{NodeInput, REMOVED};

/// The receiving side, served on the peer URLs.
pub(crate) struct RaftTransportService {
    pub(crate) server: Arc<Server>,
    /// Numbers the snapshot transfers received, so that concurrent ones write files of
    /// their own.
    pub(crate) transfers: std::sync::atomic::AtomicU64,
}

impl RaftTransportService {
    pub(crate) fn new(server: Arc<Server>) -> Self {
        RaftTransportService {
            server,
            transfers: Default::default(),
        }
    }
}

impl RaftTransportService {
    /// Hands a batch of messages from a peer to the Raft task.
    fn deliver(&self, batch: RaftBatch) -> Result<(), Status> {
        if self.server.membership.is_removed(batch.from) {
            return Err(Status::failed_precondition(REMOVED));
        }
        self.server.membership.heard_from(batch.from);
        if !batch.from_url.is_empty() {
            self.server
                .membership
                .answer_unlisted(batch.from, &batch.from_url);
        }
        for bytes in batch.messages {
            let message = Message::decode(bytes)
                .map_err(|error| Status::invalid_argument(format!("bad raft message: {error}")))?;
            if message.to != self.server.id {
                return Err(Status::invalid_argument(format!(
                    "message for member {:x} sent to member {:x}",
                    message.to, self.server.id
                )));
            }
            if message.msg_type() == MessageType::Snapshot {
                // Its backend image must be on disk before the core hears of it.
                return Err(Status::invalid_argument(
                    "snapshots travel on SendSnapshot, with their image",
                ));
            }
            match self.server.proposer.try_send(NodeInput::Step(message)) {
                // A full queue drops the message, as a lossy network would; Raft resends.
                Ok(()) | Err(ServerError::TooManyRequests) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn stream(
        &self,
        request: Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut batches = request.into_inner();
        // One stream carries one peer's batches: its counter is looked up once.
        let mut received: Option<(u64, Arc<PeerMetrics>)> = None;
        while let Some(batch) = batches.message().await? {
            let from = batch.from;
            let counter = match &received {
                Some((id, counter)) if *id == from => counter,
                _ => &received.insert((from, self.server.metrics.peer(from))).1,
            };
            counter
                .received_bytes
                .add(batch.messages.iter().map(|m| m.len() as u64).sum());
            self.deliver(batch)?;
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut chunks = request.into_inner();
        let head = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let head_bytes = (head.message.len() + head.data.len()) as u64;
        let mut message = Message::decode(head.message)
            .map_err(|error| Status::invalid_argument(format!("bad raft message: {error}")))?;
        if message.to != self.server.id || message.msg_type() != MessageType::Snapshot {
            return Err(Status::invalid_argument(format!(
                "expected a snapshot for member {:x}",
                self.server.id
            )));
        }
        let received = self.server.metrics.peer(message.from);
        received.received_bytes.add(head_bytes);
        // The image can be no larger than the backend quota allows a database to grow.
        let limit = self.server.config.quota_bytes().saturating_mul(2);
        if head.image_bytes > limit {
            return Err(Status::invalid_argument(format!(
                "snapshot image of {} bytes exceeds {limit}",
                head.image_bytes
            )));
        }
        let index = message
            .snapshot
            .as_ref()
            .and_then(|snapshot| snapshot.metadata.as_ref())
            .map(|metadata| metadata.index)
            .ok_or_else(|| Status::invalid_argument("snapshot without metadata"))?;
        // The image goes to disk as it arrives, and is made durable under its snapshot's
        // name before the Raft core hears of the snapshot (`Node::persist_snapshot`).
        let storage = |error: crate::wal::WalError| Status::internal(error.to_string());
        let transfer = self
            .transfers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut image = crate::wal::IncomingImage::create(
            self.server.store.disk(),
            &self.server.config.snap_dir(),
            index,
            transfer,
        )
        .map_err(storage)?;
        image.append(&head.data).map_err(storage)?;
        while let Some(chunk) = chunks.message().await? {
            if image.len() + chunk.data.len() as u64 > head.image_bytes {
                return Err(Status::invalid_argument(
                    "snapshot image longer than announced",
                ));
            }
            received.received_bytes.add(chunk.data.len() as u64);
            image.append(&chunk.data).map_err(storage)?;
            #[cfg(madsim)]
            crate::server::types::observe::crash_point(
                self.server.id,
                crate::server::types::observe::Point::SnapshotChunkReceived,
            );
        }
        if image.len() != head.image_bytes {
            return Err(Status::invalid_argument(format!(
                "snapshot image of {} bytes, {} announced",
                image.len(),
                head.image_bytes
            )));
        }
        image.finish().map_err(storage)?;
        #[cfg(madsim)]
        crate::server::types::observe::crash_point(
            self.server.id,
            crate::server::types::observe::Point::SnapshotImageSaved,
        );
        if let Some(snapshot) = message.snapshot.as_mut() {
            snapshot.data = Bytes::new();
        }
        self.server
            .proposer
            .try_send(NodeInput::Step(message))
            .map_err(Status::from)?;
        Ok(Response::new(RaftAck {}))
    }

    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.server.cluster_id,
            members: self.server.membership.members(),
        }))
    }

    async fn promote_member(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let response = cluster::promote(&self.server, request.into_inner().id).await?;
        Ok(Response::new(response))
    }

    async fn check_reconfiguration(
        &self,
        request: Request<ReconfigurationCheck>,
    ) -> Result<Response<RaftAck>, Status> {
        let request = request.into_inner();
        let change = if request.add {
            cluster::Change::Add
        } else {
            cluster::Change::Remove(request.remove)
        };
        cluster::leader_may_change(&self.server, change)?;
        Ok(Response::new(RaftAck {}))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        if !self.server.raft_status().is_leader {
            return Err(ServerError::NotLeader.into());
        }
        let ttl = lease::renew_as_leader(&self.server, request.into_inner().id).await?;
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        if !self.server.raft_status().is_leader {
            return Err(ServerError::NotLeader.into());
        }
        let request = request.into_inner();
        Ok(Response::new(lease::time_to_live(&self.server, &request)))
    }
}
