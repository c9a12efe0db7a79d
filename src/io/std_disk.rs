//! [`Disk`] over the real file system, through `std::fs`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{Disk, DiskFile};

/// The production disk: `std::fs`, fdatasync for files, fsync for directories.
///
/// Preallocation extends the file with `set_len`, which reserves the size but (on most file
/// systems) not the blocks; it still spares fdatasync a size update on every append.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdDisk;

impl Disk for StdDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Find the first ancestor that exists, create the missing ones, then fsync each
        // parent so that the new directories survive a power cut.
        let mut missing = Vec::new();
        let mut current = Some(path);
        while let Some(dir) = current {
            if dir.as_os_str().is_empty() || dir.exists() {
                break;
            }
            missing.push(dir);
            current = dir.parent();
        }
        fs::create_dir_all(path)?;
        for dir in missing.iter().rev() {
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                // Not one of ours: every name oxcd writes is ASCII.
                Err(_) => continue,
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl DiskFile for StdFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_names_and_positioned_io() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = StdDisk;
        let nested = dir.path().join("a/b");
        disk.create_dir_all(&nested).expect("mkdir");
        assert!(disk.exists(&nested));

        let path = nested.join("f");
        let file = disk.open(&path, true).expect("create");
        file.write_at(4, b"tail").expect("write");
        assert_eq!(file.len().expect("len"), 8);
        assert_eq!(file.append(b"!").expect("append"), 8);
        let mut buf = [0xff; 9];
        file.read_exact_at(0, &mut buf).expect("read");
        assert_eq!(&buf, b"\0\0\0\0tail!");
        file.sync_data().expect("sync");
        file.preallocate(100).expect("preallocate");
        assert_eq!(file.len().expect("len"), 100);
        disk.sync_dir(&nested).expect("sync dir");

        disk.rename(&path, &nested.join("g")).expect("rename");
        assert_eq!(disk.list(&nested).expect("list"), vec!["g".to_string()]);
        assert_eq!(
            disk.read_all(&nested.join("g")).expect("read all").len(),
            100
        );
        disk.remove(&nested.join("g")).expect("remove");
        assert!(disk.list(&nested).expect("list").is_empty());
        assert!(disk.open(&path, false).is_err());
    }
}
