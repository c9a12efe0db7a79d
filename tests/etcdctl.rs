//! The real binary driven by the real etcdctl 3.4: outputs asserted as etcdctl prints them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Kind, Server};

#[test]
fn put_get_delete_and_their_flags() {
    let server = Server::start(Kind::Oxcd);
    assert_eq!(server.ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(server.ok(&["put", "foo1", "bar1"]), "OK\n");
    assert_eq!(server.ok(&["put", "zoo", "z"]), "OK\n");
    assert_eq!(server.ok(&["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        server.ok(&["get", "foo", "--prefix"]),
        "foo\nbar\nfoo1\nbar1\n"
    );
    assert_eq!(
        server.ok(&["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo1\n\n"
    );
    assert_eq!(
        server.ok(&["get", "foo", "--prefix", "--limit=1"]),
        "foo\nbar\n"
    );
    assert_eq!(
        server.ok(&["get", "foo1", "--from-key", "--keys-only"]),
        "foo1\n\nzoo\n\n"
    );
    assert_eq!(server.ok(&["get", "zoo", "--print-value-only"]), "z\n");
    assert_eq!(server.ok(&["put", "foo", "baz"]), "OK\n");
    // Revisions: the store starts at 1, so the first put made 2.
    assert_eq!(server.ok(&["get", "foo", "--rev=2"]), "foo\nbar\n");
    let json = server.ok(&["get", "foo", "-w", "json"]);
    assert!(json.contains(r#""revision":5"#), "{json}");
    assert!(
        json.contains(r#""create_revision":2,"mod_revision":5,"version":2"#),
        "{json}"
    );
    assert!(json.contains(r#""value":"YmF6""#), "{json}");
    assert!(server
        .ok(&["get", "foo", "--prefix", "--limit=1", "-w", "json"])
        .contains(r#""more":true,"count":2"#));
    assert_eq!(server.ok(&["del", "foo", "--prefix"]), "2\n");
    assert_eq!(server.ok(&["get", "foo", "--prefix"]), "");
    assert_eq!(server.ok(&["del", "nothing"]), "0\n");
    assert_eq!(server.ok(&["put", "p", "1", "--prev-kv"]), "OK\n");
    assert_eq!(server.ok(&["put", "p", "2", "--prev-kv"]), "OK\np\n1\n");
    assert_eq!(server.ok(&["del", "p", "--prev-kv"]), "1\np\n2\n");
}

#[test]
fn errors_match_etcd() {
    let server = Server::start(Kind::Oxcd);
    server.ok(&["put", "a", "1"]);
    assert_eq!(
        server.err(&["get", "a", "--rev=100"]),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    server.ok(&["put", "a", "2"]);
    server.ok(&["put", "a", "3"]);
    assert_eq!(server.ok(&["compact", "3"]), "compacted revision 3\n");
    assert_eq!(
        server.err(&["get", "a", "--rev=2"]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(server.ok(&["get", "a", "--rev=3"]), "a\n2\n");
    assert_eq!(
        server.err(&["compact", "2"]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        server.err(&["put", "k", "v", "--lease=1234"]),
        "Error: etcdserver: requested lease not found"
    );
    assert_eq!(
        server.err(&["lease", "revoke", "1234"]),
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    );
}

#[test]
fn interactive_txn() {
    let server = Server::start(Kind::Oxcd);
    server.ok(&["put", "key", "v1"]);
    let output = server.ctl_input(
        &["txn", "-i"],
        "value(\"key\") = \"v1\"\n\nput key v2\nget key\n\nput key failed\n\n",
    );
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.ends_with("SUCCESS\n\nOK\n\nkey\nv2\n"), "{stdout}");
    let output = server.ctl_input(&["txn", "-i"], "mod(\"key\") < \"2\"\n\n\nput other x\n\n");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.ends_with("FAILURE\n\nOK\n"), "{stdout}");
    assert_eq!(server.ok(&["get", "other", "--print-value-only"]), "x\n");
}

/// Reads `lines` lines from a running `etcdctl watch`.
fn watch_lines(server: &Server, args: &[&str], lines: usize, during: impl FnOnce()) -> Vec<String> {
    let mut child = server
        .etcdctl()
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    during();
    let mut got = Vec::new();
    while got.len() < lines {
        match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

#[test]
fn watch_history_and_live_events() {
    let server = Server::start(Kind::Oxcd);
    server.ok(&["put", "w", "1"]);
    server.ok(&["put", "w", "2"]);
    let lines = watch_lines(&server, &["w", "--rev=1"], 9, || {
        server.ok(&["del", "w"]);
    });
    assert_eq!(lines, ["PUT", "w", "1", "PUT", "w", "2", "DELETE", "w", ""]);
    let lines = watch_lines(&server, &["p", "--prefix", "--prev-kv"], 8, || {
        server.ok(&["put", "p1", "a"]);
        server.ok(&["put", "p1", "b"]);
    });
    assert_eq!(lines, ["PUT", "p1", "a", "PUT", "p1", "a", "p1", "b"]);
}

#[test]
fn leases_grant_attach_keep_alive_and_revoke() {
    let server = Server::start(Kind::Oxcd);
    let granted = server.ok(&["lease", "grant", "60"]);
    assert!(
        granted.starts_with("lease ") && granted.ends_with(" granted with TTL(60s)\n"),
        "{granted}"
    );
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    server.ok(&["put", "leased", "v", &format!("--lease={id}")]);
    let ttl = server.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );
    assert_eq!(
        server.ok(&["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        server.ok(&["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        server.ok(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(server.ok(&["get", "leased"]), "");
    assert_eq!(
        server.ok(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
}

#[test]
fn an_expired_lease_deletes_its_keys() {
    let server = Server::start(Kind::Oxcd);
    let granted = server.ok(&["lease", "grant", "2"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    server.ok(&["put", "short", "v", &format!("--lease={id}")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.ok(&["get", "short"]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn maintenance_status_health_members_snapshot_defrag_alarms() {
    let server = Server::start(Kind::Oxcd);
    server.ok(&["put", "m", "1"]);
    let status = server.ok(&["endpoint", "status"]);
    assert!(
        status.contains(&server.endpoint())
            && status.contains("3.4.23")
            && status.contains(", true, false, "),
        "{status}"
    );
    let health = server.ok_all(&["endpoint", "health"]);
    assert!(
        health.contains("is healthy: successfully committed proposal"),
        "{health}"
    );
    let members = server.ok(&["member", "list"]);
    assert!(
        members.contains(", started, default, ")
            && members.contains(&format!("http://127.0.0.1:{}", server.port)),
        "{members}"
    );
    // Enough data for the snapshot to span many chunks, the digest at an arbitrary offset.
    let big = "v".repeat(100_000);
    for key in ["big1", "big2", "big3", "big4"] {
        server.ok(&["put", key, &big]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let saved = server.ok(&["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(saved, format!("Snapshot saved at {}\n", file.display()));
    // The stream, as saved, is the image and then its SHA-256 (what `snapshot restore`
    // checks).
    let saved_bytes = std::fs::read(&file).unwrap();
    assert!(saved_bytes.len() > 400_000, "{}", saved_bytes.len());
    let (image, digest) = saved_bytes.split_at(saved_bytes.len() - 32);
    use sha2::Digest as _;
    assert_eq!(sha2::Sha256::digest(image).as_slice(), digest);
    let defrag = server.ok(&["defrag"]);
    assert_eq!(
        defrag,
        format!(
            "Finished defragmenting etcd member[{}]\n",
            server.endpoint()
        )
    );
    assert_eq!(server.ok(&["alarm", "list"]), "");
    assert_eq!(server.ok(&["get", "m", "--print-value-only"]), "1\n");
    let hash = server.ok(&["endpoint", "hashkv"]);
    assert!(
        hash.starts_with(&format!("{}, ", server.endpoint())),
        "{hash}"
    );
}

#[test]
fn quota_raises_nospace_and_disarm_clears_it() {
    let server = Server::start_with(Kind::Oxcd, &["--quota-backend-bytes=200000"]);
    let big = "x".repeat(100_000);
    let mut failed = None;
    for i in 0..20 {
        let output = server.ctl(&["put", &format!("big{i}"), &big]);
        if !output.status.success() {
            failed = Some(String::from_utf8_lossy(&output.stderr).to_string());
            break;
        }
    }
    let failed = failed.expect("the quota was never hit");
    assert!(
        failed.contains("etcdserver: mvcc: database space exceeded"),
        "{failed}"
    );
    assert!(server.ok(&["alarm", "list"]).contains("alarm:NOSPACE"));
    // Reads and deletes still work.
    server.ok(&["get", "big0", "--keys-only"]);
    server.ok(&["del", "big", "--prefix"]);
    server.ok(&["compact", &current_revision(&server).to_string()]);
    server.ok(&["defrag"]);
    server.ok(&["alarm", "disarm"]);
    assert_eq!(server.ok(&["alarm", "list"]), "");
    assert_eq!(server.ok(&["put", "after", "ok"]), "OK\n");
}

fn current_revision(server: &Server) -> i64 {
    let json = server.ok(&["get", "x", "-w", "json"]);
    let start = json.find(r#""revision":"#).unwrap() + 11;
    json[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn restart_keeps_every_write_and_the_revision() {
    let mut server = Server::start(Kind::Oxcd);
    for i in 0..50 {
        server.ok(&["put", &format!("r{i:02}"), &i.to_string()]);
    }
    let before = current_revision(&server);
    assert!(server.terminate(), "a clean stop exits 0");
    server.restart();
    assert_eq!(current_revision(&server), before);
    assert_eq!(
        server
            .ok(&["get", "r", "--prefix", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        50
    );
    server.ok(&["put", "r99", "x"]);
    assert_eq!(current_revision(&server), before + 1);
}

#[test]
fn kill_nine_during_writes_loses_no_acknowledged_write() {
    let mut server = Server::start(Kind::Oxcd);
    let endpoint = server.endpoint();
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..100_000 {
            let key = format!("k{i:06}");
            let output = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoint}"))
                .arg("--command-timeout=2s")
                .args(["put", &key, "v"])
                .output()
                .unwrap();
            if !output.status.success() {
                break;
            }
            acknowledged.push(key);
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(2500));
    server.kill();
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() > 5, "the load never got going");
    server.restart();
    let present = server.ok(&["get", "k", "--prefix", "--keys-only"]);
    let present: std::collections::BTreeSet<&str> =
        present.lines().filter(|l| !l.is_empty()).collect();
    for key in &acknowledged {
        assert!(
            present.contains(key.as_str()),
            "acknowledged {key} is missing after kill -9"
        );
    }
}

#[test]
fn restart_from_raft_snapshots_and_a_released_wal() {
    // A snapshot every 5 entries: the WAL is released behind them and a restart starts
    // from the newest snapshot plus the WAL after it.
    let mut server = Server::start_with(Kind::Oxcd, &["--snapshot-count=5"]);
    for i in 0..40 {
        server.ok(&["put", &format!("s{i:02}"), &i.to_string()]);
    }
    let before = current_revision(&server);
    server.kill();
    server.restart();
    assert_eq!(current_revision(&server), before);
    let keys = server.ok(&["get", "s", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 40);
    server.ok(&["put", "s99", "after"]);
    server.terminate();
    server.restart();
    assert_eq!(server.ok(&["get", "s99", "--print-value-only"]), "after\n");
}
