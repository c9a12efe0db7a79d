//! The edge where server errors become gRPC statuses: etcd's code for each error, with
//! etcd's message (the error's text).

use tonic::{Code, Status};

use crate::server::types::error::ServerError;

/// The gRPC code etcd answers `error` with.
fn code(error: &ServerError) -> Code {
    use ServerError::*;
    match error {
        EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
        | RequestTooLarge | InvalidPeerUrls => Code::InvalidArgument,
        Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
        NoSpace => Code::ResourceExhausted,
        LeaseNotFound | MemberNotFound => Code::NotFound,
        LeaseExists
        | BadLeaderTransferee
        | NotLeader
        | PeerUrlExists
        | MemberIdExists
        | NotLearner
        | LearnerNotReady
        | TooManyLearners
        | NotEnoughStartedMembers => Code::FailedPrecondition,
        NoLeader | LeaderChanged | Stopped | Timeout | TimeoutWaitAppliedIndex | Unhealthy => {
            Code::Unavailable
        }
        Auth(error) => auth_code(error),
        // etcd sends these as plain errors, which gRPC reports as Unknown.
        TooManyRequests | Internal(_) | AuthUntranslated(_) => Code::Unknown,
    }
}

/// The gRPC code of each auth refusal (etcd's `rpctypes`).
fn auth_code(error: &crate::auth::AuthError) -> Code {
    use crate::auth::AuthError::*;
    match error {
        UserEmpty | RoleEmpty | AuthFailed | PermissionNotGiven | InvalidAuthMgmt
        | AuthOldRevision => Code::InvalidArgument,
        PermissionDenied => Code::PermissionDenied,
        InvalidAuthToken => Code::Unauthenticated,
        RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
        | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
        | AuthNotEnabled => Code::FailedPrecondition,
        NoPasswordUser => Code::Unknown,
    }
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Status {
        Status::new(code(&error), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact pairs etcd 3.4.23 answers (reference/etcd-api.md §2).
    #[test]
    fn codes_and_messages_match_etcd() {
        let table = [
            (
                ServerError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                ServerError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ServerError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                ServerError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                ServerError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                ServerError::LeaseExists,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                ServerError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                ServerError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                ServerError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                ServerError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ServerError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ServerError::TooManyLearners,
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            (
                ServerError::NotEnoughStartedMembers,
                Code::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            (
                ServerError::Unhealthy,
                Code::Unavailable,
                "etcdserver: unhealthy cluster",
            ),
            (
                ServerError::BadLeaderTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
        ];
        for (error, code, message) in table {
            let status = Status::from(error.clone());
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }
}
