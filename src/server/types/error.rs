//! What can go wrong in a member, in etcd's words.
//!
//! Every layer of the server speaks `ServerError`. Its `Display` text is the exact message
//! etcd gives for the same condition, because the applier's errors must be the same on
//! every member and the same as etcd's: clients (clientv3, etcdctl, Kubernetes) rebuild
//! typed errors by matching the text byte for byte. Which gRPC code each one travels with
//! is decided at the edge only, in `services::status`.

/// An error of the server. The `Display` text is the exact etcd message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member ID already exist")]
    MemberIdExists,
    #[error("etcdserver: given member URLs are invalid")]
    InvalidPeerUrls,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, waiting for the applied index took too long")]
    TimeoutWaitAppliedIndex,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// A refusal of the auth store, in the words etcd's server gives it.
    #[error("{}", auth_message(.0))]
    Auth(crate::auth::AuthError),
    /// A refusal of the auth store passed on as etcd's maintenance service passes it: the
    /// auth package's own text, code Unknown.
    #[error("{0}")]
    AuthUntranslated(crate::auth::AuthError),
    /// An internal failure (disk I/O, a broken invariant of the store). The member reports it
    /// as etcd reports unexpected errors: code Unknown with the underlying text.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::auth::AuthError> for ServerError {
    fn from(error: crate::auth::AuthError) -> Self {
        ServerError::Auth(error)
    }
}

/// etcd's server message for each refusal of the auth store (its `rpctypes` errors).
fn auth_message(error: &crate::auth::AuthError) -> &'static str {
    use crate::auth::AuthError::*;
    match error {
        RootUserNotExist => "etcdserver: root user does not exist",
        RootRoleNotExist => "etcdserver: root user does not have root role",
        UserAlreadyExist => "etcdserver: user name already exists",
        UserEmpty => "etcdserver: user name is empty",
        UserNotFound => "etcdserver: user name not found",
        RoleAlreadyExist => "etcdserver: role name already exists",
        RoleNotFound => "etcdserver: role name not found",
        RoleEmpty => "etcdserver: role name is empty",
        PermissionNotGiven => "etcdserver: permission not given",
        AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
        // etcd has no server error for this one: its clients see the auth package's text.
        NoPasswordUser => "auth: authentication failed, password was given for no password user",
        PermissionDenied => "etcdserver: permission denied",
        RoleNotGranted => "etcdserver: role is not granted to the user",
        PermissionNotGranted => "etcdserver: permission is not granted to the role",
        AuthNotEnabled => "etcdserver: authentication is not enabled",
        AuthOldRevision => "etcdserver: revision of auth store is old",
        InvalidAuthToken => "etcdserver: invalid auth token",
        InvalidAuthMgmt => "etcdserver: invalid auth management",
    }
}
