//! The durable ceiling: the in-memory map of [`super::map`] plus the least
//! a durable write needs, one group-committed log.
//!
//! Each claim and complete appends its record (key and encoded value) to one
//! buffer under one lock and waits until an `fdatasync` covers it. The first
//! waiter that finds no sync running takes the buffer, writes it to a
//! zero-filled file and syncs it for everyone queued so far; the others wait
//! on one condition variable, and the leader wakes them all. No recovery, no
//! checksums, no compaction, no index of its own: the file is written round
//! and round. The gap from idemkv's durable rows to it is what the store does
//! beyond a write and its wait; its own rate is what blocking callers get on
//! this machine when nothing else runs.

use super::map::ShardedMap;
use super::{Engine, Outcome, Result, encode_completed, encode_in_progress, now_ms};
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes of the log file, zero-filled at open and written round and round.
const FILE_BYTES: u64 = 64 << 20;

/// What the lock guards.
#[derive(Default)]
struct Queue {
    /// Records appended since the last sync took the buffer.
    buf: Vec<u8>,
    /// Records appended so far.
    appended: u64,
    /// Records an `fdatasync` has covered.
    durable: u64,
    /// Whether a leader is writing and syncing.
    syncing: bool,
    /// Where the next write-out goes.
    offset: u64,
}

/// A group-committed log: one buffer, one leader at a time.
struct Wal {
    queue: Mutex<Queue>,
    synced: Condvar,
    file: File,
    durable: bool,
}

impl Wal {
    fn open(dir: &Path, durable: bool) -> Result<Wal> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("wal"))?;
        let zeros = vec![0u8; 1 << 20];
        for at in (0..FILE_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)?;
        }
        file.sync_all()?;
        Ok(Wal {
            queue: Mutex::new(Queue::default()),
            synced: Condvar::new(),
            file,
            durable,
        })
    }

    /// Appends `parts` as one record; returns once it is durable (at once
    /// when not durable: the buffer is written out every MiB).
    fn append(&self, parts: &[&[u8]]) -> Result<()> {
        let mut q = self.queue.lock();
        for p in parts {
            q.buf.extend_from_slice(p);
        }
        q.appended += 1;
        let mine = q.appended;
        if !self.durable {
            if q.buf.len() >= 1 << 20 {
                let (data, at) = Self::take(&mut q);
                self.file.write_all_at(&data, at)?;
            }
            return Ok(());
        }
        while q.durable < mine {
            if q.syncing {
                self.synced.wait(&mut q);
                continue;
            }
            q.syncing = true;
            let upto = q.appended;
            let (data, at) = Self::take(&mut q);
            drop(q);
            let written = self
                .file
                .write_all_at(&data, at)
                .and_then(|()| self.file.sync_data());
            q = self.queue.lock();
            q.syncing = false;
            if written.is_ok() {
                q.durable = upto;
            }
            self.synced.notify_all();
            written?;
        }
        Ok(())
    }

    /// Takes the buffer and the offset it goes to, wrapping at the file's end.
    fn take(q: &mut Queue) -> (Vec<u8>, u64) {
        let data = std::mem::take(&mut q.buf);
        if q.offset + data.len() as u64 > FILE_BYTES {
            q.offset = 0;
        }
        let at = q.offset;
        q.offset += data.len() as u64;
        (data, at)
    }
}

/// [`ShardedMap`] with every claim and complete logged durably.
pub struct MapWal {
    map: ShardedMap,
    wal: Arc<Wal>,
}

impl Engine for MapWal {
    type Ticket = ();
    type Response = Arc<[u8]>;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        Ok(MapWal {
            map: ShardedMap::open(dir, durable)?,
            wal: Arc::new(Wal::open(dir, durable)?),
        })
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Arc<[u8]>>> {
        let outcome = self.map.claim(key, fp)?;
        if let Outcome::Acquired(()) = outcome {
            self.wal.append(&[key, &encode_in_progress(fp, now_ms())])?;
        }
        Ok(outcome)
    }

    fn complete(&self, key: &[u8], fp: u128, ticket: (), response: &[u8]) -> Result<()> {
        self.map.complete(key, fp, ticket, response)?;
        self.wal
            .append(&[key, &encode_completed(fp, now_ms(), response)])
    }
}
