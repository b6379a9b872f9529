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
//! - it then completes its range, and never waits for another appender:
//!   when everything before `start` is published it publishes `end` itself,
//!   else it leaves `end` in the completion ring for the appender of the
//!   range before it, and whoever publishes a range goes on to publish the
//!   completed ranges that follow it ([`Publisher::publish`]). The
//!   published length only grows, covers whole records, and is stored with
//!   `Release`;
//! - a reader loads the length with `Acquire` and reads only below it, bytes
//!   that never change again;
//! - readers reach the buffer through a [`BufView`] kept in the segment
//!   table; [`hand_over`] moves them to the next buffer under the table's
//!   write lock before the old buffer is dropped.
//!
//! The published length and the completion ring belong to the stream, not
//! to one buffer ([`Shared`]): each rollover's next buffer takes them over
//! with a new epoch, under the table's write lock. An appender whose range
//! another appender published may still be reading them while its buffer
//! is freed, which is why they outlive it; a value it read before a
//! rollover carries the old epoch and never matches one after.
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
use std::sync::Arc;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering;

/// A range's start, shifted by this, picks its slot of the completion
/// ring: every record and sync mark is at least 60 bytes, so two ranges
/// never start in the same 32-byte granule.
#[cfg(not(idemkv_loom))]
const GRANULE_BITS: u32 = 5;
#[cfg(idemkv_loom)]
const GRANULE_BITS: u32 = 0;

/// The completion ring's slots. A range completes into the ring only when
/// its start is fewer than this many granules past the published length
/// (128 KiB), so no two unpublished ranges share a slot; an appender
/// further ahead waits for the published length to come closer.
#[cfg(not(idemkv_loom))]
const SLOTS: usize = 4096;
#[cfg(idemkv_loom)]
const SLOTS: usize = 4;

/// The smallest range [`Publisher::publish`] takes.
pub(crate) const MIN_RANGE: usize = 1 << GRANULE_BITS;

const LEN_MASK: u64 = 0xFFFF_FFFF;
const TAG_BITS: u32 = 30;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const EPOCH_SHIFT: u32 = 32 + TAG_BITS;

/// A stream's publication state, shared by its successive active buffers.
struct Shared {
    /// The published length (bits 0..32), a tag the publisher stores with
    /// it (bits 32..62; the log keeps the next record's counter there), and
    /// the epoch of the buffer it is a length of (bits 62..64).
    published: AtomicU64,
    /// Completed ranges not yet published: the slot of a range's start
    /// granule holds its end and tag (packed as `published` without an
    /// epoch). A value whose end is at or below the published length is
    /// left over from a range published earlier.
    slots: Box<[AtomicU64]>,
}

impl Shared {
    fn new(len: usize) -> Arc<Shared> {
        Arc::new(Shared {
            published: AtomicU64::new(pack(len, 0)),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The slot of the range starting at `start`.
    fn slot(&self, start: usize) -> &AtomicU64 {
        &self.slots[(start >> GRANULE_BITS) % SLOTS]
    }

    /// Publishes, from `from` (a value this thread just stored), every
    /// completed range that follows, until a range is not completed yet or
    /// another thread publishes first (it then goes on from there).
    fn publish_completed(&self, mut from: u64) {
        loop {
            let (len, _) = unpack(from);
            let done = self.slot(len).load(Ordering::Acquire);
            let (end, tag) = unpack(done);
            if end <= len {
                return;
            }
            let next = with_epoch(pack(end, tag), epoch_of(from));
            match self
                .published
                .compare_exchange(from, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => from = next,
                Err(_) => return,
            }
        }
    }
}

/// The published length and its tag, packed as [`Shared::published`] holds
/// them (epoch 0).
pub(crate) fn pack(len: usize, tag: u32) -> u64 {
    debug_assert!(
        u32::try_from(len).is_ok(),
        "a segment holds at most u32::MAX bytes"
    );
    debug_assert!(u64::from(tag) <= TAG_MASK, "a tag fits in 30 bits");
    ((u64::from(tag) & TAG_MASK) << 32) | (len as u64 & LEN_MASK)
}

/// The length and tag of a packed published value.
pub(crate) fn unpack(p: u64) -> (usize, u32) {
    ((p & LEN_MASK) as usize, ((p >> 32) & TAG_MASK) as u32)
}

fn epoch_of(p: u64) -> u64 {
    p >> EPOCH_SHIFT
}

fn with_epoch(p: u64, epoch: u64) -> u64 {
    (p & !(3 << EPOCH_SHIFT)) | ((epoch & 3) << EPOCH_SHIFT)
}

/// What an appender publishes through: its stream's [`Shared`] and the
/// epoch of the buffer it reserved in. Taken while the appender's
/// unpublished reservation keeps the buffer alive, and valid after the
/// buffer is freed (a rollover may free it as soon as the range is
/// published, even by another thread).
pub(crate) struct Publisher<'a> {
    shared: &'a Shared,
    epoch: u64,
}

impl Publisher<'_> {
    /// Publishes `start..end`, written by the caller, with `tag`: now, if
    /// everything before `start` is published, else by the appender that
    /// publishes the range before it. Never waits for another appender,
    /// except when `start` is so far past the published length (128 KiB)
    /// that the completion ring has no slot for it yet.
    ///
    /// The caller must not touch its buffer afterwards: once its range is
    /// published, a rollover may free it.
    pub(crate) fn publish(self, start: usize, end: usize, tag: u32) {
        debug_assert!(end - start >= MIN_RANGE, "a range fills its granule");
        let shared = self.shared;
        let own = with_epoch(pack(end, tag), self.epoch);
        let mut spins = 0u32;
        loop {
            let p = shared.published.load(Ordering::Acquire);
            let (len, _) = unpack(p);
            debug_assert!(
                epoch_of(p) == self.epoch && len <= start,
                "an unpublished range's buffer is the active one"
            );
            if len == start {
                // The front: nobody else can move the length past `start`
                // until this range is published.
                if shared
                    .published
                    .compare_exchange(p, own, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    shared.publish_completed(own);
                    return;
                }
                continue;
            }
            if (start >> GRANULE_BITS) - (len >> GRANULE_BITS) < SLOTS {
                shared.slot(start).store(pack(end, tag), Ordering::Release);
                // The range before may have been published between the load
                // above and the store, by a thread that looked at the slot
                // before the store: then nobody else will publish this one.
                // The length is read with a read-modify-write, which reads
                // the latest value: either it is the publisher's, or the
                // publisher's compare-and-swap comes later and reads this
                // one's, which orders the slot's store before the
                // publisher's look at the slot.
                let p = shared.published.fetch_add(0, Ordering::AcqRel);
                if p & !(TAG_MASK << 32) == with_epoch(start as u64, self.epoch)
                    && shared
                        .published
                        .compare_exchange(p, own, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    shared.publish_completed(own);
                }
                return;
            }
            // Far ahead of the published length: wait for it to come closer.
            spins += 1;
            crate::sync::thread::backoff(spins);
        }
    }
}
/// The active segment's buffer. Appenders write into the ranges they
/// reserved; [`publish`](Publisher::publish) makes them readable.
pub(crate) struct PublishedBuf {
    /// `capacity` bytes, the first `published` of them initialized.
    ptr: NonNull<u8>,
    capacity: usize,
    shared: Arc<Shared>,
    /// The epoch of this buffer's lengths in `shared`.
    epoch: u64,
    #[cfg(idemkv_loom)]
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
}

// SAFETY: the bytes are reached only through `write` (each appender its own
// reserved range, never read until published) and `published` reads (bytes
// below the published length, never written again), as the protocol above
// says; the allocation is owned and freed once.
unsafe impl Send for PublishedBuf {}
// SAFETY: as above: shared access writes only disjoint reserved ranges.
unsafe impl Sync for PublishedBuf {}

#[cfg(idemkv_loom)]
fn shadow(capacity: usize) -> Box<[loom::cell::UnsafeCell<()>]> {
    (0..capacity)
        .map(|_| loom::cell::UnsafeCell::new(()))
        .collect()
}

impl PublishedBuf {
    /// An empty buffer that holds `capacity` bytes without moving.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        PublishedBuf::from_vec(Vec::with_capacity(capacity))
    }

    fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        let len = bytes.len();
        let capacity = bytes.capacity();
        // A Vec's pointer is never null (dangling but non-null when empty).
        let ptr = NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling());
        PublishedBuf {
            ptr,
            capacity,
            shared: Shared::new(len),
            epoch: 0,
            #[cfg(idemkv_loom)]
            shadow: shadow(capacity),
        }
    }

    /// Takes over `prev`'s stream: its published length and completion
    /// ring, under the next epoch, with this buffer's own published length
    /// and tag. Only while nothing is unpublished in `prev` and no one
    /// reserves, and under the segment table's write lock, so that no
    /// reader sees `prev`'s view with this buffer's length (rollover, in
    /// [`hand_over`]'s `set_view`).
    pub(crate) fn succeed(&mut self, prev: &PublishedBuf) {
        let own = self.shared.published.load(Ordering::Acquire);
        let epoch = (prev.epoch + 1) & 3;
        let shared = Arc::clone(&prev.shared);
        for slot in shared.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        // Release: the cleared slots are seen by whoever sees the length.
        shared
            .published
            .store(with_epoch(own, epoch), Ordering::Release);
        self.shared = shared;
        self.epoch = epoch;
    }

    /// What an appender with a range reserved in this buffer publishes it
    /// through.
    pub(crate) fn publisher(&self) -> Publisher<'_> {
        Publisher {
            shared: &self.shared,
            epoch: self.epoch,
        }
    }

    /// Publishes `start..end` ([`Publisher::publish`]), for callers whose
    /// buffer outlives the call.
    pub(crate) fn publish(&self, start: usize, end: usize, tag: u32) {
        self.publisher().publish(start, end, tag);
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
            self.shadow = shadow(self.capacity);
        }
    }

    /// Takes the buffer's allocation, empty, its bytes' contents
    /// unspecified, for a later buffer of the same size (`From<Vec<u8>>`
    /// makes one, with nothing published): its pages
    /// are already mapped, so appends into it fault none in. Only once no
    /// appender or reader reaches the buffer; it holds nothing afterwards.
    pub(crate) fn take_allocation(&mut self) -> Vec<u8> {
        let capacity = std::mem::take(&mut self.capacity);
        let ptr = std::mem::replace(&mut self.ptr, NonNull::dangling());
        // SAFETY: `ptr` and `capacity` are those of the Vec this buffer was
        // made from (or reserved last); a length of 0 claims no byte as
        // initialized. The buffer keeps a dangling pointer and no capacity,
        // which its drop frees as an empty Vec.
        unsafe { Vec::from_raw_parts(ptr.as_ptr(), 0, capacity) }
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
        for cell in &self.shadow[offset..offset + bytes.len()] {
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
        for cell in &self.shadow[offset..offset + len] {
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
            #[cfg(idemkv_loom)]
            shadow: &*self.shadow,
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
            for cell in self.shadow.iter() {
                cell.with_mut(|_| ());
            }
            Box::leak(std::mem::take(&mut self.shadow));
            std::mem::forget(Arc::clone(&self.shared));
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
    #[cfg(idemkv_loom)]
    shadow: *const [loom::cell::UnsafeCell<()>],
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
        // SAFETY: as for the bytes: the buffer lives.
        for cell in unsafe { &(&*self.shadow)[..len] } {
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
/// Under the table's write lock, which waits for every reader to leave,
/// `set_view` gets the old segment and `next` (to take over the old
/// buffer's stream, [`PublishedBuf::succeed`]) and points the view at
/// `next`'s buffer, and `slot` is swapped; only then is the old segment
/// returned, for the caller to drop or to keep its buffer's allocation
/// for a later segment, so no reader can hold a pointer into memory that
/// is freed or written again.
///
/// # Safety
/// `slot` must point at a segment made by `Box::into_raw`, which nothing
/// else uses once this returns: no appender holds a reservation in it and
/// every other user of `slot` holds the lock the caller holds.
pub(crate) unsafe fn hand_over<T, A>(
    table: &BrLock<T>,
    set_view: impl FnOnce(&mut T, &A, &mut A),
    slot: &AtomicPtr<A>,
    mut next: Box<A>,
) -> Box<A> {
    let old = {
        let mut t = table.write();
        // SAFETY: the caller's obligation: `slot` points at a live segment
        // that only the caller uses.
        let current = unsafe { &*slot.load(Ordering::Acquire) };
        set_view(&mut t, current, &mut next);
        slot.swap(Box::into_raw(next), Ordering::AcqRel)
    };
    // SAFETY: the caller's obligation: `old` came from `Box::into_raw` and
    // no one uses it any more; readers left the table before the swap.
    unsafe { Box::from_raw(old) }
}
