//! bbolt files against the real etcd 3.4: its snapshots read by `oxcd::bolt`, and files
//! written by `oxcd::bolt` read by etcdctl and served by etcd.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Kind, Server};
use oxcd::bolt::{append_trailer, Reader, Writer};
use oxcd::proto::mvccpb::KeyValue;
use prost::Message;

/// etcd's key bucket key: the main revision big-endian, '_', the sub revision.
fn revision_key(main: u64, sub: u64) -> Vec<u8> {
    let mut key = main.to_be_bytes().to_vec();
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    key
}

fn snapshot_status(path: &std::path::Path) -> serde_json::Value {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("running etcdctl");
    assert!(
        output.status.success(),
        "snapshot status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status as JSON")
}

#[test]
fn an_etcd_snapshot_reads_back_as_its_revisions() {
    let server = Server::start(Kind::Etcd);
    let big = "b".repeat(10_000);
    let mut expected = Vec::new();
    for i in 0..300 {
        let key = format!("key{i:03}");
        let value = if i == 150 {
            big.clone()
        } else {
            format!("value {i}")
        };
        server.ok(&["put", &key, &value]);
        expected.push((key, value));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.db");
    server.ok(&["snapshot", "save", path.to_str().unwrap()]);

    let mut reader = Reader::open(&path).unwrap();
    assert_eq!(reader.page_size(), 4096);
    assert!(reader.trailer().is_some(), "etcd appends a SHA-256");
    reader.verify_trailer().unwrap();
    let buckets = reader.buckets().unwrap();
    let names: Vec<&[u8]> = buckets.iter().map(|bucket| &bucket.name[..]).collect();
    for name in [
        "key", "meta", "members", "cluster", "lease", "auth", "alarm",
    ] {
        assert!(
            names.contains(&name.as_bytes()),
            "no bucket {name} in {names:?}"
        );
    }

    let key_bucket = reader.bucket(b"key").unwrap().unwrap();
    assert!(
        !key_bucket.is_inline(),
        "300 revisions outgrow an inline bucket"
    );
    let mut revisions = Vec::new();
    for entry in reader.entries(&key_bucket) {
        let entry = entry.unwrap();
        assert_eq!(entry.key.len(), 17);
        assert_eq!(entry.key[8], b'_');
        let main = u64::from_be_bytes(entry.key[..8].try_into().unwrap());
        let kv = KeyValue::decode(&entry.value[..]).unwrap();
        assert_eq!(kv.mod_revision as u64, main);
        revisions.push((
            String::from_utf8(kv.key.to_vec()).unwrap(),
            String::from_utf8(kv.value.to_vec()).unwrap(),
        ));
    }
    // A fresh etcd starts at revision 1, so the puts made revisions 2 to 301.
    assert_eq!(revisions, expected);

    let meta = reader.bucket(b"meta").unwrap().unwrap();
    assert!(meta.is_inline(), "etcd's small buckets are inline");
    let meta: BTreeMap<Vec<u8>, Vec<u8>> = reader
        .entries(&meta)
        .map(|entry| entry.map(|entry| (entry.key, entry.value)))
        .collect::<Result<_, _>>()
        .unwrap();
    let consistent_index = &meta[&b"consistent_index"[..]];
    assert_eq!(consistent_index.len(), 8, "a big-endian u64");
    assert!(u64::from_be_bytes(consistent_index[..].try_into().unwrap()) >= 300);
}

/// Writes an etcd-shaped file of `count` revisions (`key{i}` = `value{i}`) at `path`,
/// with etcd's trailer if `trailer`.
fn write_etcd_shaped(path: &std::path::Path, count: u64, trailer: bool) {
    let mut writer = Writer::create(path).unwrap();
    writer.begin_bucket(b"key").unwrap();
    for revision in 1..=count {
        let value = if revision == count / 2 {
            vec![b'x'; 6000]
        } else {
            format!("value{revision}").into_bytes()
        };
        let kv = KeyValue {
            key: format!("key{revision}").into_bytes().into(),
            create_revision: revision as i64,
            mod_revision: revision as i64,
            version: 1,
            value: value.into(),
            lease: 0,
        };
        writer
            .put(&revision_key(revision, 0), &kv.encode_to_vec())
            .unwrap();
    }
    writer.begin_bucket(b"meta").unwrap();
    writer
        .put(b"consistent_index", &count.to_be_bytes())
        .unwrap();
    let file = writer.finish().unwrap();
    if trailer {
        let mut file = file.into_inner().unwrap();
        append_trailer(&mut file).unwrap();
    }
}

#[test]
fn etcdctl_reads_a_written_file_and_etcd_serves_it_restored() {
    common::ensure_etcd_tools();
    const COUNT: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.db");
    write_etcd_shaped(&path, COUNT, false);

    let status = snapshot_status(&path);
    assert_eq!(status["revision"], COUNT);
    // totalKey counts the entries of every bucket: the revisions and consistent_index.
    assert_eq!(status["totalKey"], COUNT + 1);
    assert_eq!(status["totalSize"], std::fs::metadata(&path).unwrap().len());

    // With etcd's trailer. `snapshot status` does not look at it (it reads the same),
    // `snapshot restore` checks it.
    write_etcd_shaped(&path, COUNT, true);
    assert_eq!(std::fs::metadata(&path).unwrap().len() % 512, 32);
    assert_eq!(snapshot_status(&path), status);
    Reader::open(&path).unwrap().verify_trailer().unwrap();

    // Restored into a member's data dir, the revisions are what etcd serves.
    let mut server = Server::start(Kind::Etcd);
    server.kill();
    std::fs::remove_dir_all(&server.data_dir).unwrap();
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&path)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args([
            "--name=default",
            "--initial-cluster=default=http://localhost:2380",
            "--initial-advertise-peer-urls=http://localhost:2380",
        ])
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    server.restart();
    assert_eq!(server.ok(&["get", "key7"]), "key7\nvalue7\n");
    let json = server.ok(&["get", "key1", "-w", "json"]);
    assert!(json.contains(&format!(r#""revision":{COUNT}"#)), "{json}");
    let half = COUNT / 2;
    let big = server.ok(&["get", &format!("key{half}"), "--print-value-only"]);
    assert_eq!(big.trim_end(), "x".repeat(6000));
}

#[test]
fn restore_refuses_a_written_file_whose_trailer_is_wrong() {
    common::ensure_etcd_tools();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.db");
    write_etcd_shaped(&path, 20, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("restored"))
        .output()
        .unwrap();
    assert!(!restore.status.success());
    assert!(
        String::from_utf8_lossy(&restore.stderr).contains("expected sha256"),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
}
