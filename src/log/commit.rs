//! Group commit: many callers waiting for durability share one fsync.
//!
//! The log has two write streams, each with its own active file, and each
//! stream has its own group commit: `durable` is the sequence number below
//! which every record of the stream is on disk. A caller that needs its
//! record durable calls [`GroupCommit::wait`] with a [`DurableTarget`]: the
//! record's stream and the sequence number just past it. If no sync of that
//! stream is running it becomes the stream's leader, writes out the
//! stream's buffer and fsyncs that one file; callers of the stream that
//! arrive while a sync runs sleep until it ends, and the next leader covers
//! all of them. The two streams' leaders work at the same time, each on its
//! own file, and a sync wakes only the callers of its own stream.

use crate::durability::{DurableTarget, PerStream, Stream};
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard};
use std::io;
use std::sync::atomic::Ordering;

/// One stream's group commit.
struct StreamCommit {
    /// Whether a leader is syncing the stream.
    busy: Mutex<bool>,
    /// Signalled when a sync of the stream ends (or the log is poisoned).
    done: Condvar,
    /// Every record of the stream below this sequence number is durable.
    durable: AtomicU64,
}

pub(crate) struct GroupCommit {
    streams: PerStream<StreamCommit>,
    poisoned: AtomicBool,
}

impl GroupCommit {
    /// A group commit with every record of both streams below `durable`
    /// already durable.
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            streams: PerStream::from_fn(|_| StreamCommit {
                busy: Mutex::new(false),
                done: Condvar::new(),
                durable: AtomicU64::new(durable),
            }),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Whether `target` is durable.
    pub(crate) fn is_durable(&self, target: DurableTarget) -> bool {
        self.streams[target.stream].durable.load(Ordering::Acquire) >= target.end
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Marks the log as failed: every later write and wait answers `Poisoned`.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        // Wake sleepers so they see the poison instead of waiting for a
        // leader that will not come.
        for (_, sc) in self.streams.iter() {
            let _guard = sc.busy.lock();
            sc.done.notify_all();
        }
    }

    /// Returns once `target` is durable.
    ///
    /// `sync(stream)` writes out and fsyncs what has been appended to that
    /// stream, returning, for each stream, the sequence number below which
    /// it is now durable (0 for no change); at most one caller per stream
    /// runs it at a time.
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
        let sc = &self.streams[stream];
        let mut busy = sc.busy.lock();
        loop {
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if self.is_durable(target) {
                return Ok(());
            }
            if *busy {
                sc.done.wait(&mut busy);
                continue;
            }
            *busy = true;
            let synced = MutexGuard::unlocked(&mut busy, || sync(stream));
            *busy = false;
            match synced {
                Ok(ends) => {
                    sc.durable.fetch_max(ends[stream], Ordering::AcqRel);
                    sc.done.notify_all();
                    let other = &self.streams[stream.other()];
                    if other
                        .durable
                        .fetch_max(ends[stream.other()], Ordering::AcqRel)
                        < ends[stream.other()]
                    {
                        drop(busy);
                        let _guard = other.busy.lock();
                        other.done.notify_all();
                        busy = sc.busy.lock();
                    }
                }
                Err(e) => {
                    crate::observe::event!(
                        error,
                        error = %e,
                        "store poisoned: a write or fsync failed; it refuses writes until reopened"
                    );
                    drop(busy);
                    self.poison();
                    return Err(e.into());
                }
            }
        }
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
