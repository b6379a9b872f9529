//! The file-system seam: every file operation the engine makes goes through
//! [`Storage`] and [`StorageFile`], so a test backend can stand in for the
//! disk (to lose power at a chosen operation, or fail a write with `EIO`).
//!
//! [`FsStorage`] is the real backend and the default; [`SimStorage`] is a
//! simulated disk that loses power and fails operations on request, for tests.

mod fate;
mod fs;
mod sim;

pub use fate::{PAGE_BYTES, PageFate, SECTOR_BYTES, UnsyncedPage};
pub use fs::FsStorage;
pub use sim::{PendingFate, SimOp, SimStorage};

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Read-only bytes of a sealed file: a memory map, or a copy in memory.
pub type SealedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A held exclusive lock on a directory; dropping it releases the lock.
pub type DirLock = Box<dyn Any + Send + Sync>;

/// A directory of files, as the engine sees it.
///
/// Implementations must make `sync_dir` the only way directory changes
/// (create, rename, remove) become durable, as on a POSIX file system.
pub trait Storage: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir`, failing with
    /// [`io::ErrorKind::WouldBlock`] if anyone (this process included) holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;
}

/// One open file.
pub trait StorageFile: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends the file to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space for the file up to `len` bytes, extending it to
    /// `len` with bytes that read as zeros, so that later writes below `len`
    /// change no file size and an fsync after them has no size to record
    /// (`fallocate` on Linux). Never shrinks the file. Like a length change,
    /// it is durable only after [`sync_data`](StorageFile::sync_data).
    ///
    /// Preallocation only saves work, so the default does nothing; the
    /// engine treats a failure (no space, not supported) as "not
    /// preallocated" and goes on.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
    /// Starts writing `len` bytes from `offset` to the device without
    /// waiting for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux),
    /// so that a later [`sync_data`](StorageFile::sync_data) finds less
    /// to write. It makes nothing durable; it only saves work, so the
    /// default does nothing and the engine ignores a failure.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only view of the whole file. Only called on sealed files, which
    /// never change or shrink while the view lives.
    fn map(&self) -> io::Result<SealedBytes>;
}

/// Removes `path` if it exists.
pub(crate) fn remove_if_exists(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Reads a whole file with ordinary reads (never a map: recovery must not
/// fault on a file that is shorter than expected).
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large for memory"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(0, &mut buf)?;
    Ok(buf)
}

/// Creates `path` (which must not exist) holding `bytes`, and fsyncs it.
/// Its directory entry is durable only after the directory's next fsync.
pub(crate) fn write_new_durably(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> crate::error::Result<()> {
    use crate::error::io_context;
    let file = storage
        .create(path)
        .map_err(|e| io_context("create", path, e))?;
    file.write_all_at(0, bytes)
        .map_err(|e| io_context("write", path, e))?;
    file.sync_data().map_err(|e| io_context("fsync", path, e))
}

/// Replaces `path` in `dir` with `bytes`, so that after a crash the file is
/// either the old one or the new one, whole:
/// 1. remove a `tmp` left by an interrupted replace;
/// 2. write `tmp` and **fsync it**;
/// 3. **fsync the directory**, so `tmp` and every file created before it
///    (a repair's backup copy) are durable before anything is replaced;
/// 4. rename `tmp` over `path`; **fsync the directory**.
pub(crate) fn replace_durably(
    storage: &dyn Storage,
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> crate::error::Result<()> {
    use crate::error::io_context;
    remove_if_exists(storage, tmp).map_err(|e| io_context("remove", tmp, e))?;
    write_new_durably(storage, tmp, bytes)?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))?;
    storage
        .rename(tmp, path)
        .map_err(|e| io_context("rename", tmp, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))
}
