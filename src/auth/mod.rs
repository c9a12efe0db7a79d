//! Authentication and role-based access control: etcd's auth store as a plain state
//! machine, applied from the log on every member alike.
//!
//! [`AuthState`] holds the enabled flag, the auth revision (raised by every change of users
//! and roles, and by disabling), the users (with bcrypt password hashes) and the roles
//! (with key permissions), and answers every Auth request and every permission check with
//! etcd's rules: the `root` user and `root` role are special (auth can only be enabled once
//! `root` exists and holds the `root` role; the `root` role may do anything; while auth is
//! enabled neither can be deleted, nor the role revoked from the user); a permission covers
//! one key, a range `[key, range_end)`, or every key from `key` on (`range_end` `"\0"`); a
//! user's permissions are the union over its roles, and a range request needs the whole
//! range covered. Nothing here does I/O or hashing: passwords arrive hashed, and
//! persistence and tokens are the server's.

pub mod attempts;
#[cfg(not(madsim))]
pub mod jwt;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};

use crate::proto::authpb::{permission::Type as PermissionType, Permission, Role, User};
use crate::proto::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListResponse, AuthRoleRevokePermissionRequest,
    AuthRoleRevokePermissionResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest,
    AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse,
};
use crate::proto::oxcdpb::SavedAuth;

/// The user that may do anything, and must exist before auth is enabled.
pub const ROOT_USER: &str = "root";
/// The role that may do anything.
pub const ROOT_ROLE: &str = "root";

/// What the auth store refuses, with the text etcd's auth package gives (the server
/// translates these to etcd's `etcdserver: ...` errors where etcd does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth: root user does not exist")]
    RootUserNotExist,
    #[error("auth: root user does not have root role")]
    RootRoleNotExist,
    #[error("auth: user already exists")]
    UserAlreadyExist,
    #[error("auth: user name is empty")]
    UserEmpty,
    #[error("auth: user not found")]
    UserNotFound,
    #[error("auth: role already exists")]
    RoleAlreadyExist,
    #[error("auth: role not found")]
    RoleNotFound,
    #[error("auth: role name is empty")]
    RoleEmpty,
    #[error("auth: permission not given")]
    PermissionNotGiven,
    #[error("auth: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("auth: permission denied")]
    PermissionDenied,
    #[error("auth: role is not granted to the user")]
    RoleNotGranted,
    #[error("auth: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("auth: authentication is not enabled")]
    AuthNotEnabled,
    #[error("auth: revision in header is old")]
    AuthOldRevision,
    #[error("auth: invalid auth token")]
    InvalidAuthToken,
    #[error("auth: invalid auth management")]
    InvalidAuthMgmt,
}

/// Who a request comes from: a user and the auth revision its credentials were checked
/// at. The default (no user, revision 0) is a request without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

/// What a request does to a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One end of a key interval: a key, or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Bound {
    Key(Vec<u8>),
    Infinity,
}

/// A user's permissions of one kind as sorted, disjoint, non-adjacent intervals
/// `[start, end)`: the union over its roles (etcd's range permission cache).
#[derive(Debug, Clone, Default)]
struct Intervals(Vec<(Vec<u8>, Bound)>);

impl Intervals {
    fn from_unsorted(mut spans: Vec<(Vec<u8>, Bound)>) -> Intervals {
        spans.sort();
        let mut merged: Vec<(Vec<u8>, Bound)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            if let Some(last) = merged.last_mut() {
                if Bound::Key(start.clone()) <= last.1 {
                    if end > last.1 {
                        last.1 = end;
                    }
                    continue;
                }
            }
            merged.push((start, end));
        }
        Intervals(merged)
    }

    /// Whether one interval covers all of `[start, end)`.
    fn covers(&self, start: &[u8], end: &Bound) -> bool {
        // The last interval starting at or before `start` is the only candidate: the
        // intervals are disjoint and not adjacent.
        let at = self
            .0
            .partition_point(|(first, _)| first.as_slice() <= start);
        at > 0 && {
            let (_, last) = &self.0[at - 1];
            Bound::Key(start.to_vec()) < *last && end <= last
        }
    }
}

/// The interval a permission or a request names: `range_end` empty is the one key, `"\0"`
/// every key from `key` on.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Bound) {
    let end = match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            Bound::Key(next)
        }
        [0] => Bound::Infinity,
        end => Bound::Key(end.to_vec()),
    };
    (key.to_vec(), end)
}

/// Whether a permission may name `[key, range_end)` (etcd's `isValidPermissionRange`).
fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

#[derive(Debug, Clone, Default)]
struct Merged {
    read: Intervals,
    write: Intervals,
}

fn has_root_role(user: &User) -> bool {
    user.roles
        .binary_search_by(|role| role.as_str().cmp(ROOT_ROLE))
        .is_ok()
}

/// The users, roles and flags of the auth store, and the answers to every request.
#[derive(Debug, Clone)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's merged permissions, rebuilt after every change.
    merged: HashMap<String, Merged>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState::from_saved(SavedAuth::default())
    }
}

impl AuthState {
    /// The state saved by [`AuthState::to_saved`]; a new store starts at revision 1, as
    /// etcd's does.
    pub fn from_saved(saved: SavedAuth) -> AuthState {
        let mut state = AuthState {
            enabled: saved.enabled,
            revision: saved.revision.max(1),
            users: saved
                .users
                .into_iter()
                .map(|user| (String::from_utf8_lossy(&user.name).into_owned(), user))
                .collect(),
            roles: saved
                .roles
                .into_iter()
                .map(|role| (String::from_utf8_lossy(&role.name).into_owned(), role))
                .collect(),
            merged: HashMap::new(),
        };
        state.refresh();
        state
    }

    pub fn to_saved(&self) -> SavedAuth {
        SavedAuth {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|user| user.roles.iter().any(|granted| granted == role))
    }

    fn refresh(&mut self) {
        self.merged = self
            .users
            .iter()
            .map(|(name, user)| {
                let mut read = Vec::new();
                let mut write = Vec::new();
                for role in user.roles.iter().filter_map(|role| self.roles.get(role)) {
                    for permission in &role.key_permission {
                        let span = interval(&permission.key, &permission.range_end);
                        match PermissionType::try_from(permission.perm_type) {
                            Ok(PermissionType::Read) => read.push(span),
                            Ok(PermissionType::Write) => write.push(span),
                            Ok(PermissionType::Readwrite) => {
                                read.push(span.clone());
                                write.push(span);
                            }
                            Err(_) => {}
                        }
                    }
                }
                let merged = Merged {
                    read: Intervals::from_unsorted(read),
                    write: Intervals::from_unsorted(write),
                };
                (name.clone(), merged)
            })
            .collect();
    }

    /// A change of users or roles: a new revision and new merged permissions.
    fn changed(&mut self) {
        self.revision += 1;
        self.refresh();
    }

    pub fn enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    /// Disables auth; answers whether it was enabled (tokens go with it).
    pub fn disable(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        self.enabled = false;
        self.revision += 1;
        true
    }

    /// The user a password may be checked for: its hash, or why not.
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user
            .options
            .as_ref()
            .is_some_and(|options| options.no_password)
        {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((user.password.to_vec(), self.revision))
    }

    /// Authenticate, once the password was checked: the user still exists and may log in.
    pub fn authenticate(&self, name: &str) -> Result<(), AuthError> {
        match self.password_hash(name) {
            Ok(_) => Ok(()),
            Err(AuthError::NoPasswordUser) => Err(AuthError::AuthFailed),
            Err(error) => Err(error),
        }
    }

    /// Adds a user; `hash` is the bcrypt hash of its password (ignored for a user without
    /// one).
    pub fn user_add(
        &mut self,
        request: &AuthUserAddRequest,
        hash: Vec<u8>,
    ) -> Result<AuthUserAddResponse, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&request.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = request.options.unwrap_or_default();
        let password = if options.no_password {
            Vec::new()
        } else {
            hash
        };
        let user = User {
            name: request.name.clone().into(),
            password: password.into(),
            roles: Vec::new(),
            options: Some(options),
        };
        self.users.insert(request.name.clone(), user);
        self.changed();
        Ok(AuthUserAddResponse::default())
    }

    pub fn user_delete(
        &mut self,
        request: &AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, AuthError> {
        if self.enabled && request.name == ROOT_USER {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users
            .remove(&request.name)
            .ok_or(AuthError::UserNotFound)?;
        self.changed();
        Ok(AuthUserDeleteResponse::default())
    }

    pub fn user_change_password(
        &mut self,
        request: &AuthUserChangePasswordRequest,
        hash: Vec<u8>,
    ) -> Result<AuthUserChangePasswordResponse, AuthError> {
        let user = self
            .users
            .get_mut(&request.name)
            .ok_or(AuthError::UserNotFound)?;
        let no_password = user.options.as_ref().is_some_and(|o| o.no_password);
        user.password = if no_password { Vec::new() } else { hash }.into();
        self.changed();
        Ok(AuthUserChangePasswordResponse::default())
    }

    pub fn user_grant_role(
        &mut self,
        request: &AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, AuthError> {
        if !self.users.contains_key(&request.user) {
            return Err(AuthError::UserNotFound);
        }
        if request.role != ROOT_ROLE && !self.roles.contains_key(&request.role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(&request.user).expect("checked above");
        match user.roles.binary_search(&request.role) {
            // Granting a role twice changes nothing, as in etcd.
            Ok(_) => return Ok(AuthUserGrantRoleResponse::default()),
            Err(at) => user.roles.insert(at, request.role.clone()),
        }
        self.changed();
        Ok(AuthUserGrantRoleResponse::default())
    }

    pub fn user_get(&self, request: &AuthUserGetRequest) -> Result<AuthUserGetResponse, AuthError> {
        let user = self
            .users
            .get(&request.name)
            .ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: None,
            roles: user.roles.clone(),
        })
    }

    pub fn user_list(&self) -> AuthUserListResponse {
        AuthUserListResponse {
            header: None,
            users: self.users.keys().cloned().collect(),
        }
    }

    pub fn user_revoke_role(
        &mut self,
        request: &AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, AuthError> {
        if self.enabled && request.name == ROOT_USER && request.role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self
            .users
            .get_mut(&request.name)
            .ok_or(AuthError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|role| *role != request.role);
        if user.roles.len() == before {
            return Err(AuthError::RoleNotGranted);
        }
        self.changed();
        Ok(AuthUserRevokeRoleResponse::default())
    }

    pub fn role_add(
        &mut self,
        request: &AuthRoleAddRequest,
    ) -> Result<AuthRoleAddResponse, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(&request.name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let role = Role {
            name: request.name.clone().into(),
            key_permission: Vec::new(),
        };
        self.roles.insert(request.name.clone(), role);
        self.changed();
        Ok(AuthRoleAddResponse::default())
    }

    pub fn role_get(&self, request: &AuthRoleGetRequest) -> Result<AuthRoleGetResponse, AuthError> {
        let role = self
            .roles
            .get(&request.role)
            .ok_or(AuthError::RoleNotFound)?;
        // The root role may do anything whatever its permissions say; etcd 3.4 shows the
        // permissions it was granted (none, usually), and so does this.
        let perm = role.key_permission.clone();
        Ok(AuthRoleGetResponse { header: None, perm })
    }

    pub fn role_list(&self) -> AuthRoleListResponse {
        AuthRoleListResponse {
            header: None,
            roles: self.roles.keys().cloned().collect(),
        }
    }

    pub fn role_delete(
        &mut self,
        request: &AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, AuthError> {
        if self.enabled && request.role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles
            .remove(&request.role)
            .ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|role| *role != request.role);
        }
        self.changed();
        Ok(AuthRoleDeleteResponse::default())
    }

    pub fn role_grant_permission(
        &mut self,
        request: &AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, AuthError> {
        let permission = request.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        if !valid_permission_range(&permission.key, &permission.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self
            .roles
            .get_mut(&request.name)
            .ok_or(AuthError::RoleNotFound)?;
        let existing = role
            .key_permission
            .iter_mut()
            .find(|p| p.key == permission.key && p.range_end == permission.range_end);
        match existing {
            Some(existing) => existing.perm_type = permission.perm_type,
            None => {
                role.key_permission.push(Permission {
                    perm_type: permission.perm_type,
                    key: permission.key.clone(),
                    range_end: permission.range_end.clone(),
                });
                role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.changed();
        Ok(AuthRoleGrantPermissionResponse::default())
    }

    pub fn role_revoke_permission(
        &mut self,
        request: &AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, AuthError> {
        let role = self
            .roles
            .get_mut(&request.role)
            .ok_or(AuthError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != request.key || p.range_end != request.range_end);
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.changed();
        Ok(AuthRoleRevokePermissionResponse::default())
    }

    /// Whether `info` may read or write `[key, range_end)` (etcd's `isOpPermitted`).
    pub fn check(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&info.username)
            .ok_or(AuthError::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(());
        }
        let Some(merged) = self.merged.get(&info.username) else {
            return Err(AuthError::PermissionDenied);
        };
        let intervals = match access {
            Access::Read => &merged.read,
            Access::Write => &merged.write,
        };
        let (start, end) = interval(key, range_end);
        let permitted = match &end {
            // A range that ends before it starts selects nothing; it needs its first key.
            Bound::Key(end_key) if !range_end.is_empty() && end_key.as_slice() <= key => {
                let (start, end) = interval(key, b"");
                intervals.covers(&start, &end)
            }
            _ => intervals.covers(&start, &end),
        };
        if permitted {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `info` may run administrative requests (etcd's `IsAdminPermitted`).
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = self
            .users
            .get(&info.username)
            .ok_or(AuthError::UserNotFound)?;
        if !has_root_role(user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
