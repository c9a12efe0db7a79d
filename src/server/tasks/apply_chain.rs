//! The applier chain: one method per kind of request in the log (etcd's `applierV3`),
//! implemented once against the member's state and wrapped by decorators that may refuse a
//! request before it reaches the state.
//!
//! Two decorators: [`Capped`] (etcd's `applierV3Capped`) refuses every request that would
//! grow the backend while the NOSPACE alarm is raised; [`Authorized`] (etcd's
//! `authApplierV3`), in front while auth is enabled, checks the permissions of the user the
//! entry's header names against the auth state at the entry's place in the log. Every
//! member applies the same entries through the same chain, so a refusal is as
//! deterministic as a success.

use crate::auth::AuthInfo;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, LeaseCheckpointRequest,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    TxnRequest,
};
use crate::proto::oxcdpb::{internal_request::Request, AuthHeader, Member, V2Request};
use crate::server::state::auth::Auth;
use crate::server::state::server::Server;
use crate::server::state::store::Store;
use crate::server::state::txn;
use crate::server::types::error::ServerError;
use crate::server::types::request::{Applied, ApplyResult};

/// Applies each kind of request in the log; answers the response and the revision after it.
pub(crate) trait ApplyRequests {
    fn put(&mut self, request: &PutRequest) -> ApplyResult;
    fn delete_range(&mut self, request: &DeleteRangeRequest) -> ApplyResult;
    fn txn(&mut self, request: &TxnRequest) -> ApplyResult;
    fn compaction(&mut self, request: &CompactionRequest) -> ApplyResult;
    fn lease_grant(&mut self, request: &LeaseGrantRequest) -> ApplyResult;
    fn lease_revoke(&mut self, request: &LeaseRevokeRequest) -> ApplyResult;
    fn lease_checkpoint(&mut self, request: &LeaseCheckpointRequest) -> ApplyResult;
    fn alarm(&mut self, request: &AlarmRequest) -> ApplyResult;
    /// A member publishes its name and client URLs.
    fn member_attributes(&mut self, record: Member) -> ApplyResult;
    /// New peer URLs for a member (MemberUpdate).
    fn member_update(&mut self, record: Member) -> ApplyResult;
    /// A request of the Auth service.
    fn auth(&mut self, request: &Request) -> ApplyResult;
    /// A request of the v2 keyspace.
    fn v2(&mut self, request: &V2Request) -> ApplyResult;
}

/// Hands `request` to the method of its kind.
pub(crate) fn dispatch(applier: &mut dyn ApplyRequests, request: Option<Request>) -> ApplyResult {
    match request {
        Some(Request::Put(request)) => applier.put(&request),
        Some(Request::DeleteRange(request)) => applier.delete_range(&request),
        Some(Request::Txn(request)) => applier.txn(&request),
        Some(Request::Compaction(request)) => applier.compaction(&request),
        Some(Request::LeaseGrant(request)) => applier.lease_grant(&request),
        Some(Request::LeaseRevoke(request)) => applier.lease_revoke(&request),
        Some(Request::LeaseCheckpoint(request)) => applier.lease_checkpoint(&request),
        Some(Request::Alarm(request)) => applier.alarm(&request),
        Some(Request::MemberAttributes(record)) => applier.member_attributes(record),
        Some(Request::MemberUpdate(record)) => applier.member_update(record),
        Some(Request::V2(request)) => applier.v2(&request),
        Some(
            request @ (Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::Authenticate(_)
            | Request::AuthUserAdd(_)
            | Request::AuthUserDelete(_)
            | Request::AuthUserGet(_)
            | Request::AuthUserChangePassword(_)
            | Request::AuthUserGrantRole(_)
            | Request::AuthUserRevokeRole(_)
            | Request::AuthUserList(_)
            | Request::AuthRoleList(_)
            | Request::AuthRoleAdd(_)
            | Request::AuthRoleDelete(_)
            | Request::AuthRoleGet(_)
            | Request::AuthRoleGrantPermission(_)
            | Request::AuthRoleRevokePermission(_)),
        ) => applier.auth(&request),
        None => Err(ServerError::Internal("empty request in the log".into())),
    }
}

/// Applies the request of the log entry at `index` through the chain the member's state
/// calls for now: authorized while auth is enabled, capped while the NOSPACE alarm is
/// raised (an alarm or an AuthEnable applied earlier in the same batch counts).
pub(crate) fn apply(
    server: &Server,
    store: &Store,
    index: u64,
    request: Option<Request>,
    header: Option<AuthHeader>,
) -> ApplyResult {
    let mut state = StateApplier {
        server,
        store,
        index,
    };
    let mut capped;
    let next: &mut dyn ApplyRequests = if server.alarms.is_active(AlarmType::Nospace) {
        capped = Capped { next: &mut state };
        &mut capped
    } else {
        &mut state
    };
    if server.auth.is_enabled() {
        let info = header.map(|header| AuthInfo {
            username: header.username,
            revision: header.auth_revision,
        });
        let mut authorized = Authorized {
            next,
            auth: &server.auth,
            info,
        };
        dispatch(&mut authorized, request)
    } else {
        dispatch(next, request)
    }
}

/// The end of the chain: changes the store, the lessor, the alarms, the member list and
/// the auth state.
pub(crate) struct StateApplier<'a> {
    pub(crate) server: &'a Server,
    pub(crate) store: &'a Store,
    /// The Raft index of the entry being applied.
    pub(crate) index: u64,
}

impl StateApplier<'_> {
    fn revision(&self) -> i64 {
        self.store.current_revision()
    }
}

impl ApplyRequests for StateApplier<'_> {
    fn put(&mut self, request: &PutRequest) -> ApplyResult {
        self.store
            .write(|view| txn::put(view, request).map(Applied::Put))
    }

    fn delete_range(&mut self, request: &DeleteRangeRequest) -> ApplyResult {
        self.store
            .write(|view| txn::delete_range(view, request).map(Applied::DeleteRange))
    }

    fn txn(&mut self, request: &TxnRequest) -> ApplyResult {
        self.store
            .write(|view| txn::txn(view, request).map(Applied::Txn))
    }

    fn compaction(&mut self, request: &CompactionRequest) -> ApplyResult {
        self.store.compact(request.revision)?;
        Ok((
            Applied::Compaction(CompactionResponse::default()),
            self.revision(),
        ))
    }

    fn lease_grant(&mut self, request: &LeaseGrantRequest) -> ApplyResult {
        let granted_ttl = self.store.grant_lease(request.id, request.ttl)?;
        let response = LeaseGrantResponse {
            header: None,
            id: request.id,
            ttl: granted_ttl,
            error: String::new(),
        };
        Ok((Applied::LeaseGrant(response), self.revision()))
    }

    fn lease_revoke(&mut self, request: &LeaseRevokeRequest) -> ApplyResult {
        let revision = self.store.revoke_lease(request.id)?;
        Ok((
            Applied::LeaseRevoke(LeaseRevokeResponse::default()),
            revision,
        ))
    }

    fn lease_checkpoint(&mut self, request: &LeaseCheckpointRequest) -> ApplyResult {
        for checkpoint in &request.checkpoints {
            self.store
                .checkpoint_lease(checkpoint.id, checkpoint.remaining_ttl);
        }
        Ok((Applied::LeaseCheckpoint, self.revision()))
    }

    fn alarm(&mut self, request: &AlarmRequest) -> ApplyResult {
        let alarm = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        let alarms = &self.server.alarms;
        let changed = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Activate) if request.alarm != AlarmType::None as i32 => {
                if alarms.activate(alarm) {
                    tracing::warn!(
                        member = request.member_id,
                        alarm = request.alarm,
                        "alarm raised"
                    );
                }
                // Raising an alarm already raised still answers it.
                vec![alarm]
            }
            Ok(AlarmAction::Deactivate) => {
                if alarms.deactivate(alarm) {
                    tracing::info!(
                        member = request.member_id,
                        alarm = request.alarm,
                        "alarm cleared"
                    );
                    vec![alarm]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        let response = AlarmResponse {
            header: None,
            alarms: changed,
        };
        Ok((Applied::Alarm(response), self.revision()))
    }

    fn member_attributes(&mut self, record: Member) -> ApplyResult {
        self.server.membership.publish(record);
        Ok((Applied::Membership, self.revision()))
    }

    fn member_update(&mut self, record: Member) -> ApplyResult {
        let membership = &self.server.membership;
        if !membership.update_peer_urls(record.id, record.peer_urls) {
            return Err(ServerError::MemberNotFound);
        }
        Ok((Applied::Membership, self.revision()))
    }

    fn auth(&mut self, request: &Request) -> ApplyResult {
        match self.server.auth.apply(request, self.index) {
            Some(answer) => Ok((Applied::Auth(answer?), self.revision())),
            None => Err(ServerError::Internal("not an auth request".into())),
        }
    }

    fn v2(&mut self, request: &V2Request) -> ApplyResult {
        let now = crate::v2::unix_nanos_now();
        let outcome = self.store.v2_apply(request, now);
        Ok((Applied::V2(outcome), self.revision()))
    }
}

/// Checks the permissions of the user an entry names before its request reaches the rest
/// of the chain (etcd's `authApplierV3`): keys for puts, deletes, transactions and lease
/// revocations, the `root` role for the Auth service's administrative requests. Compaction,
/// lease grants and alarms pass unchecked, as in etcd 3.4.
pub(crate) struct Authorized<'a> {
    pub(crate) next: &'a mut dyn ApplyRequests,
    pub(crate) auth: &'a Auth,
    /// Who proposed the entry; `None` for an entry proposed without credentials.
    pub(crate) info: Option<AuthInfo>,
}

impl ApplyRequests for Authorized<'_> {
    fn put(&mut self, request: &PutRequest) -> ApplyResult {
        self.auth.check_put(self.info.as_ref(), request)?;
        self.next.put(request)
    }

    fn delete_range(&mut self, request: &DeleteRangeRequest) -> ApplyResult {
        self.auth.check_delete(self.info.as_ref(), request)?;
        self.next.delete_range(request)
    }

    fn txn(&mut self, request: &TxnRequest) -> ApplyResult {
        self.auth.check_txn(self.info.as_ref(), request)?;
        self.next.txn(request)
    }

    fn compaction(&mut self, request: &CompactionRequest) -> ApplyResult {
        self.next.compaction(request)
    }

    fn lease_grant(&mut self, request: &LeaseGrantRequest) -> ApplyResult {
        self.next.lease_grant(request)
    }

    fn lease_revoke(&mut self, request: &LeaseRevokeRequest) -> ApplyResult {
        // Lease expiry is proposed by the leader itself, with no user: it always applies.
        if self.info.is_some() {
            self.auth.check_lease(self.info.as_ref(), request.id)?;
        }
        self.next.lease_revoke(request)
    }

    fn lease_checkpoint(&mut self, request: &LeaseCheckpointRequest) -> ApplyResult {
        self.next.lease_checkpoint(request)
    }

    fn alarm(&mut self, request: &AlarmRequest) -> ApplyResult {
        self.next.alarm(request)
    }

    fn member_attributes(&mut self, record: Member) -> ApplyResult {
        self.next.member_attributes(record)
    }

    fn member_update(&mut self, record: Member) -> ApplyResult {
        self.next.member_update(record)
    }

    fn auth(&mut self, request: &Request) -> ApplyResult {
        let info = self.info.clone().unwrap_or_default();
        let admin = self.auth.check_admin(Some(&info));
        let permitted = match request {
            _ if admin.is_ok() => Ok(()),
            Request::AuthUserGet(get) if get.name == info.username => Ok(()),
            Request::AuthRoleGet(get) if self.auth.has_role(&info.username, &get.role) => Ok(()),
            Request::AuthUserGet(_) | Request::AuthRoleGet(_) => admin,
            request if crate::server::state::auth::needs_admin(request) => admin,
            _ => Ok(()),
        };
        permitted?;
        self.next.auth(request)
    }

    fn v2(&mut self, request: &V2Request) -> ApplyResult {
        // The v2 keyspace has no users of v3's auth (etcd 3.4 checks neither).
        self.next.v2(request)
    }
}

/// Refuses what would grow the backend while the NOSPACE alarm is raised: puts, txns that
/// put, lease grants. Deletes, compactions and revocations still apply, so an operator can
/// make room (etcd's `applierV3Capped`).
pub(crate) struct Capped<'a> {
    pub(crate) next: &'a mut dyn ApplyRequests,
}

impl ApplyRequests for Capped<'_> {
    fn put(&mut self, _request: &PutRequest) -> ApplyResult {
        Err(ServerError::NoSpace)
    }

    fn txn(&mut self, request: &TxnRequest) -> ApplyResult {
        if txn::txn_has_puts(request) {
            return Err(ServerError::NoSpace);
        }
        self.next.txn(request)
    }

    fn lease_grant(&mut self, _request: &LeaseGrantRequest) -> ApplyResult {
        Err(ServerError::NoSpace)
    }

    fn delete_range(&mut self, request: &DeleteRangeRequest) -> ApplyResult {
        self.next.delete_range(request)
    }

    fn compaction(&mut self, request: &CompactionRequest) -> ApplyResult {
        self.next.compaction(request)
    }

    fn lease_revoke(&mut self, request: &LeaseRevokeRequest) -> ApplyResult {
        self.next.lease_revoke(request)
    }

    fn lease_checkpoint(&mut self, request: &LeaseCheckpointRequest) -> ApplyResult {
        self.next.lease_checkpoint(request)
    }

    fn alarm(&mut self, request: &AlarmRequest) -> ApplyResult {
        self.next.alarm(request)
    }

    fn member_attributes(&mut self, record: Member) -> ApplyResult {
        self.next.member_attributes(record)
    }

    fn member_update(&mut self, record: Member) -> ApplyResult {
        self.next.member_update(record)
    }

    fn auth(&mut self, request: &Request) -> ApplyResult {
        self.next.auth(request)
    }

    fn v2(&mut self, request: &V2Request) -> ApplyResult {
        // The v2 keyspace lives outside the v3 quota's accounting, as in etcd 3.4.
        self.next.v2(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{request_op, PutResponse, RequestOp};

    /// The end of a chain that records which method each request reached.
    #[derive(Default)]
    struct Recorder(Vec<&'static str>);

    impl Recorder {
        fn reached(&mut self, method: &'static str) -> ApplyResult {
            self.0.push(method);
            Ok((Applied::Put(PutResponse::default()), 1))
        }
    }

    impl ApplyRequests for Recorder {
        fn put(&mut self, _: &PutRequest) -> ApplyResult {
            self.reached("put")
        }
        fn delete_range(&mut self, _: &DeleteRangeRequest) -> ApplyResult {
            self.reached("delete_range")
        }
        fn txn(&mut self, _: &TxnRequest) -> ApplyResult {
            self.reached("txn")
        }
        fn compaction(&mut self, _: &CompactionRequest) -> ApplyResult {
            self.reached("compaction")
        }
        fn lease_grant(&mut self, _: &LeaseGrantRequest) -> ApplyResult {
            self.reached("lease_grant")
        }
        fn lease_revoke(&mut self, _: &LeaseRevokeRequest) -> ApplyResult {
            self.reached("lease_revoke")
        }
        fn lease_checkpoint(&mut self, _: &LeaseCheckpointRequest) -> ApplyResult {
            self.reached("lease_checkpoint")
        }
        fn alarm(&mut self, _: &AlarmRequest) -> ApplyResult {
            self.reached("alarm")
        }
        fn member_attributes(&mut self, _: Member) -> ApplyResult {
            self.reached("member_attributes")
        }
        fn member_update(&mut self, _: Member) -> ApplyResult {
            self.reached("member_update")
        }
        fn auth(&mut self, _: &Request) -> ApplyResult {
            self.reached("auth")
        }

        fn v2(&mut self, _: &V2Request) -> ApplyResult {
            self.reached("v2")
        }
    }

    fn txn(ops: Vec<request_op::Request>) -> TxnRequest {
        TxnRequest {
            success: ops
                .into_iter()
                .map(|request| RequestOp {
                    request: Some(request),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// One request of every kind, with the method it must reach.
    fn every_kind() -> Vec<(Request, &'static str)> {
        vec![
            (Request::Put(PutRequest::default()), "put"),
            (
                Request::DeleteRange(DeleteRangeRequest::default()),
                "delete_range",
            ),
            (Request::Txn(TxnRequest::default()), "txn"),
            (
                Request::Compaction(CompactionRequest::default()),
                "compaction",
            ),
            (
                Request::LeaseGrant(LeaseGrantRequest::default()),
                "lease_grant",
            ),
            (
                Request::LeaseRevoke(LeaseRevokeRequest::default()),
                "lease_revoke",
            ),
            (
                Request::LeaseCheckpoint(LeaseCheckpointRequest::default()),
                "lease_checkpoint",
            ),
            (Request::Alarm(AlarmRequest::default()), "alarm"),
            (
                Request::MemberAttributes(Member::default()),
                "member_attributes",
            ),
            (Request::MemberUpdate(Member::default()), "member_update"),
            (
                Request::AuthRoleList(crate::proto::etcdserverpb::AuthRoleListRequest {}),
                "auth",
            ),
        ]
    }

    #[test]
    fn every_kind_of_request_reaches_its_own_method() {
        for (request, method) in every_kind() {
            let mut recorder = Recorder::default();
            dispatch(&mut recorder, Some(request)).expect("applied");
            assert_eq!(recorder.0, vec![method]);
        }
    }

    #[test]
    fn an_empty_entry_is_an_internal_error() {
        let mut recorder = Recorder::default();
        assert!(matches!(
            dispatch(&mut recorder, None),
            Err(ServerError::Internal(_))
        ));
        assert!(recorder.0.is_empty());
    }

    #[test]
    fn capped_refuses_only_what_grows_the_backend() {
        let growing = ["put", "lease_grant"];
        for (request, method) in every_kind() {
            let mut recorder = Recorder::default();
            let result = dispatch(
                &mut Capped {
                    next: &mut recorder,
                },
                Some(request),
            );
            if growing.contains(&method) {
                assert_eq!(result.unwrap_err(), ServerError::NoSpace, "{method}");
                assert!(recorder.0.is_empty(), "{method} reached the state");
            } else {
                assert!(result.is_ok(), "{method}");
                assert_eq!(recorder.0, vec![method]);
            }
        }
    }

    #[test]
    fn capped_refuses_a_txn_that_puts_and_passes_one_that_does_not() {
        let put = request_op::Request::RequestPut(PutRequest::default());
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest::default());
        let nested_put = request_op::Request::RequestTxn(txn(vec![put.clone()]));

        let mut recorder = Recorder::default();
        let mut capped = Capped {
            next: &mut recorder,
        };
        assert_eq!(
            capped.txn(&txn(vec![delete.clone(), put])).unwrap_err(),
            ServerError::NoSpace
        );
        assert_eq!(
            capped.txn(&txn(vec![nested_put])).unwrap_err(),
            ServerError::NoSpace
        );
        assert!(capped.txn(&txn(vec![delete])).is_ok());
        assert_eq!(recorder.0, vec!["txn"]);
    }

    mod authorized {
        use std::sync::Arc;

        use clap::Parser as _;

        use super::*;
        use crate::io::{Disk, StdDisk, SystemClock};
        use crate::proto::authpb::{permission::Type as PermissionType, Permission};
        use crate::proto::etcdserverpb::{
            AuthEnableRequest, AuthRoleAddRequest, AuthRoleGetRequest,
            AuthRoleGrantPermissionRequest, AuthUserAddRequest, AuthUserGetRequest,
            AuthUserGrantRoleRequest, RangeRequest,
        };
        use crate::server::types::config::Config;

        struct Fixture {
            _dir: tempfile::TempDir,
            auth: Auth,
        }

        /// Auth enabled with root, and alice holding role `app` (read-write on `/app/`).
        fn fixture() -> Fixture {
            let dir = tempfile::tempdir().expect("temp dir");
            let data_dir = dir.path().to_str().expect("utf-8 path");
            let config = Config::try_parse_from(["oxcd", "--data-dir", data_dir]).expect("flags");
            let disk: Arc<dyn Disk> = Arc::new(StdDisk);
            disk.create_dir_all(&config.snap_dir()).expect("snap dir");
            let metrics = Arc::new(crate::server::types::metrics::Metrics::new(false));
            let store =
                Store::open(disk, Arc::new(SystemClock), &config, 1, metrics).expect("store");
            let auth = Auth::load(store, &config).expect("auth");
            let user = |name: &str| {
                Request::AuthUserAdd(AuthUserAddRequest {
                    name: name.into(),
                    ..Default::default()
                })
            };
            let grant = |user: &str, role: &str| {
                Request::AuthUserGrantRole(AuthUserGrantRoleRequest {
                    user: user.into(),
                    role: role.into(),
                })
            };
            let setup = [
                user("root"),
                grant("root", "root"),
                user("alice"),
                Request::AuthRoleAdd(AuthRoleAddRequest { name: "app".into() }),
                Request::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest {
                    name: "app".into(),
                    perm: Some(Permission {
                        perm_type: PermissionType::Readwrite as i32,
                        key: b"/app/".to_vec().into(),
                        range_end: b"/app0".to_vec().into(),
                    }),
                }),
                grant("alice", "app"),
                Request::AuthEnable(AuthEnableRequest {}),
            ];
            for (index, request) in setup.iter().enumerate() {
                auth.apply(request, index as u64 + 1)
                    .expect("an auth request")
                    .expect("applied");
            }
            Fixture { _dir: dir, auth }
        }

        fn info(auth: &Auth, user: &str) -> Option<AuthInfo> {
            Some(AuthInfo {
                username: user.into(),
                revision: auth.revision(),
            })
        }

        fn put(key: &str) -> PutRequest {
            PutRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            }
        }

        /// Applies `request` for `info` through the decorator; answers what reached the
        /// recorder behind it.
        fn through(
            auth: &Auth,
            info: Option<AuthInfo>,
            request: Request,
        ) -> (Result<(), ServerError>, Vec<&'static str>) {
            let mut recorder = Recorder::default();
            let result = dispatch(
                &mut Authorized {
                    next: &mut recorder,
                    auth,
                    info,
                },
                Some(request),
            );
            (result.map(|_| ()), recorder.0)
        }

        #[test]
        fn writes_reach_the_state_only_within_the_users_permissions() {
            let fixture = fixture();
            let auth = &fixture.auth;
            let denied = Err(ServerError::Auth(crate::auth::AuthError::PermissionDenied));
            let alice = || info(auth, "alice");
            assert_eq!(
                through(auth, alice(), Request::Put(put("/app/x"))),
                (Ok(()), vec!["put"])
            );
            assert_eq!(
                through(auth, alice(), Request::Put(put("/other"))),
                (denied.clone(), vec![])
            );
            assert_eq!(
                through(auth, info(auth, "root"), Request::Put(put("/other"))),
                (Ok(()), vec!["put"])
            );
            // No credentials at all: the user name is empty.
            assert_eq!(
                through(auth, Some(AuthInfo::default()), Request::Put(put("/app/x"))).0,
                Err(ServerError::Auth(crate::auth::AuthError::UserEmpty))
            );
            // A transaction needs every branch permitted, the one that will not run too,
            // and read access to what it compares and reads.
            let in_range = request_op::Request::RequestPut(put("/app/a"));
            let out_of_range = request_op::Request::RequestPut(put("/b"));
            let mut both = txn(vec![in_range.clone()]);
            both.failure = txn(vec![out_of_range]).success;
            assert_eq!(
                through(auth, alice(), Request::Txn(both)),
                (denied.clone(), vec![])
            );
            let read_outside = request_op::Request::RequestRange(RangeRequest {
                key: b"/b".to_vec().into(),
                ..Default::default()
            });
            let nested = request_op::Request::RequestTxn(txn(vec![read_outside]));
            assert_eq!(
                through(
                    auth,
                    alice(),
                    Request::Txn(txn(vec![in_range.clone(), nested]))
                ),
                (denied.clone(), vec![])
            );
            assert_eq!(
                through(auth, alice(), Request::Txn(txn(vec![in_range]))),
                (Ok(()), vec!["txn"])
            );
            let delete = DeleteRangeRequest {
                key: b"/app/".to_vec().into(),
                range_end: b"/app1".to_vec().into(),
                ..Default::default()
            };
            assert_eq!(
                through(auth, alice(), Request::DeleteRange(delete)),
                (denied, vec![])
            );
            // Credentials checked at an older auth revision are stale.
            let stale = Some(AuthInfo {
                username: "alice".into(),
                revision: auth.revision() - 1,
            });
            assert_eq!(
                through(auth, stale, Request::Put(put("/app/x"))).0,
                Err(ServerError::Auth(crate::auth::AuthError::AuthOldRevision))
            );
            // Lease expiry carries no user and always applies; a client's revocation of a
            // lease with no keys needs nothing more.
            let revoke = || Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
            assert_eq!(
                through(auth, None, revoke()),
                (Ok(()), vec!["lease_revoke"])
            );
            assert_eq!(
                through(auth, alice(), revoke()),
                (Ok(()), vec!["lease_revoke"])
            );
        }

        #[test]
        fn auth_administration_needs_the_root_role() {
            let fixture = fixture();
            let auth = &fixture.auth;
            let alice = || info(auth, "alice");
            let role_add = || Request::AuthRoleAdd(AuthRoleAddRequest { name: "x".into() });
            assert_eq!(
                through(auth, alice(), role_add()).0,
                Err(ServerError::Auth(crate::auth::AuthError::PermissionDenied))
            );
            assert_eq!(
                through(auth, Some(AuthInfo::default()), role_add()).0,
                Err(ServerError::Auth(crate::auth::AuthError::UserEmpty))
            );
            assert_eq!(
                through(auth, info(auth, "root"), role_add()),
                (Ok(()), vec!["auth"])
            );
            // A user may read its own record and the roles it holds, nothing else.
            let user_get =
                |name: &str| Request::AuthUserGet(AuthUserGetRequest { name: name.into() });
            let role_get =
                |role: &str| Request::AuthRoleGet(AuthRoleGetRequest { role: role.into() });
            assert_eq!(through(auth, alice(), user_get("alice")).1, vec!["auth"]);
            assert!(through(auth, alice(), user_get("root")).0.is_err());
            assert_eq!(through(auth, alice(), role_get("app")).1, vec!["auth"]);
            assert!(through(auth, alice(), role_get("root")).0.is_err());
        }

        #[test]
        fn the_auth_state_is_saved_with_every_change() {
            let fixture = fixture();
            let reloaded_revision = {
                fixture.auth.reload().expect("reload");
                fixture.auth.revision()
            };
            assert!(fixture.auth.is_enabled());
            assert_eq!(reloaded_revision, 7, "six changes after revision 1");
        }
    }
}
