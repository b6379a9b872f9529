//! Group commit (`src/log/commit.rs`): the durable watermark handed between
//! the leader and the sleepers.
//!
//! A small log stands in for the files: appends take a writer lock and get
//! sequence numbers; the sync the leader runs writes out its stream, then
//! "fsyncs" it: it marks each record it makes durable in the disk image, a
//! loom cell per record, and moves the image's per-stream mark (one more
//! loom cell). Checked in every interleaving:
//! - a caller whose `wait` returned `Ok` finds its record marked, and that
//!   read is ordered after the leader's write of the mark (else loom
//!   reports a race): the watermark is published after the fsync;
//! - at most one sync per stream runs at a time (two at once would race
//!   on the stream's mark), while the two streams' syncs may overlap;
//! - nobody sleeps forever (loom reports a deadlock): no lost wake-up;
//! - at the end, neither stream's watermark is past what the disk holds;
//! - after a failed sync or a `poison`, every caller returns an error or a
//!   durable record, and none hangs.

use super::explore;
use crate::durability::{DurableTarget, PerStream, Stream};
use crate::error::Error;
use crate::log::commit::GroupCommit;
use crate::sync::Mutex;
use loom::cell::UnsafeCell;
use loom::thread;
use std::io;
use std::sync::Arc;

/// Records a model appends at most.
const MAX_RECORDS: usize = 8;

/// The writer side of the stand-in log.
struct Writer {
    next_seq: u64,
    /// The stream of each record, by sequence number.
    streams: Vec<usize>,
}

/// The model's streams are numbered 0 (main) and 1 (claims).
fn target(stream: usize, end: u64) -> DurableTarget {
    DurableTarget {
        stream: Stream::ALL[stream],
        end,
    }
}

fn number(stream: Stream) -> usize {
    usize::from(stream == Stream::Claims)
}

struct Log {
    commit: GroupCommit,
    writer: Mutex<Writer>,
    /// Per stream: every record of the stream below this sequence number
    /// is on disk.
    disk: [UnsafeCell<u64>; 2],
    /// Per record: on disk.
    records: Vec<UnsafeCell<bool>>,
    /// Syncs that fail before the disk changes (from the first on).
    failing_syncs: bool,
}

impl Log {
    fn new(failing_syncs: bool) -> Arc<Log> {
        Arc::new(Log {
            // Sequence numbers start at 1; nothing below it exists.
            commit: GroupCommit::new(1),
            writer: Mutex::new(Writer {
                next_seq: 1,
                streams: vec![0],
            }),
            disk: [UnsafeCell::new(1), UnsafeCell::new(1)],
            records: (0..MAX_RECORDS).map(|_| UnsafeCell::new(false)).collect(),
            failing_syncs,
        })
    }

    fn append(&self, stream: usize) -> u64 {
        let mut w = self.writer.lock();
        let seq = w.next_seq;
        w.next_seq += 1;
        w.streams.push(stream);
        seq
    }

    /// What `Log::write_out_and_fsync` does, on the stand-in.
    fn sync(&self, s: usize) -> io::Result<[u64; 2]> {
        if self.failing_syncs {
            return Err(io::Error::other("fsync failed"));
        }
        let (end, streams) = {
            let w = self.writer.lock();
            (w.next_seq, w.streams.clone())
        };
        let mut ends = [0; 2];
        ends[s] = end;
        self.disk[s].with_mut(|below| {
            // SAFETY: loom checks that no other sync of the stream runs.
            let below = unsafe { &mut *below };
            for seq in *below..end {
                if streams[seq as usize] == s {
                    // SAFETY: loom checks that nobody reads it yet.
                    self.records[seq as usize].with_mut(|r| unsafe { *r = true });
                }
            }
            *below = (*below).max(end);
        });
        Ok(ends)
    }

    /// Whether record `seq` is on disk.
    fn on_disk(&self, seq: u64) -> bool {
        // SAFETY: loom checks that this read is ordered after the write.
        self.records[seq as usize].with(|r| unsafe { *r })
    }

    /// Appends a record to `stream` and waits for it, as a write under
    /// `Durability::Immediate` does.
    fn durable_write(&self, stream: usize) -> Result<u64, Error> {
        let seq = self.append(stream);
        self.commit
            .wait(target(stream, seq + 1), |s| {
                self.sync(number(s)).map(PerStream)
            })
            .map(|()| seq)
    }

    /// The watermarks never pass the disk image.
    fn check_watermarks(&self) {
        for s in 0..2 {
            // SAFETY: called once every caller has been joined.
            let below = self.disk[s].with(|d| unsafe { *d });
            assert!(
                !self.commit.is_durable(target(s, below + 1)),
                "stream {s}'s watermark passed what was fsynced ({below})"
            );
        }
    }
}

/// Three callers, on the streams given (the last on this thread), each
/// waiting for its own durable write: each must find its record on disk.
fn three_durable_writers(streams: [usize; 3]) {
    let log = Log::new(false);
    let others: Vec<_> = streams[..2]
        .iter()
        .map(|&stream| {
            let log = log.clone();
            thread::spawn(move || {
                let seq = log.durable_write(stream).expect("no sync fails");
                assert!(log.on_disk(seq), "acknowledged but not on disk");
            })
        })
        .collect();
    let seq = log.durable_write(streams[2]).expect("no sync fails");
    assert!(log.on_disk(seq), "acknowledged but not on disk");
    for t in others {
        t.join().unwrap();
    }
    log.check_watermarks();
}

#[test]
fn group_commit_hands_the_watermark_to_sleepers() {
    explore("group commit, 3 callers on 2 streams", || {
        three_durable_writers([0, 1, 0]);
    });
}

#[test]
fn group_commit_shares_one_sync_between_sleepers_of_a_stream() {
    explore("group commit, 3 callers on 1 stream", || {
        three_durable_writers([0, 0, 0]);
    });
}

#[test]
fn group_commit_poisons_every_caller_after_a_failed_sync() {
    explore("group commit, failing sync", || {
        let log = Log::new(true);
        let others: Vec<_> = [0, 1]
            .into_iter()
            .map(|stream| {
                let log = log.clone();
                thread::spawn(move || log.durable_write(stream))
            })
            .collect();
        let mine = log.durable_write(0);
        let mut answers = vec![mine];
        answers.extend(others.into_iter().map(|t| t.join().unwrap()));
        for a in answers {
            assert!(
                matches!(a, Err(Error::Io(_) | Error::Poisoned)),
                "a failed sync acknowledges nothing: {a:?}"
            );
        }
        assert!(log.commit.is_poisoned());
        log.check_watermarks();
        assert!(
            matches!(log.durable_write(1), Err(Error::Poisoned)),
            "no retry after a failed fsync"
        );
    });
}

#[test]
fn group_commit_poison_wakes_sleepers() {
    explore("group commit, poison from another thread", || {
        let log = Log::new(false);
        let waiters: Vec<_> = [0, 1]
            .into_iter()
            .map(|stream| {
                let log = log.clone();
                thread::spawn(move || match log.durable_write(stream) {
                    Ok(seq) => assert!(log.on_disk(seq)),
                    Err(e) => assert!(matches!(e, Error::Poisoned), "{e:?}"),
                })
            })
            .collect();
        // A failed rollover, say: poisons while others wait.
        log.commit.poison();
        for t in waiters {
            t.join().unwrap();
        }
        log.check_watermarks();
    });
}
