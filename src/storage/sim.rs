//! A simulated disk for crash and fault testing.
//!
//! [`SimStorage`] keeps every file twice: the *live* image (what reads see,
//! like the page cache) and the *durable* image (what survives power loss).
//! Writes and length changes go to the live image and are remembered as
//! pending until `sync_data`; directory changes (create, rename, remove) are
//! pending until `sync_dir`. [`SimStorage::power_loss`] then builds the disk a
//! reboot would find: every page of every pending write is kept, lost,
//! zeroed, garbled or torn by sectors on its own (`storage::fate`), and a
//! prefix of the pending directory changes survives, chosen by a seed.
//!
//! It can also crash the "machine" after the Nth mutating operation
//! ([`SimStorage::crash_after`]) and fail chosen operations with an error
//! such as `EIO` or `ENOSPC` ([`SimStorage::fail`]).

use super::fate::{PageFate, SplitMix, UnsyncedPage, apply_page, pages, write_into};
use super::{DirLock, SealedBytes, Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kinds of operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimOp {
    /// `write_all_at`
    Write,
    /// `sync_data`
    Sync,
    /// `create`
    Create,
    /// `rename`
    Rename,
    /// `remove`
    Remove,
    /// `sync_dir`
    SyncDir,
    /// `set_len`
    SetLen,
}

/// What [`SimStorage::power_loss`] does to each write that was not fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFate {
    /// Choose the fate of each page of each write from the seed
    /// ([`PageFate`]), and whether unsynced file growth survives.
    Random,
    /// Keep every pending write (like a process kill: the page cache survives).
    KeepAll,
    /// Drop every pending write.
    DropAll,
}

/// What a power loss does to unsynced length changes (truncation, growth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lengths {
    Kept,
    Lost,
    Random,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: SimOp,
    remaining: u64,
    kind: io::ErrorKind,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    files: BTreeMap<u64, SimFile>,
    next_ino: u64,
    live_dir: BTreeMap<PathBuf, u64>,
    durable_dir: BTreeMap<PathBuf, u64>,
    pending_dir: Vec<DirOp>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    ops: u64,
    per_kind: BTreeMap<SimOp, u64>,
    /// Bytes `start_writeback` was asked to write back.
    writeback_bytes: u64,
    crash_at: Option<u64>,
    crashed: bool,
    faults: Vec<Fault>,
}

impl State {
    /// Counts a mutating operation and decides whether it fails.
    fn admit(&mut self, op: SimOp) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other(
                "simulated power loss: the machine is down",
            ));
        }
        self.ops += 1;
        *self.per_kind.entry(op).or_default() += 1;
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.crashed = true;
            return Err(io::Error::other("simulated power loss"));
        }
        let mut failure = None;
        for f in self
            .faults
            .iter_mut()
            .filter(|f| f.op == op && f.remaining > 0)
        {
            f.remaining -= 1;
            if f.remaining == 0 {
                failure = Some(f.kind);
            }
        }
        self.faults.retain(|f| f.remaining > 0);
        match failure {
            Some(kind) => Err(io::Error::new(kind, format!("simulated {kind} on {op:?}"))),
            None => Ok(()),
        }
    }
}

/// An in-memory file system that can lose power; see the module docs.
///
/// Clones share one simulated disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        SimStorage::default()
    }

    /// Mutating operations (writes, syncs, creates, renames, removals,
    /// length changes) performed so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Bytes the engine asked to start writing back
    /// ([`StorageFile::start_writeback`]) so far. Write-back changes
    /// nothing on the simulated disk: it is not a mutating operation.
    pub fn writeback_bytes(&self) -> u64 {
        self.state.lock().writeback_bytes
    }

    /// Operations of kind `op` attempted so far (failed ones included).
    pub fn count(&self, op: SimOp) -> u64 {
        self.state.lock().per_kind.get(&op).copied().unwrap_or(0)
    }

    /// Crashes the machine at the `n`th mutating operation from now (that
    /// operation fails, and so does every later one) until [`power_loss`](Self::power_loss).
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some(s.ops + n.max(1));
    }

    /// Whether the machine has crashed and waits for `power_loss`.
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Fails the `n`th operation of kind `op` from now (1 = the next one)
    /// with an error of `kind`; the operation changes nothing.
    pub fn fail(&self, op: SimOp, n: u64, kind: io::ErrorKind) {
        self.state.lock().faults.push(Fault {
            op,
            remaining: n.max(1),
            kind,
        });
    }

    /// Cuts the power and reboots: the disk becomes what survived, decided by
    /// `seed` and `fate`. Open handles become invalid and locks are released.
    ///
    /// With [`PendingFate::Random`], a prefix of the unsynced directory
    /// changes survives, and every page (4 KiB) of every unsynced write
    /// meets its own fate ([`PageFate`]): kept, lost, zeroed, garbled, or
    /// torn sector by sector, so a later page can survive an earlier one.
    /// Growth of a file that was never fsynced may also be lost.
    pub fn power_loss(&self, seed: u64, fate: PendingFate) {
        let mut rng = SplitMix(seed);
        let mut decide = |_: &UnsyncedPage<'_>, rng: &mut SplitMix| match fate {
            PendingFate::KeepAll => PageFate::Kept,
            PendingFate::DropAll => PageFate::Lost,
            PendingFate::Random => rng.page_fate(),
        };
        let dir_ops = |pending: usize, rng: &mut SplitMix| match fate {
            PendingFate::KeepAll => pending,
            PendingFate::DropAll => 0,
            PendingFate::Random => rng.below(pending as u64 + 1) as usize,
        };
        let lengths = match fate {
            PendingFate::KeepAll => Lengths::Kept,
            PendingFate::DropAll => Lengths::Lost,
            PendingFate::Random => Lengths::Random,
        };
        self.reboot(&mut rng, dir_ops, &mut decide, lengths);
    }

    /// Cuts the power and reboots with the fate of every page of every
    /// unsynced write chosen by `decide`; unsynced directory changes and
    /// length changes survive, and `seed` drives garbling and torn sectors.
    /// For tests that need one exact state, such as an earlier page lost
    /// and a later one kept.
    pub fn power_loss_with(
        &self,
        seed: u64,
        mut decide: impl FnMut(&UnsyncedPage<'_>) -> PageFate,
    ) {
        let mut rng = SplitMix(seed);
        self.reboot(
            &mut rng,
            |pending, _| pending,
            &mut |page, _| decide(page),
            Lengths::Kept,
        );
    }

    fn reboot(
        &self,
        rng: &mut SplitMix,
        dir_ops: impl FnOnce(usize, &mut SplitMix) -> usize,
        decide: &mut dyn FnMut(&UnsyncedPage<'_>, &mut SplitMix) -> PageFate,
        lengths: Lengths,
    ) {
        let mut s = self.state.lock();
        let mut dir = s.durable_dir.clone();
        let keep = dir_ops(s.pending_dir.len(), rng);
        for op in s.pending_dir[..keep].iter().cloned() {
            apply_dir_op(&mut dir, op);
        }

        let mut files = BTreeMap::new();
        for (path, &ino) in &dir {
            if files.contains_key(&ino) {
                continue;
            }
            let Some(f) = s.files.get(&ino) else { continue };
            let mut data = f.durable.clone();
            let mut write = 0;
            for op in &f.pending {
                match op {
                    FileOp::SetLen(len) => {
                        let kept = match lengths {
                            Lengths::Kept => true,
                            Lengths::Lost => false,
                            Lengths::Random => rng.below(4) != 0,
                        };
                        if kept {
                            data.resize(*len as usize, 0);
                        }
                    }
                    FileOp::Write { offset, data: w } => {
                        for (page, (at, start, end)) in pages(*offset, w.len()).enumerate() {
                            let unsynced = UnsyncedPage {
                                path,
                                write,
                                page,
                                offset: at,
                                len: end - start,
                            };
                            let fate = decide(&unsynced, rng);
                            apply_page(&mut data, at, &w[start..end], fate, rng);
                        }
                        write += 1;
                    }
                }
            }
            // The size of a file that grew without an fsync may not have
            // reached the disk either.
            if lengths == Lengths::Random && data.len() > f.durable.len() && rng.below(8) == 0 {
                data.truncate(f.durable.len());
            }
            files.insert(
                ino,
                SimFile {
                    live: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                },
            );
        }

        s.files = files;
        s.live_dir = dir.clone();
        s.durable_dir = dir;
        s.pending_dir.clear();
        s.locks.clear();
        s.crashed = false;
        s.crash_at = None;
        s.faults.clear();
        s.epoch += 1;
    }

    /// Kills the process but not the machine: open handles become invalid
    /// and locks are released, while every write stays on the disk, synced
    /// or not (the kernel's page cache outlives the process). A later
    /// [`power_loss`](Self::power_loss) can still drop what was never synced.
    pub fn kill_process(&self) {
        let mut s = self.state.lock();
        s.locks.clear();
        s.epoch += 1;
    }

    /// The live contents of a file, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.live_dir.get(path)?;
        s.files.get(ino).map(|f| f.live.clone())
    }

    /// Replaces a file's contents, live and durable (for planting damage).
    pub fn write_file(&self, path: &Path, data: &[u8]) {
        let mut s = self.state.lock();
        let ino = match s.live_dir.get(path) {
            Some(&ino) => ino,
            None => {
                s.next_ino += 1;
                let ino = s.next_ino;
                s.live_dir.insert(path.to_path_buf(), ino);
                s.durable_dir.insert(path.to_path_buf(), ino);
                ino
            }
        };
        s.files.insert(
            ino,
            SimFile {
                live: data.to_vec(),
                durable: data.to_vec(),
                pending: Vec::new(),
            },
        );
    }

    fn handle(&self, path: &Path, ino: u64, epoch: u64) -> Arc<dyn StorageFile> {
        Arc::new(SimHandle {
            storage: self.clone(),
            path: path.to_path_buf(),
            ino,
            epoch,
        })
    }
}

fn apply_dir_op(dir: &mut BTreeMap<PathBuf, u64>, op: DirOp) {
    match op {
        DirOp::Link(p, ino) => {
            dir.insert(p, ino);
        }
        DirOp::Unlink(p) => {
            dir.remove(&p);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = dir.remove(&from) {
                dir.insert(to, ino);
            }
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.lock().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        Ok(s.live_dir
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let s = self.state.lock();
        let ino = *s.live_dir.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.handle(path, ino, s.epoch))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state.lock();
        s.admit(SimOp::Create)?;
        if s.live_dir.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        s.next_ino += 1;
        let ino = s.next_ino;
        s.files.insert(ino, SimFile::default());
        s.live_dir.insert(path.to_path_buf(), ino);
        s.pending_dir.push(DirOp::Link(path.to_path_buf(), ino));
        Ok(self.handle(path, ino, s.epoch))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.admit(SimOp::Remove)?;
        s.live_dir.remove(path).ok_or_else(|| not_found(path))?;
        s.pending_dir.push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.admit(SimOp::Rename)?;
        let ino = s.live_dir.remove(from).ok_or_else(|| not_found(from))?;
        s.live_dir.insert(to.to_path_buf(), ino);
        s.pending_dir
            .push(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.admit(SimOp::SyncDir)?;
        let (mine, others): (Vec<DirOp>, Vec<DirOp>) = s.pending_dir.drain(..).partition(|op| {
            let p = match op {
                DirOp::Link(p, _) | DirOp::Unlink(p) | DirOp::Rename(_, p) => p,
            };
            p.parent() == Some(dir)
        });
        s.pending_dir = others;
        let mut durable = std::mem::take(&mut s.durable_dir);
        for op in mine {
            apply_dir_op(&mut durable, op);
        }
        s.durable_dir = durable;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut s = self.state.lock();
        if !s.locks.insert(dir.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock {
            storage: self.clone(),
            dir: dir.to_path_buf(),
            epoch: s.epoch,
        }))
    }
}

struct SimLock {
    storage: SimStorage,
    dir: PathBuf,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.storage.state.lock();
        if s.epoch == self.epoch {
            s.locks.remove(&self.dir);
        }
    }
}

struct SimHandle {
    storage: SimStorage,
    path: PathBuf,
    ino: u64,
    epoch: u64,
}

impl SimHandle {
    fn with<R>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.storage.state.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other(format!(
                "{}: handle from before a power loss",
                self.path.display()
            )));
        }
        f(&mut s, self.ino)
    }
}

fn file(s: &mut State, ino: u64) -> &mut SimFile {
    s.files.entry(ino).or_default()
}

impl StorageFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        self.with(|s, ino| Ok(file(s, ino).live.len() as u64))
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|s, ino| {
            let live = &file(s, ino).live;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = live
                .get(start..start.saturating_add(buf.len()))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|s, ino| {
            s.admit(SimOp::Write)?;
            let f = file(s, ino);
            write_into(&mut f.live, offset, data);
            f.pending.push(FileOp::Write {
                offset,
                data: data.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s, ino| {
            s.admit(SimOp::SetLen)?;
            let f = file(s, ino);
            f.live.resize(len as usize, 0);
            f.pending.push(FileOp::SetLen(len));
            Ok(())
        })
    }

    /// Extends the file with zeros, as a pending length change (a
    /// `SetLen` operation for faults and crash points).
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(|s, ino| {
            if len as usize <= file(s, ino).live.len() {
                return Ok(());
            }
            s.admit(SimOp::SetLen)?;
            let f = file(s, ino);
            f.live.resize(len as usize, 0);
            f.pending.push(FileOp::SetLen(len));
            Ok(())
        })
    }

    /// Only counted: see [`SimStorage::writeback_bytes`].
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = offset;
        self.with(|s, _| {
            s.writeback_bytes += len;
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, ino| {
            s.admit(SimOp::Sync)?;
            let f = file(s, ino);
            f.durable = f.live.clone();
            f.pending.clear();
            Ok(())
        })
    }

    fn map(&self) -> io::Result<SealedBytes> {
        self.with(|s, ino| Ok(Arc::new(file(s, ino).live.clone()) as SealedBytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_can_vanish_and_synced_ones_stay() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        let f = sim.create(&dir.join("a")).unwrap();
        sim.sync_dir(dir).unwrap();
        f.write_all_at(0, b"durable").unwrap();
        f.sync_data().unwrap();
        f.write_all_at(7, b"-volatile").unwrap();
        sim.power_loss(1, PendingFate::DropAll);
        assert_eq!(sim.read_file(&dir.join("a")).unwrap(), b"durable");
        assert!(f.len().is_err(), "old handles die with the power");
    }

    #[test]
    fn unsynced_creation_can_vanish() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        let f = sim.create(&dir.join("a")).unwrap();
        f.write_all_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        sim.power_loss(1, PendingFate::DropAll);
        assert!(sim.read_file(&dir.join("a")).is_none());
    }

    #[test]
    fn a_later_page_can_survive_an_earlier_one() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        let f = sim.create(&dir.join("a")).unwrap();
        sim.sync_dir(dir).unwrap();
        f.write_all_at(0, &[1; 100]).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(100, &[2; 8000]).unwrap();
        sim.power_loss_with(1, |p| {
            assert_eq!((p.path, p.write), (dir.join("a").as_path(), 0));
            if p.page == 0 {
                assert_eq!((p.offset, p.len), (100, 3996));
                PageFate::Lost
            } else {
                PageFate::Kept
            }
        });
        let data = sim.read_file(&dir.join("a")).unwrap();
        assert_eq!(data.len(), 8100);
        assert!(data[..100].iter().all(|&b| b == 1), "synced bytes stay");
        assert!(data[100..4096].iter().all(|&b| b == 0), "lost page");
        assert!(data[4096..].iter().all(|&b| b == 2), "later pages kept");
    }

    #[test]
    fn crash_after_fails_that_op_and_all_later() {
        let sim = SimStorage::new();
        let f = sim.create(Path::new("/d/a")).unwrap();
        sim.crash_after(2);
        f.write_all_at(0, b"1").unwrap();
        assert!(f.write_all_at(1, b"2").is_err());
        assert!(f.sync_data().is_err());
        assert!(sim.crashed());
    }

    #[test]
    fn faults_hit_the_chosen_op() {
        let sim = SimStorage::new();
        let f = sim.create(Path::new("/d/a")).unwrap();
        sim.fail(SimOp::Sync, 2, io::ErrorKind::StorageFull);
        f.sync_data().unwrap();
        assert_eq!(
            f.sync_data().unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        f.sync_data().unwrap();
    }
}
