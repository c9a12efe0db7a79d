//! The v2 API (`--enable-v2`) against the real binary: a curl session answered as a real
//! etcd 3.4 answers it (status, headers and JSON, byte for byte once each server's index
//! offset is taken out), `ETCDCTL_API=2 etcdctl` commands against a three-member cluster
//! (writes on one member read on the others, watches, TTL expiry, member list,
//! cluster-health, a restart that keeps the keyspace), and the API off by default.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, member_server_with, start_cluster_with, start_member, Kind, Server};

/// `curl -s -i ARGS` against `server`, with `{}` in an argument standing for its URL.
fn curl(server: &Server, args: &[&str]) -> String {
    let base = format!("http://{}", server.endpoint());
    let args: Vec<String> = args.iter().map(|arg| arg.replace("{}", &base)).collect();
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(&args)
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

/// The answer with what differs between two servers by nature taken out: dates, lengths,
/// ids, Raft numbers, header case; and v2 indexes shifted down by `offset` (etcd's store
/// also counts the writes it makes of its own member records).
fn normalized(answer: &str, offset: u64) -> String {
    let mut lines = Vec::new();
    for line in answer.lines() {
        let lower = line.to_ascii_lowercase();
        let dropped = [
            "date:",
            "content-length:",
            "x-etcd-cluster-id:",
            "x-raft-",
            "x-content-type",
        ];
        if dropped.iter().any(|prefix| lower.starts_with(prefix)) {
            continue;
        }
        let line = match line.split_once(": ") {
            Some((name, value)) if !line.starts_with('{') => {
                format!("{}: {value}", name.to_ascii_lowercase())
            }
            _ => line.to_owned(),
        };
        lines.push(shift_indexes(&line, offset));
    }
    // Header order carries no meaning (Go writes them sorted by name).
    let head_end = lines
        .iter()
        .position(String::is_empty)
        .unwrap_or(lines.len());
    if head_end > 1 {
        lines[1..head_end].sort();
    }
    lines.join("\n")
}

/// Subtracts `offset` from every number after an index field or in an in-order key.
fn shift_indexes(line: &str, offset: u64) -> String {
    let markers = [
        "\"modifiedIndex\":",
        "\"createdIndex\":",
        "\"index\":",
        "x-etcd-index: ",
        "/000",
    ];
    let mut out = String::new();
    let mut rest = line;
    loop {
        let next = markers
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| (at, marker.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().unwrap_or(0);
        // Index 0 (a request error) is not shifted.
        if number == 0 {
            out.push_str(&rest[..digits]);
        } else {
            out.push_str(&format!("{}", number.saturating_sub(offset)));
        }
        rest = &rest[digits..];
    }
}

fn v2_server(kind: Kind) -> Server {
    Server::start_with(kind, &["--enable-v2=true"])
}

#[test]
fn a_curl_session_is_answered_as_etcd_answers_it() {
    let session: Vec<Vec<&str>> = vec![
        vec!["-XPUT", "{}/v2/keys/foo", "-d", "value=bar"],
        vec!["{}/v2/keys/foo"],
        vec!["-XPUT", "{}/v2/keys/foo", "-d", "value=baz"],
        vec!["-XPUT", "{}/v2/keys/foo?prevExist=false", "-d", "value=x"],
        vec![
            "-XPUT",
            "{}/v2/keys/foo",
            "-d",
            "value=x",
            "-d",
            "prevValue=nope",
        ],
        vec!["-XPUT", "{}/v2/keys/dir/a", "-d", "value=1"],
        vec!["-XPUT", "{}/v2/keys/dir/b", "-d", "value=<&>"],
        vec!["{}/v2/keys/dir?sorted=true"],
        vec!["{}/v2/keys/?recursive=true&sorted=true"],
        vec!["-XPOST", "{}/v2/keys/q", "-d", "value=j1"],
        vec!["-XDELETE", "{}/v2/keys/dir"],
        vec!["-XDELETE", "{}/v2/keys/dir?dir=true"],
        vec!["-XDELETE", "{}/v2/keys/dir?recursive=true"],
        vec!["{}/v2/keys/nokey"],
        vec!["-XPUT", "{}/v2/keys/t", "-d", "value=1", "-d", "ttl=abc"],
        vec!["-XPUT", "{}/v2/keys/d2?dir=true"],
        vec!["-XPUT", "{}/v2/keys/foo/x", "-d", "value=1"],
        vec!["{}/v2/keys/foo?wait=true&waitIndex=1"],
        vec!["-XDELETE", "{}/v2/keys/foo?prevValue=baz"],
        vec!["-XPUT", "{}/v2/keys/u?prevExist=true", "-d", "value=1"],
        vec!["-XPUT", "{}/v2/keys/u", "-d", "value=1"],
        vec!["-XPUT", "{}/v2/keys/u?prevExist=true", "-d", "value=2"],
        vec![
            "-XPUT",
            "{}/v2/keys/u?noValueOnSuccess=true",
            "-d",
            "value=3",
        ],
        vec!["-XPUT", "{}/v2/keys/_hidden", "-d", "value=h"],
        vec!["{}/v2/keys/?sorted=true"],
        vec!["{}/v2/keys/_hidden"],
        vec!["-XDELETE", "{}/v2/keys/"],
        vec!["-XPATCH", "{}/v2/keys/u"],
        vec!["{}/v2/keys/u?recursive=maybe"],
        vec!["{}/v2/keys/u?waitIndex=x"],
        vec!["-XPUT", "{}/v2/keys/u?refresh=true"],
        vec!["-XPUT", "{}/v2/keys/u?refresh=true&ttl=5", "-d", "value=z"],
        vec!["-XPUT", "{}/v2/keys/u?prevValue="],
        vec!["-XPOST", "{}/v2/keys/u?wait=true"],
        vec!["-XDELETE", "{}/v2/keys/d2?dir=true"],
        vec!["-XPUT", "{}/v2/keys/%41%20b", "-d", "value=sp+ace%21"],
        vec!["{}/v2/keys/A%20b?quorum=true"],
        vec!["-I", "{}/v2/keys/u"],
        vec!["{}/v2/nope"],
    ];
    let etcd = v2_server(Kind::Etcd);
    let oxcd = v2_server(Kind::Oxcd);
    let mut offsets = Vec::new();
    let mut transcripts = Vec::new();
    for server in [&etcd, &oxcd] {
        let mut transcript = Vec::new();
        let mut offset = None;
        for args in &session {
            let answer = curl(server, args);
            let offset = *offset.get_or_insert_with(|| {
                let index: u64 = answer
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(": ")?;
                        name.eq_ignore_ascii_case("x-etcd-index")
                            .then(|| value.trim().parse::<u64>().ok())?
                    })
                    .expect("the first write answers its index");
                // The first write is the store's first user change.
                index - 1
            });
            transcript.push(format!(
                "== {}\n{}",
                args.join(" "),
                normalized(&answer, offset)
            ));
        }
        offsets.push(offset.unwrap());
        transcripts.push(transcript);
    }
    for (etcd_answer, oxcd_answer) in transcripts[0].iter().zip(&transcripts[1]) {
        assert_eq!(
            oxcd_answer, etcd_answer,
            "oxcd (index offset {}) and etcd (offset {}) answer differently",
            offsets[1], offsets[0]
        );
    }
}

/// `ETCDCTL_API=2 etcdctl --endpoints URL ARGS`.
fn ctl2(server: &Server, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg(format!("--endpoints=http://{}", server.endpoint()))
        .args(args)
        .output()
        .expect("running etcdctl")
}

fn ok2(server: &Server, args: &[&str]) -> String {
    let output = ctl2(server, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn etcdctl_v2_commands_work_against_a_three_member_cluster() {
    let mut members = start_cluster_with(3, &["--enable-v2"]);
    let (a, b) = (&members[0], &members[1]);

    assert_eq!(ok2(a, &["set", "/app/config", "v1"]), "v1\n");
    assert_eq!(ok2(b, &["get", "--quorum", "/app/config"]), "v1\n");
    let exists = ctl2(a, &["mk", "/app/config", "v2"]);
    assert_eq!(exists.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&exists.stderr)
            .starts_with("Error:  105: Key already exists (/app/config) ["),
        "{}",
        String::from_utf8_lossy(&exists.stderr)
    );
    ok2(a, &["mkdir", "/empty"]);
    assert_eq!(ok2(b, &["ls", "--sort", "-p", "/"]), "/app/\n/empty/\n");
    assert_eq!(ok2(a, &["update", "/app/config", "v2"]), "v2\n");
    assert_eq!(ok2(a, &["mk", "--in-order", "/queue", "job"]), "job\n");
    let queued = ok2(b, &["ls", "--quorum", "/queue"]);
    assert!(queued.starts_with("/queue/0000"), "{queued}");

    // A watch on one member sees a write made through another.
    let watcher = Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg(format!("--endpoints=http://{}", members[2].endpoint()))
        .args(["watch", "--recursive", "/app"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    std::thread::sleep(Duration::from_millis(500));
    ok2(a, &["set", "/app/feature", "on"]);
    let watched = watcher
        .wait_with_output()
        .expect("the watch ends after one event");
    assert_eq!(
        String::from_utf8_lossy(&watched.stdout),
        "[set] /app/feature\non\n"
    );

    // A key with a TTL expires on every member.
    ok2(a, &["set", "--ttl", "1", "/session", "alive"]);
    for member in members.iter() {
        wait_until("the key expired", || {
            ctl2(member, &["get", "/session"]).status.code() == Some(4)
        });
    }

    let listed = ok2(b, &["member", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert_eq!(listed.matches("isLeader=true").count(), 1, "{listed}");
    let health = ok2(a, &["cluster-health"]);
    assert!(health.ends_with("cluster is healthy\n"), "{health}");
    assert_eq!(
        health.matches("is healthy: got healthy result").count(),
        3,
        "{health}"
    );

    // The leader's statistics of its followers come from its probes of them (every 4 s),
    // which also feed etcd's round-trip histogram; a follower answers 403.
    let leader = members
        .iter()
        .find(|member| curl(member, &["{}/v2/stats/self"]).contains("\"state\":\"StateLeader\""))
        .expect("a leader");
    wait_until("the leader probed both followers", || {
        let stats = curl(leader, &["{}/v2/stats/leader"]);
        stats.matches("\"success\":").count() == 2 && !stats.contains("\"success\":0")
    });
    let metrics = curl(leader, &["{}/metrics"]);
    assert_eq!(
        metrics
            .lines()
            .filter(|line| line.starts_with("etcd_network_peer_round_trip_time_seconds_count{To="))
            .count(),
        2,
        "{metrics}"
    );
    let follower = members
        .iter()
        .find(|member| member.port != leader.port)
        .unwrap();
    let refused = curl(follower, &["{}/v2/stats/leader"]);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.ends_with("{\"message\":\"not current leader\"}\n"),
        "{refused}"
    );

    assert_eq!(ok2(a, &["rm", "/app/feature"]), "PrevNode.Value: on\n");
    ok2(a, &["rmdir", "/empty"]);

    // The keyspace survives a restart of every member.
    for member in members.iter_mut() {
        member.kill();
    }
    for member in members.iter_mut() {
        member.respawn();
    }
    for member in members.iter() {
        wait_until("the member answers its keys", || {
            let output = ctl2(member, &["get", "/app/config"]);
            output.status.success() && output.stdout == b"v2\n"
        });
    }
    assert_eq!(
        ok2(&members[2], &["ls", "--sort", "-p", "/"]),
        "/app/\n/queue/\n"
    );
    // A write right after the restart may meet the election (500, as etcd answers).
    wait_until("a write succeeds", || {
        ctl2(&members[0], &["set", "/after", "restart"])
            .status
            .success()
    });
    assert_eq!(
        ok2(&members[1], &["get", "--quorum", "/after"]),
        "restart\n"
    );
}

#[test]
fn the_v2_api_is_off_unless_enabled() {
    let oxcd = Server::start(Kind::Oxcd);
    let answer = curl(&oxcd, &["-XPUT", "{}/v2/keys/foo", "-d", "value=bar"]);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(!ctl2(&oxcd, &["set", "/foo", "bar"]).status.success());
    // The v3 API is untouched by the v2 keyspace and the reverse.
    let enabled = v2_server(Kind::Oxcd);
    ok2(&enabled, &["set", "/foo", "v2"]);
    assert_eq!(enabled.ok(&["get", "/foo"]), "");
    enabled.ok(&["put", "/foo", "v3"]);
    assert_eq!(ok2(&enabled, &["get", "/foo"]), "v2\n");
}

fn oxctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxctl"))
        .args(args)
        .output()
        .expect("running oxctl")
}

#[test]
fn a_backup_of_a_stopped_member_starts_a_new_cluster_with_every_key() {
    let mut source = v2_server(Kind::Oxcd);
    ok2(&source, &["set", "/v2/dir/key", "from v2"]);
    ok2(&source, &["set", "--ttl", "3600", "/v2/lasting", "x"]);
    source.ok(&["put", "v3key", "from v3"]);
    let lease = source.ok(&["lease", "grant", "600"]);
    let lease = lease
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_owned();
    source.ok(&["put", "--lease", &lease, "leased", "yes"]);
    assert!(source.terminate(), "a clean stop");

    let data_dir = source.data_dir.to_str().unwrap().to_owned();
    let peer_port = free_port();
    let mut copy = member_server_with(
        "restored",
        peer_port,
        &format!("restored=http://127.0.0.1:{peer_port}"),
        "new",
        &["--enable-v2"],
    );
    let backup_dir = copy.data_dir.to_str().unwrap().to_owned();
    let backed_up = oxctl(&[
        "backup",
        "--data-dir",
        &data_dir,
        "--backup-dir",
        &backup_dir,
    ]);
    assert!(
        backed_up.status.success(),
        "{}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    let again = oxctl(&[
        "backup",
        "--data-dir",
        &data_dir,
        "--backup-dir",
        &backup_dir,
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let missing = oxctl(&[
        "backup",
        "--data-dir",
        "/nonexistent",
        "--backup-dir",
        "/tmp/x",
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("holds no member data"));

    start_member(&mut copy);
    assert_eq!(ok2(&copy, &["get", "/v2/dir/key"]), "from v2\n");
    assert_eq!(ok2(&copy, &["get", "/v2/lasting"]), "x\n");
    assert_eq!(
        copy.ok(&["get", "v3key", "--print-value-only"]),
        "from v3\n"
    );
    assert_eq!(copy.ok(&["get", "leased", "--print-value-only"]), "yes\n");
    let members = copy.ok(&["member", "list"]);
    assert_eq!(
        members.lines().count(),
        1,
        "a new one-member cluster: {members}"
    );
    assert!(members.contains(", restored, "), "{members}");
    // The copy takes writes of its own.
    wait_until("a write succeeds", || {
        ctl2(&copy, &["set", "/v2/after", "1"]).status.success()
    });
    copy.ok(&["put", "v3after", "1"]);
}

#[test]
fn a_streamed_wait_sees_every_event_and_a_plain_wait_the_first() {
    let server = v2_server(Kind::Oxcd);
    let base = format!("http://{}", server.endpoint());
    let watch = |query: &str| {
        Command::new("curl")
            .args(["-s", "-N", "--max-time", "4"])
            .arg(format!("{base}/v2/keys/s?{query}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl")
    };
    let streamed = watch("wait=true&stream=true&recursive=true");
    let plain = watch("wait=true&recursive=true");
    std::thread::sleep(Duration::from_millis(500));
    ok2(&server, &["set", "/s/one", "1"]);
    ok2(&server, &["set", "/s/two", "2"]);
    ok2(&server, &["set", "/elsewhere", "x"]);
    let streamed = String::from_utf8(streamed.wait_with_output().unwrap().stdout).unwrap();
    let plain = String::from_utf8(plain.wait_with_output().unwrap().stdout).unwrap();
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| {
                line.split("\"key\":\"")
                    .nth(1)
                    .unwrap_or("")
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(keys(&streamed), ["/s/one", "/s/two"], "{streamed}");
    assert_eq!(keys(&plain), ["/s/one"], "{plain}");
}
