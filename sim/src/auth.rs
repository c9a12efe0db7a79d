//! Authorization under faults: is a permission change as linearizable as the data?
//!
//! A three-member cluster with auth enabled. User `alice` holds role `app`; an admin
//! (root) revokes and grants `app`'s read-write permission on `/a/` over and over, one
//! change after another, retrying each until it is acknowledged. Meanwhile alice's clients
//! put unique keys under `/a/` and read the prefix, through random members, while members
//! lose power, restart and are cut off from the network. Then:
//!
//! - no operation of alice's whose call began after a revoke was acknowledged, and which
//!   returned before the next grant was called, succeeded (the permission was certainly
//!   revoked for all of its duration);
//! - no put that was refused (permission denied, a stale auth revision, a token the member
//!   did not know) left its key behind, and every acknowledged put's key is there;
//! - the members' applied states, auth state included, agreed at every index (the Raft
//!   observer), and the run was not vacuous: writes succeeded and were refused, the
//!   permission changed several times, faults were injected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use oxcd::proto::authpb::{permission::Type as PermissionType, Permission};
use oxcd::proto::etcdserverpb::auth_client::AuthClient;
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    AuthenticateRequest, PutRequest, RangeRequest,
};
use oxcd::server::observe::set_observer;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::harness::{ClusterSpec, SimMember};
use crate::observer::{Observed, RaftObserver};
use crate::workload::channel;

/// How long clients and the admin work while faults are injected.
const FAULT_PHASE: Duration = Duration::from_secs(20);
/// Then a calm while, so the run ends on a healthy cluster.
const CALM_PHASE: Duration = Duration::from_secs(5);
/// A call that takes longer has an unknown outcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const PREFIX: &str = "/a/";
const PREFIX_END: &str = "/a0";
const ALICE: (&str, &str) = ("alice", "alicepw");
const ROOT: (&str, &str) = ("root", "rootpw");

/// What became of one of alice's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    /// Refused by the permission check.
    Denied,
    /// Refused before it took effect for another reason (a token the member does not know,
    /// credentials checked at an older auth revision).
    Refused,
    Unknown,
}

#[derive(Debug, Clone)]
struct Call {
    put: Option<String>,
    call: Instant,
    ret: Instant,
    result: Answer,
}

/// One permission change: first called, finally acknowledged.
#[derive(Debug, Clone, Copy)]
struct Change {
    granted: bool,
    call: Instant,
    ret: Instant,
}

/// One try at a grant. A try whose outcome is unknown may still take effect at any later
/// time (its entry may sit in a leader's log and commit after the client gave up), even
/// after the revoke that followed it.
#[derive(Debug, Clone, Copy)]
struct GrantTry {
    call: Instant,
    /// When it was acknowledged, if it was.
    acknowledged: Option<Instant>,
    /// Refused: it certainly had no effect.
    refused: bool,
}

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    changes: Vec<Change>,
    grant_tries: Vec<GrantTry>,
}

/// What a run found.
pub struct AuthOutcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub summary: String,
    pub observed: Observed,
}

fn classify(status: &Status) -> Answer {
    match status.code() {
        Code::PermissionDenied => Answer::Denied,
        Code::Unauthenticated => Answer::Refused,
        Code::InvalidArgument if status.message().contains("revision of auth store is old") => {
            Answer::Refused
        }
        _ => Answer::Unknown,
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = token.parse() {
        request.metadata_mut().insert("token", value);
    }
    request
}

fn any(members: &[SocketAddr]) -> SocketAddr {
    members[thread_rng().gen_range(0..members.len())]
}

/// Logs in through some member, trying until one answers.
async fn login(
    members: &[SocketAddr],
    (name, password): (&str, &str),
    until: Instant,
) -> Option<String> {
    while Instant::now() < until {
        if let Some(channel) = channel(any(members)).await {
            let request = AuthenticateRequest {
                name: name.into(),
                password: password.into(),
            };
            let mut auth = AuthClient::new(channel);
            let call = auth.authenticate(request);
            if let Ok(Ok(response)) = tokio::time::timeout(CALL_TIMEOUT, call).await {
                return Some(response.into_inner().token);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Users, the role and its permission, auth enabled: each step retried until done.
async fn set_up(members: &[SocketAddr]) {
    let prefix = Permission {
        perm_type: PermissionType::Readwrite as i32,
        key: Bytes::from(PREFIX),
        range_end: Bytes::from(PREFIX_END),
    };
    for step in 0..7 {
        loop {
            let Some(channel) = channel(any(members)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut auth = AuthClient::new(channel);
            let user = |(name, password): (&str, &str)| AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
                ..Default::default()
            };
            let grant = |user: &str, role: &str| AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            };
            let call = async {
                match step {
                    0 => auth.user_add(user(ROOT)).await.map(drop),
                    1 => auth.user_grant_role(grant("root", "root")).await.map(drop),
                    2 => auth.user_add(user(ALICE)).await.map(drop),
                    3 => auth
                        .role_add(AuthRoleAddRequest { name: "app".into() })
                        .await
                        .map(drop),
                    4 => auth
                        .role_grant_permission(AuthRoleGrantPermissionRequest {
                            name: "app".into(),
                            perm: Some(prefix.clone()),
                        })
                        .await
                        .map(drop),
                    5 => auth.user_grant_role(grant("alice", "app")).await.map(drop),
                    _ => auth.auth_enable(AuthEnableRequest {}).await.map(drop),
                }
            };
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                // A step retried after an unknown outcome may find itself done.
                Ok(Ok(())) => break,
                Ok(Err(status)) if status.code() == Code::FailedPrecondition => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Revokes and grants `app`'s permission, one change after another, each retried until
/// acknowledged (a revoke that finds the permission gone was done by an earlier try).
async fn admin(members: Vec<SocketAddr>, log: Arc<Mutex<Log>>, until: Instant) {
    let Some(mut token) = login(&members, ROOT, until).await else {
        return;
    };
    let mut granted = true;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(200..1500))).await;
        granted = !granted;
        let first_call = Instant::now();
        loop {
            if Instant::now() >= until + CALM_PHASE {
                return;
            }
            let Some(channel) = channel(any(&members)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut auth = AuthClient::new(channel);
            let call = async {
                if granted {
                    let request = AuthRoleGrantPermissionRequest {
                        name: "app".into(),
                        perm: Some(Permission {
                            perm_type: PermissionType::Readwrite as i32,
                            key: Bytes::from(PREFIX),
                            range_end: Bytes::from(PREFIX_END),
                        }),
                    };
                    auth.role_grant_permission(with_token(request, &token))
                        .await
                        .map(drop)
                } else {
                    let request = AuthRoleRevokePermissionRequest {
                        role: "app".into(),
                        key: Bytes::from(PREFIX),
                        range_end: Bytes::from(PREFIX_END),
                    };
                    auth.role_revoke_permission(with_token(request, &token))
                        .await
                        .map(drop)
                }
            };
            let called = Instant::now();
            let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
            if granted {
                log.lock().unwrap().grant_tries.push(GrantTry {
                    call: called,
                    acknowledged: matches!(answer, Ok(Ok(()))).then(Instant::now),
                    refused: matches!(&answer, Ok(Err(status)) if classify(status) == Answer::Refused),
                });
            }
            match answer {
                Ok(Ok(())) => break,
                Ok(Err(status))
                    if !granted && status.message().contains("permission is not granted") =>
                {
                    break
                }
                Ok(Err(status)) if classify(&status) == Answer::Refused => {
                    if let Some(fresh) = login(&members, ROOT, until + CALM_PHASE).await {
                        token = fresh;
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        log.lock().unwrap().changes.push(Change {
            granted,
            call: first_call,
            ret: Instant::now(),
        });
    }
}

/// Alice's puts of unique keys and reads of the prefix through random members.
async fn client(number: usize, members: Vec<SocketAddr>, log: Arc<Mutex<Log>>, until: Instant) {
    let Some(mut token) = login(&members, ALICE, until).await else {
        return;
    };
    let mut sequence = 0;
    while Instant::now() < until {
        let Some(channel) = channel(any(&members)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut kv = KvClient::new(channel);
        sequence += 1;
        let reading = thread_rng().gen_bool(0.3);
        let key = format!("{PREFIX}c{number}-{sequence}");
        let call = Instant::now();
        let answer = if reading {
            let request = RangeRequest {
                key: Bytes::from(PREFIX),
                range_end: Bytes::from(PREFIX_END),
                count_only: true,
                ..Default::default()
            };
            tokio::time::timeout(CALL_TIMEOUT, kv.range(with_token(request, &token)))
                .await
                .map(|result| result.map(drop))
        } else {
            let request = PutRequest {
                key: Bytes::from(key.clone()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            };
            tokio::time::timeout(CALL_TIMEOUT, kv.put(with_token(request, &token)))
                .await
                .map(|result| result.map(drop))
        };
        let result = match &answer {
            Ok(Ok(())) => Answer::Ok,
            Ok(Err(status)) => classify(status),
            Err(_) => Answer::Unknown,
        };
        log.lock().unwrap().calls.push(Call {
            put: (!reading).then_some(key),
            call,
            ret: Instant::now(),
            result,
        });
        if result == Answer::Refused {
            match login(&members, ALICE, until).await {
                Some(fresh) => token = fresh,
                None => return,
            }
        }
    }
}

/// Members lose power and restart, or are cut off and reconnected, one at a time.
async fn faults(members: Arc<Vec<SimMember>>, until: Instant) -> u64 {
    let mut injected = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(300..2000))).await;
        let member = &members[thread_rng().gen_range(0..members.len())];
        let outage = Duration::from_millis(thread_rng().gen_range(300..3000));
        if thread_rng().gen_bool(0.5) {
            member.crash();
            tokio::time::sleep(outage).await;
            member.restart();
        } else {
            NetSim::current().clog_node(member.node.id());
            tokio::time::sleep(outage).await;
            NetSim::current().unclog_node(member.node.id());
        }
        injected += 1;
    }
    injected
}

/// The keys under the prefix at the end, read as root.
async fn final_keys(members: &[SocketAddr]) -> Option<Vec<String>> {
    let until = Instant::now() + Duration::from_secs(30);
    let token = login(members, ROOT, until).await?;
    while Instant::now() < until {
        if let Some(channel) = channel(any(members)).await {
            let request = RangeRequest {
                key: Bytes::from(PREFIX),
                range_end: Bytes::from(PREFIX_END),
                keys_only: true,
                ..Default::default()
            };
            let mut kv = KvClient::new(channel);
            let call = kv.range(with_token(request, &token));
            if let Ok(Ok(response)) = tokio::time::timeout(CALL_TIMEOUT, call).await {
                let kvs = response.into_inner().kvs;
                return Some(
                    kvs.iter()
                        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                        .collect(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The judgement of a run's log and final keys.
fn judge(log: &Log, keys: &[String]) -> Vec<String> {
    let mut violations = Vec::new();
    // An operation of alice's that succeeded is wrong if a revoke was acknowledged before
    // it was called and no grant could have taken effect between that revoke and the
    // operation: every try at a grant called before the operation returned was either
    // acknowledged before the revoke was first called, or refused.
    let revokes = log.changes.iter().filter(|change| !change.granted);
    let revokes: Vec<&Change> = revokes.collect();
    for call in log.calls.iter().filter(|call| call.result == Answer::Ok) {
        let certainly_revoked = revokes.iter().find(|revoke| {
            revoke.ret < call.call
                && log
                    .grant_tries
                    .iter()
                    .filter(|grant| grant.call < call.ret)
                    .all(|grant| {
                        grant.refused || grant.acknowledged.is_some_and(|at| at < revoke.call)
                    })
        });
        if let Some(revoke) = certainly_revoked {
            violations.push(format!(
                "{} succeeded within [{:?}, {:?}] although the permission was revoked \
                 (acknowledged at {:?}) and no grant could have taken effect since",
                call.put.as_deref().unwrap_or("a read of the prefix"),
                call.call,
                call.ret,
                revoke.ret
            ));
        }
    }
    let present: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    for call in &log.calls {
        let Some(key) = &call.put else { continue };
        match call.result {
            Answer::Denied | Answer::Refused if present.contains(key.as_str()) => violations.push(
                format!("{key} was refused ({:?}) but is in the store", call.result),
            ),
            Answer::Ok if !present.contains(key.as_str()) => {
                violations.push(format!("{key} was acknowledged but is not in the store"))
            }
            _ => {}
        }
    }
    violations
}

pub async fn run(seed: u64) -> AuthOutcome {
    let spec = ClusterSpec {
        size: 3,
        heartbeat_ms: 100,
        election_ms: 1000,
        snapshot_count: thread_rng().gen_range(30..200),
        catch_up_entries: Some(thread_rng().gen_range(5..50)),
        strict_reconfig: true,
        wal_segment_bytes: 64 << 10,
        progress_notify_ms: crate::harness::PROGRESS_NOTIFY_DEFAULT_MS,
    };
    let observer = Arc::new(RaftObserver::default());
    set_observer(Some(observer.clone()));
    let members: Arc<Vec<SimMember>> = Arc::new(
        (1..=spec.size)
            .map(|index| SimMember::start(index, &spec, seed))
            .collect(),
    );
    let addresses: Vec<SocketAddr> = members.iter().map(SimMember::client_address).collect();
    let clients = madsim::runtime::Handle::current()
        .create_node()
        .name("clients")
        .ip([10, 0, 1, 1].into())
        .build();
    let setup_addresses = addresses.clone();
    clients
        .spawn(async move { set_up(&setup_addresses).await })
        .await
        .expect("set up");

    let log = Arc::new(Mutex::new(Log::default()));
    let until = Instant::now() + FAULT_PHASE;
    let mut tasks = Vec::new();
    for number in 0..3 {
        tasks.push(clients.spawn(client(
            number,
            addresses.clone(),
            log.clone(),
            until + CALM_PHASE,
        )));
    }
    tasks.push(clients.spawn(admin(addresses.clone(), log.clone(), until)));
    let injected = faults(members.clone(), until).await;
    for task in tasks {
        let _ = task.await;
    }
    let end_addresses = addresses.clone();
    let keys = clients
        .spawn(async move { final_keys(&end_addresses).await })
        .await
        .expect("final read");
    set_observer(None);
    let observed = observer.observed();

    let log = log.lock().unwrap();
    let mut violations = observed.violations.clone();
    match &keys {
        Some(keys) => violations.extend(judge(&log, keys)),
        None => violations.push("the final read of the prefix never succeeded".into()),
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for call in &log.calls {
        let kind = if call.put.is_some() { "put" } else { "read" };
        *counts
            .entry(format!("{kind} {:?}", call.result))
            .or_default() += 1;
    }
    let ok = log.calls.iter().filter(|c| c.result == Answer::Ok).count();
    let denied = log
        .calls
        .iter()
        .filter(|c| c.result == Answer::Denied)
        .count();
    let revokes = log.changes.iter().filter(|c| !c.granted).count();
    if ok == 0 || denied == 0 || revokes < 2 || injected == 0 {
        violations.push(format!(
            "vacuous run: {ok} operations succeeded, {denied} were denied, {revokes} revokes, \
             {injected} faults"
        ));
    }
    let summary = format!(
        "seed {seed}: {counts:?}; {} permission changes, {injected} faults, {} elections, {} \
         member starts, {} snapshots installed, {} keys at the end",
        log.changes.len(),
        observed.elections,
        observed.member_starts,
        observed.snapshots_installed,
        keys.as_ref().map_or(0, Vec::len)
    );
    AuthOutcome {
        seed,
        violations,
        summary,
        observed,
    }
}
