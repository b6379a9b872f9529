//! Group commit: many callers waiting for durability share one fsync.
//!
//! Log positions (`lpos`) order every byte of the log: the segment id in the
//! high 32 bits, the offset in the low 32. `durable` is the position below
//! which every byte is on disk. A caller that needs its record durable calls
//! [`GroupCommit::wait`]: if no sync is running it becomes the leader, writes
//! out everything appended so far and fsyncs once; callers that arrive while a
//! sync runs sleep until it ends, and the next leader covers all of them.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(crate) struct GroupCommit {
    /// True while a leader runs a sync.
    leader: Mutex<bool>,
    done: Condvar,
    durable: AtomicU64,
    poisoned: AtomicBool,
}

impl GroupCommit {
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            leader: Mutex::new(false),
            done: Condvar::new(),
            durable: AtomicU64::new(durable),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Every byte below the returned position is durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records that everything below `lpos` is durable.
    pub(crate) fn advance(&self, lpos: u64) {
        self.durable.fetch_max(lpos, Ordering::AcqRel);
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

    /// Returns once every byte below `target` is durable.
    ///
    /// `sync` writes out and fsyncs what has been appended, returning the
    /// position it made durable; at most one caller runs it at a time.
    pub(crate) fn wait(&self, target: u64, sync: impl Fn() -> io::Result<u64>) -> Result<()> {
        loop {
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if self.durable() >= target {
                return Ok(());
            }
            let mut leader = self.leader.lock();
            if self.is_poisoned() || self.durable() >= target {
                continue;
            }
            if *leader {
                self.done.wait(&mut leader);
                continue;
            }
            *leader = true;
            drop(leader);

            let outcome = sync();

            let mut leader = self.leader.lock();
            *leader = false;
            match &outcome {
                Ok(lpos) => self.advance(*lpos),
                Err(_e) => {
                    crate::observe::event!(
                        error,
                        error = %_e,
                        "store poisoned: a write or fsync failed; it refuses writes until reopened"
                    );
                    self.poisoned.store(true, Ordering::Release)
                }
            }
            self.done.notify_all();
            drop(leader);
            outcome?;
        }
    }
}

#[cfg(test)]
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
                        let target = appended.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait(target, || {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok(appended.load(Ordering::SeqCst))
                        })
                        .unwrap();
                        assert!(gc.durable() >= target);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) <= 1600);
        assert_eq!(gc.durable(), 1600);
    }

    #[test]
    fn failed_sync_poisons_everyone() {
        let gc = GroupCommit::new(0);
        let err = gc
            .wait(5, || Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(matches!(err, Error::Io(_)));
        assert!(matches!(gc.wait(5, || Ok(5)), Err(Error::Poisoned)));
        assert_eq!(gc.durable(), 0);
    }
}
