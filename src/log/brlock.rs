//! A reader-striped lock for data that is read on every operation and
//! changed rarely (the segment table changes at rollover and compaction).
//!
//! A plain `RwLock` makes every reader write the lock's one cache line, so
//! two cores reading at once pass that line back and forth. Here each thread
//! read-locks one of several stripes, each on its own cache line; a writer
//! locks them all, in order. Readers on different stripes never touch the
//! same line.

#![allow(
    unsafe_code,
    reason = "a reader-striped lock hands out references to the data it guards"
)]

use crate::stripes::{Padded, STRIPES, stripe};
use crate::sync::{CellMut, CellRef, RwLock, RwLockReadGuard, RwLockWriteGuard, UnsafeCell};
use std::ops::{Deref, DerefMut};

pub(crate) struct BrLock<T> {
    stripes: [Padded<RwLock<()>>; STRIPES],
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through `read` (shared, while a stripe is
// read-locked, which excludes every writer) and `write` (exclusive, while
// every stripe is write-locked), as with `RwLock<T>`.
unsafe impl<T: Send + Sync> Sync for BrLock<T> {}
// SAFETY: moving the lock moves the data; nothing refers to a thread.
unsafe impl<T: Send> Send for BrLock<T> {}

impl<T> BrLock<T> {
    pub(crate) fn new(data: T) -> Self {
        BrLock {
            stripes: Default::default(),
            data: UnsafeCell::new(data),
        }
    }

    /// Shared access. Do not call again (or call `write`) on this thread
    /// while the guard lives: a queued writer would deadlock the two.
    pub(crate) fn read(&self) -> BrReadGuard<'_, T> {
        let guard = self.stripes[stripe()].0.read();
        // SAFETY: a stripe is read-locked, so no writer holds every stripe.
        let data = unsafe { self.data.borrow() };
        BrReadGuard {
            data,
            _guard: guard,
        }
    }

    /// Exclusive access: waits for every reader to leave.
    pub(crate) fn write(&self) -> BrWriteGuard<'_, T> {
        let guards = self.stripes.each_ref().map(|s| s.0.write());
        // SAFETY: every stripe is write-locked, so no reader or other writer
        // can reach the data until the guards drop.
        let data = unsafe { self.data.borrow_mut() };
        BrWriteGuard {
            data,
            _guards: guards,
        }
    }
}

// Field order: the borrow ends before the lock is released.
pub(crate) struct BrReadGuard<'a, T> {
    data: CellRef<'a, T>,
    _guard: RwLockReadGuard<'a, ()>,
}

impl<T> Deref for BrReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        Deref::deref(&self.data)
    }
}

pub(crate) struct BrWriteGuard<'a, T> {
    data: CellMut<'a, T>,
    _guards: [RwLockWriteGuard<'a, ()>; STRIPES],
}

impl<T> Deref for BrWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        Deref::deref(&self.data)
    }
}

impl<T> DerefMut for BrWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        DerefMut::deref_mut(&mut self.data)
    }
}

#[cfg(all(test, not(idemkv_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn writers_exclude_readers_on_every_stripe() {
        let lock = Arc::new(BrLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if i % 4 == 0 {
                            let mut w = lock.write();
                            w.0 += 1;
                            w.1 += 1;
                        } else {
                            let r = lock.read();
                            assert_eq!(r.0, r.1, "a reader never sees half a write");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.read(), (4_000, 4_000));
    }
}
