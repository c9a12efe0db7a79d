//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are validated, checked against the backend quota, and proposed through Raft; the
//! response comes from the applier. Reads are served from the local store: a linearizable
//! read (the default) first waits for a ReadIndex barrier, a serializable one does not. A
//! transaction that only reads is a read and never enters the log, as in etcd.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use crate::proto::oxcdpb::internal_request::Request as Internal;
use crate::server::services::validate;
use crate::server::state::server::Server;
use crate::server::state::txn;
use crate::server::types::error::ServerError;

/// What etcd adds to a key-value's size when estimating its cost in the backend.
const KV_OVERHEAD_BYTES: u64 = 256;

pub(crate) struct KvService {
    pub(crate) server: Arc<Server>,
}

impl KvService {
    /// The header of a write `request` proposes: who it comes from.
    async fn auth_header<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<crate::proto::oxcdpb::AuthHeader>, ServerError> {
        let info = self.server.request_auth(request).await?;
        Ok(self.server.auth_header(info.as_ref()))
    }

    /// Refuses a write that would take the backend past its quota, raising the NOSPACE alarm
    /// through Raft so every member stops taking writes (etcd's quota check).
    async fn check_quota(&self, cost_bytes: u64) -> Result<(), ServerError> {
        if cost_bytes == 0 {
            return Ok(());
        }
        if self.server.alarms.is_active(AlarmType::Nospace) {
            return Err(ServerError::NoSpace);
        }
        let size = self.server.store.db_size_bytes();
        if size + cost_bytes <= self.server.config.quota_bytes() {
            return Ok(());
        }
        let alarm = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.server.id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(error) = self.server.proposer.propose(Internal::Alarm(alarm)).await {
            tracing::warn!(%error, "could not raise the NOSPACE alarm");
        }
        Err(ServerError::NoSpace)
    }
}

fn put_cost(request: &PutRequest) -> u64 {
    request.key.len() as u64 + request.value.len() as u64 + KV_OVERHEAD_BYTES
}

fn txn_cost(request: &TxnRequest) -> u64 {
    use crate::proto::etcdserverpb::request_op::Request as Op;
    let branch_cost = |ops: &[crate::proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(put)) => put_cost(put),
                Some(Op::RequestTxn(nested)) => txn_cost(nested),
                _ => 0,
            })
            .sum()
    };
    branch_cost(&request.success).max(branch_cost(&request.failure))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let info = self.server.request_auth(&request).await?;
        let request = request.into_inner();
        validate::check_range(&request)?;
        if !request.serializable {
            self.server.read_barrier().await?;
        }
        self.server.auth.check(
            info.as_ref(),
            &request.key,
            &request.range_end,
            Access::Read,
        )?;
        let mut response = self.server.store.range(&request)?;
        let revision = response.header.as_ref().map_or(0, |header| header.revision);
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let header = self.auth_header(&request).await?;
        let request = request.into_inner();
        validate::check_put(&request)?;
        self.check_quota(put_cost(&request)).await?;
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<PutResponse>(Internal::Put(request), header)
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let header = self.auth_header(&request).await?;
        let request = request.into_inner();
        validate::check_delete(&request)?;
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<DeleteRangeResponse>(Internal::DeleteRange(request), header)
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let info = self.server.request_auth(&request).await?;
        let request = request.into_inner();
        validate::check_txn(&request, self.server.config.max_txn_ops)?;
        if txn::txn_is_read_only(&request) {
            if !txn_is_serializable(&request) {
                self.server.read_barrier().await?;
            }
            self.server.auth.check_txn(info.as_ref(), &request)?;
            let (mut response, revision) = self.server.store.read_txn(&request)?;
            response.header = Some(self.server.header(revision));
            return Ok(Response::new(response));
        }
        self.check_quota(txn_cost(&request)).await?;
        let header = self.server.auth_header(info.as_ref());
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<TxnResponse>(Internal::Txn(request), header)
            .await?;
        // The responses inside keep the revision-only headers the applier gave
        // them, as etcd's do.
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let header = self.auth_header(&request).await?;
        let request = request.into_inner();
        // The compaction itself happens while the entry is applied, so a successful answer is
        // already "physical": the old revisions are gone from the backend batch.
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<CompactionResponse>(Internal::Compaction(request), header)
            .await?;
        response.header = Some(self.server.header(revision));
        Ok(Response::new(response))
    }
}

/// A read-only transaction is serializable when every range in it asks to be.
fn txn_is_serializable(request: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request as Op;
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(range)) => range.serializable,
            Some(Op::RequestTxn(nested)) => txn_is_serializable(nested),
            _ => true,
        })
}
