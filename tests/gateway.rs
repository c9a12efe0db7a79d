//! The gRPC-JSON gateway: the same session of JSON requests (curl) against oxcd and a real
//! etcd 3.4 on this machine must get byte-identical bodies and the same HTTP statuses —
//! puts, ranges (prefix, limit, revision, sort), deletes, txns, compaction, leases, the
//! member list, errors, and auth with a token in the `Authorization` header; the watch,
//! keep-alive and snapshot streams; and a session of the etcd3gw Python client library.

mod common;

use std::process::Command;

use common::{Kind, Server};

/// POSTs `body` to `path` (GET when `body` is `None`); answers the status and the body.
fn post(server: &Server, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", server.endpoint()));
    if let Some(body) = body {
        command.args(["-X", "POST", "-d", body]);
    }
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    let output = command.output().expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

const STEPS: &[(&str, Option<&str>)] = &[
    ("/v3/kv/put", Some(r#"{"key":"YS8x","value":"b25l"}"#)),
    (
        "/v3/kv/put",
        Some(r#"{"key":"YS8y","value":"dHdv","prev_kv":true}"#),
    ),
    (
        "/v3/kv/put",
        Some(r#"{"key":"YS8x","value":"dXBkYXRlZA==","prev_kv":true}"#),
    ),
    ("/v3/kv/range", Some(r#"{"key":"YS8x"}"#)),
    ("/v3/kv/range", Some(r#"{"key":"YS8=","range_end":"YTA="}"#)),
    (
        "/v3/kv/range",
        Some(r#"{"key":"YS8=","range_end":"YTA=","limit":1}"#),
    ),
    (
        "/v3/kv/range",
        Some(r#"{"key":"YS8=","range_end":"YTA=","sort_order":"DESCEND","sort_target":"VALUE"}"#),
    ),
    (
        "/v3/kv/range",
        Some(r#"{"key":"YS8=","range_end":"YTA=","count_only":true}"#),
    ),
    (
        "/v3/kv/range",
        Some(r#"{"key":"YS8=","range_end":"YTA=","keys_only":true,"revision":"2"}"#),
    ),
    ("/v3/kv/range", Some(r#"{"key":"bWlzc2luZw=="}"#)),
    ("/v3/kv/range", Some(r#"{"key":"YS8x","revision":99}"#)),
    (
        "/v3/kv/txn",
        Some(
            r#"{"compare":[{"key":"YS8x","result":"EQUAL","target":"VALUE","value":"dXBkYXRlZA=="}],"success":[{"request_put":{"key":"YS8z","value":"dGhyZWU="}},{"request_range":{"key":"YS8x"}}],"failure":[{"request_delete_range":{"key":"YS8x"}}]}"#,
        ),
    ),
    (
        "/v3/kv/txn",
        Some(
            r#"{"compare":[{"key":"YS8x","target":"VERSION","result":"GREATER","version":"5"}],"success":[{"request_put":{"key":"YS8z","value":"eA=="}}],"failure":[{"request_range":{"key":"YS8z"}}]}"#,
        ),
    ),
    (
        "/v3/kv/txn",
        Some(r#"{"success":[{"request_put":{"key":"YS8z"}},{"request_put":{"key":"YS8z"}}]}"#),
    ),
    (
        "/v3/kv/deleterange",
        Some(r#"{"key":"YS8y","prev_kv":true}"#),
    ),
    ("/v3/kv/deleterange", Some(r#"{"key":"bm9uZQ=="}"#)),
    ("/v3/kv/put", Some(r#"{"key":""}"#)),
    ("/v3/kv/compaction", Some(r#"{"revision":"3"}"#)),
    ("/v3/kv/range", Some(r#"{"key":"YS8x","revision":2}"#)),
    ("/v3/kv/compaction", Some(r#"{"revision":"3"}"#)),
    ("/v3/lease/grant", Some(r#"{"TTL":"60","ID":"4242"}"#)),
    ("/v3/lease/grant", Some(r#"{"TTL":"60","ID":"4242"}"#)),
    (
        "/v3/kv/put",
        Some(r#"{"key":"bGVhc2Vk","value":"dg==","lease":"4242"}"#),
    ),
    (
        "/v3/kv/lease/timetolive",
        Some(r#"{"ID":"4242","keys":true}"#),
    ),
    ("/v3/lease/timetolive", Some(r#"{"ID":"999"}"#)),
    ("/v3/lease/leases", Some("{}")),
    ("/v3/kv/lease/revoke", Some(r#"{"ID":"4242"}"#)),
    ("/v3/lease/revoke", Some(r#"{"ID":"4242"}"#)),
    ("/v3/kv/range", Some(r#"{"key":"bGVhc2Vk"}"#)),
    ("/v3/cluster/member/list", Some("")),
    ("/v3beta/kv/range", Some(r#"{"key":"YS8x"}"#)),
    ("/v3/kv/range", None),
    ("/v3/nothing/here", Some("{}")),
    (
        "/v3/auth/authenticate",
        Some(r#"{"name":"root","password":"x"}"#),
    ),
    (
        "/v3/auth/user/add",
        Some(r#"{"name":"root","password":"rootpw"}"#),
    ),
    (
        "/v3/auth/user/grant",
        Some(r#"{"user":"root","role":"root"}"#),
    ),
    ("/v3/auth/role/add", Some(r#"{"name":"app"}"#)),
    (
        "/v3/auth/role/grant",
        Some(r#"{"name":"app","perm":{"key":"YS8=","range_end":"YTA=","permType":"READWRITE"}}"#),
    ),
    ("/v3/auth/role/get", Some(r#"{"role":"app"}"#)),
    ("/v3/auth/user/list", Some("{}")),
    ("/v3/auth/enable", Some("{}")),
    ("/v3/kv/range", Some(r#"{"key":"YS8x"}"#)),
    (
        "/v3/auth/authenticate",
        Some(r#"{"name":"root","password":"wrong"}"#),
    ),
];

/// With the token root logs in with: auth steps after enabling.
const ROOT_STEPS: &[(&str, &str)] = &[
    ("/v3/kv/range", r#"{"key":"YS8x"}"#),
    ("/v3/auth/user/get", r#"{"name":"root"}"#),
    ("/v3/auth/role/list", "{}"),
    ("/v3/auth/disable", "{}"),
];

fn session(server: &Server) -> Vec<(u16, String)> {
    let mut answers: Vec<(u16, String)> = STEPS
        .iter()
        .map(|(path, body)| post(server, path, *body, None))
        .collect();
    let (status, login) = post(
        server,
        "/v3/auth/authenticate",
        Some(r#"{"name":"root","password":"rootpw"}"#),
        None,
    );
    assert_eq!(status, 200, "{login}");
    let token = login
        .split("\"token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token")
        .to_string();
    for (path, body) in ROOT_STEPS {
        answers.push(post(server, path, Some(body), Some(&token)));
    }
    answers.push(post(
        server,
        "/v3/kv/range",
        Some(r#"{"key":"YS8x"}"#),
        None,
    ));
    answers
}

#[test]
fn a_json_session_matches_etcd() {
    let oxcd = Server::start(Kind::Oxcd);
    let etcd = Server::start(Kind::Etcd);
    let ours = session(&oxcd);
    let theirs = session(&etcd);
    let steps = STEPS
        .iter()
        .map(|(path, body)| format!("{path} {}", body.unwrap_or("(GET)")))
        .chain(
            ROOT_STEPS
                .iter()
                .map(|(path, body)| format!("{path} {body} (as root)")),
        )
        .chain(std::iter::once(
            "/v3/kv/range after auth disable".to_string(),
        ));
    // The members' client URLs name each server's own port.
    let unported = |(status, body): &(u16, String)| {
        (
            *status,
            body.replace(&oxcd.endpoint(), "ENDPOINT")
                .replace(&etcd.endpoint(), "ENDPOINT"),
        )
    };
    for ((step, ours), theirs) in steps.zip(&ours).zip(&theirs) {
        assert_eq!(unported(ours), unported(theirs), "{step} differs from etcd");
    }
    // Not vacuous: values, errors and auth went through.
    let joined: String = ours.iter().map(|(_, body)| body.as_str()).collect();
    assert!(joined.contains(r#""value":"dXBkYXRlZA==""#));
    assert!(joined.contains("etcdserver: user name is empty"));
    assert!(joined.contains("required revision has been compacted"));
}

/// Opens a gateway stream on `path` with `body` for `seconds`; answers what arrived.
fn stream_for(server: &Server, path: &str, body: &str, seconds: u32) -> std::process::Child {
    Command::new("curl")
        .args([
            "-s",
            "-N",
            "-m",
            &seconds.to_string(),
            "-X",
            "POST",
            "-d",
            body,
        ])
        .arg(format!("http://{}{path}", server.endpoint()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running curl")
}

fn streams_session(server: &Server) -> Vec<String> {
    post(
        server,
        "/v3/kv/put",
        Some(r#"{"key":"dw==","value":"MA=="}"#),
        None,
    );
    // Two watchers on one stream: one from the first revision, one from now.
    let watch = stream_for(
        server,
        "/v3/watch",
        r#"{"create_request":{"key":"dw==","start_revision":"1"}}{"create_request":{"key":"dw==","prev_kv":true,"watch_id":"7"}}"#,
        3,
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    post(
        server,
        "/v3/kv/put",
        Some(r#"{"key":"dw==","value":"MQ=="}"#),
        None,
    );
    post(
        server,
        "/v3/kv/deleterange",
        Some(r#"{"key":"dw=="}"#),
        None,
    );
    post(
        server,
        "/v3/lease/grant",
        Some(r#"{"TTL":"30","ID":"77"}"#),
        None,
    );
    let renew = stream_for(
        server,
        "/v3/lease/keepalive",
        r#"{"ID":"77"}{"ID":"78"}"#,
        2,
    );
    let watched = watch.wait_with_output().expect("the watch stream");
    let renewed = renew.wait_with_output().expect("the keep-alive stream");
    let lines = |output: std::process::Output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut all = lines(watched);
    all.extend(lines(renewed));
    all
}

#[test]
fn watch_and_keep_alive_streams_match_etcd() {
    let oxcd = Server::start(Kind::Oxcd);
    let etcd = Server::start(Kind::Etcd);
    let ours = streams_session(&oxcd);
    let theirs = streams_session(&etcd);
    // Each watcher's messages in order; the order between the two watchers of one stream
    // is not defined (etcd's varies from run to run).
    let by_watcher = |lines: &[String]| -> (Vec<String>, Vec<String>) {
        lines
            .iter()
            .cloned()
            .partition(|line| line.contains(r#""watch_id":"7""#))
    };
    assert_eq!(by_watcher(&ours), by_watcher(&theirs));
    let joined = ours.join("\n");
    assert!(joined.contains(r#""type":"DELETE""#), "{joined}");
    assert!(joined.contains(r#""watch_id":"7""#), "{joined}");
    assert!(joined.contains(r#""TTL":"30""#), "{joined}");
}

#[test]
fn bad_json_is_refused_with_a_clear_error() {
    let oxcd = Server::start(Kind::Oxcd);
    for body in [
        "{",
        "not json",
        r#"{"key":"!!!"}"#,
        r#"{"key":"YQ==","limit":"many"}"#,
        r#"{"key":"YQ==","sort_order":"SIDEWAYS"}"#,
        "[]",
    ] {
        let (status, answer) = post(&oxcd, "/v3/kv/range", Some(body), None);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(r#""code":3"#), "{body}: {answer}");
    }
    for body in ["{", r#"{"create_request":{"key":5}}"#] {
        let (status, answer) = post(&oxcd, "/v3/watch", Some(body), None);
        assert_eq!(status, 400, "{body}: {answer}");
    }
    // The member is unharmed.
    let (status, _) = post(
        &oxcd,
        "/v3/kv/put",
        Some(r#"{"key":"YQ==","value":"Yg=="}"#),
        None,
    );
    assert_eq!(status, 200);
}

/// The lines of a snapshot streamed over JSON, and the file they add up to.
fn json_snapshot(server: &Server) -> (Vec<serde_json::Value>, Vec<u8>) {
    use base64::Engine as _;
    let output = Command::new("curl")
        .args(["-s", "-N", "-m", "20", "-X", "POST", "-d", "{}"])
        .arg(format!(
            "http://{}/v3/maintenance/snapshot",
            server.endpoint()
        ))
        .output()
        .expect("running curl");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON line: {line}")))
        .collect();
    let mut file = Vec::new();
    for line in &lines {
        let blob = line["result"]["blob"].as_str().unwrap_or_default();
        file.extend(
            base64::engine::general_purpose::STANDARD
                .decode(blob)
                .expect("base64"),
        );
    }
    (lines, file)
}

#[test]
fn a_snapshot_streams_over_json_as_etcd_streams_it() {
    let mut shapes = Vec::new();
    for kind in [Kind::Oxcd, Kind::Etcd] {
        let server = Server::start(kind);
        for i in 0..50 {
            server.ok(&["put", &format!("k{i}"), &"v".repeat(3000)]);
        }
        let (lines, file) = json_snapshot(&server);
        assert!(lines.len() > 2, "{lines:?}");
        // The stream is the backend and then its SHA-256, as over gRPC.
        use sha2::Digest as _;
        let (image, digest) = file.split_at(file.len() - 32);
        assert_eq!(sha2::Sha256::digest(image).as_slice(), digest);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.db");
        std::fs::write(&path, &file).unwrap();
        let status = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status", "-w", "json"])
            .arg(&path)
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status");
        assert_eq!(status["revision"], 51);
        // What each line holds: every line but the last says what remains.
        let keys = |line: &serde_json::Value| {
            let mut keys: Vec<String> = line["result"]
                .as_object()
                .expect("a result")
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        shapes.push((keys(&lines[0]), keys(lines.last().unwrap())));
    }
    assert_eq!(shapes[0], shapes[1]);
}

/// A Python interpreter with etcd3gw (OpenStack's client of the gateway), in a virtual
/// environment under `target/`, made on first use.
fn etcd3gw_python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/etcd3gw-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import etcd3gw"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("running python3 -m venv");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "etcd3gw==2.7.0"])
            .status()
            .expect("running pip");
        assert!(installed.success(), "pip install etcd3gw failed");
    }
    python
}

#[test]
fn the_etcd3gw_python_client_sees_oxcd_as_etcd() {
    let python = etcd3gw_python();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/etcd3gw_session.py");
    let mut outputs = Vec::new();
    for kind in [Kind::Oxcd, Kind::Etcd] {
        let server = Server::start(kind);
        let output = Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &server.port.to_string()])
            .output()
            .expect("running the etcd3gw session");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push(text);
    }
    assert!(
        outputs[0].contains("watched: [('PUT', b'w', b'watched')]"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[0].contains("second lock acquire (held): False"),
        "{}",
        outputs[0]
    );
    assert_eq!(outputs[0], outputs[1], "oxcd first, etcd second");
}
