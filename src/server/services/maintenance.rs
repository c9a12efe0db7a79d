//! The Maintenance service: Status, Alarm, Hash, HashKV, Defragment, Snapshot, MoveLeader.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use crate::proto::oxcdpb::internal_request::Request as Internal;
use crate::server::state::server::Server;
use crate::server::types::config::ETCD_API_VERSION;
use crate::server::types::error::ServerError;
use crate::server::types::request::NodeInput;
use crate::server::types::stream::ChannelStream;

/// Bytes per Snapshot message (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks buffered ahead of a slow snapshot reader.
const SNAPSHOT_CHUNKS_BUFFERED: usize = 8;
/// The digest etcd appends to a snapshot stream.
const SHA256_BYTES: u64 = 32;

pub(crate) struct MaintenanceService {
    pub(crate) server: Arc<Server>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        if request.action == AlarmAction::Get as i32 {
            let alarms = self
                .server
                .alarms
                .list()
                .into_iter()
                .filter(|alarm| {
                    request.alarm == AlarmType::None as i32 || alarm.alarm == request.alarm
                })
                .collect();
            let revision = self.server.store.current_revision();
            return Ok(Response::new(AlarmResponse {
                header: Some(self.server.header(revision)),
                alarms,
            }));
        }
        let (mut response, revision) = self
            .server
            .proposer
            .propose_as::<AlarmResponse>(Internal::Alarm(request))
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let raft = self.server.raft_status();
        let store = &self.server.store;
        let mut errors = Vec::new();
        if self.server.alarms.is_active(AlarmType::Nospace) {
            errors.push(format!("memberID:{} alarm:NOSPACE ", self.server.id));
        }
        Ok(Response::new(StatusResponse {
            header: Some(self.server.header(store.current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size: store.db_size_bytes() as i64,
            leader: raft.leader,
            raft_index: raft.commit,
            raft_term: raft.term,
            raft_applied_index: self.server.applied_index(),
            errors,
            db_size_in_use: store.db_size_in_use_bytes() as i64,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        require_admin(&self.server, &_request).await?;
        self.server.store.defragment()?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.server.header(self.server.store.current_revision())),
        }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_admin(&self.server, &_request).await?;
        let hash = self.server.store.hash()?;
        Ok(Response::new(HashResponse {
            header: Some(self.server.header(self.server.store.current_revision())),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let request = request.into_inner();
        let (hash, compact_revision, hash_revision) =
            self.server.store.hash_kv(request.revision)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.server.header(self.server.store.current_revision())),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = ChannelStream<SnapshotResponse>;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        require_admin(&self.server, &_request).await?;
        // A copy on disk in etcd's format (what etcdctl's snapshot status and restore
        // read), read a chunk at a time as the client takes them: the image is never in
        // memory whole.
        let store = self.server.store.clone();
        // The copy and its conversion take seconds for a large backend: off the async
        // workers (in the simulator, which has no blocking pool, in place).
        #[cfg(not(madsim))]
        let image = tokio::task::spawn_blocking(move || store.copy_etcd_image())
            .await
            .map_err(|error| ServerError::Internal(format!("snapshot: {error}")))??;
        #[cfg(madsim)]
        let image = store.copy_etcd_image()?;
        let (chunks, stream) = mpsc::channel(SNAPSHOT_CHUNKS_BUFFERED);
        tokio::spawn(async move {
            use sha2::Digest as _;
            // etcd ends the stream with the SHA-256 of the image; etcdctl checks it. The
            // stream is the image and then the digest.
            let mut hasher = sha2::Sha256::new();
            let mut digest = None;
            let total = image.len + SHA256_BYTES;
            let mut sent = 0;
            // An empty image still needs one message so the client sees the end.
            loop {
                let end = (sent + SNAPSHOT_CHUNK_BYTES as u64).min(total);
                let mut blob = Vec::with_capacity((end - sent) as usize);
                if sent < image.len {
                    let read = image.read(sent, (end.min(image.len) - sent) as usize);
                    let piece = match read {
                        Ok(piece) => piece,
                        Err(error) => {
                            let _ = chunks.send(Err(error.into())).await;
                            return;
                        }
                    };
                    hasher.update(&piece);
                    blob.extend_from_slice(&piece);
                }
                if end > image.len {
                    let digest = digest.get_or_insert_with(|| hasher.clone().finalize());
                    let from = sent.max(image.len) - image.len;
                    blob.extend_from_slice(&digest[from as usize..(end - image.len) as usize]);
                }
                // etcd 3.4 sends neither a header nor a version with the pieces.
                let response = SnapshotResponse {
                    remaining_bytes: total - end,
                    blob: Bytes::from(blob),
                    ..Default::default()
                };
                if chunks.send(Ok(response)).await.is_err() {
                    return;
                }
                sent = end;
                if sent >= total {
                    return;
                }
            }
        });
        Ok(Response::new(ChannelStream(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let request = request.into_inner();
        let raft = self.server.raft_status();
        if !raft.is_leader {
            return Err(ServerError::NotLeader.into());
        }
        let conf_state = self.server.membership.conf_state();
        if !conf_state.voters.contains(&request.target_id) {
            return Err(ServerError::BadLeaderTransferee.into());
        }
        if request.target_id != self.server.id {
            self.server.proposer.try_send(NodeInput::TransferLeader {
                to: request.target_id,
            })?;
            wait_for_leader(&self.server, request.target_id).await?;
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.server.header(self.server.store.current_revision())),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        // Downgrade arrived in etcd 3.5; a 3.4 server does not know it either.
        Err(Status::unimplemented(
            "unknown method Downgrade for service etcdserverpb.Maintenance",
        ))
    }
}

/// Waits until `target` leads, for at most the request timeout.
/// Refuses a maintenance request that needs the `root` role while auth is enabled, with
/// the auth store's own words and code Unknown, as etcd 3.4's maintenance service does.
async fn require_admin<T>(server: &Server, request: &Request<T>) -> Result<(), ServerError> {
    match server.require_admin(request).await {
        Err(ServerError::Auth(error)) => Err(ServerError::AuthUntranslated(error)),
        other => other,
    }
}

async fn wait_for_leader(server: &Server, target: u64) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + server.request_timeout();
    while server.raft_status().leader != target {
        if tokio::time::Instant::now() >= deadline {
            return Err(ServerError::Timeout);
        }
        tokio::time::sleep(server.config.heartbeat()).await;
    }
    Ok(())
}
