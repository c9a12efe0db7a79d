//! The Cluster service.
//!
//! Membership lives in the Raft configuration; the member records (names and URLs) are what
//! MemberList reports. Changing membership (add, remove, update, promote) needs the peer
//! transport of a multi-member cluster; until a member has one it answers those calls with
//! etcd's "not capable" error rather than pretending to succeed.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::EtcdError;
use super::member::Member;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as MemberInfo, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

pub struct ClusterService {
    pub member: Arc<Member>,
}

impl ClusterService {
    fn members(&self) -> Vec<MemberInfo> {
        self.member
            .members()
            .into_iter()
            .map(|record| MemberInfo {
                id: record.id,
                name: record.name,
                peer_ur_ls: record.peer_urls,
                client_ur_ls: record.client_urls,
                is_learner: record.is_learner,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(EtcdError::NotCapable.into())
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        if request.into_inner().id != self.member.id {
            return Err(EtcdError::MemberNotFound.into());
        }
        Err(EtcdError::NotCapable.into())
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        if request.into_inner().id != self.member.id {
            return Err(EtcdError::MemberNotFound.into());
        }
        Err(EtcdError::NotCapable.into())
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.member.header(self.member.store.current_revision())),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        if request.into_inner().id != self.member.id {
            return Err(EtcdError::MemberNotFound.into());
        }
        Err(Status::failed_precondition(
            "etcdserver: can only promote a learner member",
        ))
    }
}
