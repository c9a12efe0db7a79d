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
    // Built under a temporary name and renamed into place once complete, so a failed
    // restore leaves no data dir a member would start from.
    let building = data_dir.with_extension("restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .map_err(|error| format!("removing {}: {error}", building.display()))?;
    }
    let partial = Config {
        data_dir: Some(building.clone()),
        ..config.clone()
    };
    let restored = (|| {
        let disk: Arc<dyn Disk> = Arc::new(StdDisk);
        let mut backend =
            Backend::open_with_cache(disk, &partial.backend_path(), Some(RESTORE_CACHE_BYTES))
                .map_err(|error| error.to_string())?;
        etcd_image::restore(&mut reader, &mut backend, progress).map_err(|error| error.to_string())
    })();
    let restored = match restored {
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
