//! Backups in etcd's format: `etcdctl snapshot save` against oxcd writes a file that
//! `etcdctl snapshot status` reads and `etcdctl snapshot restore` turns into a data
//! directory from which a real etcd 3.4 serves the same keys, values, revisions, versions
//! and leases.

mod common;

use std::process::Command;

use common::{Kind, Server};

fn json(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["-w", "json"]);
    serde_json::from_str(&server.ok(&args)).expect("etcdctl's JSON")
}

/// What a client sees of the keyspace: every key's record, the revision, and the count.
fn keyspace(server: &Server, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["get", "", "--prefix"];
    args.extend_from_slice(extra);
    let answer = json(server, &args);
    serde_json::json!({
        "kvs": answer["kvs"],
        "count": answer["count"],
        "revision": answer["header"]["revision"],
    })
}

#[test]
fn an_oxcd_snapshot_restores_into_a_real_etcd_serving_the_same_data() {
    let oxcd = Server::start(Kind::Oxcd);
    for i in 0..40 {
        oxcd.ok(&["put", &format!("key/{i:02}"), &format!("value {i}")]);
    }
    // Versions above one, a deletion, a value that spans pages, a compaction behind it all.
    oxcd.ok(&["put", "key/07", "rewritten"]);
    oxcd.ok(&["put", "key/07", "rewritten again"]);
    oxcd.ok(&["del", "key/13"]);
    oxcd.ok(&["put", "big", &"b".repeat(20_000)]);
    oxcd.ok(&["compaction", "10"]);
    let granted = oxcd.ok(&["lease", "grant", "600"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    oxcd.ok(&["put", "leased", "v", &format!("--lease={lease}")]);
    oxcd.ok(&["put", "key/40", "after the lease"]);
    let before = keyspace(&oxcd, &[]);

    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("oxcd.db");
    let saved = oxcd.ok_all(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");

    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .expect("running etcdctl");
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["revision"], before["revision"], "{status}");
    assert!(status["totalKey"].as_u64().unwrap() > 40, "{status}");

    // Restored as etcd's data dir, with the member the oxcd server was (same name and
    // peer URL, so the same member and cluster ids).
    let mut etcd = etcd_restored_from(&file);
    etcd.restart();

    assert_eq!(keyspace(&etcd, &[]), before);
    assert_eq!(
        etcd.ok(&["get", "big", "--print-value-only"]).trim_end(),
        "b".repeat(20_000)
    );
    // History after the compaction is there; before it, gone on both.
    assert_eq!(
        keyspace(&etcd, &["--rev=12"]),
        keyspace(&oxcd, &["--rev=12"])
    );
    assert_eq!(
        etcd.err(&["get", "key/01", "--rev=5"]),
        oxcd.err(&["get", "key/01", "--rev=5"])
    );
    // The lease, with its key attached.
    assert!(etcd.ok(&["lease", "list"]).contains(&lease));
    let alive = etcd.ok(&["lease", "timetolive", &lease, "--keys"]);
    assert!(alive.contains("granted with TTL(600s)"), "{alive}");
    assert!(alive.contains("attached keys([leased])"), "{alive}");
    // And etcd goes on from the revision oxcd reached.
    let next = json(&etcd, &["put", "after", "restore"]);
    assert_eq!(
        next["header"]["revision"].as_i64(),
        before["revision"].as_i64().map(|revision| revision + 1)
    );
}

/// Restores `file` as the data dir of a new real etcd and starts it.
fn etcd_restored_from(file: &std::path::Path) -> Server {
    let mut etcd = Server::start(Kind::Etcd);
    etcd.kill();
    std::fs::remove_dir_all(&etcd.data_dir).expect("removing the data dir");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(file)
        .arg("--data-dir")
        .arg(&etcd.data_dir)
        .args([
            "--name=default",
            "--initial-cluster=default=http://localhost:2380",
            "--initial-advertise-peer-urls=http://localhost:2380",
        ])
        .output()
        .expect("running etcdctl");
    assert!(
        restore.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    etcd
}

#[test]
fn users_roles_and_permissions_move_to_etcd_with_the_snapshot() {
    const ROOT: &str = "--user=root:rootpw";
    let oxcd = Server::start(Kind::Oxcd);
    for step in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        oxcd.ok(step);
    }
    oxcd.ok(&["put", "/app/k", "v", "--user=alice:alicepw"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("oxcd.db");
    oxcd.ok(&["snapshot", "save", file.to_str().unwrap(), ROOT]);

    let mut etcd = etcd_restored_from(&file);
    etcd.restart_as(&[ROOT]);
    for args in [
        &[
            "get",
            "/app/k",
            "--print-value-only",
            "--user=alice:alicepw",
        ][..],
        &["get", "/app/k"],
        &["put", "/elsewhere", "v", "--user=alice:alicepw"],
        &["get", "/app/k", "--user=alice:wrong"],
        &["user", "list", ROOT],
        &["role", "get", "app", ROOT],
        &["auth", "status", ROOT],
    ] {
        let on_etcd = etcd.ctl(args);
        let on_oxcd = oxcd.ctl(args);
        assert_eq!(
            (
                on_etcd.status.code(),
                String::from_utf8_lossy(&on_etcd.stdout)
            ),
            (
                on_oxcd.status.code(),
                String::from_utf8_lossy(&on_oxcd.stdout)
            ),
            "{args:?}: etcd said {}",
            String::from_utf8_lossy(&on_etcd.stderr)
        );
    }
}
