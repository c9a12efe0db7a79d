use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::tokens::{new_prefix, token_index, SimpleTokens};
use super::*;
use crate::proto::authpb::UserAddOptions;

fn user_add(state: &mut AuthState, name: &str) {
    let request = AuthUserAddRequest {
        name: name.into(),
        ..Default::default()
    };
    state.user_add(&request, b"hash".to_vec()).unwrap();
}

fn role_add(state: &mut AuthState, name: &str) {
    let request = AuthRoleAddRequest { name: name.into() };
    state.role_add(&request).unwrap();
}

fn grant_role(state: &mut AuthState, user: &str, role: &str) -> Result<(), AuthError> {
    let request = AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    };
    state.user_grant_role(&request).map(|_| ())
}

fn grant(state: &mut AuthState, role: &str, kind: PermissionType, key: &[u8], end: &[u8]) {
    let request = AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: kind as i32,
            key: key.to_vec().into(),
            range_end: end.to_vec().into(),
        }),
    };
    state.role_grant_permission(&request).unwrap();
}

/// Root with the root role, auth enabled, and `alice` with role `app`.
fn enabled() -> AuthState {
    let mut state = AuthState::default();
    user_add(&mut state, "root");
    grant_role(&mut state, "root", "root").unwrap();
    role_add(&mut state, "app");
    user_add(&mut state, "alice");
    grant_role(&mut state, "alice", "app").unwrap();
    state.enable().unwrap();
    state
}

fn info(state: &AuthState, user: &str) -> AuthInfo {
    AuthInfo {
        username: user.into(),
        revision: state.revision(),
    }
}

#[test]
fn enable_needs_root_with_the_root_role() {
    let mut state = AuthState::default();
    assert_eq!(state.revision(), 1);
    assert_eq!(state.enable(), Err(AuthError::RootUserNotExist));
    user_add(&mut state, "root");
    assert_eq!(state.enable(), Err(AuthError::RootRoleNotExist));
    // The root role need not exist to be granted.
    grant_role(&mut state, "root", "root").unwrap();
    let revision = state.revision();
    state.enable().unwrap();
    assert!(state.is_enabled());
    // Enabling changes no user or role: the revision stays; enabling again is no error.
    assert_eq!(state.revision(), revision);
    state.enable().unwrap();
    assert!(state.disable());
    assert_eq!(state.revision(), revision + 1);
    assert!(!state.disable());
}

#[test]
fn root_is_protected_while_enabled() {
    let mut state = enabled();
    let delete = AuthUserDeleteRequest {
        name: "root".into(),
    };
    assert_eq!(state.user_delete(&delete), Err(AuthError::InvalidAuthMgmt));
    let revoke = AuthUserRevokeRoleRequest {
        name: "root".into(),
        role: "root".into(),
    };
    assert_eq!(
        state.user_revoke_role(&revoke),
        Err(AuthError::InvalidAuthMgmt)
    );
    let role_delete = AuthRoleDeleteRequest {
        role: "root".into(),
    };
    assert_eq!(
        state.role_delete(&role_delete),
        Err(AuthError::InvalidAuthMgmt)
    );
    state.disable();
    state.user_revoke_role(&revoke).unwrap();
    state.user_delete(&delete).unwrap();
}

#[test]
fn users_and_roles_answer_etcd_errors() {
    let mut state = AuthState::default();
    let empty = AuthUserAddRequest::default();
    assert_eq!(state.user_add(&empty, vec![]), Err(AuthError::UserEmpty));
    user_add(&mut state, "u");
    let again = AuthUserAddRequest {
        name: "u".into(),
        ..Default::default()
    };
    assert_eq!(
        state.user_add(&again, vec![]),
        Err(AuthError::UserAlreadyExist)
    );
    assert_eq!(
        grant_role(&mut state, "u", "nope"),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(
        grant_role(&mut state, "x", "root"),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        state.role_add(&AuthRoleAddRequest { name: "".into() }),
        Err(AuthError::RoleEmpty)
    );
    role_add(&mut state, "b");
    role_add(&mut state, "a");
    assert_eq!(
        state.role_add(&AuthRoleAddRequest { name: "a".into() }),
        Err(AuthError::RoleAlreadyExist)
    );
    grant_role(&mut state, "u", "b").unwrap();
    grant_role(&mut state, "u", "a").unwrap();
    let revision = state.revision();
    grant_role(&mut state, "u", "a").unwrap();
    assert_eq!(
        state.revision(),
        revision,
        "a repeated grant changes nothing"
    );
    let get = AuthUserGetRequest { name: "u".into() };
    assert_eq!(state.user_get(&get).unwrap().roles, ["a", "b"]);
    assert_eq!(state.role_list().roles, ["a", "b"]);
    let revoke = AuthUserRevokeRoleRequest {
        name: "u".into(),
        role: "c".into(),
    };
    assert_eq!(
        state.user_revoke_role(&revoke),
        Err(AuthError::RoleNotGranted)
    );
    // Deleting a role takes it from its users.
    state
        .role_delete(&AuthRoleDeleteRequest { role: "a".into() })
        .unwrap();
    assert_eq!(state.user_get(&get).unwrap().roles, ["b"]);
    let revoke_permission = AuthRoleRevokePermissionRequest {
        role: "b".into(),
        key: b"k".to_vec().into(),
        range_end: Default::default(),
    };
    assert_eq!(
        state.role_revoke_permission(&revoke_permission),
        Err(AuthError::PermissionNotGranted)
    );
    let no_permission = AuthRoleGrantPermissionRequest {
        name: "b".into(),
        perm: None,
    };
    assert_eq!(
        state.role_grant_permission(&no_permission),
        Err(AuthError::PermissionNotGiven)
    );
    let backwards = AuthRoleGrantPermissionRequest {
        name: "b".into(),
        perm: Some(Permission {
            perm_type: 0,
            key: b"z".to_vec().into(),
            range_end: b"a".to_vec().into(),
        }),
    };
    assert_eq!(
        state.role_grant_permission(&backwards),
        Err(AuthError::InvalidAuthMgmt)
    );
}

#[test]
fn root_role_shows_only_what_it_was_granted() {
    let mut state = AuthState::default();
    role_add(&mut state, "root");
    let get = AuthRoleGetRequest {
        role: "root".into(),
    };
    assert!(state.role_get(&get).unwrap().perm.is_empty());
}

#[test]
fn grants_update_in_place_and_stay_sorted() {
    let mut state = AuthState::default();
    role_add(&mut state, "r");
    grant(&mut state, "r", PermissionType::Read, b"m", b"");
    grant(&mut state, "r", PermissionType::Read, b"a", b"c");
    grant(&mut state, "r", PermissionType::Write, b"m", b"");
    let perm = state
        .role_get(&AuthRoleGetRequest { role: "r".into() })
        .unwrap()
        .perm;
    let keys: Vec<_> = perm.iter().map(|p| (p.key.to_vec(), p.perm_type)).collect();
    assert_eq!(keys, [(b"a".to_vec(), 0), (b"m".to_vec(), 1)]);
}

#[test]
fn checks_follow_etcd_rules() {
    let mut state = enabled();
    grant(&mut state, "app", PermissionType::Read, b"/ro/", b"/ro0");
    grant(
        &mut state,
        "app",
        PermissionType::Readwrite,
        b"/rw/",
        b"/rw0",
    );
    grant(&mut state, "app", PermissionType::Write, b"/one", b"");
    grant(&mut state, "app", PermissionType::Read, b"/z", b"\0");
    let alice = info(&state, "alice");
    let check = |key: &[u8], end: &[u8], access| state.check(&alice, key, end, access);
    assert_eq!(check(b"/ro/a", b"", Access::Read), Ok(()));
    assert_eq!(
        check(b"/ro/a", b"", Access::Write),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(check(b"/ro/", b"/ro0", Access::Read), Ok(()));
    assert_eq!(
        check(b"/ro/", b"/ro1", Access::Read),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(check(b"/rw/x", b"/rw/y", Access::Write), Ok(()));
    assert_eq!(check(b"/one", b"", Access::Write), Ok(()));
    assert_eq!(
        check(b"/one", b"", Access::Read),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        check(b"/onex", b"", Access::Write),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(check(b"/zzz", b"\0", Access::Read), Ok(()));
    assert_eq!(
        check(b"/y", b"\0", Access::Read),
        Err(AuthError::PermissionDenied)
    );
    // Root may do anything; nobody without credentials may do anything.
    let root = info(&state, "root");
    assert_eq!(state.check(&root, b"", b"\0", Access::Write), Ok(()));
    let nobody = AuthInfo::default();
    assert_eq!(
        state.check(&nobody, b"/ro/a", b"", Access::Read),
        Err(AuthError::UserEmpty)
    );
    // A change of users or roles makes older credentials stale.
    let stale = info(&state, "alice");
    role_add(&mut state, "other");
    assert_eq!(
        state.check(&stale, b"/ro/a", b"", Access::Read),
        Err(AuthError::AuthOldRevision)
    );
    // Admin checks.
    assert_eq!(state.check_admin(&info(&state, "root")), Ok(()));
    assert_eq!(
        state.check_admin(&info(&state, "alice")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        state.check_admin(&info(&state, "bob")),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        state.check_admin(&AuthInfo::default()),
        Err(AuthError::UserEmpty)
    );
    state.disable();
    assert_eq!(state.check(&nobody, b"/x", b"", Access::Write), Ok(()));
    assert_eq!(state.check_admin(&nobody), Ok(()));
}

#[test]
fn passwords_and_no_password_users() {
    let mut state = enabled();
    assert_eq!(state.password_hash("root").unwrap().0, b"hash");
    assert_eq!(state.password_hash("nobody"), Err(AuthError::AuthFailed));
    let request = AuthUserAddRequest {
        name: "cert-only".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    };
    state.user_add(&request, b"ignored".to_vec()).unwrap();
    assert!(state.user("cert-only").unwrap().password.is_empty());
    assert_eq!(
        state.password_hash("cert-only"),
        Err(AuthError::NoPasswordUser)
    );
    assert_eq!(state.authenticate("cert-only"), Err(AuthError::AuthFailed));
    state.disable();
    assert_eq!(state.password_hash("root"), Err(AuthError::AuthNotEnabled));
}

#[test]
fn saved_state_round_trips() {
    let mut state = enabled();
    grant(&mut state, "app", PermissionType::Read, b"/a", b"/b");
    let restored = AuthState::from_saved(state.to_saved());
    assert_eq!(restored.revision(), state.revision());
    assert!(restored.is_enabled());
    let alice = info(&restored, "alice");
    assert_eq!(restored.check(&alice, b"/a1", b"", Access::Read), Ok(()));
    assert_eq!(
        restored.check(&alice, b"/b", b"", Access::Read),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn simple_tokens_lapse_unless_used() {
    let start = Instant::now();
    let ttl = Duration::from_secs(300);
    let mut tokens = SimpleTokens::new(ttl);
    let prefix = new_prefix(&mut <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng());
    let token = tokens.assign(&prefix, 42, "alice", start);
    assert_eq!(token_index(&token), Some(42));
    assert_eq!(token_index("short.1"), None);
    assert_eq!(token_index(&format!("{prefix}.x")), None);
    assert_eq!(
        tokens.user(&token, start + ttl / 2).as_deref(),
        Some("alice")
    );
    // Each use renews it.
    assert_eq!(tokens.user(&token, start + ttl).as_deref(), Some("alice"));
    assert_eq!(tokens.user(&token, start + ttl * 3), None);
    let token = tokens.assign(&prefix, 43, "alice", start);
    tokens.invalidate_user("alice");
    assert_eq!(tokens.user(&token, start), None);
    assert!(tokens.is_empty());
}

/// A plain model of permission coverage: every key of a small alphabet, one by one.
fn naive_permitted(perms: &[(Vec<u8>, Vec<u8>)], key: &[u8], end: &[u8]) -> bool {
    let in_perm = |k: &[u8]| {
        perms.iter().any(|(pk, pe)| match pe.as_slice() {
            [] => k == pk.as_slice(),
            [0] => k >= pk.as_slice(),
            pe => k >= pk.as_slice() && k < pe,
        })
    };
    // Keys up to three bytes of {0, a, b, c} (and the empty key): every gap in a union of
    // the intervals the strategy draws starts at a bound (at most two letters, or a key
    // with a 0 byte appended for a single-key permission), and every bound is listed.
    let mut keys = vec![Vec::new()];
    for len in 1..=3 {
        let mut next = Vec::new();
        for k in keys.iter().filter(|k| k.len() == len - 1) {
            for c in [0, b'a', b'b', b'c'] {
                let mut k = k.clone();
                k.push(c);
                next.push(k);
            }
        }
        keys.extend(next);
    }
    let selected: Vec<&Vec<u8>> = keys
        .iter()
        .filter(|k| match end {
            [] => k.as_slice() == key,
            [0] => k.as_slice() >= key,
            end if end <= key => k.as_slice() == key,
            end => k.as_slice() >= key && k.as_slice() < end,
        })
        .collect();
    selected.iter().all(|k| in_perm(k))
}

fn short_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 1..=2)
}

fn short_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0]), short_key()]
}

proptest! {
    /// The merged-interval check agrees with a key-by-key model of coverage.
    #[test]
    fn coverage_agrees_with_a_key_by_key_model(
        perms in prop::collection::vec((short_key(), short_end()), 0..5),
        key in short_key(),
        end in short_end(),
    ) {
        let perms: Vec<_> = perms
            .into_iter()
            .filter(|(k, e)| valid_permission_range(k, e))
            .collect();
        let mut state = enabled();
        for (k, e) in &perms {
            grant(&mut state, "app", PermissionType::Read, k, e);
        }
        let alice = info(&state, "alice");
        let checked = state.check(&alice, &key, &end, Access::Read).is_ok();
        prop_assert_eq!(checked, naive_permitted(&perms, &key, &end));
    }
}

proptest! {
    /// Whatever a client sends as a token, parsing it answers without panicking, and only
    /// a token that was issued names a user.
    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,64}", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let now = Instant::now();
        let mut tokens = SimpleTokens::new(Duration::from_secs(300));
        let issued = tokens.assign("abcdefghijklmnop", 9, "alice", now);
        let _ = token_index(&token);
        let lossy = String::from_utf8_lossy(&bytes);
        let _ = token_index(&lossy);
        prop_assume!(token != issued && lossy != issued);
        prop_assert_eq!(tokens.user(&token, now), None);
        prop_assert_eq!(tokens.user(&lossy, now), None);
    }
}
