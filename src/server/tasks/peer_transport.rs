//! The peer transport: Raft messages to and from the other members, over gRPC on the peer
//! URLs.
//!
//! Each peer has a bounded queue and one sender task. The task takes whatever is queued
//! (up to a batch limit) and writes it as one batch to a long-lived `RaftTransport.Stream`
//! call; when the peer is unreachable, or stops reading for an election timeout, it reports
//! that to the Raft core (which falls back to probing the peer), drops the stream and
//! reconnects with exponential backoff. Snapshots go in chunks on calls of their own. Nothing here retries a
//! message: Raft retransmits what is lost, and a full queue simply drops, so a slow or dead
//! peer never holds up the Raft task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::proto::oxcdpb::raft_transport_client::RaftTransportClient;
use crate::proto::oxcdpb::{RaftBatch, SnapshotChunk};
use crate::raft::{Message, MessageType};
use crate::server::state::server::Server;
use crate::server::state::store::ImageCopy;
use crate::server::types::config::Config;
use crate::server::types::request::NodeInput;
use crate::server::types::request::REMOVED;
use crate::server::types::stream::ReceiverStream;
use crate::server::types::transport::Transport;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 4_096;
/// Messages sent in one call at most.
const BATCH_MAX: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Batches queued on a peer stream before it counts as stalled.
const STREAM_BATCHES_MAX: usize = 64;
/// Bytes of backend image per snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// One queue and one sender task per peer. Peers are added and removed as membership
/// changes; a removed peer's queue is dropped, which ends its sender task.
#[derive(Default)]
pub(crate) struct PeerTransport {
    queues: std::sync::Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    /// Set once the member exists; sender tasks need it.
    server: std::sync::OnceLock<std::sync::Weak<Server>>,
    /// Peers added before the member existed, started by [`PeerTransport::start`].
    waiting: std::sync::Mutex<Vec<(u64, String, mpsc::Receiver<Message>)>>,
}

impl Transport for PeerTransport {
    fn add_peer(&self, id: u64, url: String) {
        let mut queues = self.queues.lock().expect("peer queues lock poisoned");
        if queues.contains_key(&id) {
            return;
        }
        let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
        queues.insert(id, sender);
        drop(queues);
        match self.server.get().and_then(std::sync::Weak::upgrade) {
            Some(server) => {
                #[cfg(not(madsim))]
                tokio::spawn(probe_loop(server.clone(), id, url.clone()));
                tokio::spawn(send_loop(server, id, url, receiver));
            }
            None => self
                .waiting
                .lock()
                .expect("peer queues lock poisoned")
                .push((id, url, receiver)),
        }
    }

    fn remove_peer(&self, id: u64) {
        self.queues
            .lock()
            .expect("peer queues lock poisoned")
            .remove(&id);
    }

    fn send(&self, message: Message) {
        match self.route(message.to) {
            Some(queue) => self.enqueue(&queue, message),
            None => tracing::debug!(to = message.to, "no route to member; message dropped"),
        }
    }
}

impl PeerTransport {
    /// The queue of messages to member `to`, if it is a peer.
    pub(crate) fn route(&self, to: u64) -> Option<mpsc::Sender<Message>> {
        self.queues
            .lock()
            .expect("peer queues lock poisoned")
            .get(&to)
            .cloned()
    }

    /// Queues `message` on `queue`; a full queue drops it.
    pub(crate) fn enqueue(&self, queue: &mpsc::Sender<Message>, message: Message) {
        if let Err(error) = queue.try_send(message) {
            tracing::debug!("peer queue full; message dropped");
            self.report_dropped(&error.into_inner());
        }
    }

    /// Reports a message dropped unsent (a snapshot's sender waits to hear of it).
    pub(crate) fn report_dropped(&self, message: &Message) {
        if let Some(server) = self.server.get().and_then(std::sync::Weak::upgrade) {
            report_if_snapshot(&server, message);
        }
    }
}

/// Tells the Raft core that a snapshot message was dropped unsent. The core keeps the
/// peer in snapshot state, sending it nothing but heartbeats, until it hears how the
/// snapshot went; a snapshot lost without a word would leave the peer behind for good.
fn report_if_snapshot(server: &Server, message: &Message) {
    if message.msg_type() == MessageType::Snapshot {
        let _ = server.proposer.try_send(NodeInput::SnapshotSent {
            to: message.to,
            failed: true,
        });
    }
}

impl PeerTransport {
    /// Starts the sender tasks of the peers added so far; later peers start when added.
    pub(crate) fn start(&self, server: &Arc<Server>) {
        let _ = self.server.set(Arc::downgrade(server));
        let waiting = std::mem::take(&mut *self.waiting.lock().expect("peer queues lock poisoned"));
        for (id, url, receiver) in waiting {
            #[cfg(not(madsim))]
            tokio::spawn(probe_loop(server.clone(), id, url.clone()));
            tokio::spawn(send_loop(server.clone(), id, url, receiver));
        }
    }
}

/// How often a member probes each peer (etcd's prober: every 4 s).
#[cfg(not(madsim))]
const PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// A probe not answered within this long failed.
#[cfg(not(madsim))]
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes peer `id` at `url` every [`PROBE_INTERVAL`] for as long as it is a member: a
/// small call on the peer service, whose round trip feeds
/// `etcd_network_peer_round_trip_time_seconds` and the v2 leader statistics. Production
/// builds only: the simulator's schedules stay those of Raft traffic alone.
#[cfg(not(madsim))]
async fn probe_loop(server: Arc<Server>, id: u64, url: String) {
    use crate::proto::oxcdpb::MembersRequest;
    let metrics = server.metrics.peer(id);
    let mut client = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = server.lifecycle.stopped() => return,
        }
        if !server
            .membership
            .members()
            .iter()
            .any(|member| member.id == id)
        {
            return;
        }
        if client.is_none() {
            client = connect(&url, &server.config).await;
        }
        let Some(connected) = client.as_mut() else {
            metrics.probe_failed();
            continue;
        };
        let started = std::time::Instant::now();
        let answered =
            tokio::time::timeout(PROBE_TIMEOUT, connected.members(MembersRequest {})).await;
        match answered {
            Ok(Ok(_)) => metrics.probe_answered(started.elapsed()),
            _ => {
                metrics.probe_failed();
                client = None;
            }
        }
    }
}

/// A client of the peer service at `url`, or `None` if it cannot be reached. An `https://`
/// peer is dialled over TLS with the peer certificate of `config` (read from its files now,
/// so that rotated certificates take effect with the next connection).
pub(crate) async fn connect(url: &str, config: &Config) -> Option<RaftTransportClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string()).ok()?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(1));
    #[cfg(not(madsim))]
    if url.starts_with("https://") {
        return connect_tls(url, &endpoint, config).await;
    }
    let _ = config;
    endpoint.connect().await.ok().map(RaftTransportClient::new)
}

#[cfg(not(madsim))]
async fn connect_tls(
    url: &str,
    endpoint: &Endpoint,
    config: &Config,
) -> Option<RaftTransportClient<Channel>> {
    use crate::server::types::config::TlsSide;
    let tls = config
        .tls_options(TlsSide::Peer)
        .map_err(|error| error.to_string())
        .and_then(|options| {
            options
                .ok_or_else(|| "no peer certificate (--peer-cert-file or --peer-auto-tls)".into())
        })
        .and_then(|options| {
            crate::net::tls::ClientTls::new(options).map_err(|error| error.to_string())
        });
    let tls = match tls {
        Ok(tls) => tls,
        Err(error) => {
            tracing::warn!(%url, %error, "cannot dial a peer over TLS");
            return None;
        }
    };
    match endpoint.connect_with_connector(tls.connector()).await {
        Ok(channel) => Some(RaftTransportClient::new(channel)),
        Err(error) => {
            // tonic's own message is only "transport error"; the cause is in the chain.
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason = format!("{reason}: {cause}");
                source = cause.source();
            }
            tracing::debug!(%url, %reason, "cannot connect to a peer over TLS");
            None
        }
    }
}

/// How far the receiving end has read a peer stream: the sender compares it with what it
/// queued to tell a stalled peer (partitioned, paused) from a quiet one.
#[derive(Default)]
struct StreamProgress {
    queued: u64,
    read: u64,
    /// Since when the oldest unread batch has waited; `None` while everything is read.
    waiting_since: Option<tokio::time::Instant>,
}

/// The request side of a peer stream: batches from the send loop, with the reading
/// recorded in the shared progress.
struct PeerStream {
    batches: mpsc::Receiver<RaftBatch>,
    progress: Arc<std::sync::Mutex<StreamProgress>>,
}

impl futures_core::Stream for PeerStream {
    type Item = RaftBatch;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RaftBatch>> {
        let polled = self.batches.poll_recv(context);
        if let std::task::Poll::Ready(Some(_)) = &polled {
            let mut progress = self.progress.lock().expect("stream progress lock poisoned");
            progress.read += 1;
            progress.waiting_since =
                (progress.read < progress.queued).then(tokio::time::Instant::now);
        }
        polled
    }
}

/// One long-lived stream to a peer, and the call that carries it.
struct OpenStream {
    batches: mpsc::Sender<RaftBatch>,
    progress: Arc<std::sync::Mutex<StreamProgress>>,
    call: tokio::task::JoinHandle<Result<(), Status>>,
}

impl OpenStream {
    async fn open(url: &str, config: &Config) -> Option<OpenStream> {
        let mut client = connect(url, config).await?;
        let (batches, receiver) = mpsc::channel(STREAM_BATCHES_MAX);
        let progress: Arc<std::sync::Mutex<StreamProgress>> = Arc::default();
        let stream = PeerStream {
            batches: receiver,
            progress: progress.clone(),
        };
        let call = tokio::spawn(async move { client.stream(stream).await.map(|_| ()) });
        Some(OpenStream {
            batches,
            progress,
            call,
        })
    }

    /// Whether nothing was queued on this stream yet.
    fn is_fresh(&self) -> bool {
        self.progress
            .lock()
            .expect("stream progress lock poisoned")
            .queued
            == 0
    }

    /// Queues `batch`; `Err` with the reason when the stream is gone or stalled.
    fn push(&self, batch: RaftBatch, stall: Duration) -> Result<(), &'static str> {
        let mut progress = self.progress.lock().expect("stream progress lock poisoned");
        if progress
            .waiting_since
            .is_some_and(|since| since.elapsed() > stall)
        {
            return Err("stalled");
        }
        match self.batches.try_send(batch) {
            Ok(()) => {
                progress.queued += 1;
                if progress.waiting_since.is_none() {
                    progress.waiting_since = Some(tokio::time::Instant::now());
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err("stalled"),
            Err(mpsc::error::TrySendError::Closed(_)) => Err("closed"),
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.call.abort();
    }
}

async fn send_loop(server: Arc<Server>, to: u64, url: String, mut queue: mpsc::Receiver<Message>) {
    let mut stream: Option<OpenStream> = None;
    let mut backoff = BACKOFF_MIN;
    let sent = server.metrics.peer(to);
    let own_url = server
        .config
        .advertise_peer_urls()
        .into_iter()
        .next()
        .unwrap_or_default();
    loop {
        let first = tokio::select! {
            biased;
            message = queue.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = server.lifecycle.stopped() => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        // Snapshots go on a call of their own, beside the stream, so that a large image
        // does not hold up the heartbeats behind it.
        let (snapshots, messages): (Vec<Message>, Vec<Message>) = batch
            .into_iter()
            .partition(|m| m.msg_type() == MessageType::Snapshot);
        for snapshot in snapshots {
            tokio::spawn(send_snapshot(server.clone(), url.clone(), snapshot));
        }
        if messages.is_empty() {
            continue;
        }
        // A stream whose call ended: the peer refused this member for good, or the
        // connection broke.
        if let Some(open) = stream.as_mut().filter(|open| open.call.is_finished()) {
            if let Ok(Err(status)) = (&mut open.call).await {
                if status.message() == REMOVED {
                    tracing::error!("this member was removed from the cluster; stopping");
                    server.lifecycle.stop_with_error(REMOVED.into());
                    return;
                }
            }
            stream = None;
        }
        if stream.is_none() {
            stream = OpenStream::open(&url, &server.config).await;
        }
        let request = RaftBatch {
            from: server.id,
            messages: messages
                .iter()
                .map(|m| Bytes::from(m.encode_to_vec()))
                .collect(),
            from_url: match &stream {
                Some(open) if open.is_fresh() => own_url.clone(),
                _ => String::new(),
            },
        };
        // A peer that stops reading (a partition, a paused process) must not hold the
        // queue: after an election timeout its stream is dropped and the peer reported.
        let bytes: u64 = request.messages.iter().map(|m| m.len() as u64).sum();
        let pushed = match &stream {
            Some(open) => open.push(request, server.config.election()),
            None => Err("unreachable"),
        };
        if pushed.is_ok() {
            sent.sent_bytes.add(bytes);
            backoff = BACKOFF_MIN;
            continue;
        }
        stream = None;
        let _ = server.proposer.try_send(NodeInput::Unreachable { to });
        tracing::debug!(peer = %format!("{to:x}"), %url, reason = ?pushed, "peer unreachable; backing off");
        // Drop what queued up meanwhile: it is stale by the time the peer is back.
        tokio::select! {
            biased;
            _ = tokio::time::sleep(backoff) => {}
            _ = server.lifecycle.stopped() => return,
        }
        while let Ok(stale) = queue.try_recv() {
            report_if_snapshot(&server, &stale);
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sends a snapshot message with this member's backend image in chunks, then tells the
/// Raft core how it went (the core keeps the peer in snapshot state until then).
async fn send_snapshot(server: Arc<Server>, url: String, message: Message) {
    let to = message.to;
    let delivered = match merged_snapshot(&server, message) {
        Ok((message, image)) => deliver_snapshot(&server, &url, message, image).await,
        Err(error) => {
            tracing::warn!(%error, "cannot prepare a snapshot");
            false
        }
    };
    tracing::info!(peer = %format!("{to:x}"), delivered, "sent a snapshot");
    let _ = server.proposer.try_send(NodeInput::SnapshotSent {
        to,
        failed: !delivered,
    });
}

/// What is sent in place of the core's snapshot, as etcd does: the backend image as it is
/// now, described by the index it was applied through, that entry's term and the membership
/// in force there. The core's own snapshot may be older than a member added since, and a
/// member refuses a snapshot whose membership does not include it.
fn merged_snapshot(server: &Server, mut message: Message) -> Result<(Message, ImageCopy), String> {
    let image = server
        .store
        .copy_image()
        .map_err(|error| error.to_string())?;
    let index = image.index;
    let log = server.raft_log.get().ok_or("no raft log yet")?;
    let term = crate::raft::Storage::term(log, index)
        .map_err(|error| format!("term of index {index}: {error}"))?;
    let conf_state = server
        .membership
        .conf_state_at(index)
        .ok_or_else(|| format!("no membership known at index {index}"))?;
    let snapshot = message.snapshot.get_or_insert_with(Default::default);
    let metadata = snapshot.metadata.get_or_insert_with(Default::default);
    if index < metadata.index {
        return Err(format!(
            "backend image at {index} is older than the snapshot at {}",
            metadata.index
        ));
    }
    metadata.index = index;
    metadata.term = term;
    metadata.conf_state = Some(conf_state);
    Ok((message, image))
}

async fn deliver_snapshot(server: &Server, url: &str, message: Message, image: ImageCopy) -> bool {
    let Some(mut client) = connect(url, &server.config).await else {
        return false;
    };
    let (chunks, receiver) = mpsc::channel(4);
    let total = image.len;
    let sent = server.metrics.peer(message.to);
    let head = SnapshotChunk {
        message: Bytes::from(message.encode_to_vec()),
        image_bytes: total,
        data: Bytes::new(),
    };
    #[cfg(madsim)]
    let member = server.id;
    // Read from the copy a chunk at a time, as the peer takes them: a large image is never
    // in memory whole.
    tokio::spawn(async move {
        let head_bytes = head.message.len() as u64;
        if chunks.send(head).await.is_err() {
            return;
        }
        sent.sent_bytes.add(head_bytes);
        let mut offset = 0;
        while offset < total {
            #[cfg(madsim)]
            crate::server::types::observe::delay_point(
                member,
                crate::server::types::observe::Point::SnapshotSend,
            )
            .await;
            let data = match image.read(offset, SNAPSHOT_CHUNK_BYTES) {
                Ok(data) => data,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the snapshot image");
                    return;
                }
            };
            offset += data.len() as u64;
            let bytes = data.len() as u64;
            let chunk = SnapshotChunk {
                data,
                ..SnapshotChunk::default()
            };
            if chunks.send(chunk).await.is_err() {
                return;
            }
            sent.sent_bytes.add(bytes);
        }
    });
    // Generous, but bounded: a peer that stops reading must not pin the image forever.
    let timeout = server.config.election() * 10 + Duration::from_secs(total >> 20);
    let call = client.send_snapshot(ReceiverStream(receiver));
    matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_)))
}
