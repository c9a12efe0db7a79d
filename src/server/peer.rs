//! The peer transport: Raft messages to and from the other members, over gRPC on the peer
//! URLs.
//!
//! Each peer has a bounded queue and one sender task. The task takes whatever is queued
//! (up to a batch limit) and delivers it in one `RaftTransport.Send` call; when the peer is
//! unreachable it reports that to the Raft core (which falls back to probing the peer),
//! drops the batch and reconnects with exponential backoff. Nothing here retries a
//! message: Raft retransmits what is lost, and a full queue simply drops, so a slow or dead
//! peer never holds up the Raft task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::error::EtcdError;
use super::member::Member;
use super::node::NodeInput;
use super::transport::Transport;
use crate::proto::etcdserverpb::{LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use crate::proto::oxcdpb::raft_transport_client::RaftTransportClient;
use crate::proto::oxcdpb::raft_transport_server::RaftTransport;
use crate::proto::oxcdpb::{LeaseRenewRequest, LeaseRenewResponse, RaftAck, RaftBatch};
use crate::raft::{Message, MessageType};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 4_096;
/// Messages sent in one call at most.
const BATCH_MAX: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct PeerTransport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl Transport for PeerTransport {
    fn send(&self, message: Message) {
        match self.queues.get(&message.to) {
            Some(queue) => {
                if queue.try_send(message).is_err() {
                    tracing::debug!("peer queue full; message dropped");
                }
            }
            None => tracing::debug!(to = message.to, "no route to member; message dropped"),
        }
    }
}

impl PeerTransport {
    /// Queues for `peers` (member id → peer URL); the sender tasks start with [`Self::start`].
    pub fn new(peers: &[(u64, String)]) -> (Self, Vec<(u64, String, mpsc::Receiver<Message>)>) {
        let mut queues = HashMap::new();
        let mut receivers = Vec::new();
        for (id, url) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(*id, sender);
            receivers.push((*id, url.clone(), receiver));
        }
        (Self { queues }, receivers)
    }

    /// Starts one sender task per peer.
    pub fn start(member: Arc<Member>, receivers: Vec<(u64, String, mpsc::Receiver<Message>)>) {
        for (id, url, receiver) in receivers {
            tokio::spawn(send_loop(member.clone(), id, url, receiver));
        }
    }
}

async fn connect(url: &str) -> Option<RaftTransportClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string()).ok()?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(1));
    endpoint.connect().await.ok().map(RaftTransportClient::new)
}

async fn send_loop(member: Arc<Member>, to: u64, url: String, mut queue: mpsc::Receiver<Message>) {
    let mut client: Option<RaftTransportClient<Channel>> = None;
    let mut backoff = BACKOFF_MIN;
    let mut stopping = member.stopping();
    loop {
        let first = tokio::select! {
            message = queue.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = stopping.changed() => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let snapshots: Vec<u64> = batch
            .iter()
            .filter(|m| m.msg_type() == MessageType::Snapshot)
            .map(|m| m.to)
            .collect();
        if client.is_none() {
            client = connect(&url).await;
        }
        let delivered = match client.as_mut() {
            Some(connected) => {
                let request = RaftBatch {
                    from: member.id,
                    messages: batch
                        .iter()
                        .map(|m| Bytes::from(m.encode_to_vec()))
                        .collect(),
                };
                connected.send(request).await.is_ok()
            }
            None => false,
        };
        for peer in snapshots {
            let _ = member.send_to_node(NodeInput::SnapshotSent {
                to: peer,
                failed: !delivered,
            });
        }
        if delivered {
            backoff = BACKOFF_MIN;
            continue;
        }
        client = None;
        let _ = member.send_to_node(NodeInput::Unreachable { to });
        tracing::debug!(peer = %format!("{to:x}"), %url, "peer unreachable; backing off");
        // Drop what queued up meanwhile: it is stale by the time the peer is back.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
        while queue.try_recv().is_ok() {}
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The receiving side, served on the peer URLs.
pub struct RaftTransportService {
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let batch = request.into_inner();
        for bytes in batch.messages {
            let message = Message::decode(bytes)
                .map_err(|error| Status::invalid_argument(format!("bad raft message: {error}")))?;
            if message.to != self.member.id {
                return Err(Status::invalid_argument(format!(
                    "message for member {:x} sent to member {:x}",
                    message.to, self.member.id
                )));
            }
            self.member
                .send_to_node(NodeInput::Step(message))
                .map_err(Status::from)?;
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        if !self.member.raft_status().is_leader {
            return Err(EtcdError::NotLeader.into());
        }
        let ttl = self
            .member
            .store
            .renew_lease(request.into_inner().id)
            .unwrap_or(0);
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        if !self.member.raft_status().is_leader {
            return Err(EtcdError::NotLeader.into());
        }
        let request = request.into_inner();
        Ok(Response::new(super::lease::time_to_live(
            &self.member,
            &request,
        )))
    }
}

/// A call to the leader failed: forget the connection (the leader may have changed or
/// died) and tell the client to retry.
pub fn leader_call_failed(member: &Member) -> EtcdError {
    *member
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = None;
    EtcdError::LeaderChanged
}

/// A client of another member's peer service.
pub type PeerClient = RaftTransportClient<Channel>;

/// A client of the current leader's peer service, for the few requests only the leader can
/// answer (lease deadlines live there). The connection is kept while the leader stays.
pub async fn leader_client(member: &Member) -> Result<PeerClient, EtcdError> {
    let leader = member.raft_status().leader;
    if leader == 0 {
        return Err(EtcdError::NoLeader);
    }
    let cached = member
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned")
        .clone();
    if let Some((id, client)) = cached {
        if id == leader {
            return Ok(client);
        }
    }
    let url = member
        .members()
        .into_iter()
        .find(|record| record.id == leader)
        .and_then(|record| record.peer_urls.into_iter().next())
        .ok_or(EtcdError::NoLeader)?;
    let client = connect(&url).await.ok_or(EtcdError::NoLeader)?;
    *member
        .leader_connection
        .lock()
        .expect("leader connection lock poisoned") = Some((leader, client.clone()));
    Ok(client)
}
