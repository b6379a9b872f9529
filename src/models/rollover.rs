//! Rollover's switch of the active buffer (`active::hand_over`, used by
//! `Log::rollover`) over the segment table's reader-striped lock
//! (`src/log/brlock.rs`).
//!
//! Readers take the table's read lock, find the active buffer's view and
//! read what is published; the writer appends to the old buffer, then hands
//! over to the next one, which frees the old. Checked in every
//! interleaving: no reader reads a byte of a buffer after (or unordered
//! with) its free, since freeing touches every byte's loom cell; readers
//! see a whole prefix of one buffer or the other; the table's data is
//! never read while the writer changes it (a loom cell too).

use super::explore;
use crate::log::active::{BufView, PublishedBuf, hand_over};
use crate::log::brlock::BrLock;
use loom::thread;
use std::sync::Arc;
use std::sync::atomic::AtomicPtr;

/// The table as readers see it: which buffer is active, and its view.
struct Table {
    id: u32,
    view: BufView,
}

/// What a reader of buffer `id` may see: a prefix of its records.
fn valid(id: u32, seen: &[u8]) -> bool {
    match id {
        1 => [&[][..], &[1, 1], &[1, 1, 1]].contains(&seen),
        2 => [&[][..], &[2, 2]].contains(&seen),
        _ => false,
    }
}

#[test]
fn rollover_frees_a_buffer_only_after_readers_left_it() {
    explore("rollover hand-over, 1 writer and 2 readers", || {
        let mut old = PublishedBuf::with_capacity(3);
        old.append(&[1, 1], 0);
        let table = Arc::new(BrLock::new(Table {
            id: 1,
            view: old.view(),
        }));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = table.clone();
                thread::spawn(move || {
                    let t = table.read();
                    // SAFETY: the table is read-locked: the buffer it shows
                    // is not freed until the lock is released.
                    let seen = unsafe { t.view.published() };
                    assert!(valid(t.id, seen), "buffer {} showed {seen:?}", t.id);
                })
            })
            .collect();
        // The writer: one more record, then the rollover.
        old.append(&[1], 0);
        let mut next = PublishedBuf::with_capacity(2);
        next.append(&[2, 2], 0);
        let active = AtomicPtr::new(Box::into_raw(Box::new(old)));
        // SAFETY: `active` came from `Box::into_raw`, and only this thread
        // uses it.
        drop(unsafe {
            hand_over(
                &table,
                |t, old: &PublishedBuf, next: &mut PublishedBuf| {
                    next.succeed(old);
                    t.id = 2;
                    t.view = next.view();
                },
                &active,
                Box::new(next),
            )
        });
        for t in readers {
            t.join().unwrap();
        }
        {
            let t = table.read();
            // SAFETY: `active` owns the buffer the table shows.
            assert_eq!(unsafe { t.view.published() }, &[2, 2]);
            assert_eq!(t.id, 2);
        }
        // SAFETY: from `Box::into_raw`; nothing uses it any more.
        drop(unsafe { Box::from_raw(active.into_inner()) });
    });
}
