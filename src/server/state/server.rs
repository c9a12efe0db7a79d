//! The server: what one member's tasks and services share (etcd's `EtcdServer`).
//!
//! It is a composition of owners, each with one job: the [`Store`] (keys, leases, the
//! backend), [`Membership`] (the member list and its persistence), [`Alarms`], the
//! [`Proposer`] (request ids, waiters, the channel to the Raft task), the [`ReadBatcher`]
//! (ReadIndex rounds), the [`Lifecycle`] (stopping), and what the Raft task and the applier
//! publish: the Raft status and the applied index. Tasks and services hold an
//! `Arc<Server>` and reach the owner they need through it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tonic::transport::Channel;

use super::alarms::Alarms;
use super::auth::Auth;
use super::lifecycle::Lifecycle;
use super::membership::Membership;
use super::proposer::Proposer;
use super::reads::ReadBatcher;
use crate::auth::AuthInfo;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::oxcdpb::raft_transport_client::RaftTransportClient;
use crate::proto::oxcdpb::AuthHeader;
use crate::proto::oxcdpb::Member;
use crate::raft::MemStorage;
use crate::server::state::store::Store;
use crate::server::types::config::Config;
use crate::server::types::error::ServerError;
use crate::server::types::metrics::Metrics;
use crate::server::types::progress::Progress;
use crate::server::types::request::RaftStatus;
use crate::server::types::transport::Transport;

pub(crate) struct Server {
    pub(crate) id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) name: String,
    pub(crate) config: Config,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
    pub(crate) store: Store,
    pub(crate) membership: Membership,
    pub(crate) alarms: Alarms,
    pub(crate) auth: Auth,
    pub(crate) proposer: Proposer,
    pub(crate) reads: ReadBatcher,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) transport: Arc<dyn Transport>,
    /// The member's metrics (the store's, shared by every task and service).
    pub(crate) metrics: Arc<Metrics>,
    /// The Raft log (shared with the Raft task), for the terms of the entries a snapshot
    /// sent to a peer stops at.
    pub(crate) raft_log: OnceLock<MemStorage>,
    /// The connection to the leader's peer service (leader id, client), reused across the
    /// requests a follower forwards (`services::forward`).
    pub(crate) leader_connection: Mutex<Option<(u64, RaftTransportClient<Channel>)>>,
    /// Published by the Raft task after every Ready. A `std` mutex: copied out at once.
    raft_status: Mutex<RaftStatus>,
    /// Published by the applier after every batch.
    applied: Progress,
    /// When the member started (the v2 stats' `startTime`).
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) started: std::time::SystemTime,
    /// The leader last known, and since when (the v2 stats' `leaderInfo`).
    leader_since: Mutex<(u64, std::time::SystemTime)>,
    /// Raft append requests sent to and received from peers (the v2 stats' counts).
    pub(crate) appends_sent: std::sync::atomic::AtomicU64,
    pub(crate) appends_received: std::sync::atomic::AtomicU64,
}

/// The parts a server is made of, assembled by the bootstrap.
pub(crate) struct Parts {
    pub(crate) config: Config,
    pub(crate) id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) store: Store,
    pub(crate) membership: Membership,
    pub(crate) alarms: Alarms,
    pub(crate) auth: Auth,
    pub(crate) proposer: Proposer,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) applied_index: u64,
}

impl Server {
    pub(crate) fn new(parts: Parts) -> Server {
        let Parts {
            config,
            id,
            cluster_id,
            store,
            membership,
            alarms,
            auth,
            proposer,
            transport,
            applied_index,
        } = parts;
        Server {
            id,
            cluster_id,
            name: config.name.clone(),
            peer_urls: config.advertise_peer_urls(),
            client_urls: config.advertise_client_urls(),
            config,
            metrics: store.metrics(),
            store,
            membership,
            alarms,
            auth,
            proposer,
            reads: ReadBatcher::default(),
            lifecycle: Lifecycle::default(),
            transport,
            raft_log: OnceLock::new(),
            leader_connection: Mutex::new(None),
            raft_status: Mutex::new(RaftStatus::default()),
            applied: Progress::new(applied_index),
            started: std::time::SystemTime::now(),
            leader_since: Mutex::new((0, std::time::SystemTime::now())),
            appends_sent: Default::default(),
            appends_received: Default::default(),
        }
    }

    /// This member's own record, as it publishes it.
    pub(crate) fn own_record(&self) -> Member {
        Member {
            id: self.id,
            name: self.name.clone(),
            peer_urls: self.peer_urls.clone(),
            client_urls: self.client_urls.clone(),
            is_learner: false,
        }
    }

    /// etcd's request timeout: 5 s plus two election timeouts.
    pub(crate) fn request_timeout(&self) -> Duration {
        request_timeout(&self.config)
    }

    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft_status().term,
        }
    }

    /// Waits until a read issued now may be served locally (linearizable reads).
    pub(crate) async fn read_barrier(&self) -> Result<(), ServerError> {
        if crate::planted::active(crate::planted::Bug::StaleRead) {
            return Ok(());
        }
        self.reads.barrier().await
    }

    pub(crate) fn raft_status(&self) -> RaftStatus {
        *self.raft_status.lock().expect("raft status lock poisoned")
    }

    pub(crate) fn set_raft_status(&self, status: RaftStatus) {
        *self.raft_status.lock().expect("raft status lock poisoned") = status;
        let mut since = self.leader_since.lock().expect("leader lock poisoned");
        if since.0 != status.leader {
            *since = (status.leader, std::time::SystemTime::now());
        }
    }

    /// The leader last known (0 for none) and when this member learnt of it.
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn leader_since(&self) -> (u64, std::time::SystemTime) {
        *self.leader_since.lock().expect("leader lock poisoned")
    }

    pub(crate) fn applied_index(&self) -> u64 {
        self.applied.get()
    }

    pub(crate) fn set_applied(&self, index: u64) {
        self.applied.advance(index);
    }

    /// Who a client request comes from (`state::auth`). A token issued by an entry this
    /// member has not applied yet is looked up once it has (within the request timeout).
    pub(crate) async fn request_auth<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Option<AuthInfo>, ServerError> {
        self.wait_for_token(request.metadata()).await?;
        self.auth
            .request_info(request.metadata(), request.extensions())
    }

    /// [`Server::request_auth`] for a request already taken apart.
    pub(crate) async fn request_parts_auth(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Option<AuthInfo>, ServerError> {
        self.wait_for_token(metadata).await?;
        self.auth.request_info(metadata, extensions)
    }

    async fn wait_for_token(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), ServerError> {
        if let Some(index) = Auth::token_index(metadata) {
            if index > self.applied_index() {
                tokio::time::timeout(self.request_timeout(), self.applied_reached(index))
                    .await
                    .map_err(|_| ServerError::Timeout)?;
            }
        }
        Ok(())
    }

    /// The header of a write proposed for `info`: while auth is enabled every client write
    /// names its user, or nobody, and the applier checks it.
    pub(crate) fn auth_header(&self, info: Option<&AuthInfo>) -> Option<AuthHeader> {
        match info {
            Some(_) => Auth::header(info),
            None if self.auth.is_enabled() => Some(AuthHeader::default()),
            None => None,
        }
    }

    /// Refuses a request that needs the `root` role, in etcd's server words.
    pub(crate) async fn require_admin<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<(), ServerError> {
        if !self.auth.is_enabled() {
            return Ok(());
        }
        let info = self.request_auth(request).await?;
        Ok(self.auth.check_admin(info.as_ref())?)
    }

    /// Returns once the applier has applied `index`.
    pub(crate) async fn applied_reached(&self, index: u64) {
        self.applied.reached(index).await
    }
}

/// etcd's request timeout: 5 s plus two election timeouts.
pub(crate) fn request_timeout(config: &Config) -> Duration {
    Duration::from_secs(5) + 2 * Duration::from_millis(config.election_timeout)
}
