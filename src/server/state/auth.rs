//! The member's auth store (etcd's `authStore`): the [`AuthState`] applied from the log
//! and persisted in the backend, the simple tokens this member issued, and the checks the
//! services and the applier make with them.
//!
//! Who a request comes from is decided once per request at the edge
//! ([`Auth::request_info`]): the `token` metadata if there is one (a token wins over a
//! certificate, as in etcd), otherwise the Common Name of a verified client certificate
//! when `--client-cert-auth` is on, otherwise nobody. Writes carry the user and the auth
//! revision in their log entry, and the applier checks them against the auth state at that
//! place in the log, so every member decides alike; reads are checked where they are
//! served, after the read barrier.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tonic::metadata::MetadataMap;

use crate::auth::attempts::FailedLogins;
use crate::auth::tokens::{self, SimpleTokens};
use crate::auth::{Access, AuthError, AuthInfo, AuthState};
use crate::proto::etcdserverpb::{
    request_op::Request as Op, AuthenticateResponse, DeleteRangeRequest, PutRequest, RequestOp,
    TxnRequest,
};
use crate::proto::oxcdpb::{internal_request::Request, AuthHeader};
use crate::server::state::store::Store;
use crate::server::types::config::Config;
use crate::server::types::error::ServerError;
use crate::server::types::request::{AuthAnswer, CertificateUser};

/// The metadata key of a client's token (etcd's `rpctypes.TokenFieldNameGRPC`).
pub(crate) const TOKEN_KEY: &str = "token";
/// The key the JSON gateway maps an `Authorization` header to.
const TOKEN_KEY_GATEWAY: &str = "authorization";

/// The token a request carries: gRPC's `token` metadata, or the gateway's `Authorization`.
fn token_value(
    metadata: &MetadataMap,
) -> Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    metadata
        .get(TOKEN_KEY)
        .or_else(|| metadata.get(TOKEN_KEY_GATEWAY))
}

/// Whether an Auth request needs the `root` role (etcd's `needAdminPermission`); UserGet
/// and RoleGet are also open to the user asked about and to holders of the role.
pub(crate) fn needs_admin(request: &Request) -> bool {
    matches!(
        request,
        Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::AuthUserAdd(_)
            | Request::AuthUserDelete(_)
            | Request::AuthUserChangePassword(_)
            | Request::AuthUserGrantRole(_)
            | Request::AuthUserRevokeRole(_)
            | Request::AuthRoleAdd(_)
            | Request::AuthRoleGrantPermission(_)
            | Request::AuthRoleRevokePermission(_)
            | Request::AuthRoleDelete(_)
            | Request::AuthUserList(_)
            | Request::AuthRoleList(_)
    )
}

pub(crate) struct Auth {
    /// Where the auth state is persisted.
    store: Store,
    state: RwLock<AuthState>,
    tokens: Tokens,
    /// Wrong passwords per user, for the lockout (`auth::attempts`).
    failed_logins: Mutex<FailedLogins>,
    bcrypt_cost: u32,
    /// Whether a verified client certificate names the user (`--client-cert-auth`).
    certificate_users: bool,
}

/// How this member issues and recognizes tokens (`--auth-token`).
enum Tokens {
    /// Opaque tokens every member issues alike when it applies the Authenticate entry.
    Simple(Mutex<SimpleTokens>),
    /// Signed tokens (production builds only: the simulator uses simple tokens).
    #[cfg(not(madsim))]
    Jwt(crate::auth::jwt::JwtTokens),
}

impl Tokens {
    fn from_config(config: &Config) -> Result<Tokens, String> {
        let kind = config.auth_token.split(',').next().unwrap_or_default();
        match kind {
            "simple" => Ok(Tokens::Simple(Mutex::new(SimpleTokens::new(
                Duration::from_secs(config.auth_token_ttl),
            )))),
            #[cfg(not(madsim))]
            "jwt" => crate::auth::jwt::JwtTokens::from_options(&config.auth_token, |path| {
                std::fs::read(path)
            })
            .map(Tokens::Jwt)
            .map_err(|error| error.to_string()),
            other => Err(format!("unknown token type: {other}")),
        }
    }

    fn simple(&self) -> Option<std::sync::MutexGuard<'_, SimpleTokens>> {
        match self {
            Tokens::Simple(tokens) => Some(tokens.lock().expect("tokens lock poisoned")),
            #[cfg(not(madsim))]
            Tokens::Jwt(_) => None,
        }
    }
}

impl Auth {
    /// The auth state `store` recorded, with the token provider and the bcrypt cost
    /// `config` names.
    pub(crate) fn load(store: Store, config: &Config) -> Result<Auth, String> {
        let saved = store.auth().map_err(|error| error.to_string())?;
        let tokens = Tokens::from_config(config)
            .map_err(|error| format!("failed to create token provider: {error}"))?;
        Ok(Auth {
            store,
            state: RwLock::new(AuthState::from_saved(saved)),
            tokens,
            failed_logins: Mutex::default(),
            bcrypt_cost: config.bcrypt_cost(),
            certificate_users: config.client_cert_auth,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthState> {
        self.state.read().expect("auth state lock poisoned")
    }

    /// The state restored with a snapshot replaces the one applied before it.
    pub(crate) fn reload(&self) -> Result<(), ServerError> {
        let state = AuthState::from_saved(self.store.auth()?);
        *self.state.write().expect("auth state lock poisoned") = state;
        Ok(())
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.read().is_enabled()
    }

    pub(crate) fn revision(&self) -> u64 {
        self.read().revision()
    }

    /// Who a request with `metadata` and `extensions` comes from: `None` when it carries no
    /// credentials. A token must be one this member issued and still holds, once the
    /// member applied the entry that issued it (`applied` tells how far it got).
    pub(crate) fn request_info(
        &self,
        metadata: &MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Option<AuthInfo>, ServerError> {
        if let Some(token) = token_value(metadata) {
            let token = token
                .to_str()
                .map_err(|_| ServerError::from(AuthError::InvalidAuthToken))?;
            return self.token_info(token).map(Some);
        }
        if self.certificate_users {
            if let Some(CertificateUser(name)) = extensions.get::<CertificateUser>() {
                return Ok(Some(AuthInfo {
                    username: name.to_string(),
                    revision: self.revision(),
                }));
            }
        }
        Ok(None)
    }

    /// Who `token` stands for: a simple token its user at the current auth revision (it
    /// stands for its user until it lapses or the user changes, as in etcd); a signed
    /// token its user at the revision it was issued at.
    fn token_info(&self, token: &str) -> Result<AuthInfo, ServerError> {
        let info = match &self.tokens {
            Tokens::Simple(tokens) => tokens
                .lock()
                .expect("tokens lock poisoned")
                .user(token, Instant::now())
                .map(|username| AuthInfo {
                    username,
                    revision: self.revision(),
                }),
            #[cfg(not(madsim))]
            Tokens::Jwt(tokens) => tokens.info(token),
        };
        info.ok_or_else(|| AuthError::InvalidAuthToken.into())
    }

    /// The Raft index a token says it was issued at, if it is well formed: a member that
    /// has not applied that far yet waits before it looks the token up.
    pub(crate) fn token_index(metadata: &MetadataMap) -> Option<u64> {
        let token = token_value(metadata)?.to_str().ok()?;
        tokens::token_index(token)
    }

    /// The header a write proposed for `info` carries.
    pub(crate) fn header(info: Option<&AuthInfo>) -> Option<AuthHeader> {
        info.map(|info| AuthHeader {
            username: info.username.clone(),
            auth_revision: info.revision,
        })
    }

    /// Whether `info` may read or write `[key, range_end)`.
    pub(crate) fn check(
        &self,
        info: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), ServerError> {
        let state = self.read();
        if !state.is_enabled() {
            return Ok(());
        }
        let nobody = AuthInfo::default();
        Ok(state.check(info.unwrap_or(&nobody), key, range_end, access)?)
    }

    /// Whether `info` may run administrative requests.
    pub(crate) fn check_admin(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        let nobody = AuthInfo::default();
        self.read().check_admin(info.unwrap_or(&nobody))
    }

    /// A put: write access to its key, read access too when it returns the previous
    /// value, and write access to every key of the lease it attaches to (etcd's
    /// `checkPutAuth`).
    pub(crate) fn check_put(
        &self,
        info: Option<&AuthInfo>,
        request: &PutRequest,
    ) -> Result<(), ServerError> {
        self.check(info, &request.key, b"", Access::Write)?;
        if request.lease != 0 {
            self.check_lease(info, request.lease)?;
        }
        if request.prev_kv {
            self.check(info, &request.key, b"", Access::Read)?;
        }
        Ok(())
    }

    pub(crate) fn check_delete(
        &self,
        info: Option<&AuthInfo>,
        request: &DeleteRangeRequest,
    ) -> Result<(), ServerError> {
        self.check(info, &request.key, &request.range_end, Access::Write)?;
        if request.prev_kv {
            self.check(info, &request.key, &request.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// A transaction: read access to every compared key, and every operation of both
    /// branches, nested transactions included (etcd's `checkTxnPermission`).
    pub(crate) fn check_txn(
        &self,
        info: Option<&AuthInfo>,
        request: &TxnRequest,
    ) -> Result<(), ServerError> {
        for compare in &request.compare {
            self.check(info, &compare.key, &compare.range_end, Access::Read)?;
        }
        self.check_ops(info, &request.success)?;
        self.check_ops(info, &request.failure)
    }

    fn check_ops(&self, info: Option<&AuthInfo>, ops: &[RequestOp]) -> Result<(), ServerError> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(range)) => {
                    self.check(info, &range.key, &range.range_end, Access::Read)?
                }
                Some(Op::RequestPut(put)) => self.check_put(info, put)?,
                Some(Op::RequestDeleteRange(delete)) => self.check_delete(info, delete)?,
                Some(Op::RequestTxn(nested)) => self.check_txn(info, nested)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Write access to every key attached to lease `id` (an admin needs none), as a
    /// revocation or a put that attaches to the lease requires.
    pub(crate) fn check_lease(&self, info: Option<&AuthInfo>, id: i64) -> Result<(), ServerError> {
        if !self.is_enabled() || self.check_admin(info).is_ok() {
            return Ok(());
        }
        for key in self.store.lease_keys(id) {
            self.check(info, &key, b"", Access::Write)?;
        }
        Ok(())
    }

    /// Hashes a password for a UserAdd or UserChangePassword about to be proposed, as etcd
    /// 3.5 does: the log carries the hash (base64, in `hashedPassword`), never the
    /// password, and the apply loop never hashes. Slow on purpose (bcrypt); run it off the
    /// async workers.
    pub(crate) fn hash_password(&self, password: &str) -> Result<String, ServerError> {
        let hash = bcrypt::hash_with_result(password, self.bcrypt_cost)
            .map_err(|error| ServerError::Internal(format!("hashing a password: {error}")))?
            .format_for_version(bcrypt::Version::TwoA);
        Ok(base64::engine::general_purpose::STANDARD.encode(hash))
    }

    /// Checks `password` against the user's hash (etcd's `CheckPassword`); answers the auth
    /// revision it was checked at. Slow on purpose (bcrypt).
    /// A user locked out after too many wrong passwords gets the same answer as a wrong
    /// password, without a bcrypt round.
    pub(crate) fn check_password(&self, name: &str, password: &str) -> Result<u64, ServerError> {
        let (hash, revision) = self.read().password_hash(name)?;
        if self.logins().check(name, Instant::now()).is_err() {
            return Err(AuthError::AuthFailed.into());
        }
        let hash = String::from_utf8(hash).map_err(|_| AuthError::AuthFailed)?;
        match bcrypt::verify(password, &hash) {
            Ok(true) => {
                self.logins().succeeded(name);
                Ok(revision)
            }
            _ => {
                tracing::info!(user = name, "invalid password");
                if let Some(lockout) = self.logins().failed(name, Instant::now()) {
                    tracing::warn!(
                        user = name,
                        ?lockout,
                        "too many wrong passwords in a row: refusing this user's logins for a while"
                    );
                }
                Err(AuthError::AuthFailed.into())
            }
        }
    }

    fn logins(&self) -> std::sync::MutexGuard<'_, FailedLogins> {
        self.failed_logins
            .lock()
            .expect("failed logins lock poisoned")
    }

    /// Applies an Auth request from the log entry at `index`, saving the state when it
    /// changed. `None` for a request of another kind.
    pub(crate) fn apply(
        &self,
        request: &Request,
        index: u64,
    ) -> Option<Result<AuthAnswer, ServerError>> {
        let mut state = self.state.write().expect("auth state lock poisoned");
        let before = (state.is_enabled(), state.revision());
        let answer = match request {
            Request::AuthEnable(_) => state.enable().map(|()| {
                tracing::info!("enabled authentication");
                AuthAnswer::Enable(Default::default())
            }),
            Request::AuthDisable(_) => {
                if state.disable() {
                    tracing::info!("disabled authentication");
                    if let Some(mut tokens) = self.tokens.simple() {
                        tokens.clear();
                    }
                }
                Ok(AuthAnswer::Disable(Default::default()))
            }
            Request::Authenticate(request) => match state.authenticate(&request.name) {
                Ok(()) => {
                    let token = match &self.tokens {
                        Tokens::Simple(tokens) => {
                            Ok(tokens.lock().expect("tokens lock poisoned").assign(
                                &request.simple_token_prefix,
                                index,
                                &request.name,
                                Instant::now(),
                            ))
                        }
                        #[cfg(not(madsim))]
                        Tokens::Jwt(tokens) => tokens
                            .assign(&request.name, state.revision())
                            .map_err(|error| ServerError::Internal(error.to_string())),
                    };
                    return Some(token.map(|token| {
                        AuthAnswer::Authenticate(AuthenticateResponse {
                            header: None,
                            token,
                        })
                    }));
                }
                Err(error) => Err(error),
            },
            Request::AuthUserAdd(request) => state
                .user_add(request, decode_hash(&request.hashed_password))
                .map(AuthAnswer::UserAdd),
            Request::AuthUserDelete(request) => state.user_delete(request).map(|response| {
                self.invalidate_user(&request.name);
                self.logins().forget(&request.name);
                AuthAnswer::UserDelete(response)
            }),
            Request::AuthUserGet(request) => state.user_get(request).map(AuthAnswer::UserGet),
            Request::AuthUserChangePassword(request) => state
                .user_change_password(request, decode_hash(&request.hashed_password))
                .map(|response| {
                    self.invalidate_user(&request.name);
                    self.logins().forget(&request.name);
                    AuthAnswer::UserChangePassword(response)
                }),
            Request::AuthUserGrantRole(request) => state
                .user_grant_role(request)
                .map(AuthAnswer::UserGrantRole),
            Request::AuthUserRevokeRole(request) => state
                .user_revoke_role(request)
                .map(AuthAnswer::UserRevokeRole),
            Request::AuthUserList(_) => Ok(AuthAnswer::UserList(state.user_list())),
            Request::AuthRoleList(_) => Ok(AuthAnswer::RoleList(state.role_list())),
            Request::AuthRoleAdd(request) => state.role_add(request).map(AuthAnswer::RoleAdd),
            Request::AuthRoleDelete(request) => {
                state.role_delete(request).map(AuthAnswer::RoleDelete)
            }
            Request::AuthRoleGet(request) => state.role_get(request).map(AuthAnswer::RoleGet),
            Request::AuthRoleGrantPermission(request) => state
                .role_grant_permission(request)
                .map(AuthAnswer::RoleGrantPermission),
            Request::AuthRoleRevokePermission(request) => state
                .role_revoke_permission(request)
                .map(AuthAnswer::RoleRevokePermission),
            _ => return None,
        };
        if (state.is_enabled(), state.revision()) != before {
            self.store.save_auth(&state.to_saved());
        }
        Some(answer.map_err(ServerError::from))
    }

    /// Forgets the simple tokens of `name` (signed tokens go stale with the revision).
    fn invalidate_user(&self, name: &str) {
        if let Some(mut tokens) = self.tokens.simple() {
            tokens.invalidate_user(name);
        }
    }

    /// Whether `user` holds `role` (RoleGet is open to holders of the role).
    pub(crate) fn has_role(&self, user: &str, role: &str) -> bool {
        self.read().has_role(user, role)
    }
}

/// The bcrypt hash a request carries in base64; a hash that does not decode is kept as
/// empty, which no password matches.
fn decode_hash(encoded: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default()
}
