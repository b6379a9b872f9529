//! The read path's publication (`src/log/active.rs`, used by `Log::append`
//! and `Log::read`): appenders write their reserved ranges through a raw
//! pointer, at the same time, then complete them: an appender at the front
//! publishes its end itself, one further on leaves it in the completion
//! ring, and whoever publishes a range publishes the completed ones after
//! it; readers load the length with `Acquire` and read only below it.
//!
//! Checked in every interleaving: a reader sees a whole number of records,
//! each with the bytes its appender put there, and each byte it reads is
//! ordered after the write of that byte (each byte has a loom cell; an
//! unordered read is reported as a race); the published length only grows,
//! never covers a range whose appender has not completed it, and in the
//! end covers every range (no completion is left in the ring unseen). With
//! the slot's store relaxed loom reports the race; with the completing
//! appender's look at the length a plain load instead of a
//! read-modify-write, a range stays unpublished.

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

/// Three appenders: a range may be published by the appender of an
/// earlier one (from the completion ring) or by its own, and the last
/// starts so far past the published length (with the models' ring of 4
/// one-byte slots) that it waits for the first to be published.
#[test]
fn completed_ranges_are_published_by_whoever_reaches_them() {
    const RANGES: [&[u8]; 3] = [&[1, 1, 1], &[2], &[3, 3]];
    explore("publication, 3 appenders", || {
        let buf = std::sync::Arc::new(PublishedBuf::with_capacity(6));
        let mut start = 0;
        let appenders: Vec<_> = RANGES
            .iter()
            .enumerate()
            .map(|(i, record)| {
                let (buf, at) = (buf.clone(), start);
                start += record.len();
                thread::spawn(move || {
                    // SAFETY: each appender writes only its own range.
                    unsafe { buf.write(at, record) };
                    buf.publish(at, at + record.len(), i as u32 + 1);
                })
            })
            .collect();
        for t in appenders {
            t.join().unwrap();
        }
        assert_eq!(buf.bytes(), &[1, 1, 1, 2, 3, 3], "every range, in order");
        assert_eq!(buf.published_and_tag(), (6, 3), "the last range's tag");
    });
}
