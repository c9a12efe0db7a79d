//! The Cluster service: membership changes through Raft configuration changes.
//!
//! MemberAdd, MemberRemove and MemberPromote propose a configuration change whose context
//! carries the member's record; every member applies it to its member list and transport
//! when the entry is applied (`tasks::apply`), and the proposer answers once it is. MemberUpdate
//! changes only addresses, so it goes through the log as an ordinary request. A member
//! added here joins by starting with `--initial-cluster-state existing`, learning its id and
//! the cluster from its peers.
//!
//! As etcd's `--strict-reconfig-check` (on by default), a change that would leave fewer
//! started voting members than a quorum is refused, and so is one the leader cannot vouch
//! for: an addition while it has not been in touch with every voting member for five
//! seconds, a removal that would leave too few members in touch. A follower hears from the
//! leader only, so it asks the leader for that second check. One learner at a time, as in
//! etcd 3.4.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as MemberInfo, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::proto::oxcdpb::{internal_request::Request as Internal, Member, ReconfigurationCheck};
use crate::raft::ConfChangeType;
use crate::server::services::forward;
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::ids;
use crate::server::types::request::LEARNERS_MAX;

/// A learner may be promoted once it has this share of the leader's log (etcd: 90%).
const LEARNER_READY_PERCENT: u64 = 90;
/// How long the leader must have been in touch with a member for it to count as healthy
/// in a reconfiguration (etcd's HealthInterval).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// A member that has published its name; members added but never started have none.
fn started(record: &Member) -> bool {
    !record.name.is_empty()
}

fn voters(server: &Server) -> Vec<Member> {
    server
        .membership
        .members()
        .into_iter()
        .filter(|record| !record.is_learner)
        .collect()
}

/// Whether the leader has been in touch with member `id` for the whole health interval
/// (itself always).
fn healthy(server: &Server, id: u64) -> bool {
    id == server.id
        || server
            .membership
            .in_contact_since(id)
            .is_some_and(|since| since.elapsed() >= HEALTH_INTERVAL)
}

/// A membership change, as the leader's reachability check sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change {
    Add,
    Remove(u64),
}

/// The reachability half of the strict check, on the leader: has it been in touch long
/// enough with the members the cluster will rest on after `change`?
pub(crate) fn leader_may_change(server: &Server, change: Change) -> Result<(), ServerError> {
    if !server.raft_status().is_leader {
        return Err(ServerError::NotLeader);
    }
    let voters = voters(server);
    match change {
        Change::Add => {
            if !voters.iter().all(|m| healthy(server, m.id)) {
                return Err(ServerError::Unhealthy);
            }
        }
        Change::Remove(id) => {
            // A member out of touch is not part of the quorum that keeps the cluster going.
            if id != server.id && server.membership.in_contact_since(id).is_none() {
                return Ok(());
            }
            let healthy_count = voters.iter().filter(|m| healthy(server, m.id)).count();
            if healthy_count.saturating_sub(1) < quorum(voters.len().saturating_sub(1)) {
                return Err(ServerError::Unhealthy);
            }
        }
    }
    Ok(())
}

/// The reachability check, here on the leader or asked of it.
async fn check_with_leader(server: &Server, change: Change) -> Result<(), ServerError> {
    if forward::route(server.raft_status()) == forward::Route::Here {
        return leader_may_change(server, change);
    }
    let mut leader = forward::leader_client(server).await?;
    let request = ReconfigurationCheck {
        add: matches!(change, Change::Add),
        remove: match change {
            Change::Remove(id) => id,
            Change::Add => 0,
        },
    };
    match leader.check_reconfiguration(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.message() == ServerError::Unhealthy.to_string() => {
            Err(ServerError::Unhealthy)
        }
        Err(_) => Err(forward::leader_call_failed(server)),
    }
}

/// May a member be added (a voter, or a learner)?
async fn may_add(server: &Server, learner: bool) -> Result<(), ServerError> {
    let members = server.membership.members();
    if learner && members.iter().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
        return Err(ServerError::TooManyLearners);
    }
    if !server.config.strict_reconfig_check {
        return Ok(());
    }
    let voters = voters(server);
    if !learner {
        let after = voters.len() + 1;
        let started = voters.iter().filter(|m| started(m)).count();
        // One started member may gain a second: how a cluster restored from a backup grows.
        if !(started == 1 && after == 2) && started < quorum(after) {
            return Err(ServerError::NotEnoughStartedMembers);
        }
    }
    check_with_leader(server, Change::Add).await
}

/// May member `record` be removed?
async fn may_remove(server: &Server, record: &Member) -> Result<(), ServerError> {
    if !server.config.strict_reconfig_check || record.is_learner {
        return Ok(());
    }
    let voters = voters(server);
    let remaining: Vec<&Member> = voters.iter().filter(|m| m.id != record.id).collect();
    if remaining.iter().filter(|m| started(m)).count() < quorum(remaining.len()) {
        return Err(ServerError::NotEnoughStartedMembers);
    }
    check_with_leader(server, Change::Remove(record.id)).await
}

/// May a learner be promoted (it counts as started)?
fn may_promote(server: &Server) -> Result<(), ServerError> {
    if !server.config.strict_reconfig_check {
        return Ok(());
    }
    let voters = voters(server);
    let started = 1 + voters.iter().filter(|m| started(m)).count();
    if started < quorum(voters.len() + 1) {
        return Err(ServerError::NotEnoughStartedMembers);
    }
    Ok(())
}

pub(crate) struct ClusterService {
    pub(crate) server: Arc<Server>,
}

fn info(record: Member) -> MemberInfo {
    MemberInfo {
        id: record.id,
        name: record.name,
        peer_ur_ls: record.peer_urls,
        client_ur_ls: record.client_urls,
        is_learner: record.is_learner,
    }
}

fn members(server: &Server) -> Vec<MemberInfo> {
    server.membership.members().into_iter().map(info).collect()
}

/// The header and member list once a change applied.
fn applied(server: &Server, _revision: i64) -> (Option<ResponseHeader>, Vec<MemberInfo>) {
    (Some(cluster_header(server)), members(server))
}

/// The header of the Cluster service's answers: etcd's carries no revision.
fn cluster_header(server: &Server) -> ResponseHeader {
    ResponseHeader {
        revision: 0,
        ..server.header(0)
    }
}

/// Peer URLs must be absolute http(s) URLs with a host and a port.
fn validate_urls(urls: &[String]) -> Result<(), ServerError> {
    let valid = |url: &String| {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        rest.and_then(|host_port| host_port.trim_end_matches('/').rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(ServerError::InvalidPeerUrls);
    }
    Ok(())
}

/// Whether a member other than `except` already uses one of `urls`.
fn peer_urls_taken(server: &Server, urls: &[String], except: Option<u64>) -> bool {
    server.membership.members().iter().any(|record| {
        Some(record.id) != except && record.peer_urls.iter().any(|url| urls.contains(url))
    })
}

/// Promotes learner `id`: on the leader, once it has caught up; elsewhere, by asking the
/// leader (only it knows how far the learner got).
pub(crate) async fn promote(server: &Server, id: u64) -> Result<MemberPromoteResponse, Status> {
    let record = server
        .membership
        .member(id)
        .ok_or(ServerError::MemberNotFound)?;
    if !record.is_learner {
        return Err(ServerError::NotLearner.into());
    }
    if forward::route(server.raft_status()) != forward::Route::Here {
        let mut leader = forward::leader_client(server).await?;
        let forwarded = leader
            .promote_member(MemberPromoteRequest { id })
            .await
            .map_err(|status| {
                if status.code() == tonic::Code::Unavailable {
                    forward::leader_call_failed(server).into()
                } else {
                    status
                }
            })?;
        return Ok(forwarded.into_inner());
    }
    let (matched, last) = server.proposer.learner_progress(id).await?;
    if matched * 100 < last * LEARNER_READY_PERCENT {
        return Err(ServerError::LearnerNotReady.into());
    }
    may_promote(server)?;
    let outcome = server
        .proposer
        .propose_membership(ConfChangeType::AddNode, record)
        .await?;
    let (header, members) = applied(server, outcome);
    Ok(MemberPromoteResponse { header, members })
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        // Membership changes need the `root` role while auth is enabled.
        self.server.require_admin(&request).await?;
        let request = request.into_inner();
        validate_urls(&request.peer_ur_ls)?;
        if peer_urls_taken(&self.server, &request.peer_ur_ls, None) {
            return Err(ServerError::PeerUrlExists.into());
        }
        // As etcd does: the id hashes the URLs, the cluster token and the time, so a member
        // added again at the same URLs after a removal gets a new id.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let id = ids::new_member_id(
            &request.peer_ur_ls,
            &self.server.config.initial_cluster_token,
            now,
        );
        if self.server.membership.member(id).is_some() || self.server.membership.is_removed(id) {
            return Err(ServerError::MemberIdExists.into());
        }
        may_add(&self.server, request.is_learner).await?;
        let record = Member {
            id,
            name: String::new(),
            peer_urls: request.peer_ur_ls,
            client_urls: Vec::new(),
            is_learner: request.is_learner,
        };
        let change = if request.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let outcome = self
            .server
            .proposer
            .propose_membership(change, record.clone())
            .await?;
        let (header, members) = applied(&self.server, outcome);
        Ok(Response::new(MemberAddResponse {
            header,
            member: Some(info(record)),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        // Membership changes need the `root` role while auth is enabled.
        self.server.require_admin(&request).await?;
        let id = request.into_inner().id;
        let record = self
            .server
            .membership
            .member(id)
            .ok_or(ServerError::MemberNotFound)?;
        may_remove(&self.server, &record).await?;
        let outcome = self
            .server
            .proposer
            .propose_membership(ConfChangeType::RemoveNode, record)
            .await?;
        let (header, members) = applied(&self.server, outcome);
        Ok(Response::new(MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        // Membership changes need the `root` role while auth is enabled.
        self.server.require_admin(&request).await?;
        let request = request.into_inner();
        validate_urls(&request.peer_ur_ls)?;
        let record = self
            .server
            .membership
            .member(request.id)
            .ok_or(ServerError::MemberNotFound)?;
        if peer_urls_taken(&self.server, &request.peer_ur_ls, Some(request.id)) {
            return Err(ServerError::PeerUrlExists.into());
        }
        let update = Member {
            peer_urls: request.peer_ur_ls,
            ..record
        };
        let ((), outcome) = self
            .server
            .proposer
            .propose_as::<()>(Internal::MemberUpdate(update))
            .await?;
        let (header, members) = applied(&self.server, outcome);
        Ok(Response::new(MemberUpdateResponse { header, members }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.server.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(cluster_header(&self.server)),
            members: members(&self.server),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        // Membership changes need the `root` role while auth is enabled.
        self.server.require_admin(&request).await?;
        let response = promote(&self.server, request.into_inner().id).await?;
        Ok(Response::new(response))
    }
}
