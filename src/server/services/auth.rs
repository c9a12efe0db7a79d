//! The Auth service: users, roles, permissions, enabling auth and logging in.
//!
//! Every request goes through the log, reads included (as in etcd), so each member answers
//! from the same auth state, and the applier decides who may run it. Passwords are hashed
//! (bcrypt) or checked here, off the async workers, before anything is proposed: the log
//! carries hashes only, and the apply loop never spends a bcrypt round.

use std::sync::Arc;

use rand::SeedableRng;
use tonic::{Request, Response, Status};

use crate::auth::tokens;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;
use crate::proto::oxcdpb::{internal_request::Request as Internal, InternalAuthenticateRequest};
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::request::FromApplied;

pub(crate) struct AuthService {
    pub(crate) server: Arc<Server>,
}

impl AuthService {
    /// Proposes `internal` for the user `request` comes from; answers the applied response
    /// with the header filled in.
    async fn propose<T, R>(&self, request: &Request<R>, internal: Internal) -> Result<T, Status>
    where
        T: FromApplied + WithHeader,
    {
        let info = self.server.request_auth(request).await?;
        let header = self.server.auth_header(info.as_ref());
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<T>(internal, header)
            .await?;
        response.set_header(self.server.header(revision));
        Ok(response)
    }

    /// Runs bcrypt off the async workers (in the simulator, which has no blocking pool,
    /// in place).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Server) -> Result<T, ServerError> + Send + 'static,
    ) -> Result<T, ServerError> {
        let server = self.server.clone();
        #[cfg(not(madsim))]
        {
            tokio::task::spawn_blocking(move || work(&server))
                .await
                .map_err(|error| ServerError::Internal(format!("password hashing: {error}")))?
        }
        #[cfg(madsim)]
        {
            work(&server)
        }
    }
}

/// A response whose header the service fills in.
trait WithHeader {
    fn set_header(&mut self, header: ResponseHeader);
}

macro_rules! with_header {
    ($($response:ty),* $(,)?) => {
        $(
            impl WithHeader for $response {
                fn set_header(&mut self, header: ResponseHeader) {
                    self.header = Some(header);
                }
            }
        )*
    };
}

with_header!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthenticateResponse,
    AuthUserAddResponse,
    AuthUserGetResponse,
    AuthUserListResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleGetResponse,
    AuthRoleListResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse,
);

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let internal = Internal::AuthEnable(*request.get_ref());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let internal = Internal::AuthDisable(*request.get_ref());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn auth_status(
        &self,
        _request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let revision = self.server.store.current_revision();
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.server.header(revision)),
            enabled: self.server.auth.is_enabled(),
            auth_revision: self.server.auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let AuthenticateRequest { name, password } = request.into_inner();
        let checked = name.clone();
        self.blocking(move |server| server.auth.check_password(&checked, &password))
            .await?;
        let prefix = tokens::new_prefix(&mut rand::rngs::SmallRng::from_os_rng());
        let internal = Internal::Authenticate(InternalAuthenticateRequest {
            name,
            simple_token_prefix: prefix,
        });
        let (mut response, revision) = self
            .server
            .proposer
            .propose_for::<AuthenticateResponse>(internal, None)
            .await?;
        response.set_header(self.server.header(revision));
        Ok(Response::new(response))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let mut add = request.get_ref().clone();
        if add.name.is_empty() {
            return Err(ServerError::from(crate::auth::AuthError::UserEmpty).into());
        }
        // Only an admin may add users while auth is enabled: refuse others before spending
        // a bcrypt round on them (the applier checks again, at the entry's place in the log).
        self.server.require_admin(&request).await?;
        let no_password = add.options.is_some_and(|options| options.no_password);
        if !no_password && add.hashed_password.is_empty() {
            let password = std::mem::take(&mut add.password);
            add.hashed_password = self
                .blocking(move |server| server.auth.hash_password(&password))
                .await?;
        }
        add.password.clear();
        let internal = Internal::AuthUserAdd(add);
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let internal = Internal::AuthUserGet(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let internal = Internal::AuthUserList(*request.get_ref());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let internal = Internal::AuthUserDelete(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let mut change = request.get_ref().clone();
        self.server.require_admin(&request).await?;
        if change.hashed_password.is_empty() {
            let password = std::mem::take(&mut change.password);
            change.hashed_password = self
                .blocking(move |server| server.auth.hash_password(&password))
                .await?;
        }
        change.password.clear();
        let internal = Internal::AuthUserChangePassword(change);
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let internal = Internal::AuthUserGrantRole(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let internal = Internal::AuthUserRevokeRole(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let internal = Internal::AuthRoleAdd(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let internal = Internal::AuthRoleGet(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let internal = Internal::AuthRoleList(*request.get_ref());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let internal = Internal::AuthRoleDelete(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let internal = Internal::AuthRoleGrantPermission(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let internal = Internal::AuthRoleRevokePermission(request.get_ref().clone());
        Ok(Response::new(self.propose(&request, internal).await?))
    }
}
