//! The read path's publication (`src/log/active.rs`, used by `Log::append`
//! and `Log::read`): appenders write their reserved ranges through a raw
//! pointer, at the same time, then publish them in reservation order (each
//! waits until everything before its range is published, then stores its
//! end with `Release`); readers load the length with `Acquire` and read
//! only below it.
//!
//! Checked in every interleaving: a reader sees a whole number of records,
//! each with the bytes its appender put there, and each byte it reads is
//! ordered after the write of that byte (each byte has a loom cell; an
//! unordered read is reported as a race); the published length only grows
//! and never covers a range whose appender has not published it. With the
//! store or the load relaxed, loom reports that race.

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
    explore("publication, 2 appenders and 1 reader", || {
        let total = RECORDS.iter().map(|r| r.len()).sum();
        let mut buf = PublishedBuf::with_capacity(total);
        buf.append(RECORDS[0], 0);
        let buf = std::sync::Arc::new(buf);
        // The ranges the two appenders reserved, in reservation order.
        let first = RECORDS[0].len();
        let second = first + RECORDS[1].len();
        let appenders: Vec<_> = [(first, RECORDS[1]), (second, RECORDS[2])]
            .into_iter()
            .enumerate()
            .map(|(i, (start, record))| {
                let buf = buf.clone();
                thread::spawn(move || {
                    // SAFETY: each appender writes only its own range.
                    unsafe { buf.write(start, record) };
                    buf.publish(start, start + record.len(), i as u32 + 1);
                })
            })
            .collect();
        let view = buf.view();
        for _ in 0..2 {
            // SAFETY: the buffer is dropped after every thread is joined.
            let seen = unsafe { view.published() };
            assert!(is_whole_prefix(seen), "a reader saw {seen:?}");
            // Lets the appenders run between the reads: without it loom
            // schedules the reader through before them.
            thread::yield_now();
        }
        for t in appenders {
            t.join().unwrap();
        }
        assert!(is_whole_prefix(buf.bytes()) && buf.len() == total);
        assert_eq!(buf.published_and_tag(), (total, 2), "the last range's tag");
    });
}
