//! Looking after a closed store: `verify` checks every byte, `repair`
//! salvages a damaged one. Both read segments through the log's scan, so
//! they judge torn tails and damage exactly as open does.

mod repair;
mod verify;

pub(crate) use verify::{verify as verify_in, walk};

use crate::error::{Result, io_context};
use crate::options::{Options, lock_dir};
use crate::reports::{RepairReport, VerifyReport};
use crate::storage::{Storage, read_all};
use std::path::Path;

/// Checks every segment of the closed store in `dir`; see [`Options::verify`].
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    Options::new().verify(dir)
}

/// Salvages a damaged, closed store in `dir`; see [`Options::repair`].
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport> {
    Options::new().repair(dir)
}

impl Options {
    /// Checks every segment of the closed store in `dir`: headers,
    /// checksums and sequence numbers. Changes nothing. `Locked` if a
    /// `Store` has the directory open; `Corrupt` names the first damage.
    pub fn verify(&self, dir: impl AsRef<Path>) -> Result<VerifyReport> {
        let dir = dir.as_ref();
        let _lock = lock_dir(&*self.storage, dir)?;
        verify::verify(&*self.storage, dir, &mut |_, _| {})
    }

    /// Salvages a damaged store in `dir` (closed; `Locked` otherwise): each
    /// segment with damage is copied to `NAME.damaged`, then rewritten with
    /// every record whose checksum holds and whose sequence number continues
    /// the log; torn tails are cut. The report names each skipped byte
    /// range. What is skipped is lost (a completed key may become absent or
    /// in progress again), so keep the copies until the damage is
    /// understood.
    pub fn repair(&self, dir: impl AsRef<Path>) -> Result<RepairReport> {
        let dir = dir.as_ref();
        let _lock = lock_dir(&*self.storage, dir)?;
        repair::repair(&*self.storage, dir)
    }
}

/// All of segment file `path`.
fn read_segment(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage
        .open(path)
        .map_err(|e| io_context("open", path, e))?;
    read_all(&*file).map_err(|e| io_context("read", path, e))
}
