//! Authentication and role-based access control against the real binary: the same etcdctl
//! 3.4 session on oxcd and on a real etcd 3.4 with identical outputs, auth state that
//! survives restarts and reaches a member through a Raft snapshot, tokens usable on every
//! member of a cluster and lapsing after their TTL, and bad credentials over gRPC.

mod common;

use std::time::Duration;

use common::{set_up_users, start_cluster_with, Kind, Server};
use oxcd::proto::etcdserverpb::auth_client::AuthClient;
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::watch_client::WatchClient;
use oxcd::proto::etcdserverpb::{
    watch_request, AuthenticateRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::Channel;

/// Each step's stdout and exit code, or its error line and exit code.
fn session(server: &Server, steps: &[&[&str]]) -> Vec<String> {
    steps
        .iter()
        .map(|args| {
            let output = server.ctl(args);
            let code = output.status.code().unwrap_or(-1);
            if output.status.success() {
                format!("{} (exit {code})", String::from_utf8_lossy(&output.stdout))
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr).to_string();
                let error = stderr
                    .lines()
                    .find(|line| line.starts_with("Error:"))
                    .unwrap_or("")
                    .to_string();
                format!("{error} (exit {code})")
            }
        })
        .collect()
}

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

/// Users, roles and permissions set up, auth enabled, and then what alice, root and
/// nobody may and may not do.
const SESSION: &[&[&str]] = &[
    &["auth", "enable"],
    &["user", "add", "root:rootpw"],
    &["user", "add", "alice:alicepw"],
    &["user", "add", "alice:again"],
    &["user", "add", "bob", "--no-password"],
    &["role", "add", "app"],
    &["role", "add", "app"],
    &["role", "add", "reader"],
    &[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "/app/",
        "--prefix",
    ],
    &["role", "grant-permission", "app", "write", "/one"],
    &[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/",
        "--from-key",
    ],
    &["role", "grant-permission", "nosuch", "read", "/x"],
    &["user", "grant-role", "alice", "app"],
    &["user", "grant-role", "alice", "nosuch"],
    &["user", "grant-role", "nobody", "app"],
    &["put", "/app/before", "1"],
    &["auth", "enable"],
    &["put", "/app/x", "1", ROOT],
    &["put", "/app/x", "2", ALICE],
    &["get", "/app/", "--prefix", ALICE],
    &["get", "/app/x", "-w", "json", ALICE],
    &["put", "/one", "v", ALICE],
    &["get", "/one", ALICE],
    &["put", "/other", "v", ALICE],
    &["get", "/", "--prefix", ALICE],
    &["del", "/app/x", ALICE],
    &["del", "/app/", "--prefix", ALICE],
    &["get", "/app/x"],
    &["put", "/app/x", "3"],
    &["get", "/app/x", "--user=alice:wrong"],
    &["get", "/app/x", "--user=nobody:pw"],
    &["get", "/app/x", "--user=bob:pw"],
    &["txn", ALICE],
    &["user", "list", ALICE],
    &["user", "list", ROOT],
    &["user", "get", "alice", ALICE],
    &["user", "get", "root", ALICE],
    &["role", "get", "app", ALICE],
    &["role", "get", "reader", ALICE],
    &["role", "get", "app", ROOT],
    &["role", "get", "app", "-w", "json", ROOT],
    &["role", "get", "root", "-w", "json", ROOT],
    &["role", "list", ROOT],
    &["user", "grant-role", "alice", "reader", ROOT],
    &["get", "/", "--prefix", "--keys-only", ALICE],
    &["user", "revoke-role", "alice", "reader", ROOT],
    &["user", "revoke-role", "alice", "reader", ROOT],
    &["role", "revoke-permission", "app", "/one", ROOT],
    &["role", "revoke-permission", "app", "/one", ROOT],
    &[
        "role",
        "revoke-permission",
        "app",
        "/app/",
        "--prefix",
        ROOT,
    ],
    &["put", "/app/y", "1", ALICE],
    &["user", "delete", "root", ROOT],
    &["user", "revoke-role", "root", "root", ROOT],
    &["role", "delete", "root", ROOT],
    &["compaction", "1", ALICE],
    &["user", "passwd", "alice", "--interactive=false", ROOT],
    &["role", "delete", "reader", ROOT],
    &["role", "delete", "reader", ROOT],
    &["user", "delete", "bob", ROOT],
    &["user", "delete", "bob", ROOT],
    &["auth", "disable", ALICE],
    &["auth", "disable", ROOT],
    &["get", "/app/", "--prefix"],
    &["user", "list"],
];

#[test]
fn an_auth_session_matches_etcd() {
    let oxcd = Server::start(Kind::Oxcd);
    let etcd = Server::start(Kind::Etcd);
    let ours = session(&oxcd, SESSION);
    let theirs = session(&etcd, SESSION);
    for ((step, ours), theirs) in SESSION.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours, theirs, "etcdctl {step:?} differs from etcd");
    }
    // The session was not vacuous: permissions were refused and granted.
    let joined = ours.join("\n");
    assert!(joined.contains("Error: etcdserver: permission denied"));
    assert!(joined.contains("Error: etcdserver: user name is empty"));
    assert!(joined.contains("/app/x\n2"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("an endpoint URL")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting")
}

async fn token(endpoint: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    let response = AuthClient::new(channel(endpoint).await)
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(response.into_inner().token)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("token", token.parse().expect("a token is ASCII"));
    request
}

async fn get(endpoint: &str, key: &str, token: &str) -> Result<Vec<String>, tonic::Status> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    };
    let response = KvClient::new(channel(endpoint).await)
        .range(with_token(request, token))
        .await?;
    Ok(response
        .into_inner()
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect())
}

#[test]
fn tokens_work_on_every_member_and_lapse_after_their_ttl() {
    let cluster = start_cluster_with(3, &["--auth-token-ttl=2"]);
    set_up_users(&cluster[0]);
    cluster[0].ok(&["put", "/app/k", "v", ALICE]);
    let endpoints: Vec<String> = cluster.iter().map(Server::endpoint).collect();
    runtime().block_on(async {
        // A token issued through one member serves on all of them.
        let alice = token(&endpoints[1], "alice", "alicepw")
            .await
            .expect("a token");
        for endpoint in &endpoints {
            assert_eq!(get(endpoint, "/app/k", &alice).await.expect("get"), ["v"]);
        }
        let denied = get(&endpoints[2], "/other", &alice).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), "etcdserver: permission denied");
        // A write with the token is checked by every member's applier alike.
        let put = PutRequest {
            key: b"/other".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        };
        let refused = KvClient::new(channel(&endpoints[0]).await)
            .put(with_token(put, &alice))
            .await
            .unwrap_err();
        assert_eq!(refused.message(), "etcdserver: permission denied");
        // A watch outside the granted range is canceled at creation.
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"/other".to_vec().into(),
                    ..Default::default()
                },
            )),
        };
        let requests = tokio_stream_once(create);
        let mut stream = WatchClient::new(channel(&endpoints[1]).await)
            .watch(with_token(requests, &alice))
            .await
            .expect("a watch stream")
            .into_inner();
        let first = stream.message().await.expect("a response").expect("one");
        assert!(first.created && first.canceled, "{first:?}");
        assert_eq!(
            first.cancel_reason,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        // Wrong passwords and unknown users get etcd's error; so do made-up tokens.
        let wrong = token(&endpoints[0], "alice", "nope").await.unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            wrong.message(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        let forged = get(&endpoints[0], "/app/k", "abcdefghijklmnop.3")
            .await
            .unwrap_err();
        assert_eq!(forged.code(), tonic::Code::Unauthenticated);
        assert_eq!(forged.message(), "etcdserver: invalid auth token");
        // Used, a token lives on; unused for longer than its TTL, it lapses.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            get(&endpoints[0], "/app/k", &alice)
                .await
                .expect("a live token");
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let lapsed = get(&endpoints[0], "/app/k", &alice).await.unwrap_err();
        assert_eq!(lapsed.message(), "etcdserver: invalid auth token");
        // Six wrong passwords in a row lock the user out of that member for a second:
        // even the right password is refused there, in the same words.
        for _ in 0..5 {
            token(&endpoints[0], "alice", "nope").await.unwrap_err();
        }
        let locked = token(&endpoints[0], "alice", "alicepw").await.unwrap_err();
        assert_eq!(
            locked.message(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        token(&endpoints[1], "alice", "alicepw")
            .await
            .expect("another member");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        token(&endpoints[0], "alice", "alicepw")
            .await
            .expect("after the lockout");
    });
}

/// A stream of one message that stays open (a watch stream the client keeps).
fn tokio_stream_once(request: WatchRequest) -> impl futures_core::Stream<Item = WatchRequest> {
    struct Once(Option<WatchRequest>);
    impl futures_core::Stream for Once {
        type Item = WatchRequest;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<WatchRequest>> {
            match self.0.take() {
                Some(request) => std::task::Poll::Ready(Some(request)),
                None => std::task::Poll::Pending,
            }
        }
    }
    Once(Some(request))
}

#[test]
fn auth_survives_restarts_and_reaches_a_member_through_a_snapshot() {
    let mut cluster = start_cluster_with(
        3,
        &[
            "--snapshot-count=50",
            "--experimental-snapshot-catchup-entries=10",
        ],
    );
    set_up_users(&cluster[0]);
    // A member away while users change and the log moves past a snapshot learns the auth
    // state from the snapshot it receives.
    cluster[2].kill();
    // The member killed may have led: the others elect a leader before the writes, as a
    // client's 2 s dial timeout covers authenticating and an election may take longer.
    cluster[0].wait_ready_as(&[ROOT]);
    cluster[0].ok(&["user", "add", "carol:carolpw", ROOT]);
    cluster[0].ok(&["user", "grant-role", "carol", "app", ROOT]);
    let changed = cluster[0].ctl_input(
        &["user", "passwd", "alice", "--interactive=false", ROOT],
        "newpw\n",
    );
    assert!(changed.status.success(), "{changed:?}");
    for i in 0..120 {
        cluster[0].ok(&["put", &format!("/app/{i}"), "v", ROOT]);
    }
    cluster[2].restart_as(&[ROOT]);
    let carol = "--user=carol:carolpw";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = cluster[2].ctl(&["get", "/app/119", "--print-value-only", carol]);
        if output.status.success() && String::from_utf8_lossy(&output.stdout) == "v\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted member never served carol: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cluster[2]
            .log()
            .contains("restored the store from the leader's snapshot"),
        "the member caught up without a snapshot: {}",
        cluster[2].log()
    );
    // alice's password was changed.
    assert_eq!(
        cluster[2].ok(&["get", "/app/1", "--print-value-only", "--user=alice:newpw"]),
        "v\n"
    );
    let denied = cluster[2].err(&["get", "/app/1", ALICE]);
    assert_eq!(
        denied,
        "Error: etcdserver: authentication failed, invalid user ID or password"
    );
    // Every member keeps auth enabled, its users and its roles across a restart of all.
    for member in cluster.iter_mut() {
        member.kill();
    }
    for member in cluster.iter_mut() {
        member.respawn();
    }
    for member in &cluster {
        member.wait_ready_as(&[ROOT]);
    }
    for member in &cluster {
        assert_eq!(
            member.err(&["get", "/app/1"]),
            "Error: etcdserver: user name is empty"
        );
        assert_eq!(
            member.ok(&["get", "/app/1", "--print-value-only", carol]),
            "v\n"
        );
        assert_eq!(
            member.err(&["put", "/elsewhere", "v", carol]),
            "Error: etcdserver: permission denied"
        );
    }
}

#[test]
fn signed_tokens_verify_on_every_member_go_stale_with_the_revision_and_expire() {
    let keys = tempfile::tempdir().expect("a temp dir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let private = keys.path().join("jwt.key");
    let public = keys.path().join("jwt.pub");
    std::fs::write(&private, key.serialize_pem()).expect("writing");
    std::fs::write(&public, key.public_key_pem()).expect("writing");
    let option = format!(
        "--auth-token=jwt,sign-method=ES256,priv-key={},pub-key={},ttl=8s",
        private.display(),
        public.display()
    );
    let mut cluster = start_cluster_with(3, &[&option]);
    set_up_users(&cluster[0]);
    cluster[0].ok(&["put", "/app/k", "v", ALICE]);
    let endpoints: Vec<String> = cluster.iter().map(Server::endpoint).collect();
    let alice = runtime().block_on(async {
        let alice = token(&endpoints[0], "alice", "alicepw")
            .await
            .expect("a token");
        assert_eq!(alice.split('.').count(), 3, "a JWT: {alice}");
        for endpoint in &endpoints {
            assert_eq!(get(endpoint, "/app/k", &alice).await.expect("get"), ["v"]);
        }
        alice
    });
    // A signed token outlives the member that issued it.
    cluster[0].restart_as(&[ROOT]);
    runtime().block_on(async {
        assert_eq!(
            get(&endpoints[0], "/app/k", &alice).await.expect("get"),
            ["v"]
        );
    });
    // A change of users or roles makes it stale: the client must log in again.
    cluster[1].ok(&["role", "add", "other", ROOT]);
    runtime().block_on(async {
        let stale = get(&endpoints[2], "/app/k", &alice).await.unwrap_err();
        assert_eq!(stale.code(), tonic::Code::InvalidArgument);
        assert_eq!(stale.message(), "etcdserver: revision of auth store is old");
        let fresh = token(&endpoints[2], "alice", "alicepw").await.expect("a token");
        assert_eq!(get(&endpoints[1], "/app/k", &fresh).await.expect("get"), ["v"]);
        // And it expires with its TTL.
        tokio::time::sleep(Duration::from_millis(9200)).await;
        let expired = get(&endpoints[1], "/app/k", &fresh).await.unwrap_err();
        assert_eq!(expired.message(), "etcdserver: invalid auth token");
        let forged = get(&endpoints[1], "/app/k", "eyJhbGciOiJub25lIn0.eyJ1c2VybmFtZSI6InJvb3QiLCJyZXZpc2lvbiI6OTk5LCJleHAiOjk5OTk5OTk5OTl9.").await.unwrap_err();
        assert_eq!(forged.message(), "etcdserver: invalid auth token");
    });
    // etcdctl logs in and retries on its own.
    assert_eq!(
        cluster[2].ok(&["get", "/app/k", "--print-value-only", ALICE]),
        "v\n"
    );
}

#[test]
fn a_token_option_that_cannot_work_stops_the_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxcd"))
        .arg("--data-dir=/nonexistent/oxcd-auth-test")
        .arg("--auth-token=jwt,sign-method=ES256,pub-key=/nonexistent/key.pub")
        .output()
        .expect("running oxcd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to create token provider"),
        "{stderr}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxcd"))
        .arg("--auth-token=opaque")
        .output()
        .expect("running oxcd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown token type: opaque"), "{stderr}");
}
