//! redb's storage over a [`DiskFile`], so that the MVCC backend runs on any [`Disk`]
//! (`StdDisk` in production, `SimDisk` in simulation and crash tests).
//!
//! redb's own crash safety rests on `sync_data` being a barrier: everything written before
//! it is durable when it returns. Both disks give exactly that, so redb's commit protocol
//! (Durability::Immediate) is exercised unchanged against simulated power cuts.
//!
//! redb's first write of a new file is not atomic: a crash while it initialises the file
//! leaves one that it refuses to open ("not a redb database"). Create the database under a
//! temporary name, drop it, rename it into place and `sync_dir` the directory (the tests
//! below show how); only then does a crash leave either no database or a whole one.
//!
//! [`Disk`]: super::Disk

use std::io;

use super::DiskFile;

/// A `redb::StorageBackend` over a [`DiskFile`].
///
/// Locking is not implemented (every lock method reports unsupported), which redb accepts
/// in its default single-writer mode; one member owns its data directory.
#[derive(Debug)]
pub struct DiskBackend {
    file: Box<dyn DiskFile>,
}

impl DiskBackend {
    pub fn new(file: Box<dyn DiskFile>) -> Self {
        Self { file }
    }
}

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_exact_at(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_at(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    use super::*;
    use crate::io::{Disk, SimDisk, StdDisk};

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");

    /// Opens the database at `path`, creating it first under a temporary name: redb's
    /// first write of a new file is not atomic, so a crash while creating it would leave a
    /// file that is not a database. The rename makes it appear whole or not at all.
    fn open_db(disk: &dyn Disk, path: &Path) -> Result<Database, redb::Error> {
        let dir = path.parent().expect("path has a parent");
        if !disk.exists(path) {
            let tmp = path.with_extension("tmp");
            if disk.exists(&tmp) {
                disk.remove(&tmp)?;
            }
            let file = disk.open(&tmp, true)?;
            drop(Database::builder().create_with_backend(DiskBackend::new(file))?);
            disk.rename(&tmp, path)?;
            disk.sync_dir(dir)?;
        }
        let file = disk.open(path, false)?;
        Ok(Database::builder().create_with_backend(DiskBackend::new(file))?)
    }

    fn put(db: &Database, key: u64, value: &[u8]) -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(TABLE)?;
            table.insert(key, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every key of the table, or `None` if it does not exist yet.
    fn keys(db: &Database) -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
        let txn = db.begin_read()?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut out = Vec::new();
        for row in table.range::<u64>(..)? {
            let (key, value) = row?;
            out.push((key.value(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn value(key: u64) -> Vec<u8> {
        vec![key as u8; 100 + (key as usize * 37) % 3000]
    }

    #[test]
    fn committed_data_survives_a_crash() {
        let disk = SimDisk::new(11);
        let dir = Path::new("/data");
        disk.create_dir_all(dir).expect("mkdir");
        let path = dir.join("db");
        let db = open_db(&disk, &path).expect("open");
        for key in 0..20 {
            put(&db, key, &value(key)).expect("put");
        }
        drop(db);
        disk.crash();
        let db = open_db(&disk, &path).expect("reopen");
        let rows = keys(&db).expect("read");
        assert_eq!(rows.len(), 20);
        for (key, data) in rows {
            assert_eq!(data, value(key));
        }
    }

    /// Crash at every sync point of a sequence of commits: the database must reopen, and
    /// hold exactly the commits that returned, plus at most the one in flight.
    #[test]
    fn crash_at_every_sync_point_of_commits() {
        const COMMITS: u64 = 4;
        let dir = Path::new("/data");
        let path = dir.join("db");
        let dry = SimDisk::new(0);
        dry.create_dir_all(dir).expect("mkdir");
        {
            let db = open_db(&dry, &path).expect("open");
            for key in 0..COMMITS {
                put(&db, key, &value(key)).expect("put");
            }
        }
        let total_syncs = dry.sync_count();
        assert!(total_syncs >= COMMITS, "{total_syncs} syncs");

        for halt_at in 0..=total_syncs {
            for seed in 0..6 {
                let disk = SimDisk::new(seed * 1000 + halt_at);
                disk.create_dir_all(dir).expect("mkdir");
                disk.set_halt_after_syncs(Some(halt_at));
                let mut committed = 0;
                if let Ok(db) = open_db(&disk, &path) {
                    for key in 0..COMMITS {
                        if put(&db, key, &value(key)).is_err() {
                            break;
                        }
                        committed += 1;
                    }
                }
                disk.crash();
                let db = open_db(&disk, &path).unwrap_or_else(|error| {
                    panic!("halt at {halt_at}, seed {seed}: reopen failed: {error}")
                });
                let rows = keys(&db).expect("read");
                assert!(
                    rows.len() as u64 == committed || rows.len() as u64 == committed + 1,
                    "halt at {halt_at}, seed {seed}: {} rows, {committed} commits returned",
                    rows.len()
                );
                for (index, (key, data)) in rows.iter().enumerate() {
                    assert_eq!(*key, index as u64);
                    assert_eq!(*data, value(*key));
                }
                // The reopened database takes new commits.
                put(&db, 99, b"after").expect("put after reopen");
            }
        }
    }

    #[test]
    fn runs_on_the_real_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let db = open_db(&StdDisk, &path).expect("open");
            put(&db, 1, b"one").expect("put");
        }
        let db = open_db(&StdDisk, &path).expect("reopen");
        assert_eq!(keys(&db).expect("read"), vec![(1, b"one".to_vec())]);
    }
}
