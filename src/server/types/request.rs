//! What travels between the layers of a member: requests to the Raft task, committed work
//! for the applier, the applier's answers, and what the Raft task publishes about the core.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::proto::etcdserverpb::{
    AlarmResponse, AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse,
    AuthRoleDeleteResponse, AuthRoleGetResponse, AuthRoleGrantPermissionResponse,
    AuthRoleListResponse, AuthRoleRevokePermissionResponse, AuthUserAddResponse,
    AuthUserChangePasswordResponse, AuthUserDeleteResponse, AuthUserGetResponse,
    AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleResponse,
    AuthenticateResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use crate::raft::{self, ConfChangeV2, ConfState, Entry, Message};
use crate::server::types::error::ServerError;

/// What a member answers a removed member, which then stops (etcd's words).
pub const REMOVED: &str = "the member has been permanently removed from the cluster";

/// Learners a cluster may have at once (etcd's default `--max-learners`).
pub(crate) const LEARNERS_MAX: usize = 1;

/// The largest lease TTL etcd accepts, in seconds.
pub(crate) const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// Proposals in flight at most before new ones are refused with "too many requests"; the
/// bound keeps memory and apply latency in check when clients outrun the disk.
pub(crate) const PROPOSALS_PENDING_MAX: usize = 50_000;

/// The response to one applied request, before the server fills in the header.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    LeaseCheckpoint,
    /// A change of the member list (a publication, an update, a configuration change).
    Membership,
    /// An Auth request.
    Auth(AuthAnswer),
    /// A v2 request: its event, or the v2 error it met (an answer, not a failure).
    V2(V2Outcome),
}

/// What a v2 request from the log comes to.
pub(crate) type V2Outcome = Result<std::sync::Arc<crate::v2::Event>, crate::v2::V2Error>;

impl FromApplied for V2Outcome {
    fn from_applied(applied: Applied) -> Option<Self> {
        match applied {
            Applied::V2(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// The answer of an applied Auth request.
#[derive(Debug, Clone)]
pub(crate) enum AuthAnswer {
    Enable(AuthEnableResponse),
    Disable(AuthDisableResponse),
    Authenticate(AuthenticateResponse),
    UserAdd(AuthUserAddResponse),
    UserDelete(AuthUserDeleteResponse),
    UserGet(AuthUserGetResponse),
    UserChangePassword(AuthUserChangePasswordResponse),
    UserGrantRole(AuthUserGrantRoleResponse),
    UserRevokeRole(AuthUserRevokeRoleResponse),
    UserList(AuthUserListResponse),
    RoleList(AuthRoleListResponse),
    RoleAdd(AuthRoleAddResponse),
    RoleDelete(AuthRoleDeleteResponse),
    RoleGet(AuthRoleGetResponse),
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
}

/// The user named by the Common Name of the verified client certificate a request came
/// with: a request extension the request gate (`services::middleware`) attaches, the same
/// type in both builds (the simulator has no TLS, so never one there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateUser(pub(crate) std::sync::Arc<str>);

/// What a waiter receives: the response and the store's revision right after the apply.
pub(crate) type ApplyResult = Result<(Applied, i64), ServerError>;

/// A response type that one kind of applied request produces: a proposer asks for the
/// type it expects (`Proposer::propose_as::<PutResponse>`) instead of matching `Applied`.
pub(crate) trait FromApplied: Sized {
    /// The response, or `None` when `applied` is of another kind.
    fn from_applied(applied: Applied) -> Option<Self>;
}

macro_rules! from_applied {
    ($($variant:ident => $response:ty),* $(,)?) => {
        $(
            impl FromApplied for $response {
                fn from_applied(applied: Applied) -> Option<Self> {
                    match applied {
                        Applied::$variant(response) => Some(response),
                        _ => None,
                    }
                }
            }
        )*
    };
}

from_applied! {
    Put => PutResponse,
    DeleteRange => DeleteRangeResponse,
    Txn => TxnResponse,
    Compaction => CompactionResponse,
    LeaseGrant => LeaseGrantResponse,
    LeaseRevoke => LeaseRevokeResponse,
    Alarm => AlarmResponse,
}

macro_rules! from_auth_answer {
    ($($variant:ident => $response:ty),* $(,)?) => {
        $(
            impl FromApplied for $response {
                fn from_applied(applied: Applied) -> Option<Self> {
                    match applied {
                        Applied::Auth(AuthAnswer::$variant(response)) => Some(response),
                        _ => None,
                    }
                }
            }
        )*
    };
}

from_auth_answer! {
    Enable => AuthEnableResponse,
    Disable => AuthDisableResponse,
    Authenticate => AuthenticateResponse,
    UserAdd => AuthUserAddResponse,
    UserDelete => AuthUserDeleteResponse,
    UserGet => AuthUserGetResponse,
    UserChangePassword => AuthUserChangePasswordResponse,
    UserGrantRole => AuthUserGrantRoleResponse,
    UserRevokeRole => AuthUserRevokeRoleResponse,
    UserList => AuthUserListResponse,
    RoleList => AuthRoleListResponse,
    RoleAdd => AuthRoleAddResponse,
    RoleDelete => AuthRoleDeleteResponse,
    RoleGet => AuthRoleGetResponse,
    RoleGrantPermission => AuthRoleGrantPermissionResponse,
    RoleRevokePermission => AuthRoleRevokePermissionResponse,
}

/// Membership changes and publications answer with nothing but the revision.
impl FromApplied for () {
    fn from_applied(applied: Applied) -> Option<Self> {
        matches!(applied, Applied::Membership | Applied::LeaseCheckpoint).then_some(())
    }
}

/// What the rest of the member asks of the Raft task.
pub(crate) enum NodeInput {
    /// Propose an encoded `InternalRequest`; `done` says whether the core accepted it (it may
    /// still be lost before commit: the waiter's timeout covers that).
    Propose {
        data: Bytes,
        done: oneshot::Sender<Result<(), ServerError>>,
        /// When set, the core takes the proposal only as the leader of this term; otherwise
        /// it is refused with `LeaderChanged`, never forwarded to another leader. An entry
        /// appended in a term whose leader has been deposed cannot commit, so a decision the
        /// leader made from its own state in that term (a lease expired by its clock) dies
        /// with its leadership.
        leading_in: Option<u64>,
    },
    /// Start a ReadIndex round; the answer arrives as a read state carrying `context`.
    ReadIndex { context: Bytes },
    /// Propose a membership change.
    ProposeConfChange {
        change: ConfChangeV2,
        done: oneshot::Sender<Result<(), ServerError>>,
    },
    /// The applier committed the backend through `index`: the log before it may be compacted
    /// and a snapshot recorded.
    Snapshot { index: u64, conf_state: ConfState },
    /// A message from a peer.
    Step(Message),
    /// Hand leadership to `to`.
    TransferLeader { to: u64 },
    /// The transport could not reach `to`.
    Unreachable { to: u64 },
    /// The transport finished sending a snapshot to `to`.
    SnapshotSent { to: u64, failed: bool },
    /// On the leader: how far member `id` has replicated the log, and the log's last index.
    Progress {
        id: u64,
        reply: oneshot::Sender<Option<(u64, u64)>>,
    },
}

/// Committed work for the applier, in log order.
pub(crate) enum ApplyBatch {
    Entries(Vec<Entry>),
    /// Restore the state machine from a snapshot received from the leader.
    Snapshot(raft::Snapshot),
}

/// What the Raft task last published about the core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RaftStatus {
    pub(crate) term: u64,
    /// 0 while no leader is known.
    pub(crate) leader: u64,
    pub(crate) commit: u64,
    pub(crate) is_leader: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_taken_only_from_its_own_kind() {
        let put = Applied::Put(PutResponse::default());
        assert!(PutResponse::from_applied(put.clone()).is_some());
        assert!(TxnResponse::from_applied(put.clone()).is_none());
        assert!(<()>::from_applied(put).is_none());
        assert!(<()>::from_applied(Applied::Membership).is_some());
        assert!(AlarmResponse::from_applied(Applied::Membership).is_none());
    }
}
