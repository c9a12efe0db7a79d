//! Backups in etcd's format: `etcdctl snapshot save` against oxcd writes a file that
//! `etcdctl snapshot status` reads and `etcdctl snapshot restore` turns into a data
//! directory from which a real etcd 3.4 serves the same keys, values, revisions, versions
//! and leases.

mod common;

use std::process::Command;

use common::{set_up_users, Kind, Server};

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

/// What alice, root and nobody get from `restored` must be what they got from `original`
/// (`restored_kind` names the restored server in a failure).
fn assert_same_auth_answers(restored: &Server, original: &Server, restored_kind: &str) {
    const ROOT: &str = "--user=root:rootpw";
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
        let there = restored.ctl(args);
        let here = original.ctl(args);
        assert_eq!(
            (there.status.code(), String::from_utf8_lossy(&there.stdout)),
            (here.status.code(), String::from_utf8_lossy(&here.stdout)),
            "{args:?}: {restored_kind} said {}",
            String::from_utf8_lossy(&there.stderr)
        );
    }
}

#[test]
fn users_roles_and_permissions_move_to_etcd_with_the_snapshot() {
    const ROOT: &str = "--user=root:rootpw";
    let oxcd = Server::start(Kind::Oxcd);
    set_up_users(&oxcd);
    oxcd.ok(&["put", "/app/k", "v", "--user=alice:alicepw"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("oxcd.db");
    oxcd.ok(&["snapshot", "save", file.to_str().unwrap(), ROOT]);

    let mut etcd = etcd_restored_from(&file);
    etcd.restart_as(&[ROOT]);
    assert_same_auth_answers(&etcd, &oxcd, "etcd");
}

fn oxctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oxctl"))
        .args(args)
        .output()
        .expect("running oxctl")
}

fn etcdctl_offline(args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("running etcdctl")
}

#[test]
fn an_etcd_snapshot_restores_into_an_oxcd_cluster_serving_the_same_data() {
    let etcd = Server::start(Kind::Etcd);
    for i in 0..30 {
        etcd.ok(&["put", &format!("key/{i:02}"), &format!("value {i}")]);
    }
    etcd.ok(&["put", "key/03", "rewritten"]);
    etcd.ok(&["del", "key/04"]);
    etcd.ok(&["put", "big", &"e".repeat(30_000)]);
    etcd.ok(&["compaction", "8"]);
    let granted = etcd.ok(&["lease", "grant", "900"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    etcd.ok(&["put", "leased", "v", &format!("--lease={lease}")]);
    let before = keyspace(&etcd, &[]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("etcd.db");
    let path = file.to_str().unwrap();
    etcd.ok(&["snapshot", "save", path]);

    // oxctl reads the file as etcdctl does, in every format.
    for format in ["simple", "json", "table"] {
        let theirs = etcdctl_offline(&["snapshot", "status", path, "-w", format]);
        let ours = oxctl(&["snapshot", "status", path, "-w", format]);
        assert!(ours.status.success(), "{ours:?}");
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "-w {format}"
        );
    }

    // Three oxcd members restored from it form a new cluster serving the same data.
    let peers: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let initial = (0..3)
        .map(|i| format!("m{}=http://127.0.0.1:{}", i + 1, peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Server> = (0..3)
        .map(|i| common::member_server(&format!("m{}", i + 1), peers[i], &initial, "new"))
        .collect();
    for (i, member) in members.iter().enumerate() {
        let restored = oxctl(&[
            "snapshot",
            "restore",
            path,
            "--data-dir",
            member.data_dir.to_str().unwrap(),
            "--name",
            &format!("m{}", i + 1),
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{}", peers[i]),
        ]);
        assert!(restored.status.success(), "{restored:?}");
    }
    common::start_members(&mut members);
    for member in &members {
        assert_eq!(keyspace(member, &[]), before);
        assert_eq!(
            keyspace(member, &["--rev=10"]),
            keyspace(&etcd, &["--rev=10"])
        );
        assert_eq!(
            member.err(&["get", "key/01", "--rev=3"]),
            etcd.err(&["get", "key/01", "--rev=3"])
        );
    }
    let alive = members[1].ok(&["lease", "timetolive", &lease, "--keys"]);
    assert!(alive.contains("granted with TTL(900s)"), "{alive}");
    assert!(alive.contains("attached keys([leased])"), "{alive}");
    let next = json(&members[2], &["put", "after", "restore"]);
    assert_eq!(
        next["header"]["revision"].as_i64(),
        before["revision"].as_i64().map(|revision| revision + 1)
    );
    // Round trip: the oxcd cluster's own snapshot reads as the same data.
    let again = dir.path().join("again.db");
    members[0].ok(&["snapshot", "save", again.to_str().unwrap()]);
    let status = oxctl(&["snapshot", "status", again.to_str().unwrap(), "-w", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        status["revision"].as_i64(),
        next["header"]["revision"].as_i64()
    );
}

#[test]
fn a_restore_refuses_what_it_cannot_do_safely() {
    let etcd = Server::start(Kind::Etcd);
    etcd.ok(&["put", "k", "v"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("etcd.db");
    etcd.ok(&["snapshot", "save", file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    let target = dir.path().join("restored");
    let restore = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = oxctl(&args);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let damaged = dir.path().join("damaged.db");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&damaged, &flipped).unwrap();
    let (ok, said) = restore(&damaged, &[]);
    assert!(
        !ok && said.contains("the file is damaged or not a snapshot"),
        "{said}"
    );
    assert!(!target.exists());

    let bare = dir.path().join("bare.db");
    std::fs::write(&bare, &bytes[..bytes.len() - 32]).unwrap();
    let (ok, said) = restore(&bare, &[]);
    assert!(
        !ok && said.contains("snapshot missing hash but --skip-hash-check=false"),
        "{said}"
    );
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..5000]).unwrap();
    let (ok, said) = restore(&truncated, &["--skip-hash-check"]);
    assert!(!ok && said.starts_with("Error: "), "{said}");
    assert!(!target.exists());

    let (ok, said) = restore(&file, &["--name", "elsewhere"]);
    assert!(
        !ok && said.contains("couldn't find local name \"elsewhere\""),
        "{said}"
    );

    let (ok, said) = restore(&bare, &["--skip-hash-check"]);
    assert!(ok, "{said}");
    let (ok, said) = restore(&file, &[]);
    assert!(!ok && said.contains("exists"), "{said}");
}

#[test]
fn users_roles_and_permissions_move_from_etcd_with_the_snapshot() {
    const ROOT: &str = "--user=root:rootpw";
    let etcd = Server::start(Kind::Etcd);
    set_up_users(&etcd);
    etcd.ok(&["put", "/app/k", "v", "--user=alice:alicepw"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("etcd.db");
    etcd.ok(&["snapshot", "save", file.to_str().unwrap(), ROOT]);

    let peer = common::free_port();
    let initial = format!("m1=http://127.0.0.1:{peer}");
    let mut member = common::member_server("m1", peer, &initial, "new");
    let restored = oxctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        member.data_dir.to_str().unwrap(),
        "--name",
        "m1",
        "--initial-cluster",
        &initial,
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
    ]);
    assert!(restored.status.success(), "{restored:?}");
    assert!(
        String::from_utf8_lossy(&restored.stdout).contains("leases: 0, users: 2, roles: 1"),
        "{restored:?}"
    );
    member.restart_as(&[ROOT]);
    assert_same_auth_answers(&member, &etcd, "oxcd");
}

#[test]
fn oxctl_saves_snapshots_from_oxcd_and_etcd_as_etcdctl_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for kind in [Kind::Oxcd, Kind::Etcd] {
        let server = Server::start(kind);
        for i in 0..100 {
            server.ok(&["put", &format!("k{i}"), &"s".repeat(2000)]);
        }
        let ours = dir.path().join("oxctl.db");
        let theirs = dir.path().join("etcdctl.db");
        let saved = oxctl(&[
            "--endpoints",
            &server.endpoint(),
            "snapshot",
            "save",
            ours.to_str().unwrap(),
        ]);
        assert!(saved.status.success(), "{saved:?}");
        assert_eq!(
            String::from_utf8_lossy(&saved.stdout),
            format!("Snapshot saved at {}\n", ours.display())
        );
        server.ok(&["snapshot", "save", theirs.to_str().unwrap()]);
        let status = |file: &std::path::Path| {
            let output =
                etcdctl_offline(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
            (
                status["hash"].clone(),
                status["revision"].clone(),
                status["totalKey"].clone(),
            )
        };
        assert_eq!(status(&ours), status(&theirs));
        assert!(!dir.path().join("oxctl.db.part").exists());
    }
    let server = Server::start(Kind::Oxcd);
    let two = format!("{0},{0}", server.endpoint());
    let refused = oxctl(&["--endpoints", &two, "snapshot", "save", "x.db"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("snapshot must be requested to one selected node, not multiple"));
    // With authentication, the snapshot is root's.
    for step in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        server.ok(step);
    }
    let file = dir.path().join("auth.db");
    let path = file.to_str().unwrap();
    let denied = oxctl(&["--endpoints", &server.endpoint(), "snapshot", "save", path]);
    assert!(!denied.status.success(), "{denied:?}");
    assert!(!file.exists());
    let saved = oxctl(&[
        "--endpoints",
        &server.endpoint(),
        "--user",
        "root:rootpw",
        "snapshot",
        "save",
        path,
    ]);
    assert!(saved.status.success(), "{saved:?}");
}
