//! Group commit: many callers waiting for durability share one fsync.
//!
//! The log has two write streams, each with its own active file. For each
//! stream, `durable` is the sequence number below which every record of the
//! stream is on disk. A caller that needs its record durable calls
//! [`GroupCommit::wait`] with a [`target`]: the record's stream and the
//! sequence number just past it. If no sync is running it becomes the
//! leader, writes out its stream's buffer and fsyncs that one file; callers
//! that arrive while a sync runs sleep until it ends, and the next leader
//! covers all of them. One fsync per cycle, whichever stream: when both
//! streams have waiters, cycles alternate between the two files, each as
//! cheap as a one-file cycle.

use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard};
use std::io;
use std::sync::atomic::Ordering;

/// A durability target: every record of `stream` (0 or 1) below sequence
/// number `end`, in one `u64` so futures and queues carry it as a number.
pub(crate) fn target(stream: usize, end: u64) -> u64 {
    debug_assert!(stream < 2 && end < 1 << 63);
    (end << 1) | stream as u64
}

/// The stream and end of a [`target`].
fn split(target: u64) -> (usize, u64) {
    ((target & 1) as usize, target >> 1)
}

/// The stream of a [`target`].
pub(crate) fn target_stream(target: u64) -> usize {
    split(target).0
}

/// Who syncs: whether a leader is at work, and how many callers wait on each
/// stream.
#[derive(Default)]
struct Leader {
    busy: bool,
    waiting: [usize; 2],
}

pub(crate) struct GroupCommit {
    leader: Mutex<Leader>,
    done: Condvar,
    /// Per stream: every record below this sequence number is durable.
    durable: [AtomicU64; 2],
    poisoned: AtomicBool,
}

impl GroupCommit {
    /// A group commit with every record of both streams below `durable`
    /// already durable.
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            leader: Mutex::new(Leader::default()),
            done: Condvar::new(),
            durable: [AtomicU64::new(durable), AtomicU64::new(durable)],
            poisoned: AtomicBool::new(false),
        }
    }

    /// Whether `target` is durable.
    pub(crate) fn is_durable(&self, target: u64) -> bool {
        let (stream, end) = split(target);
        self.durable[stream].load(Ordering::Acquire) >= end
    }

    /// Records that every record of stream `s` below `ends[s]` is durable
    /// (0 changes nothing).
    fn advance(&self, ends: [u64; 2]) {
        for (d, end) in self.durable.iter().zip(ends) {
            d.fetch_max(end, Ordering::AcqRel);
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Marks the log as failed: every later write and wait answers `Poisoned`.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        // Wake sleepers so they see the poison instead of waiting for a
        // leader that will not come.
        let _guard = self.leader.lock();
        self.done.notify_all();
    }

    /// Returns once `target` is durable.
    ///
    /// `sync(stream)` writes out and fsyncs what has been appended to that
    /// stream, returning, for each stream, the sequence number below which
    /// it is now durable (0 for no change); at most one caller runs it at a
    /// time. A leader syncs the stream more callers wait on (its own on a
    /// tie), so each fsync serves as many of them as it can; the callers of
    /// the other stream then have the next one.
    pub(crate) fn wait(
        &self,
        target: u64,
        sync: impl Fn(usize) -> io::Result<[u64; 2]>,
    ) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.is_durable(target) {
            return Ok(());
        }
        let (stream, _) = split(target);
        let mut leader = self.leader.lock();
        leader.waiting[stream] += 1;
        let outcome = loop {
            if self.is_poisoned() {
                break Err(Error::Poisoned);
            }
            if self.is_durable(target) {
                break Ok(());
            }
            if leader.busy {
                self.done.wait(&mut leader);
                continue;
            }
            leader.busy = true;
            let other = 1 - stream;
            let pick = if leader.waiting[other] > leader.waiting[stream] {
                other
            } else {
                stream
            };
            let synced = MutexGuard::unlocked(&mut leader, || sync(pick));
            leader.busy = false;
            match &synced {
                Ok(ends) => self.advance(*ends),
                Err(_e) => {
                    crate::observe::event!(
                        error,
                        error = %_e,
                        "store poisoned: a write or fsync failed; it refuses writes until reopened"
                    );
                    self.poisoned.store(true, Ordering::Release);
                }
            }
            self.done.notify_all();
            if let Err(e) = synced {
                break Err(e.into());
            }
        };
        leader.waiting[stream] -= 1;
        outcome
    }
}

#[cfg(all(test, not(idemkv_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn concurrent_waiters_share_syncs() {
        let gc = Arc::new(GroupCommit::new(0));
        let appended = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, appended, syncs) = (gc.clone(), appended.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let end = appended.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait(target(0, end), |s| {
                            assert_eq!(s, 0);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok([appended.load(Ordering::SeqCst), 0])
                        })
                        .unwrap();
                        assert!(gc.is_durable(target(0, end)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) <= 1600);
        assert!(gc.is_durable(target(0, 1600)));
        assert!(!gc.is_durable(target(0, 1601)));
        assert!(
            !gc.is_durable(target(1, 1)),
            "the other stream never synced"
        );
    }

    #[test]
    fn a_sync_covers_only_the_streams_it_reports() {
        let gc = GroupCommit::new(10);
        assert!(gc.is_durable(target(1, 10)) && !gc.is_durable(target(1, 11)));
        gc.wait(target(1, 20), |s| {
            assert_eq!(s, 1, "the waiter's stream is synced");
            Ok([0, 25])
        })
        .unwrap();
        assert!(gc.is_durable(target(1, 25)));
        assert!(!gc.is_durable(target(0, 11)));
        // A sync that finds the other stream clean reports both.
        gc.wait(target(0, 11), |_| Ok([30, 30])).unwrap();
        assert!(gc.is_durable(target(0, 30)) && gc.is_durable(target(1, 30)));
    }

    #[test]
    fn failed_sync_poisons_everyone() {
        let gc = GroupCommit::new(0);
        let err = gc
            .wait(target(0, 5), |_| Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(matches!(err, Error::Io(_)));
        assert!(matches!(
            gc.wait(target(0, 5), |_| Ok([5, 5])),
            Err(Error::Poisoned)
        ));
        assert!(!gc.is_durable(target(0, 1)));
    }
}
