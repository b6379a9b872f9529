//! Group commit: many callers waiting for durability share one fsync.
//!
//! The log has two write streams, each with its own active file. For each
//! stream, `durable` is the sequence number below which every record of the
//! stream is on disk. A caller that needs its record durable calls
//! [`GroupCommit::wait`] with a [`DurableTarget`]: the record's stream and
//! the sequence number just past it. If no sync is running it becomes the
//! leader, writes out its stream's buffer and fsyncs that one file; callers
//! that arrive while a sync runs sleep until it ends, and the next leader
//! covers all of them. One fsync per cycle, whichever stream: when both
//! streams have waiters, cycles alternate between the two files, each as
//! cheap as a one-file cycle.

use crate::durability::{DurableTarget, PerStream, Stream};
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard};
use std::io;
use std::sync::atomic::Ordering;

/// Who syncs: whether a leader is at work, and how many callers wait on each
/// stream.
#[derive(Default)]
struct Leader {
    busy: bool,
    waiting: PerStream<usize>,
}

pub(crate) struct GroupCommit {
    leader: Mutex<Leader>,
    done: Condvar,
    /// Per stream: every record below this sequence number is durable.
    durable: PerStream<AtomicU64>,
    poisoned: AtomicBool,
}

impl GroupCommit {
    /// A group commit with every record of both streams below `durable`
    /// already durable.
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            leader: Mutex::new(Leader::default()),
            done: Condvar::new(),
            durable: PerStream::from_fn(|_| AtomicU64::new(durable)),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Whether `target` is durable.
    pub(crate) fn is_durable(&self, target: DurableTarget) -> bool {
        self.durable[target.stream].load(Ordering::Acquire) >= target.end
    }

    /// Records that every record of each stream below its end in `ends` is
    /// durable (0 changes nothing).
    fn advance(&self, ends: PerStream<u64>) {
        for (stream, &end) in ends.iter() {
            self.durable[stream].fetch_max(end, Ordering::AcqRel);
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
        target: DurableTarget,
        sync: impl Fn(Stream) -> io::Result<PerStream<u64>>,
    ) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.is_durable(target) {
            return Ok(());
        }
        let stream = target.stream;
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
            let other = stream.other();
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
        debug_assert!(leader.waiting[stream] > 0, "every waiter counted itself in");
        leader.waiting[stream] -= 1;
        outcome
    }
}

#[cfg(all(test, not(idemkv_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn t(stream: Stream, end: u64) -> DurableTarget {
        DurableTarget { stream, end }
    }
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
                        gc.wait(t(Stream::Main, end), |s| {
                            assert_eq!(s, Stream::Main);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok(PerStream([appended.load(Ordering::SeqCst), 0]))
                        })
                        .unwrap();
                        assert!(gc.is_durable(t(Stream::Main, end)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) <= 1600);
        assert!(gc.is_durable(t(Stream::Main, 1600)));
        assert!(!gc.is_durable(t(Stream::Main, 1601)));
        assert!(
            !gc.is_durable(t(Stream::Claims, 1)),
            "the other stream never synced"
        );
    }

    #[test]
    fn a_sync_covers_only_the_streams_it_reports() {
        let gc = GroupCommit::new(10);
        assert!(gc.is_durable(t(Stream::Claims, 10)) && !gc.is_durable(t(Stream::Claims, 11)));
        gc.wait(t(Stream::Claims, 20), |s| {
            assert_eq!(s, Stream::Claims, "the waiter's stream is synced");
            Ok(PerStream([0, 25]))
        })
        .unwrap();
        assert!(gc.is_durable(t(Stream::Claims, 25)));
        assert!(!gc.is_durable(t(Stream::Main, 11)));
        // A sync that finds the other stream clean reports both.
        gc.wait(t(Stream::Main, 11), |_| Ok(PerStream([30, 30])))
            .unwrap();
        assert!(gc.is_durable(t(Stream::Main, 30)) && gc.is_durable(t(Stream::Claims, 30)));
    }

    #[test]
    fn failed_sync_poisons_everyone() {
        let gc = GroupCommit::new(0);
        let err = gc
            .wait(t(Stream::Main, 5), |_| Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(matches!(err, Error::Io(_)));
        assert!(matches!(
            gc.wait(t(Stream::Main, 5), |_| Ok(PerStream([5, 5]))),
            Err(Error::Poisoned)
        ));
        assert!(!gc.is_durable(t(Stream::Main, 1)));
    }
}
