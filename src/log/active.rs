//! An active segment's bytes: written by many appenders at once, each into
//! the byte range it reserved, and published in reservation order; read by
//! any number of readers that take no lock the writers hold.
//!
//! The protocol, all of it in this module:
//! - the buffer is allocated once at its full size, so it never moves;
//! - an appender that reserved `start..end` (the log's reservation word,
//!   `append.rs`) writes its bytes there through a raw pointer: no two
//!   appenders share a byte, and no reference ever covers bytes a reader may
//!   be reading;
//! - it then waits until everything before `start` is published and
//!   publishes `end` with `Release`, so the published length only grows and
//!   covers whole records;
//! - a reader loads the length with `Acquire` and reads only below it, bytes
//!   that never change again;
//! - readers reach the buffer through a [`BufView`] kept in the segment
//!   table; [`hand_over`] moves them to the next buffer under the table's
//!   write lock before the old buffer is dropped.
//!
//! Under `--cfg idemkv_loom` each byte also has a loom cell that the writes,
//! the readers' reads and the buffer's drop touch, so the models in
//! `src/models/` report a read that is not ordered after the write of the
//! byte it reads, or a buffer freed while a reader may still read it.

#![allow(
    unsafe_code,
    reason = "the active buffer is written through a raw pointer past what readers may read (DESIGN.md §5, read path)"
)]

use super::brlock::BrLock;
use crate::sync::AtomicU64;
use std::ptr::NonNull;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering;

/// What readers share with the writers, in its own allocation so that a
/// [`BufView`] stays valid when the owning [`PublishedBuf`] moves.
struct Shared {
    /// The published length (low 32 bits) and a tag the publisher stores
    /// with it (high 32 bits; the log keeps the next record's counter there).
    published: AtomicU64,
    #[cfg(idemkv_loom)]
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
}

impl Shared {
    fn new(len: usize, _capacity: usize) -> Box<Shared> {
        Box::new(Shared {
            published: AtomicU64::new(len as u64),
            #[cfg(idemkv_loom)]
            shadow: (0.._capacity)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        })
    }
}

/// The published length and its tag, packed as [`Shared::published`] holds them.
pub(crate) fn pack(len: usize, tag: u32) -> u64 {
    debug_assert!(
        u32::try_from(len).is_ok(),
        "a segment holds at most u32::MAX bytes"
    );
    (u64::from(tag) << 32) | (len as u64 & 0xFFFF_FFFF)
}

/// The length and tag of a packed published value.
pub(crate) fn unpack(p: u64) -> (usize, u32) {
    ((p & 0xFFFF_FFFF) as usize, (p >> 32) as u32)
}

/// The active segment's buffer. Appenders write into the ranges they
/// reserved; [`publish`](PublishedBuf::publish) makes them readable.
pub(crate) struct PublishedBuf {
    /// `capacity` bytes, the first `published` of them initialized.
    ptr: NonNull<u8>,
    capacity: usize,
    shared: Box<Shared>,
}

// SAFETY: the bytes are reached only through `write` (each appender its own
// reserved range, never read until published) and `published` reads (bytes
// below the published length, never written again), as the protocol above
// says; the allocation is owned and freed once.
unsafe impl Send for PublishedBuf {}
// SAFETY: as above: shared access writes only disjoint reserved ranges.
unsafe impl Sync for PublishedBuf {}

impl PublishedBuf {
    /// An empty buffer that holds `capacity` bytes without moving.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        PublishedBuf::from_vec(Vec::with_capacity(capacity))
    }

    fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        let len = bytes.len();
        let capacity = bytes.capacity();
        let shared = Shared::new(len, capacity);
        // A Vec's pointer is never null (dangling but non-null when empty).
        let ptr = NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling());
        PublishedBuf {
            ptr,
            capacity,
            shared,
        }
    }

    /// Makes room for `total` bytes in all. Only before any [`BufView`] of
    /// the buffer exists and before any concurrent write: the bytes may move.
    pub(crate) fn reserve_total(&mut self, total: usize) {
        if total <= self.capacity {
            return;
        }
        let len = self.len();
        // SAFETY: `ptr`, `len` and `capacity` are those of the Vec this
        // buffer was made from (or reserved last); the Vec takes ownership
        // back, then hands it over to `self` again (`ManuallyDrop`).
        let mut bytes = std::mem::ManuallyDrop::new(unsafe {
            Vec::from_raw_parts(self.ptr.as_ptr(), len, self.capacity)
        });
        bytes.reserve(total - len);
        self.ptr = NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling());
        self.capacity = bytes.capacity();
        #[cfg(idemkv_loom)]
        {
            self.shared = Shared::new(len, self.capacity);
        }
    }

    /// The published length.
    pub(crate) fn len(&self) -> usize {
        unpack(self.shared.published.load(Ordering::Acquire)).0
    }

    /// The published length and its tag.
    pub(crate) fn published_and_tag(&self) -> (usize, u32) {
        unpack(self.shared.published.load(Ordering::Acquire))
    }

    /// Writes `bytes` at `offset`.
    ///
    /// # Safety
    /// `offset..offset + bytes.len()` must be a range the caller reserved:
    /// inside the capacity, at or past the published length, and written by
    /// no one else.
    pub(crate) unsafe fn write(&self, offset: usize, bytes: &[u8]) {
        debug_assert!(offset + bytes.len() <= self.capacity);
        #[cfg(idemkv_loom)]
        for cell in &self.shared.shadow[offset..offset + bytes.len()] {
            cell.with_mut(|_| ());
        }
        // SAFETY: the range is inside the allocation and the caller's alone
        // (the caller's obligation); the copy goes through raw pointers, so
        // no reference covers bytes that readers read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            );
        }
    }

    /// The range `offset..offset + len`, to be written in place.
    ///
    /// # Safety
    /// As for [`write`](PublishedBuf::write): a range the caller reserved,
    /// past the published length, that no one else writes or reads until
    /// the caller publishes it; the slice must not outlive that.
    #[expect(clippy::mut_from_ref, reason = "each appender's own reserved range")]
    pub(crate) unsafe fn region_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset + len <= self.capacity);
        #[cfg(idemkv_loom)]
        for cell in &self.shared.shadow[offset..offset + len] {
            cell.with_mut(|_| ());
        }
        // SAFETY: inside the allocation, and the caller's alone (the
        // caller's obligation); the bytes may be uninitialized, so they are
        // zeroed first, through the raw pointer.
        unsafe {
            let start = self.ptr.as_ptr().add(offset);
            std::ptr::write_bytes(start, 0, len);
            std::slice::from_raw_parts_mut(start, len)
        }
    }

    /// Publishes `start..end`, written by the caller, once everything
    /// before `start` is published: waits for the appenders of earlier
    /// ranges (spinning, then yielding), then stores `end` and `tag`.
    pub(crate) fn publish(&self, start: usize, end: usize, tag: u32) {
        let mut spins = 0u32;
        while self.len() != start {
            spins += 1;
            if spins < 64 && !cfg!(idemkv_loom) {
                std::hint::spin_loop();
            } else {
                crate::sync::thread::yield_now();
            }
        }
        self.shared
            .published
            .store(pack(end, tag), Ordering::Release);
    }

    /// Appends `bytes` at the published end and publishes them: for a
    /// single writer that reserves nothing (recovery's hand-over, tests).
    pub(crate) fn append(&mut self, bytes: &[u8], tag: u32) {
        let start = self.len();
        assert!(
            start + bytes.len() <= self.capacity,
            "the active buffer was reserved to the full segment size"
        );
        // SAFETY: `&mut self`: no other writer, and the range is past the
        // published length.
        unsafe { self.write(start, bytes) };
        self.publish(start, start + bytes.len(), tag);
    }

    /// The published bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.len();
        // SAFETY: the first `len` bytes were written before `len` was
        // published and are never written again; the allocation lives as
        // long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }

    /// The readers' way in. Valid until this buffer is dropped.
    pub(crate) fn view(&self) -> BufView {
        BufView {
            start: self.ptr.as_ptr(),
            shared: &*self.shared,
        }
    }
}

impl From<Vec<u8>> for PublishedBuf {
    /// A buffer holding `bytes`, all published.
    fn from(bytes: Vec<u8>) -> Self {
        PublishedBuf::from_vec(bytes)
    }
}

impl Drop for PublishedBuf {
    /// Frees the allocation. Under loom, freeing the bytes writes them: a
    /// reader's read that is not ordered before the drop is reported. The
    /// shared part is then leaked rather than freed, so that a model of a
    /// broken hand-over reports the late read instead of reading freed
    /// memory.
    fn drop(&mut self) {
        #[cfg(idemkv_loom)]
        {
            for cell in self.shared.shadow.iter() {
                cell.with_mut(|_| ());
            }
            Box::leak(std::mem::replace(&mut self.shared, Shared::new(0, 0)));
        }
        // SAFETY: the allocation came from a Vec of this capacity; `u8`
        // needs no drop, so a length of 0 frees it without reading a byte.
        drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), 0, self.capacity) });
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
        let (len, _) = unpack(shared.published.load(Ordering::Acquire));
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

/// Rollover's switch of an active segment: the segment `slot` points at
/// (which owns the buffer readers see through the table) becomes `next`.
/// Under the table's write lock, which waits for every reader to leave, the
/// view is pointed at `next`'s buffer and `slot` swapped; only then is the
/// old segment dropped, freeing its buffer, so no reader can hold a pointer
/// into freed memory.
///
/// # Safety
/// `slot` must point at a segment made by `Box::into_raw`, which nothing
/// else uses once this returns: no appender holds a reservation in it and
/// every other user of `slot` holds the lock the caller holds.
pub(crate) unsafe fn hand_over<T, A>(
    table: &BrLock<T>,
    set_view: impl FnOnce(&mut T, &A),
    slot: &AtomicPtr<A>,
    next: Box<A>,
) {
    let old = {
        let mut t = table.write();
        set_view(&mut t, &next);
        slot.swap(Box::into_raw(next), Ordering::AcqRel)
    };
    // SAFETY: the caller's obligation: `old` came from `Box::into_raw` and
    // no one uses it any more; readers left the table before the swap.
    drop(unsafe { Box::from_raw(old) });
}
