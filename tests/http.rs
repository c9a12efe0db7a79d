//! The HTTP face against the real binary: `/metrics` parsed by Prometheus' own parser
//! (`promtool check metrics`) with etcd's metric names moving under load, `/health`,
//! `/livez`, `/readyz` and `/version` on the metrics listener and on the client port, the
//! gRPC health service, `/health` following quorum in a three-member cluster, and bad
//! HTTP clients that must get a clear answer without stalling gRPC on the same port; and
//! the logs, to every output of `--log-outputs`, plain or as JSON.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{free_port, start_cluster, Kind, Server};

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` (raw bytes) to `port` and reads the answer until the server closes.
fn exchange(port: u16, request: &[u8], timeout: Duration) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn request(method: &str, port: u16, path: &str, timeout: Duration) -> std::io::Result<Answer> {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    exchange(port, request.as_bytes(), timeout)
}

fn get(port: u16, path: &str) -> Answer {
    request("GET", port, path, Duration::from_secs(15)).expect("an HTTP answer")
}

/// Installs promtool (Debian's prometheus package) when it is missing.
fn ensure_promtool() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let present = Command::new("promtool")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if present {
            return;
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus")
            .status()
            .expect("running apt-get");
        assert!(status.success(), "installing prometheus (promtool) failed");
    });
}

/// Lint complaints promtool makes about etcd's own metric names, which oxcd keeps so that
/// etcd's dashboards work: counters without `_total` (etcd's health counters) and gauges
/// named `_total` (etcd's proposal and watcher gauges).
const ETCD_NAMING_LINTS: &[&str] = &[
    "counter metrics should have \"_total\" suffix",
    "non-counter metrics should not have \"_total\" suffix",
];

/// Runs `page` through promtool's parser and linter; fails on a parse error or on any
/// complaint but etcd's naming.
fn promtool_check(page: &str) {
    ensure_promtool();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing to promtool");
    let output = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for line in report.lines().filter(|line| !line.trim().is_empty()) {
        assert!(
            ETCD_NAMING_LINTS.iter().any(|lint| line.contains(lint)),
            "promtool: {line}\n(whole report:\n{report})"
        );
    }
}

/// The samples of a page: `name{labels}` → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// Puts `count` keys through one gRPC connection.
fn put_keys(server: &Server, count: usize) {
    use oxcd::proto::etcdserverpb::{kv_client::KvClient, PutRequest};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = KvClient::connect(format!("http://{}", server.endpoint()))
            .await
            .expect("connects");
        for at in 0..count {
            client
                .put(PutRequest {
                    key: format!("load/{at}").into_bytes().into(),
                    value: vec![b'v'; 256].into(),
                    ..Default::default()
                })
                .await
                .expect("put");
        }
    });
}

/// The metric names the issue lists, every one of which a page must show.
const LISTED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_disk_backend_snapshot_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_txn_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_mvcc_slow_watcher_total",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
    "etcd_server_slow_apply_total",
    "etcd_server_heartbeat_send_failures_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

const PUT_OK: &str = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";

#[test]
fn the_metrics_page_parses_and_moves_under_load() {
    let metrics_port = free_port();
    let server = Server::start_with(
        Kind::Oxcd,
        &[
            &format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
            "--metrics=extensive",
        ],
    );
    let before = get(metrics_port, "/metrics");
    assert_eq!(before.status, 200, "{before:?}");
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check(&before.body);
    for name in LISTED {
        assert!(
            before.body.contains(&format!("# TYPE {name} ")),
            "{name} missing from the page"
        );
    }
    assert!(before
        .body
        .contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"));
    assert!(before
        .body
        .contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}"));
    assert!(before
        .body
        .contains("etcd_server_version{server_version=\"3.4.23\"} 1\n"));
    assert!(before
        .body
        .contains("etcd_cluster_version{cluster_version=\"3.4\"} 1\n"));
    let before = samples(&before.body);
    assert_eq!(sample(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(sample(&before, "etcd_server_is_leader"), 1.0);

    // A watcher shows while its stream is open.
    let mut watch = server
        .etcdctl()
        .args(["watch", "load/", "--prefix"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = samples(&get(metrics_port, "/metrics").body);
        if sample(&page, "etcd_debugging_mvcc_watcher_total") >= 1.0 {
            assert!(sample(&page, "etcd_debugging_mvcc_watch_stream_total") >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the watcher never showed");
        std::thread::sleep(Duration::from_millis(100));
    }

    const PUTS: usize = 50;
    put_keys(&server, PUTS);
    server.ok(&["del", "load/0"]);
    let _ = watch.kill();
    let _ = watch.wait();

    // The same page on the client port, through the sniffing listener.
    let after = get(server.port, "/metrics");
    assert_eq!(after.status, 200);
    promtool_check(&after.body);
    let after = samples(&after.body);
    let grew = |series: &str| sample(&after, series) - sample(&before, series);
    assert!(grew("etcd_mvcc_put_total") >= PUTS as f64);
    assert!(grew("etcd_mvcc_delete_total") >= 1.0);
    assert!(grew("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert!(grew("etcd_disk_wal_fsync_duration_seconds_sum") > 0.0);
    assert!(grew("etcd_server_proposals_committed_total") >= PUTS as f64);
    assert!(grew("etcd_server_proposals_applied_total") >= PUTS as f64);
    assert!(grew(PUT_OK) >= PUTS as f64);
    assert!(
        grew("grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}")
            >= PUTS as f64,
        "--metrics extensive observes handling times"
    );
    assert!(grew("etcd_network_client_grpc_received_bytes_total") >= (PUTS * 256) as f64);
    assert!(grew("etcd_network_client_grpc_sent_bytes_total") > 0.0);
    assert_eq!(
        sample(&after, "etcd_debugging_mvcc_keys_total"),
        (PUTS - 1) as f64
    );
    assert!(sample(&after, "process_resident_memory_bytes") > 0.0);
    assert!(sample(&after, "process_open_fds") > 0.0);
}

#[test]
fn health_probes_and_version_answer_as_etcd() {
    let metrics_port = free_port();
    let server = Server::start_with(
        Kind::Oxcd,
        &[
            &format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
            "--quota-backend-bytes=1000000",
        ],
    );
    for port in [metrics_port, server.port] {
        let health = get(port, "/health");
        assert_eq!(health.status, 200, "{health:?}");
        assert_eq!(health.body, "{\"health\":\"true\",\"reason\":\"\"}");
        let health = get(port, "/health?serializable=true&exclude=NOSPACE");
        assert_eq!(health.status, 200);

        let version = get(port, "/version");
        assert_eq!(version.status, 200);
        assert_eq!(version.header("content-type"), Some("application/json"));
        assert_eq!(
            version.body,
            "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}"
        );

        assert_eq!(get(port, "/livez").body, "ok\n");
        let ready = get(port, "/readyz?verbose");
        assert_eq!(ready.status, 200);
        assert_eq!(
            ready.body,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"
        );
        let ready = get(port, "/readyz?verbose&exclude=linearizable_read");
        assert!(!ready.body.contains("linearizable_read"), "{ready:?}");
        assert_eq!(get(port, "/readyz/linearizable_read").body, "ok\n");

        let missing = get(port, "/v2/keys");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body, "404 page not found\n");
        let post = request("POST", port, "/health", Duration::from_secs(5)).expect("answer");
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET"));
    }
    // Over HTTP/2 (h2c with prior knowledge), as HTTPS clients that negotiate h2 ask too.
    let h2 = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            " %{http_version} %{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/health", server.port))
        .output()
        .expect("running curl");
    assert_eq!(
        String::from_utf8_lossy(&h2.stdout),
        "{\"health\":\"true\",\"reason\":\"\"} 2 200"
    );

    // A NOSPACE alarm (the backend outgrew its quota) makes the member unhealthy unless
    // excluded.
    let value = "x".repeat(100 * 1024);
    let mut alarmed = false;
    for at in 0..40 {
        let output = server.ctl(&["put", &format!("big{at}"), &value]);
        if !output.status.success() {
            let error = String::from_utf8_lossy(&output.stderr);
            assert!(error.contains("database space exceeded"), "{error}");
            alarmed = true;
            break;
        }
    }
    assert!(alarmed, "the quota was never reached");
    let unhealthy = get(server.port, "/health");
    assert_eq!(unhealthy.status, 503);
    assert_eq!(
        unhealthy.body,
        "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n"
    );
    assert_eq!(get(metrics_port, "/health?exclude=NOSPACE").status, 200);
    assert_eq!(get(server.port, "/livez").status, 200);
    assert_grpc_health(&server);
}

/// `grpc.health.v1.Health/Check` as etcd answers it.
fn assert_grpc_health(server: &Server) {
    use oxcd::proto::healthpb::health_check_response::ServingStatus;
    use oxcd::proto::healthpb::{health_client::HealthClient, HealthCheckRequest};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = HealthClient::connect(format!("http://{}", server.endpoint()))
            .await
            .expect("connects");
        let all = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("checked")
            .into_inner();
        assert_eq!(all.status, ServingStatus::Serving as i32);
        let unknown = client
            .check(HealthCheckRequest {
                service: "no.such.Service".to_string(),
            })
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let mut watch = client
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("watching")
            .into_inner();
        let first = watch.message().await.expect("a status").expect("open");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        let mut unknown = client
            .watch(HealthCheckRequest {
                service: "no.such.Service".to_string(),
            })
            .await
            .expect("watching")
            .into_inner();
        let first = unknown.message().await.expect("a status").expect("open");
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    });
}

#[test]
fn bad_http_clients_get_clear_answers_and_never_stall_grpc() {
    let server = Server::start(Kind::Oxcd);
    let port = server.port;

    // A slow client (half a request head, then nothing) and a silent one (nothing at all)
    // hold connections on the gRPC port while gRPC goes on.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    let silent = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    let held = Instant::now();
    for at in 0..5 {
        server.ok(&["put", &format!("k{at}"), "v"]);
    }
    assert_eq!(server.ok(&["get", "k4", "--print-value-only"]), "v\n");

    let garbage =
        exchange(port, b"\x01\x02 garbage\r\n\r\n", Duration::from_secs(10)).expect("an answer");
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let huge_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 * 1024));
    let huge = exchange(port, huge_line.as_bytes(), Duration::from_secs(10));
    // hyper answers 431 before the client finished writing, or resets the connection
    // while the client still writes: never an answer that stalls.
    if let Ok(huge) = huge {
        assert!(matches!(huge.status, 431 | 400 | 0), "{huge:?}");
    }
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    let huge = exchange(port, huge_header.as_bytes(), Duration::from_secs(10)).expect("answer");
    assert_eq!(huge.status, 431, "{huge:?}");

    // The slow client is cut off once its head is late; gRPC never waited for it.
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = held.elapsed();
    assert!(
        waited < Duration::from_secs(14),
        "the slow client was closed after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    drop(silent);
    assert_eq!(get(port, "/health").status, 200);
    server.ok(&["put", "after", "v"]);
}

/// `/health` on a member's client port, with a read timeout longer than a linearizable
/// read may wait.
fn health_status(member: &Server) -> Option<(u16, String)> {
    request("GET", member.port, "/health", Duration::from_secs(12))
        .ok()
        .map(|answer| (answer.status, answer.body))
}

fn wait_for_health(member: &Server, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = health_status(member);
        if let Some((seen, body)) = &last {
            if *seen == status {
                return body.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("/health never answered {status}; last {last:?}");
}

/// The members' ids in hexadecimal, as the metrics label them.
fn member_ids(member: &Server) -> Vec<String> {
    member
        .ok(&["member", "list"])
        .lines()
        .filter_map(|line| line.split(',').next())
        .map(|id| id.trim().to_string())
        .collect()
}

#[test]
fn health_follows_quorum_in_a_three_member_cluster() {
    let mut members = start_cluster(3);
    wait_for_health(&members[0], 200, Duration::from_secs(10));

    // Exactly one member leads, and each counts the bytes it exchanges with its peers: the
    // leader with every follower, a follower with the leader (followers need not talk to
    // one another once a leader is elected).
    members[0].ok(&["put", "k", "v"]);
    let ids = member_ids(&members[0]);
    assert_eq!(ids.len(), 3);
    let pages: Vec<BTreeMap<String, f64>> = members
        .iter()
        .map(|member| samples(&get(member.port, "/metrics").body))
        .collect();
    let own_id = |page: &BTreeMap<String, f64>| -> String {
        page.keys()
            .find_map(|series| series.strip_prefix("etcd_server_id{server_id=\""))
            .and_then(|rest| rest.strip_suffix("\"}"))
            .expect("etcd_server_id")
            .to_string()
    };
    let leaders: Vec<String> = pages
        .iter()
        .filter(|page| sample(page, "etcd_server_is_leader") == 1.0)
        .map(own_id)
        .collect();
    assert_eq!(leaders.len(), 1, "one leader");
    for page in &pages {
        assert_eq!(sample(page, "etcd_server_has_leader"), 1.0);
        assert!(sample(page, "etcd_server_leader_changes_seen_total") >= 1.0);
        let own = own_id(page);
        let talks_to: Vec<&String> = if own == leaders[0] {
            ids.iter().filter(|id| **id != own).collect()
        } else {
            vec![&leaders[0]]
        };
        for peer in talks_to {
            let sent = format!("etcd_network_peer_sent_bytes_total{{To=\"{peer}\"}}");
            let received = format!("etcd_network_peer_received_bytes_total{{From=\"{peer}\"}}");
            assert!(sample(page, &sent) > 0.0, "{own}: {sent}");
            assert!(sample(page, &received) > 0.0, "{own}: {received}");
        }
    }
    members[1].kill();
    members[2].kill();
    let body = wait_for_health(&members[0], 503, Duration::from_secs(30));
    assert!(
        body == "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
            || body.starts_with("{\"health\":\"false\",\"reason\":\"RANGE ERROR:"),
        "{body}"
    );
    // The member itself still answers a serializable check.
    let local = request(
        "GET",
        members[0].port,
        "/health?serializable=true",
        Duration::from_secs(5),
    )
    .expect("answer");
    assert_eq!(local.status, 200, "{local:?}");
    members[1].restart();
    members[2].restart();
    let body = wait_for_health(&members[0], 200, Duration::from_secs(30));
    assert_eq!(body, "{\"health\":\"true\",\"reason\":\"\"}");
}

#[test]
fn logs_go_to_every_output_plain_or_as_json() {
    // Logs to a file (stderr here is the test's log file): no terminal colors.
    let plain = Server::start(Kind::Oxcd);
    let log = plain.log();
    assert!(log.contains("ready to serve client requests"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colors in a log that is not a terminal: {log:?}"
    );
    drop(plain);

    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("oxcd.log");
    let outputs = format!("--log-outputs=stderr,{}", file.display());
    let json = Server::start_with(Kind::Oxcd, &[&outputs, "--log-format=json"]);
    json.ok(&["put", "k", "v"]);
    let written = std::fs::read_to_string(&file).expect("the log file");
    assert!(!written.is_empty());
    for line in written.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        written
            .lines()
            .any(|line| line.contains(r#""message":"ready to serve client requests""#)),
        "{written}"
    );
    // The same lines went to stderr.
    let stderr = json.log();
    assert!(
        stderr.starts_with(written.lines().next().unwrap()),
        "{stderr}"
    );
    drop(json);

    // An output that cannot be opened, or a format oxcd does not write, stops the start.
    for (flags, says) in [
        (
            vec!["--log-outputs=/nonexistent/dir/oxcd.log"],
            "--log-outputs: cannot open \"/nonexistent/dir/oxcd.log\"",
        ),
        (
            vec!["--log-format=xml"],
            "invalid value 'xml' for '--log-format",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_oxcd"))
            .args(&flags)
            .arg("--data-dir")
            .arg(dir.path().join("never"))
            .output()
            .expect("running oxcd");
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
