//! The read path's publication (`src/log/active.rs`, used by `Log::append`
//! and `Log::read`): records copied past the published length through a
//! raw pointer, the length stored with `Release`, loaded with `Acquire` by
//! readers who read only below it.
//!
//! Checked in every interleaving: a reader sees a whole number of records,
//! each with the bytes the writer put there, and each byte it reads is
//! ordered after the write of that byte (each byte has a loom cell; an
//! unordered read is reported as a race). With the store or the load
//! relaxed, loom reports that race.

use super::explore;
use crate::log::active::PublishedBuf;
use loom::thread;

/// The records the writer appends: a header, then two records.
const RECORDS: [&[u8]; 3] = [&[1, 1], &[2, 2, 2], &[3]];

/// Whether `seen` is the first few of [`RECORDS`], whole.
fn is_whole_prefix(seen: &[u8]) -> bool {
    let mut expected = Vec::new();
    for r in RECORDS {
        if seen == expected.as_slice() {
            return true;
        }
        expected.extend_from_slice(r);
    }
    seen == expected.as_slice()
}

#[test]
fn readers_see_only_whole_published_records() {
    explore("publication, 1 writer and 2 readers", || {
        let total = RECORDS.iter().map(|r| r.len()).sum();
        let mut buf = PublishedBuf::with_capacity(total);
        buf.append(RECORDS[0]);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let view = buf.view();
                thread::spawn(move || {
                    for _ in 0..2 {
                        // SAFETY: the buffer is dropped after this thread
                        // is joined.
                        let seen = unsafe { view.published() };
                        assert!(is_whole_prefix(seen), "a reader saw {seen:?}");
                    }
                })
            })
            .collect();
        for r in &RECORDS[1..] {
            buf.append(r);
        }
        assert!(is_whole_prefix(&buf) && buf.len() == total);
        for t in readers {
            t.join().unwrap();
        }
    });
}
