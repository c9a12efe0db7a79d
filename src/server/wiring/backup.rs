//! Backups from outside a running member: a snapshot file's status, and a new data dir
//! restored from one (what `oxctl snapshot status` and `oxctl snapshot restore` run).

use std::path::Path;
use std::sync::Arc;

use crate::bolt::Reader;
use crate::io::{Disk, StdDisk};
use crate::mvcc::Backend;
use crate::server::state::etcd_image;
pub use crate::server::state::etcd_image::{RestoreSummary, SnapshotStatus};
use crate::server::types::config::Config;

/// redb's page cache while a restore writes the new backend from start to end.
const RESTORE_CACHE_BYTES: usize = 64 << 20;

/// The status of the snapshot file at `path` (an etcd or oxcd snapshot: both are etcd
/// backend files).
pub fn snapshot_status(path: &Path) -> Result<SnapshotStatus, String> {
    if is_redb(path)? {
        return redb_status(path);
    }
    let mut reader = Reader::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    etcd_image::status(&mut reader).map_err(|error| error.to_string())
}

/// Makes the data dir of `config` (which must not exist yet) from the snapshot file at
/// `path`: every revision, the compaction, the leases, users and roles. The member then
/// starts a new cluster from its flags, as a member restored by etcdutl does; every member
/// of the new cluster is restored from the same file. The file's SHA-256 trailer is checked
/// unless `skip_hash_check` (for a backend file copied from a data dir, which has none).
///
/// `progress` hears how many revisions are in the new backend so far.
pub fn restore_snapshot(
    path: &Path,
    config: &Config,
    skip_hash_check: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreSummary, String> {
    config.validate().map_err(|error| error.to_string())?;
    let members = config
        .initial_cluster_members()
        .map_err(|error| error.to_string())?;
    if !members.iter().any(|(name, _)| *name == config.name) {
        return Err(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            config.name
        ));
    }
    let data_dir = config.data_dir();
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        ));
    }
    if is_redb(path)? {
        if !skip_hash_check {
            return Err("snapshot missing hash but --skip-hash-check=false".into());
        }
        return restore_redb(path, config);
    }
    let mut reader = Reader::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    if reader.trailer().is_some() {
        if !skip_hash_check {
            reader.verify_trailer().map_err(|error| {
                format!(
                    "{}: {error} (the file is damaged or not a snapshot)",
                    path.display()
                )
            })?;
        }
    } else if !skip_hash_check {
        return Err("snapshot missing hash but --skip-hash-check=false".into());
    }
    restore_into_place(config, |partial| {
        let disk: Arc<dyn Disk> = Arc::new(StdDisk);
        let mut backend =
            Backend::open_with_cache(disk, &partial.backend_path(), Some(RESTORE_CACHE_BYTES))
                .map_err(|error| error.to_string())?;
        etcd_image::restore(&mut reader, &mut backend, progress).map_err(|error| error.to_string())
    })
}

/// Builds the data dir of `config` with `fill` (given the config of the data dir under
/// construction) under a temporary name and renames it into place once complete, so a
/// failed restore leaves no data dir a member would start from.
fn restore_into_place<T>(
    config: &Config,
    fill: impl FnOnce(&Config) -> Result<T, String>,
) -> Result<T, String> {
    let data_dir = config.data_dir();
    let building = data_dir.with_extension("restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .map_err(|error| format!("removing {}: {error}", building.display()))?;
    }
    let partial = Config {
        data_dir: Some(building.clone()),
        ..config.clone()
    };
    let restored = match fill(&partial) {
        Ok(restored) => restored,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(error);
        }
    };
    std::fs::rename(&building, &data_dir)
        .map_err(|error| format!("moving the restored data dir into place: {error}"))?;
    Ok(restored)
}

/// The first bytes of every redb file: oxcd's own backend format.
const REDB_MAGIC: &[u8] = b"redb\x1a\x0a\xa9\x0d\x0a";

/// Whether `path` is an oxcd backend (a redb file: a member's `member/snap/db`, copied)
/// rather than an etcd backend.
fn is_redb(path: &Path) -> Result<bool, String> {
    use std::io::Read as _;
    let mut start = [0u8; 9];
    let mut file =
        std::fs::File::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let read = file
        .read(&mut start)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(read == start.len() && start == REDB_MAGIC)
}

/// An oxcd backend file opened from a copy in a scratch directory (opening a redb file
/// may write to it), with the copy's directory to remove afterwards.
fn open_redb_copy(path: &Path) -> Result<(Backend, std::path::PathBuf), String> {
    let scratch = tempfile_dir(path)?;
    let copy = scratch.join("db");
    std::fs::copy(path, &copy).map_err(|error| format!("copying {}: {error}", path.display()))?;
    match Backend::open(Arc::new(StdDisk), &copy) {
        Ok(backend) => Ok((backend, scratch)),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&scratch);
            Err(format!("{}: {error}", path.display()))
        }
    }
}

/// `snapshot status` of an oxcd backend file: the hash is the member's HashKV at the
/// newest revision (what `endpoint hashkv` printed for that state), the keys are the
/// stored revisions and leases.
fn redb_status(path: &Path) -> Result<SnapshotStatus, String> {
    let (backend, scratch) = open_redb_copy(path)?;
    let status = (|| {
        let mut revisions = 0u64;
        let mut revision = 0i64;
        backend
            .for_each_revision(|at, _, _| {
                revisions += 1;
                revision = revision.max(at.main);
            })
            .map_err(|error| error.to_string())?;
        let leases = backend.leases().map_err(|error| error.to_string())?.len() as u64;
        let store = crate::mvcc::KvStore::open(backend).map_err(|error| error.to_string())?;
        let hash = store.hash_kv(0).map_err(|error| error.to_string())?;
        Ok(SnapshotStatus {
            hash,
            revision,
            total_key: revisions + leases,
            total_size: std::fs::metadata(path)
                .map_err(|error| error.to_string())?
                .len(),
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    status
}

/// `snapshot restore` of an oxcd backend file: the file becomes the new member's backend,
/// without the member list and applied index of the member it came from.
fn restore_redb(path: &Path, config: &Config) -> Result<RestoreSummary, String> {
    use prost::Message as _;
    restore_into_place(config, |partial| {
        let target = partial.backend_path();
        std::fs::create_dir_all(target.parent().expect("the backend has a directory"))
            .map_err(|error| error.to_string())?;
        std::fs::copy(path, &target)
            .map_err(|error| format!("copying {}: {error}", path.display()))?;
        let mut backend =
            Backend::open(Arc::new(StdDisk), &target).map_err(|error| error.to_string())?;
        let error = |error: crate::mvcc::BackendError| error.to_string();
        let mut summary = RestoreSummary {
            revisions: 0,
            revision: 0,
            compacted: backend.compact_revision().map_err(error)?,
            leases: backend.leases().map_err(error)?.len(),
            users: 0,
            roles: 0,
        };
        backend
            .for_each_revision(|at, _, _| {
                summary.revisions += 1;
                summary.revision = summary.revision.max(at.main);
            })
            .map_err(error)?;
        let auth = crate::proto::oxcdpb::SavedAuth::decode(&backend.auth().map_err(error)?[..])
            .map_err(|error| {
                format!(
                    "{}: its auth state does not decode: {error}",
                    path.display()
                )
            })?;
        summary.users = auth.users.len();
        summary.roles = auth.roles.len();
        backend.set_consistent_index(0);
        backend.set_members(crate::proto::oxcdpb::SavedMembers::default().encode_to_vec());
        backend.commit().map_err(error)?;
        Ok(summary)
    })
}

/// What a backup of a data dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The Raft index the backend was applied through.
    pub applied_index: u64,
    /// The backend file's size in bytes.
    pub bytes: u64,
}

/// Copies the data dir `data_dir` (its WAL in `wal_dir` if given) of a stopped member to
/// `backup_dir` (which must not exist), as `ETCDCTL_API=2 etcdctl backup` does: the copy
/// keeps every key (v3 and v2), lease, user and role, but not the member list nor the
/// log, so a member started on it begins a new cluster from its flags (one member by
/// default), as `snapshot restore` makes it.
///
/// A member stopped before it applied everything its log committed (killed, not
/// stopped) is refused: its backend alone would lose those entries.
pub fn backup_data_dir(
    data_dir: &Path,
    wal_dir: Option<&Path>,
    backup_dir: &Path,
) -> Result<BackupSummary, String> {
    use clap::Parser as _;
    use prost::Message as _;
    let defaults = Config::try_parse_from(["oxcd"]).map_err(|error| error.to_string())?;
    let source = Config {
        data_dir: Some(data_dir.to_path_buf()),
        wal_dir: wal_dir.map(Path::to_path_buf),
        ..defaults.clone()
    };
    let backend_path = source.backend_path();
    if !backend_path.exists() {
        return Err(format!(
            "{} holds no member data (no {})",
            data_dir.display(),
            backend_path.display()
        ));
    }
    if backup_dir.exists() {
        return Err(format!(
            "backup-dir {:?} exists",
            backup_dir.display().to_string()
        ));
    }
    let building = backup_dir.with_extension("backing-up");
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .map_err(|error| format!("removing {}: {error}", building.display()))?;
    }
    let target = Config {
        data_dir: Some(building.clone()),
        ..defaults.clone()
    };
    let copied = (|| {
        let disk: Arc<dyn Disk> = Arc::new(StdDisk);
        // The log is read from a copy: opening a WAL may cut a torn tail, which must not
        // happen to the member's own.
        let scratch = building.join("source-wal");
        copy_dir(&source.wal_dir(), &scratch)?;
        let (_, recovered) = crate::wal::Wal::open(disk.clone(), &scratch, Default::default())
            .map_err(|error| format!("reading the WAL: {error}"))?;
        let committed = recovered.hard_state.map_or(0, |state| state.commit);
        std::fs::remove_dir_all(&scratch).map_err(|error| error.to_string())?;

        let copy_path = target.backend_path();
        std::fs::create_dir_all(copy_path.parent().expect("the backend has a directory"))
            .map_err(|error| error.to_string())?;
        std::fs::copy(&backend_path, &copy_path)
            .map_err(|error| format!("copying {}: {error}", backend_path.display()))?;
        let mut backend = Backend::open(disk, &copy_path).map_err(|error| error.to_string())?;
        let applied_index = backend
            .consistent_index()
            .map_err(|error| error.to_string())?;
        if applied_index < committed {
            return Err(format!(
                "the member's backend holds the log through index {applied_index} but its log \
                 committed through {committed}: it did not stop cleanly; start it once and stop \
                 it (or save a snapshot of a running member with `oxctl snapshot save`)"
            ));
        }
        // The new cluster's log starts again from its first entries; the members are the
        // new cluster's flags'.
        backend.set_consistent_index(0);
        backend.set_members(crate::proto::oxcdpb::SavedMembers::default().encode_to_vec());
        backend.commit().map_err(|error| error.to_string())?;
        Ok(BackupSummary {
            applied_index,
            bytes: backend.size_bytes(),
        })
    })();
    let summary = match copied {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(error);
        }
    };
    std::fs::rename(&building, backup_dir)
        .map_err(|error| format!("moving the backup into place: {error}"))?;
    Ok(summary)
}

/// Copies the files of `from` into a new directory `to` (no subdirectories: a WAL has none).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|error| format!("{}: {error}", to.display()))?;
    let entries =
        std::fs::read_dir(from).map_err(|error| format!("{}: {error}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| error.to_string())?;
        if entry
            .file_type()
            .map_err(|error| error.to_string())?
            .is_file()
        {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .map_err(|error| format!("copying {}: {error}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// What `oxctl inspect` found in a stopped member's data dir.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// WAL segment names and sizes, in order.
    pub wal_segments: Vec<(String, u64)>,
    /// Files of the snapshot directory (Raft snapshots, backend images, the backend).
    pub snap_files: Vec<(String, u64)>,
    /// The member and cluster the log belongs to.
    pub member_id: u64,
    pub cluster_id: u64,
    /// The newest Raft snapshot: (index, term).
    pub snapshot: Option<(u64, u64)>,
    /// The last hard state: (term, vote, commit).
    pub hard_state: Option<(u64, u64, u64)>,
    /// Entries in the log and the (index, term) of its first and last.
    pub entries: usize,
    pub first_entry: Option<(u64, u64)>,
    pub last_entry: Option<(u64, u64)>,
    /// The backend: size, the log index applied to it, its newest and compacted revision,
    /// revisions and live keys stored, leases, members.
    pub backend_bytes: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub revisions: u64,
    pub keys: u64,
    pub leases: usize,
    pub members: Vec<(u64, String)>,
    /// Every way the parts disagree; empty when the data dir is consistent.
    pub problems: Vec<String>,
}

/// Reads a stopped member's data dir without changing it (the log, the snapshots and the
/// backend are read from copies in a scratch directory, since opening a log cuts a torn
/// tail and opening a backend may repair it) and checks that its parts agree: the log
/// reads whole, the newest snapshot reads whole, the commit index lies within the log, the
/// backend applied no more than was committed and no less than the snapshot holds, and the
/// log continues from the snapshot without a gap.
pub fn inspect_data_dir(data_dir: &Path, wal_dir: Option<&Path>) -> Result<Inspection, String> {
    use clap::Parser as _;
    use prost::Message as _;
    let defaults = Config::try_parse_from(["oxcd"]).map_err(|error| error.to_string())?;
    let config = Config {
        data_dir: Some(data_dir.to_path_buf()),
        wal_dir: wal_dir.map(Path::to_path_buf),
        ..defaults
    };
    let backend_path = config.backend_path();
    if !backend_path.exists() && !config.wal_dir().exists() {
        return Err(format!("{} holds no member data", data_dir.display()));
    }
    let list = |dir: &Path| -> Result<Vec<(String, u64)>, String> {
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries {
                let entry = entry.map_err(|error| error.to_string())?;
                let size = entry.metadata().map_err(|error| error.to_string())?.len();
                files.push((entry.file_name().to_string_lossy().into_owned(), size));
            }
        }
        files.sort();
        Ok(files)
    };
    let mut found = Inspection {
        wal_segments: list(&config.wal_dir())?,
        snap_files: list(&config.snap_dir())?,
        ..Inspection::default()
    };
    let scratch = tempfile_dir(data_dir)?;
    let result = (|| {
        let disk: Arc<dyn Disk> = Arc::new(StdDisk);
        let wal_copy = scratch.join("wal");
        copy_dir(&config.wal_dir(), &wal_copy)?;
        match crate::wal::Wal::open(disk.clone(), &wal_copy, Default::default()) {
            Ok((_, recovered)) => {
                found.member_id = recovered.metadata.member_id;
                found.cluster_id = recovered.metadata.cluster_id;
                found.hard_state = recovered
                    .hard_state
                    .map(|state| (state.term, state.vote, state.commit));
                found.entries = recovered.entries.len();
                found.first_entry = recovered.entries.first().map(|e| (e.index, e.term));
                found.last_entry = recovered.entries.last().map(|e| (e.index, e.term));
            }
            Err(error) => found.problems.push(format!(
                "the WAL does not read: {}",
                // Named by the member's own files, not the scratch copies.
                error.to_string().replace(
                    &wal_copy.display().to_string(),
                    &config.wal_dir().display().to_string()
                )
            )),
        }
        let snap_copy = scratch.join("snap");
        std::fs::create_dir_all(&snap_copy).map_err(|error| error.to_string())?;
        for (name, _) in &found.snap_files {
            if name.ends_with(".snap") {
                std::fs::copy(config.snap_dir().join(name), snap_copy.join(name))
                    .map_err(|error| format!("copying {name}: {error}"))?;
            }
        }
        match crate::wal::SnapshotFiles::open(disk.clone(), &snap_copy, usize::MAX)
            .and_then(|files| files.load_newest())
        {
            Ok(snapshot) => {
                found.snapshot = snapshot
                    .and_then(|s| s.metadata)
                    .map(|metadata| (metadata.index, metadata.term));
            }
            Err(error) => found.problems.push(format!(
                "the newest snapshot does not read: {}",
                error.to_string().replace(
                    &snap_copy.display().to_string(),
                    &config.snap_dir().display().to_string()
                )
            )),
        }
        if backend_path.exists() {
            let copy = scratch.join("db");
            std::fs::copy(&backend_path, &copy)
                .map_err(|error| format!("copying {}: {error}", backend_path.display()))?;
            match Backend::open(disk, &copy) {
                Ok(backend) => {
                    let error = |error: crate::mvcc::BackendError| error.to_string();
                    found.backend_bytes = std::fs::metadata(&backend_path)
                        .map(|m| m.len())
                        .unwrap_or_default();
                    found.applied_index = backend.consistent_index().map_err(error)?;
                    found.compact_revision = backend.compact_revision().map_err(error)?;
                    let mut live = std::collections::HashMap::new();
                    backend
                        .for_each_revision(|revision, tombstone, kv| {
                            found.revisions += 1;
                            found.revision = found.revision.max(revision.main);
                            live.insert(kv.key.clone(), !tombstone);
                        })
                        .map_err(error)?;
                    found.keys = live.values().filter(|alive| **alive).count() as u64;
                    found.leases = backend.leases().map_err(error)?.len();
                    let members = backend.members().map_err(error)?;
                    if let Ok(saved) = crate::proto::oxcdpb::SavedMembers::decode(&members[..]) {
                        found.members = saved.members.into_iter().map(|m| (m.id, m.name)).collect();
                    }
                }
                Err(error) => found
                    .problems
                    .push(format!("the backend does not open: {error}")),
            }
        } else {
            found
                .problems
                .push(format!("no backend at {}", backend_path.display()));
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    check_inspection(&mut found);
    Ok(found)
}

/// The disagreements between the parts an inspection read.
fn check_inspection(found: &mut Inspection) {
    let snapshot_index = found.snapshot.map_or(0, |(index, _)| index);
    let last_index = found
        .last_entry
        .map_or(snapshot_index, |(index, _)| index.max(snapshot_index));
    if let Some((_, _, commit)) = found.hard_state {
        if commit > last_index {
            found.problems.push(format!(
                "the hard state commits index {commit}, past the log's last index {last_index}"
            ));
        }
        if found.applied_index > commit && found.backend_bytes > 0 {
            found.problems.push(format!(
                "the backend applied index {}, past the committed index {commit}",
                found.applied_index
            ));
        }
    }
    if found.backend_bytes > 0 && found.applied_index < snapshot_index {
        found.problems.push(format!(
            "the backend applied index {}, behind the newest snapshot's index {snapshot_index}",
            found.applied_index
        ));
    }
    if let Some((first, _)) = found.first_entry {
        if snapshot_index > 0 && first > snapshot_index + 1 {
            found.problems.push(format!(
                "the log starts at index {first}: entries {}..{} after the snapshot are missing",
                snapshot_index + 1,
                first - 1
            ));
        } else if snapshot_index == 0 && first > 1 {
            found.problems.push(format!(
                "the log starts at index {first} with no snapshot before it"
            ));
        }
    }
    if found.compact_revision > found.revision && found.revision > 0 {
        found.problems.push(format!(
            "the backend is compacted at {}, past its newest revision {}",
            found.compact_revision, found.revision
        ));
    }
}

/// A new scratch directory beside nothing the member owns.
fn tempfile_dir(data_dir: &Path) -> Result<std::path::PathBuf, String> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("oxctl-inspect-{}-{attempt}", std::process::id()));
        if std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    Err(format!(
        "no scratch directory for inspecting {}",
        data_dir.display()
    ))
}
