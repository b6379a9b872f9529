//! An active segment's bytes: appended by the one writer (under the log's
//! writer lock), read by any number of readers that take no lock the writer
//! holds.
//!
//! The protocol, all of it in this module:
//! - the buffer is allocated once at its full size, so it never moves;
//! - the writer copies a record past the published length through a raw
//!   pointer (no reference ever covers bytes a reader may be reading), then
//!   stores the new length with `Release`;
//! - a reader loads the length with `Acquire` and reads only below it, bytes
//!   that never change again;
//! - readers reach the buffer through a [`BufView`] kept in the segment
//!   table; [`hand_over`] moves them to the next buffer under the table's
//!   write lock before the old buffer is dropped.
//!
//! Under `--cfg idemkv_loom` each byte also has a loom cell that the writer's
//! copies, the readers' reads and the buffer's drop touch, so the models in
//! `src/models/` report a read that is not ordered after the write of the
//! byte it reads, or a buffer freed while a reader may still read it.

#![allow(
    unsafe_code,
    reason = "the active buffer is written through a raw pointer past what readers may read (DESIGN.md §5, read path)"
)]

use super::brlock::BrLock;
use crate::sync::AtomicUsize;
use std::ops::Deref;
use std::sync::atomic::Ordering;

/// What readers share with the writer, in its own allocation so that a
/// [`BufView`] stays valid when the owning [`PublishedBuf`] moves.
struct Shared {
    /// Bytes published to readers.
    len: AtomicUsize,
    #[cfg(idemkv_loom)]
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
}

impl Shared {
    fn new(len: usize, _capacity: usize) -> Box<Shared> {
        Box::new(Shared {
            len: AtomicUsize::new(len),
            #[cfg(idemkv_loom)]
            shadow: (0.._capacity)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        })
    }
}

/// The active segment's buffer, owned by the writer. Derefs to the bytes
/// published so far.
pub(crate) struct PublishedBuf {
    bytes: Vec<u8>,
    shared: Box<Shared>,
}

impl PublishedBuf {
    /// An empty buffer that holds `capacity` bytes without moving.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        PublishedBuf {
            bytes: Vec::with_capacity(capacity),
            shared: Shared::new(0, capacity),
        }
    }

    /// Makes room for `total` bytes in all. Only before any [`BufView`] of
    /// the buffer exists: the bytes may move.
    pub(crate) fn reserve_total(&mut self, total: usize) {
        self.bytes.reserve(total.saturating_sub(self.bytes.len()));
        #[cfg(idemkv_loom)]
        {
            self.shared = Shared::new(self.bytes.len(), self.bytes.capacity());
        }
    }

    /// Copies `record` past the published end, then publishes the new end.
    /// Panics if it does not fit in the capacity (the log rolls over first).
    pub(crate) fn append(&mut self, record: &[u8]) {
        let offset = self.bytes.len();
        let end = offset + record.len();
        assert!(
            end <= self.bytes.capacity(),
            "the active buffer was reserved to the full segment size"
        );
        #[cfg(idemkv_loom)]
        for cell in &self.shared.shadow[offset..end] {
            cell.with_mut(|_| ());
        }
        // SAFETY: the bytes go past the published length, into reserved
        // capacity, through a raw pointer: no reference covers the bytes
        // that readers may be reading, and the buffer does not move.
        unsafe {
            std::ptr::copy_nonoverlapping(
                record.as_ptr(),
                self.bytes.as_mut_ptr().add(offset),
                record.len(),
            );
            self.bytes.set_len(end);
        }
        self.shared.len.store(end, Ordering::Release);
    }

    /// The readers' way in. Valid until this buffer is dropped.
    pub(crate) fn view(&self) -> BufView {
        BufView {
            // `as_ptr` creates no reference to the buffer's contents.
            start: self.bytes.as_ptr(),
            shared: &*self.shared,
        }
    }
}

impl From<Vec<u8>> for PublishedBuf {
    /// A buffer holding `bytes`, all published.
    fn from(bytes: Vec<u8>) -> Self {
        let shared = Shared::new(bytes.len(), bytes.capacity());
        PublishedBuf { bytes, shared }
    }
}

impl Deref for PublishedBuf {
    type Target = [u8];
    /// The writer's own view: every byte written so far.
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(idemkv_loom)]
impl Drop for PublishedBuf {
    /// Freeing the bytes writes them, as far as loom is concerned: a
    /// reader's read that is not ordered before the drop is reported. The
    /// shared part is leaked rather than freed, so that a model of a broken
    /// hand-over reports the late read instead of reading freed memory.
    fn drop(&mut self) {
        for cell in self.shared.shadow.iter() {
            cell.with_mut(|_| ());
        }
        Box::leak(std::mem::replace(&mut self.shared, Shared::new(0, 0)));
    }
}

/// A reader's handle on a [`PublishedBuf`]: raw pointers, valid while the
/// buffer lives. The segment table holds one per active segment.
pub(crate) struct BufView {
    start: *const u8,
    shared: *const Shared,
}

// SAFETY: a view only reads: the length atomically, and bytes below it,
// which no thread writes again. Its validity is the caller's obligation at
// `published` (the buffer outlives the table entry; see `hand_over`).
unsafe impl Send for BufView {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for BufView {}

impl BufView {
    /// The bytes published so far.
    ///
    /// # Safety
    /// The buffer must live, and not move its bytes, for as long as the
    /// slice is used: true while the view is read from the segment table
    /// under its read lock (see [`hand_over`]).
    pub(crate) unsafe fn published(&self) -> &[u8] {
        // SAFETY: the buffer lives (the caller's obligation).
        let shared = unsafe { &*self.shared };
        let len = shared.len.load(Ordering::Acquire);
        #[cfg(idemkv_loom)]
        for cell in &shared.shadow[..len] {
            cell.with(|_| ());
        }
        // SAFETY: the first `len` bytes were written before `len` was
        // released and are never written again; the buffer lives and does
        // not move (the caller's obligation).
        unsafe { std::slice::from_raw_parts(self.start, len) }
    }
}

/// Rollover's switch of an active buffer: `slot` (which owns the buffer the
/// readers see through `view_in(table)`) gets `next`. Under the table's write
/// lock, which waits for every reader to leave, the view is pointed at
/// `next`'s buffer; only then is the old owner dropped, freeing its buffer,
/// so no reader can hold a pointer into freed memory.
pub(crate) fn hand_over<T, A>(
    table: &BrLock<T>,
    set_view: impl FnOnce(&mut T, &A),
    slot: &mut A,
    next: A,
) {
    {
        let mut t = table.write();
        set_view(&mut t, &next);
    }
    *slot = next;
}
