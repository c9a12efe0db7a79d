//! One member in one process, with no Raft core and no network, for the fuzz targets:
//! a client request goes through the gRPC service's own handler (its validation, the quota
//! check, auth, the proposer's size limit) and, if it writes, through the real applier task
//! and the applier chain into a real store on the disk given.
//!
//! What stands in for the Raft task is a loop that commits every proposal at once, as the
//! only voter of a cluster would: the proposal becomes the next entry of the log and goes
//! to the applier; a ReadIndex round is answered with the index of the last proposal, so a
//! linearizable read waits for the applier as it does on a leader. Lease deadlines are
//! never acted on (no expiry task runs), so the same requests always give the same state.

use std::sync::Arc;

use clap::Parser as _;
use tokio::sync::mpsc;

use crate::io::{Disk, SystemClock};
use crate::proto::etcdserverpb::auth_server::Auth as _;
use crate::proto::etcdserverpb::kv_server::Kv as _;
use crate::proto::etcdserverpb::lease_server::Lease as _;
use crate::proto::etcdserverpb::*;
use crate::raft::{ConfState, Entry, EntryType, Message};
use crate::server::services::auth::AuthService;
use crate::server::services::kv::KvService;
use crate::server::services::lease::LeaseService;
use crate::server::services::limits;
use crate::server::state::alarms::Alarms;
use crate::server::state::auth::{Auth, TOKEN_KEY};
use crate::server::state::membership::Membership;
use crate::server::state::proposer::Proposer;
use crate::server::state::server::{self, Parts, Server};
use crate::server::state::store::Store;
use crate::server::tasks::apply::Applier;
use crate::server::tasks::read_index;
use crate::server::types::config::Config;
use crate::server::types::error::ServerError;
use crate::server::types::metrics::Metrics;
use crate::server::types::request::{ApplyBatch, NodeInput, RaftStatus};
use crate::server::types::transport::Transport;

/// The member's id; its cluster has no other.
const MEMBER_ID: u64 = 1;

/// Proposals queued for the committing loop at most, as for the Raft task.
const PROPOSALS_QUEUED_MAX: usize = 1_024;

/// A request to one of the client services, as a client sends it.
#[derive(Clone, Debug)]
pub(crate) enum ClientRequest {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compaction(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases(LeaseLeasesRequest),
    AuthEnable(AuthEnableRequest),
    AuthDisable(AuthDisableRequest),
    Authenticate(AuthenticateRequest),
    UserAdd(AuthUserAddRequest),
    UserGet(AuthUserGetRequest),
    UserList(AuthUserListRequest),
    UserDelete(AuthUserDeleteRequest),
    UserChangePassword(AuthUserChangePasswordRequest),
    UserGrantRole(AuthUserGrantRoleRequest),
    UserRevokeRole(AuthUserRevokeRoleRequest),
    RoleAdd(AuthRoleAddRequest),
    RoleGet(AuthRoleGetRequest),
    RoleList(AuthRoleListRequest),
    RoleDelete(AuthRoleDeleteRequest),
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
}

/// What a service answered; the responses a caller checks in detail keep their type.
#[derive(Clone, Debug)]
pub(crate) enum ClientResponse {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    LeaseGrant(LeaseGrantResponse),
    /// Any other response, with the revision its header carries.
    Other {
        revision: i64,
    },
}

/// A transport with no peers: the member is alone.
struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _message: Message) {}
    fn add_peer(&self, _id: u64, _url: String) {}
    fn remove_peer(&self, _id: u64) {}
}

/// A member with its tasks on a runtime of its own.
pub(crate) struct InProcessMember {
    runtime: tokio::runtime::Runtime,
    server: Arc<Server>,
    applier: tokio::task::JoinHandle<Result<(), ServerError>>,
    /// The token the last successful Authenticate returned.
    token: Option<String>,
}

impl InProcessMember {
    /// Opens the member whose data directory is `/member` on `disk` (a new one if the disk
    /// holds none), configured by the command-line flags `flags`.
    pub(crate) fn open(disk: Arc<dyn Disk>, flags: &[&str]) -> Result<Self, String> {
        let args = ["oxcd", "--data-dir", "/member"].iter().chain(flags);
        let config = Config::try_parse_from(args).map_err(|error| error.to_string())?;
        disk.create_dir_all(&config.snap_dir())
            .map_err(|error| format!("the snap directory: {error}"))?;
        let metrics = Arc::new(Metrics::new(false));
        let store = Store::open(disk, Arc::new(SystemClock), &config, 1, metrics)
            .map_err(|error| format!("the store: {error}"))?;
        let applied_index = store.consistent_index();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("a runtime: {error}"))?;
        let (node_inputs, inputs) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        let (applier_batches, batches) = mpsc::unbounded_channel();
        let conf_state = ConfState {
            voters: vec![MEMBER_ID],
            ..Default::default()
        };
        let server = Arc::new(Server::new(Parts {
            id: MEMBER_ID,
            cluster_id: MEMBER_ID,
            store: store.clone(),
            membership: Membership::new(
                MEMBER_ID,
                store.clone(),
                Arc::new(NoPeers),
                config.election(),
                applied_index,
                conf_state,
            ),
            alarms: Alarms::load(store.clone()),
            auth: Auth::load(store.clone(), &config)?,
            proposer: Proposer::new(
                node_inputs,
                MEMBER_ID,
                1,
                config.max_request_bytes,
                server::request_timeout(&config),
                store.metrics(),
            ),
            transport: Arc::new(NoPeers),
            applied_index,
            config,
        }));
        server.set_raft_status(RaftStatus {
            term: 1,
            leader: MEMBER_ID,
            commit: applied_index,
            is_leader: true,
        });
        store.promote_lessor();
        let applier = Applier {
            server: server.clone(),
            backend: store,
            batches,
            applied_index,
            backend_index: applied_index,
            snapshot_index: applied_index,
            uncommitted_entries: 0,
        };
        let entered = runtime.enter();
        tokio::spawn(commit_at_once(
            server.clone(),
            inputs,
            applier_batches,
            applied_index,
        ));
        tokio::spawn(read_index::run(server.clone()));
        let applier = tokio::spawn(applier.run());
        drop(entered);
        Ok(InProcessMember {
            runtime,
            server,
            applier,
            token: None,
        })
    }

    /// The store's revision.
    pub(crate) fn revision(&self) -> i64 {
        self.server.store.current_revision()
    }

    /// HashKV of the whole keyspace: the hash, the compacted revision and the revision.
    pub(crate) fn hash_kv(&self) -> Result<(u32, i64, i64), String> {
        self.server
            .store
            .hash_kv(0)
            .map_err(|error| error.to_string())
    }

    /// Forgets the token of the last Authenticate: later requests carry none.
    pub(crate) fn log_out(&mut self) {
        self.token = None;
    }

    /// Sends `request` to its service, with the token of the last Authenticate if there
    /// was one, and waits for the answer.
    pub(crate) fn call(&mut self, request: ClientRequest) -> Result<ClientResponse, tonic::Status> {
        let kv = KvService {
            server: self.server.clone(),
        };
        let lease = LeaseService {
            server: self.server.clone(),
        };
        let auth = AuthService {
            server: self.server.clone(),
        };
        let limit = limits::grpc_message_bytes_max(self.server.config.max_request_bytes);
        let token = self.token.clone();
        macro_rules! wire {
            ($message:expr) => {
                received($message, limit, token.as_deref())?
            };
        }
        use ClientRequest as Q;
        use ClientResponse as A;
        let other = |header: Option<ResponseHeader>| A::Other {
            revision: header.map_or(0, |header| header.revision),
        };
        let mut new_token = None;
        let answer = self.runtime.block_on(async {
            Ok(match request {
                Q::Range(r) => A::Range(kv.range(wire!(r)).await?.into_inner()),
                Q::Put(r) => A::Put(kv.put(wire!(r)).await?.into_inner()),
                Q::DeleteRange(r) => A::DeleteRange(kv.delete_range(wire!(r)).await?.into_inner()),
                Q::Txn(r) => A::Txn(kv.txn(wire!(r)).await?.into_inner()),
                Q::Compaction(r) => other(kv.compact(wire!(r)).await?.into_inner().header),
                Q::LeaseGrant(r) => A::LeaseGrant(lease.lease_grant(wire!(r)).await?.into_inner()),
                Q::LeaseRevoke(r) => other(lease.lease_revoke(wire!(r)).await?.into_inner().header),
                Q::LeaseTimeToLive(r) => other(
                    lease
                        .lease_time_to_live(wire!(r))
                        .await?
                        .into_inner()
                        .header,
                ),
                Q::LeaseLeases(r) => other(lease.lease_leases(wire!(r)).await?.into_inner().header),
                Q::AuthEnable(r) => other(auth.auth_enable(wire!(r)).await?.into_inner().header),
                Q::AuthDisable(r) => other(auth.auth_disable(wire!(r)).await?.into_inner().header),
                Q::Authenticate(r) => {
                    let response = auth.authenticate(wire!(r)).await?.into_inner();
                    new_token = Some(response.token);
                    other(response.header)
                }
                Q::UserAdd(r) => other(auth.user_add(wire!(r)).await?.into_inner().header),
                Q::UserGet(r) => other(auth.user_get(wire!(r)).await?.into_inner().header),
                Q::UserList(r) => other(auth.user_list(wire!(r)).await?.into_inner().header),
                Q::UserDelete(r) => other(auth.user_delete(wire!(r)).await?.into_inner().header),
                Q::UserChangePassword(r) => other(
                    auth.user_change_password(wire!(r))
                        .await?
                        .into_inner()
                        .header,
                ),
                Q::UserGrantRole(r) => {
                    other(auth.user_grant_role(wire!(r)).await?.into_inner().header)
                }
                Q::UserRevokeRole(r) => {
                    other(auth.user_revoke_role(wire!(r)).await?.into_inner().header)
                }
                Q::RoleAdd(r) => other(auth.role_add(wire!(r)).await?.into_inner().header),
                Q::RoleGet(r) => other(auth.role_get(wire!(r)).await?.into_inner().header),
                Q::RoleList(r) => other(auth.role_list(wire!(r)).await?.into_inner().header),
                Q::RoleDelete(r) => other(auth.role_delete(wire!(r)).await?.into_inner().header),
                Q::RoleGrantPermission(r) => other(
                    auth.role_grant_permission(wire!(r))
                        .await?
                        .into_inner()
                        .header,
                ),
                Q::RoleRevokePermission(r) => other(
                    auth.role_revoke_permission(wire!(r))
                        .await?
                        .into_inner()
                        .header,
                ),
            })
        });
        if new_token.is_some() {
            self.token = new_token;
        }
        answer
    }

    /// Stops the member as a clean shutdown does: the applier commits the backend.
    pub(crate) fn close(self) -> Result<(), String> {
        self.server.lifecycle.stop();
        let applied = self
            .runtime
            .block_on(self.applier)
            .map_err(|error| format!("the applier task: {error}"))?;
        applied.map_err(|error| error.to_string())
    }
}

/// `message` as the service receives it from a client: encoded, refused over the gRPC
/// transport's limit as the client listener refuses it, decoded, with the token in the
/// metadata.
fn received<T: prost::Message + Default>(
    message: T,
    limit: usize,
    token: Option<&str>,
) -> Result<tonic::Request<T>, tonic::Status> {
    let encoded = message.encode_to_vec();
    if encoded.len() > limit {
        return Err(limits::received_too_large(
            encoded.len() as u64,
            limit as u64,
        ));
    }
    let decoded = T::decode(encoded.as_slice())
        .map_err(|error| tonic::Status::internal(format!("a message that decodes: {error}")))?;
    let mut request = tonic::Request::new(decoded);
    if let Some(token) = token {
        let value = token
            .parse()
            .map_err(|_| tonic::Status::internal("a token that is ASCII"))?;
        request.metadata_mut().insert(TOKEN_KEY, value);
    }
    Ok(request)
}

/// Stands in for the Raft task of a member that is the only voter: every proposal is
/// committed as the next entry and handed to the applier; a ReadIndex round is answered
/// with the last index proposed.
async fn commit_at_once(
    server: Arc<Server>,
    mut inputs: mpsc::Receiver<NodeInput>,
    applier: mpsc::UnboundedSender<ApplyBatch>,
    mut last_index: u64,
) {
    loop {
        // Why `select!`: inputs arrive until the member stops; stopping ends the loop even
        // while senders remain.
        let input = tokio::select! {
            biased;
            _ = server.lifecycle.stopped() => break,
            input = inputs.recv() => input,
        };
        let Some(input) = input else { break };
        match input {
            // One member leads in every term: a proposal pinned to a term is always taken.
            NodeInput::Propose { data, done, .. } => {
                last_index += 1;
                let entry = Entry {
                    entry_type: EntryType::Normal as i32,
                    term: 1,
                    index: last_index,
                    data,
                };
                let _ = done.send(Ok(()));
                if applier.send(ApplyBatch::Entries(vec![entry])).is_err() {
                    break;
                }
            }
            NodeInput::ReadIndex { context } => server.reads.confirm(&context, last_index),
            NodeInput::ProposeConfChange { done, .. } => {
                let _ = done.send(Err(ServerError::Unhealthy));
            }
            NodeInput::Progress { reply, .. } => {
                let _ = reply.send(None);
            }
            // Snapshots of the log, peers' messages and leadership transfers have nothing to
            // act on here.
            NodeInput::Snapshot { .. }
            | NodeInput::Step(_)
            | NodeInput::TransferLeader { .. }
            | NodeInput::Unreachable { .. }
            | NodeInput::SnapshotSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::io::SimDisk;

    fn put(key: &'static [u8], value: &'static [u8]) -> ClientRequest {
        ClientRequest::Put(PutRequest {
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
            ..Default::default()
        })
    }

    #[test]
    fn requests_go_through_the_services_into_a_store_that_survives_a_restart() {
        let disk = Arc::new(SimDisk::new(0));
        let mut member = InProcessMember::open(disk.clone(), &[]).expect("a member");
        assert!(matches!(
            member.call(put(b"k", b"v")),
            Ok(ClientResponse::Put(_))
        ));
        assert_eq!(member.revision(), 2);
        // The service's validation answers before anything is proposed.
        let refused = member.call(put(b"", b"v")).expect_err("an empty key");
        assert_eq!(refused.message(), "etcdserver: key is not provided");
        assert_eq!(member.revision(), 2);
        let range = ClientRequest::Range(RangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        });
        match member.call(range) {
            Ok(ClientResponse::Range(answer)) => {
                assert_eq!(answer.kvs.len(), 1);
                assert_eq!(answer.kvs[0].value.as_ref(), b"v");
            }
            other => panic!("a range answered {other:?}"),
        }
        let hash = member.hash_kv().expect("HashKV");
        member.close().expect("a clean stop");
        let reopened = InProcessMember::open(disk, &[]).expect("the member reopened");
        assert_eq!(reopened.revision(), 2);
        assert_eq!(reopened.hash_kv().expect("HashKV"), hash);
    }

    #[test]
    fn a_message_past_the_transport_limit_is_refused_in_grpc_gos_words() {
        let limit = limits::grpc_message_bytes_max(16);
        let big = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; limit]),
            ..Default::default()
        };
        let refused = received(big, limit, None).expect_err("too large");
        assert!(refused
            .message()
            .starts_with("grpc: received message larger than max ("));
        let small = received(RangeRequest::default(), limit, Some("token.1")).expect("small");
        assert_eq!(
            small.metadata().get(TOKEN_KEY).map(|v| v.to_str().ok()),
            Some(Some("token.1"))
        );
    }
}
