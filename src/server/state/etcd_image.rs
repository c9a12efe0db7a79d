//! The backend in etcd's format: a bbolt file with etcd 3.4's buckets and encodings, what
//! `etcdctl snapshot save` receives from the Maintenance `Snapshot` stream, so that
//! `etcdctl snapshot status` reads it and `etcdctl snapshot restore` makes an etcd data
//! directory of it.
//!
//! The buckets, in the byte order bbolt keeps them:
//! - `alarm`: each raised alarm's `etcdserverpb.AlarmMember`, as the key, with no value;
//! - `auth`: `authEnabled` (one byte, 1 or 0) and `authRevision` (u64, big-endian);
//! - `authRoles`, `authUsers`: name → `authpb.Role`, `authpb.User`;
//! - `cluster`: `clusterVersion` → `3.4.0`;
//! - `key`: every revision: 8-byte big-endian main revision, `_`, 8-byte big-endian sub
//!   revision (and `t` after a deletion's) → `mvccpb.KeyValue` (a deletion's holds only
//!   the key);
//! - `lease`: lease id (u64, big-endian) → `leasepb.Lease` {ID, TTL, RemainingTTL};
//! - `members`: member id in hex → JSON `{"id","peerURLs","isLearner","name","clientURLs"}`;
//! - `members_removed`: member id in hex → `removed`;
//! - `meta`: `consistent_index` (u64, big-endian), and once compacted
//!   `finishedCompactRev` and `scheduledCompactRev` (a revision key).

use std::io::{Read, Seek, Write};

use prost::Message as _;

use crate::bolt::{self, Writer};
use crate::mvcc::{Backend, Revision};
use crate::proto::authpb::{Role, User};
use crate::proto::etcdserverpb::AlarmResponse;
use crate::proto::mvccpb::KeyValue;
use crate::proto::oxcdpb::{Member, SavedAuth, SavedMembers};
use crate::server::types::json::{go_string, go_strings};

/// The cluster version an etcd 3.4 backend records.
const CLUSTER_VERSION: &str = "3.4.0";

/// etcd's `leasepb.Lease`, as its `lease` bucket stores it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("{0}")]
    Bolt(#[from] bolt::Error),
    #[error("{0}")]
    Backend(#[from] crate::mvcc::BackendError),
    #[error("the saved {0} does not decode: {1}")]
    Decode(&'static str, prost::DecodeError),
    #[error("not an etcd snapshot: {0}")]
    NotEtcd(String),
}

/// An etcd revision key: `main` and `sub` big-endian with `_` between, and `t` after a
/// deletion's.
pub(crate) fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// Writes `backend` as an etcd 3.4 backend to `sink`; returns the sink, at the end of the
/// file.
pub(crate) fn write<W: Write + Seek>(backend: &Backend, sink: W) -> Result<W, ImageError> {
    let mut out = Writer::new(sink, bolt::PAGE_SIZE_DEFAULT)?;

    let alarms = AlarmResponse::decode(backend.alarms()?.as_slice())
        .map_err(|error| ImageError::Decode("alarms", error))?
        .alarms;
    let mut alarm_keys: Vec<Vec<u8>> = alarms.iter().map(|a| a.encode_to_vec()).collect();
    alarm_keys.sort();
    alarm_keys.dedup();
    out.begin_bucket(b"alarm")?;
    for key in &alarm_keys {
        out.put(key, b"")?;
    }

    let auth = SavedAuth::decode(backend.auth()?.as_slice())
        .map_err(|error| ImageError::Decode("auth state", error))?;
    out.begin_bucket(b"auth")?;
    out.put(b"authEnabled", &[u8::from(auth.enabled)])?;
    out.put(b"authRevision", &auth.revision.to_be_bytes())?;
    let mut roles: Vec<_> = auth.roles.iter().collect();
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    out.begin_bucket(b"authRoles")?;
    for role in roles {
        out.put(&role.name, &role.encode_to_vec())?;
    }
    let mut users: Vec<_> = auth.users.iter().collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    out.begin_bucket(b"authUsers")?;
    for user in users {
        out.put(&user.name, &user.encode_to_vec())?;
    }

    out.begin_bucket(b"cluster")?;
    out.put(b"clusterVersion", CLUSTER_VERSION.as_bytes())?;

    out.begin_bucket(b"key")?;
    let mut failure = None;
    backend.for_each_revision(|rev, tombstone, kv| {
        if failure.is_some() {
            return;
        }
        let key = revision_key(rev.main, rev.sub, tombstone);
        let value = if tombstone {
            KeyValue {
                key: kv.key,
                ..Default::default()
            }
            .encode_to_vec()
        } else {
            kv.encode_to_vec()
        };
        if let Err(error) = out.put(&key, &value) {
            failure = Some(error);
        }
    })?;
    if let Some(error) = failure {
        return Err(error.into());
    }

    let mut leases = backend.leases()?;
    leases.sort_by_key(|(id, _, _)| id.to_be_bytes());
    out.begin_bucket(b"lease")?;
    for (id, ttl, remaining_ttl) in leases {
        let lease = EtcdLease {
            id,
            ttl,
            remaining_ttl,
        };
        out.put(&id.to_be_bytes(), &lease.encode_to_vec())?;
    }

    let saved = SavedMembers::decode(backend.members()?.as_slice())
        .map_err(|error| ImageError::Decode("member list", error))?;
    let mut members: Vec<(String, String)> = saved
        .members
        .iter()
        .map(|member| (format!("{:x}", member.id), member_json(member)))
        .collect();
    members.sort();
    out.begin_bucket(b"members")?;
    for (key, value) in &members {
        out.put(key.as_bytes(), value.as_bytes())?;
    }
    let mut removed: Vec<String> = saved.removed.iter().map(|id| format!("{id:x}")).collect();
    removed.sort();
    removed.dedup();
    out.begin_bucket(b"members_removed")?;
    for id in &removed {
        out.put(id.as_bytes(), b"removed")?;
    }

    out.begin_bucket(b"meta")?;
    out.put(
        b"consistent_index",
        &backend.consistent_index()?.to_be_bytes(),
    )?;
    let compacted = backend.compact_revision()?;
    if compacted > 0 {
        let revision = revision_key(compacted, 0, false);
        out.put(b"finishedCompactRev", &revision)?;
        out.put(b"scheduledCompactRev", &revision)?;
    }
    Ok(out.finish()?)
}

/// What `restore` put in a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub revisions: u64,
    pub revision: i64,
    pub compacted: i64,
    pub leases: usize,
    pub users: usize,
    pub roles: usize,
}

/// Revisions written to the backend between commits, so that a large snapshot never
/// waits in memory whole.
const RESTORE_BATCH: u64 = 10_000;

/// Fills `backend` (new and empty) from the etcd backend file `reader` reads: every
/// revision, the compaction, the leases and the auth state. Membership and the applied
/// index are left out: the restored member starts a new cluster from its flags, as a
/// member restored by etcd's tools does.
/// `progress` hears the number of revisions written so far, after every batch.
pub(crate) fn restore<R: Read + Seek>(
    reader: &mut bolt::Reader<R>,
    backend: &mut Backend,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreSummary, ImageError> {
    let mut restored = RestoreSummary::default();
    let key = reader
        .bucket(b"key")?
        .ok_or_else(|| ImageError::NotEtcd("no key bucket".into()))?;
    let mut entries = Vec::new();
    for entry in reader.entries(&key) {
        let entry = entry?;
        let (revision, tombstone) = parse_revision_key(&entry.key).ok_or_else(|| {
            ImageError::NotEtcd(format!("a key bucket key of {} bytes", entry.key.len()))
        })?;
        let kv = KeyValue::decode(entry.value.as_slice())
            .map_err(|error| ImageError::Decode("revision", error))?;
        entries.push((revision, tombstone, kv));
        if entries.len() as u64 >= RESTORE_BATCH {
            restored.revisions += put_revisions(backend, &mut entries, &mut restored)?;
            progress(restored.revisions);
        }
    }
    restored.revisions += put_revisions(backend, &mut entries, &mut restored)?;
    progress(restored.revisions);

    if let Some(meta) = reader.bucket(b"meta")? {
        for entry in reader.entries(&meta) {
            let entry = entry?;
            if entry.key == b"finishedCompactRev" {
                let (revision, _) = parse_revision_key(&entry.value).ok_or_else(|| {
                    ImageError::NotEtcd("a compacted revision that does not parse".into())
                })?;
                restored.compacted = revision.main;
            }
        }
    }
    if restored.compacted > 0 {
        backend.set_compact_revision(restored.compacted);
    }

    if let Some(leases) = reader.bucket(b"lease")? {
        for entry in reader.entries(&leases) {
            let lease = EtcdLease::decode(entry?.value.as_slice())
                .map_err(|error| ImageError::Decode("lease", error))?;
            backend.put_lease(lease.id, lease.ttl, lease.remaining_ttl);
            restored.leases += 1;
        }
    }

    let mut auth = SavedAuth::default();
    if let Some(bucket) = reader.bucket(b"auth")? {
        for entry in reader.entries(&bucket) {
            let entry = entry?;
            match entry.key.as_slice() {
                b"authEnabled" => auth.enabled = entry.value == [1],
                b"authRevision" => {
                    let bytes: [u8; 8] = entry.value.as_slice().try_into().map_err(|_| {
                        ImageError::NotEtcd("an auth revision that is not 8 bytes".into())
                    })?;
                    auth.revision = u64::from_be_bytes(bytes);
                }
                _ => {}
            }
        }
    }
    if let Some(bucket) = reader.bucket(b"authUsers")? {
        for entry in reader.entries(&bucket) {
            auth.users.push(
                User::decode(entry?.value.as_slice())
                    .map_err(|error| ImageError::Decode("user", error))?,
            );
        }
    }
    if let Some(bucket) = reader.bucket(b"authRoles")? {
        for entry in reader.entries(&bucket) {
            auth.roles.push(
                Role::decode(entry?.value.as_slice())
                    .map_err(|error| ImageError::Decode("role", error))?,
            );
        }
    }
    restored.users = auth.users.len();
    restored.roles = auth.roles.len();
    backend.set_auth(auth.encode_to_vec());
    backend.commit()?;
    Ok(restored)
}

fn put_revisions(
    backend: &mut Backend,
    entries: &mut Vec<(Revision, bool, KeyValue)>,
    restored: &mut RestoreSummary,
) -> Result<u64, ImageError> {
    let count = entries.len() as u64;
    for (revision, tombstone, kv) in entries.drain(..) {
        restored.revision = restored.revision.max(revision.main);
        backend.put(revision, tombstone, &kv);
    }
    backend.commit()?;
    Ok(count)
}

/// A revision key of etcd's key bucket: (revision, whether it marks a deletion).
pub(crate) fn parse_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((Revision { main, sub }, tombstone))
}

/// What `etcdctl snapshot status` reports of an etcd backend file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32C over every bucket's name and every entry's key and value, in file order.
    pub hash: u32,
    /// The newest revision in the key bucket.
    pub revision: i64,
    /// Entries in all buckets.
    pub total_key: u64,
    /// The database's size, without a trailer.
    pub total_size: u64,
}

pub(crate) fn status<R: Read + Seek>(
    reader: &mut bolt::Reader<R>,
) -> Result<SnapshotStatus, ImageError> {
    let mut hash = 0u32;
    let mut total_key = 0;
    let mut revision = 0;
    for bucket in reader.buckets()? {
        hash = crc32c::crc32c_append(hash, &bucket.name);
        let is_key = bucket.name == b"key";
        for entry in reader.entries(&bucket) {
            let entry = entry?;
            hash = crc32c::crc32c_append(hash, &entry.key);
            hash = crc32c::crc32c_append(hash, &entry.value);
            total_key += 1;
            if is_key {
                if let Some((parsed, _)) = parse_revision_key(&entry.key) {
                    revision = parsed.main;
                }
            }
        }
    }
    Ok(SnapshotStatus {
        hash,
        revision,
        total_key,
        total_size: reader.data_len(),
    })
}

/// A member as etcd 3.4 stores it: `id` a number, empty fields left out.
fn member_json(member: &Member) -> String {
    let mut json = format!(
        r#"{{"id":{},"peerURLs":{}"#,
        member.id,
        go_strings(&member.peer_urls)
    );
    if member.is_learner {
        json.push_str(r#","isLearner":true"#);
    }
    if !member.name.is_empty() {
        json.push_str(r#","name":"#);
        json.push_str(&go_string(&member.name));
    }
    if !member.client_urls.is_empty() {
        json.push_str(r#","clientURLs":"#);
        json.push_str(&go_strings(&member.client_urls));
    }
    json.push('}');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_as_revisions_and_mark_deletions() {
        assert_eq!(
            revision_key(5, 1, false),
            [0, 0, 0, 0, 0, 0, 0, 5, b'_', 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(revision_key(5, 1, true).last(), Some(&b't'));
        assert!(revision_key(2, 9, false) < revision_key(3, 0, false));
        assert!(revision_key(3, 0, true) < revision_key(3, 1, false));
    }

    #[test]
    fn members_are_json_as_etcd_writes_them() {
        let member = Member {
            id: 0x8e9e05c52164694d,
            name: "a<b>\"c\"".into(),
            peer_urls: vec!["http://localhost:2380".into()],
            client_urls: vec!["http://localhost:2379".into()],
            is_learner: false,
        };
        assert_eq!(
            member_json(&member),
            r#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"a\u003cb\u003e\"c\"","clientURLs":["http://localhost:2379"]}"#
        );
        let learner = Member {
            id: 1,
            name: String::new(),
            peer_urls: vec!["http://10.0.0.1:2380".into()],
            client_urls: Vec::new(),
            is_learner: true,
        };
        assert_eq!(
            member_json(&learner),
            r#"{"id":1,"peerURLs":["http://10.0.0.1:2380"],"isLearner":true}"#
        );
    }
}
