//! [`SimDisk`]: an in-memory disk that loses what a power cut loses.
//!
//! # Model
//!
//! - A file is an inode with two images: `volatile` (what reads see) and `durable` (what
//!   survives a crash), plus the queue of changes (writes, length changes) made since the
//!   last `sync_data`. `sync_data` applies the queue to the durable image.
//! - Names live in two maps: the volatile namespace that `open`, `rename` and `remove`
//!   change, and the durable namespace that `sync_dir(parent)` copies the parent's entries
//!   into. Directories are durable as soon as they are made (`StdDisk` fsyncs their
//!   parents).
//! - [`SimDisk::crash`] rebuilds every file from its durable image plus, for each file and
//!   chosen by the seeded RNG, nothing, or an in-order prefix of its unsynced changes whose
//!   last write may be torn: a prefix of its 512-byte sectors kept, the rest left as they
//!   were or, where the write extended the file, zeros. Handles opened before the crash fail from then on.
//! - A long queue of unsynced changes is written back, oldest first, as the kernel would:
//!   data may become durable without a sync, never the other way round.
//!
//! Faults ([`FaultConfig`]) come from the same RNG: EIO on write (nothing written), EIO on
//! sync (the unsynced changes are dropped from what a crash can keep but still served by
//! reads: the page-cache behaviour that makes a failed fsync unrecoverable), and ENOSPC
//! once the files would outgrow a byte budget.
//!
//! For crash-point tests, [`SimDisk::set_halt_after_syncs`] stops the disk at the n-th sync:
//! that sync and every later call fail, as if the process had died there, and a following
//! `crash()` shows what the disk holds at that point.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Disk, DiskFile, SECTOR_BYTES};

/// Unsynced changes kept per file before the oldest is written back on its own.
const PENDING_CHANGES_MAX: usize = 4096;

/// Errno values, so that the errors look like the kernel's.
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// Which faults a [`SimDisk`] injects. The default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability (0..=1) that a write fails with EIO, writing nothing.
    pub write_error_probability: f64,
    /// Probability (0..=1) that `sync_data` or `sync_dir` fails with EIO. A failed
    /// `sync_data` loses the file's unsynced changes at the next crash.
    pub sync_error_probability: f64,
    /// Total bytes all files may hold; a write or extension past it fails with ENOSPC.
    pub space_bytes: Option<u64>,
    /// Inject faults only for paths under this directory (every path when `None`).
    pub only_under: Option<PathBuf>,
}

/// An in-memory, crashable disk. Clones share the same disk.
#[derive(Clone)]
pub struct SimDisk {
    // One mutex over the whole disk: operations are short, and a crash must see every file
    // and both namespaces at one instant, which per-file locks could not give.
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimDisk")
            .field("files", &state.names.len())
            .field("generation", &state.generation)
            .field("syncs", &state.syncs)
            .finish()
    }
}

impl SimDisk {
    /// An empty disk whose tears and faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: SmallRng::seed_from_u64(seed),
                generation: 0,
                dirs: BTreeSet::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                inodes: HashMap::new(),
                next_inode: 0,
                faults: FaultConfig::default(),
                syncs: 0,
                halt_after_syncs: None,
                halted: false,
            })),
        }
    }

    /// A power cut: keeps what was synced, maybe a torn part of what was not, and
    /// invalidates every open handle. Clears a halt.
    pub fn crash(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        state.generation += 1;
        state.halted = false;
        state.halt_after_syncs = None;
        state.names = state.durable_names.clone();
        let mut ids: Vec<u64> = state.inodes.keys().copied().collect();
        // Sorted so that the RNG draws are the same for the same seed.
        ids.sort_unstable();
        for id in ids {
            let Some(inode) = state.inodes.get_mut(&id) else {
                continue;
            };
            inode.handles = 0;
            let mut image = std::mem::take(&mut inode.durable);
            let pending = std::mem::take(&mut inode.pending);
            if !pending.is_empty() && !state.rng.random_bool(0.5) {
                let kept = state.rng.random_range(0..=pending.len());
                for change in pending.iter().take(kept) {
                    image.apply(change);
                }
                if let Some(Change::Write { offset, data }) = pending.get(kept) {
                    if state.rng.random_bool(0.5) {
                        tear(&mut state.rng, &mut image, *offset, data);
                    }
                }
            }
            inode.volatile = image.clone();
            inode.durable = image;
        }
        state.collect_garbage();
    }

    /// A power cut at this instant that the process does not survive: what was not synced
    /// is lost as by [`SimDisk::crash`], and every later call fails until the next
    /// [`SimDisk::crash`] (the machine coming back), so that code still running on the
    /// dying process cannot reach the disk.
    pub fn power_off(&self) {
        self.crash();
        self.lock().halted = true;
    }

    /// Sets the faults to inject from now on.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults = faults;
    }

    /// Halts the disk when `syncs` syncs (`sync_data` and `sync_dir`) have succeeded: the
    /// next sync and every later call fail until [`SimDisk::crash`]. `None` clears it.
    pub fn set_halt_after_syncs(&self, syncs: Option<u64>) {
        let mut state = self.lock();
        state.halt_after_syncs = syncs.map(|count| state.syncs + count);
        state.halted = false;
    }

    /// Whether a halt set by [`SimDisk::set_halt_after_syncs`] has been reached.
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// How many syncs have succeeded since the disk was made.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a failed assertion in a test) leaves the state
        // consistent: every operation mutates only after its checks.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes a torn version of `data` at `offset`: a prefix of its sectors, and for the rest
/// either nothing or, where the write extended the file, zeros. A sector that already held
/// data keeps its old contents or gets the new ones, never zeros: drives write a sector
/// atomically, and only newly allocated space can read back as zeros.
fn tear(rng: &mut SmallRng, image: &mut Image, offset: u64, data: &[u8]) {
    let end = offset + data.len() as u64;
    let mut cuts = vec![offset];
    let mut boundary = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
    while boundary < end {
        cuts.push(boundary);
        boundary += SECTOR_BYTES;
    }
    let cut = cuts[rng.random_range(0..cuts.len())];
    let old_len = image.len;
    image.write(offset, &data[..(cut - offset) as usize]);
    let zeros_from = cut.max(old_len);
    if zeros_from < end && rng.random_bool(0.5) {
        image.write(zeros_from, &vec![0; (end - zeros_from) as usize]);
    }
}

struct State {
    rng: SmallRng,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    dirs: BTreeSet<PathBuf>,
    /// The names that `open`, `rename` and `remove` see.
    names: BTreeMap<PathBuf, u64>,
    /// The names a crash keeps. Invariant: changes only in `sync_dir` and `crash`.
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    faults: FaultConfig,
    syncs: u64,
    halt_after_syncs: Option<u64>,
    halted: bool,
}

impl State {
    fn check_running(&self) -> io::Result<()> {
        if self.halted {
            return Err(io::Error::other("simulated crash: the disk is halted"));
        }
        Ok(())
    }

    fn check_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.dirs.contains(parent) => {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no directory {}", parent.display()),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts a sync, or halts the disk if this is the sync it must stop at.
    fn enter_sync(&mut self) -> io::Result<()> {
        self.check_running()?;
        if self.halt_after_syncs == Some(self.syncs) {
            self.halted = true;
            return Err(io::Error::other("simulated crash at a sync point"));
        }
        Ok(())
    }

    fn faults_apply(&self, path: &Path) -> bool {
        match &self.faults.only_under {
            Some(dir) => path.starts_with(dir),
            None => true,
        }
    }

    fn draw_fault(&mut self, probability: f64, path: &Path) -> bool {
        probability > 0.0 && self.faults_apply(path) && self.rng.random_bool(probability.min(1.0))
    }

    fn check_space(&self, inode: u64, new_len: u64, path: &Path) -> io::Result<()> {
        let Some(budget) = self.faults.space_bytes else {
            return Ok(());
        };
        if !self.faults_apply(path) {
            return Ok(());
        }
        let mut total = 0u64;
        for (id, node) in &self.inodes {
            total += if *id == inode {
                node.volatile.len.max(new_len)
            } else {
                node.volatile.len
            };
        }
        if total > budget {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    fn inode(&mut self, id: u64, generation: u64) -> io::Result<&mut Inode> {
        self.check_running()?;
        if generation != self.generation {
            return Err(io::Error::other(
                "stale handle: opened before a simulated crash",
            ));
        }
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("stale handle: file is gone"))
    }

    /// Drops inodes that no name and no handle refers to.
    fn collect_garbage(&mut self) {
        let referenced: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes
            .retain(|id, inode| inode.handles > 0 || referenced.contains(id));
    }
}

#[derive(Default)]
struct Inode {
    volatile: Image,
    durable: Image,
    /// Changes since the last sync, oldest first. Invariant: applying them to `durable`
    /// gives `volatile`, except after a failed sync, which drops them.
    pending: VecDeque<Change>,
    /// Open handles of the current generation.
    handles: usize,
}

impl Inode {
    fn record(&mut self, change: Change) {
        self.volatile.apply(&change);
        self.pending.push_back(change);
        while self.pending.len() > PENDING_CHANGES_MAX {
            if let Some(oldest) = self.pending.pop_front() {
                self.durable.apply(&oldest);
            }
        }
    }
}

enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// File contents. Bytes past `data.len()` up to `len` are zeros, so a preallocated file
/// costs nothing until it is written.
#[derive(Clone, Default)]
struct Image {
    data: Vec<u8>,
    /// Invariant: `data.len() as u64 <= len`.
    len: u64,
}

impl Image {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Write { offset, data } => self.write(*offset, data),
            Change::SetLen(len) => self.set_len(*len),
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        let end = start + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        self.len = self.len.max(end as u64);
    }

    fn set_len(&mut self, len: u64) {
        if (len as usize) < self.data.len() {
            self.data.truncate(len as usize);
        }
        self.len = len;
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let count = buf.len().min((self.len - offset) as usize);
        let start = (offset as usize).min(self.data.len());
        let stored = (self.data.len() - start).min(count);
        buf[..stored].copy_from_slice(&self.data[start..start + stored]);
        buf[stored..count].fill(0);
        count
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_running()?;
        for dir in path.ancestors() {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if state.names.contains_key(dir) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", dir.display()),
                ));
            }
            state.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.names.contains_key(path) || state.dirs.contains(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_running()?;
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", dir.display()),
            ));
        }
        let mut names: Vec<String> = state
            .names
            .keys()
            .map(PathBuf::as_path)
            .chain(state.dirs.iter().map(PathBuf::as_path))
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        state.check_running()?;
        state.check_dir(path)?;
        if state.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let id = match state.names.get(path) {
            Some(id) => *id,
            None if create => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.names.insert(path.to_path_buf(), id);
                id
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no file {}", path.display()),
                ))
            }
        };
        let generation = state.generation;
        state.inode(id, generation)?.handles += 1;
        Ok(Box::new(SimFile {
            disk: self.clone(),
            inode: id,
            generation,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_running()?;
        state.check_dir(to)?;
        let id = state.names.remove(from).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", from.display()),
            )
        })?;
        state.names.insert(to.to_path_buf(), id);
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_running()?;
        if state.names.remove(path).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            ));
        }
        state.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.enter_sync()?;
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", dir.display()),
            ));
        }
        let probability = state.faults.sync_error_probability;
        if state.draw_fault(probability, dir) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_names.retain(|path, _| !in_dir(path));
        let entries: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        state.durable_names.extend(entries);
        state.syncs += 1;
        state.collect_garbage();
        Ok(())
    }
}

/// A handle on a [`SimDisk`] file.
struct SimFile {
    disk: SimDisk,
    inode: u64,
    /// The disk generation this handle belongs to; a crash ends it.
    generation: u64,
    /// The name it was opened by, for [`FaultConfig::only_under`].
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = self.disk.lock();
        if state.generation == self.generation {
            if let Some(inode) = state.inodes.get_mut(&self.inode) {
                inode.handles = inode.handles.saturating_sub(1);
            }
            state.collect_garbage();
        }
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.disk.lock();
        Ok(state
            .inode(self.inode, self.generation)?
            .volatile
            .read(offset, buf))
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.inode(self.inode, self.generation)?;
        let probability = state.faults.write_error_probability;
        if state.draw_fault(probability, &self.path) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        state.check_space(self.inode, offset + data.len() as u64, &self.path)?;
        state
            .inode(self.inode, self.generation)?
            .record(Change::Write {
                offset,
                data: data.to_vec(),
            });
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.disk.lock();
        Ok(state.inode(self.inode, self.generation)?.volatile.len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.inode(self.inode, self.generation)?;
        state.check_space(self.inode, len, &self.path)?;
        state
            .inode(self.inode, self.generation)?
            .record(Change::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.inode(self.inode, self.generation)?;
        state.enter_sync()?;
        let probability = state.faults.sync_error_probability;
        let failed = state.draw_fault(probability, &self.path);
        let inode = state.inode(self.inode, self.generation)?;
        if failed {
            // As Linux does after a writeback error: the dirty pages are marked clean, so
            // reads still return the new data but a crash will not keep it.
            inode.pending.clear();
            return Err(io::Error::from_raw_os_error(EIO));
        }
        for change in std::mem::take(&mut inode.pending) {
            inode.durable.apply(&change);
        }
        state.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(disk: &SimDisk, path: &str) -> Vec<u8> {
        disk.read_all(Path::new(path)).expect("read")
    }

    #[test]
    fn unsynced_name_is_lost_synced_name_kept() {
        for seed in 0..20 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all(Path::new("/d")).expect("mkdir");
            let file = disk.open(Path::new("/d/a"), true).expect("create");
            file.write_at(0, b"hello").expect("write");
            file.sync_data().expect("sync");
            disk.crash();
            assert!(!disk.exists(Path::new("/d/a")), "seed {seed}");

            let file = disk.open(Path::new("/d/a"), true).expect("create");
            file.write_at(0, b"hello").expect("write");
            file.sync_data().expect("sync");
            disk.sync_dir(Path::new("/d")).expect("sync dir");
            drop(file);
            disk.crash();
            assert_eq!(read_all(&disk, "/d/a"), b"hello", "seed {seed}");
        }
    }

    #[test]
    fn rename_and_remove_need_dir_sync() {
        let disk = SimDisk::new(1);
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/a"), true).expect("create");
        file.write_at(0, b"x").expect("write");
        file.sync_data().expect("sync");
        disk.sync_dir(Path::new("/d")).expect("sync dir");
        disk.rename(Path::new("/d/a"), Path::new("/d/b"))
            .expect("rename");
        assert_eq!(disk.list(Path::new("/d")).expect("list"), vec!["b"]);
        disk.crash();
        assert_eq!(disk.list(Path::new("/d")).expect("list"), vec!["a"]);

        disk.remove(Path::new("/d/a")).expect("remove");
        disk.crash();
        assert_eq!(disk.list(Path::new("/d")).expect("list"), vec!["a"]);
        disk.remove(Path::new("/d/a")).expect("remove");
        disk.sync_dir(Path::new("/d")).expect("sync dir");
        disk.crash();
        assert!(disk.list(Path::new("/d")).expect("list").is_empty());
    }

    #[test]
    fn crash_keeps_synced_data_and_a_sector_prefix_of_the_rest() {
        let synced = vec![7u8; 1000];
        let unsynced: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all(Path::new("/d")).expect("mkdir");
            let file = disk.open(Path::new("/d/f"), true).expect("create");
            disk.sync_dir(Path::new("/d")).expect("sync dir");
            file.write_at(0, &synced).expect("write");
            file.sync_data().expect("sync");
            file.write_at(1000, &unsynced).expect("write");
            disk.crash();
            assert!(file.len().is_err(), "stale handle must fail");
            let image = read_all(&disk, "/d/f");
            assert_eq!(&image[..1000], &synced[..], "seed {seed}");
            let rest = &image[1000..];
            // Kept: a prefix of the write ending on a sector boundary (or the whole write).
            let kept = rest
                .iter()
                .zip(&unsynced)
                .take_while(|(a, b)| a == b)
                .count();
            assert!(
                kept == unsynced.len() || (1000 + kept) % 512 == 0 || kept == 0,
                "seed {seed}: kept {kept}"
            );
            assert!(rest[kept..].iter().all(|byte| *byte == 0), "seed {seed}");
            outcomes.insert((kept, rest.len()));
        }
        assert!(outcomes.len() > 3, "tears should vary: {outcomes:?}");
    }

    #[test]
    fn failed_sync_drops_unsynced_data_at_crash() {
        let disk = SimDisk::new(3);
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), true).expect("create");
        disk.sync_dir(Path::new("/d")).expect("sync dir");
        file.write_at(0, b"abc").expect("write");
        disk.set_faults(FaultConfig {
            sync_error_probability: 1.0,
            ..FaultConfig::default()
        });
        let error = file.sync_data().expect_err("sync must fail");
        assert_eq!(error.raw_os_error(), Some(EIO));
        // Still readable from the "page cache"…
        let mut buf = [0; 3];
        file.read_exact_at(0, &mut buf).expect("read");
        assert_eq!(&buf, b"abc");
        // …but gone after a crash.
        disk.set_faults(FaultConfig::default());
        disk.crash();
        assert!(read_all(&disk, "/d/f").is_empty());
    }

    #[test]
    fn write_errors_and_space_budget() {
        let disk = SimDisk::new(4);
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        disk.create_dir_all(Path::new("/other")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), true).expect("create");
        disk.set_faults(FaultConfig {
            space_bytes: Some(100),
            ..FaultConfig::default()
        });
        file.write_at(0, &[1; 100]).expect("fits");
        let error = file.write_at(100, &[1]).expect_err("full");
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
        assert!(file.set_len(200).is_err());
        file.write_at(50, &[2; 50]).expect("overwrite fits");

        disk.set_faults(FaultConfig {
            write_error_probability: 1.0,
            only_under: Some(PathBuf::from("/d")),
            ..FaultConfig::default()
        });
        assert_eq!(
            file.write_at(0, b"x").expect_err("EIO").raw_os_error(),
            Some(EIO)
        );
        let other = disk.open(Path::new("/other/f"), true).expect("create");
        other.write_at(0, b"x").expect("no faults outside /d");
    }

    #[test]
    fn halt_at_a_sync_point() {
        let disk = SimDisk::new(5);
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), true).expect("create");
        disk.set_halt_after_syncs(Some(1));
        disk.sync_dir(Path::new("/d")).expect("first sync runs");
        file.write_at(0, b"abc").expect("write");
        assert!(file.sync_data().is_err());
        assert!(disk.is_halted());
        assert!(file.write_at(0, b"x").is_err());
        disk.crash();
        assert!(!disk.is_halted());
        assert_eq!(disk.list(Path::new("/d")).expect("list"), vec!["f"]);
    }

    #[test]
    fn preallocated_tail_reads_as_zeros() {
        let disk = SimDisk::new(6);
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), true).expect("create");
        file.write_at(0, b"ab").expect("write");
        file.preallocate(1 << 30).expect("preallocate");
        assert_eq!(file.len().expect("len"), 1 << 30);
        let mut buf = [9u8; 4];
        file.read_exact_at(1, &mut buf).expect("read");
        assert_eq!(buf, [b'b', 0, 0, 0]);
        file.set_len(1).expect("truncate");
        assert_eq!(file.read_at(0, &mut buf).expect("read"), 1);
    }
}
