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
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard};
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a sleeper sleeps before it looks again by itself: only a bound
/// on a wake-up that went astray, since every sync wakes the sleepers it
/// covers.
const SLEEP_BOUND: Duration = Duration::from_millis(100);

/// A caller asleep until its record is durable.
struct Sleeper {
    /// The sequence number just past its record.
    end: u64,
    thread: Thread,
    /// Tells this sleeper from the caller's other waits.
    ticket: u64,
}

/// What a stream's group commit keeps under its lock.
struct State {
    /// Whether a leader is syncing the stream.
    busy: bool,
    /// Callers asleep until a sync covers their record, or until they are
    /// picked to lead the next sync.
    sleepers: Vec<Sleeper>,
    next_ticket: u64,
}

/// One stream's group commit.
struct StreamCommit {
    state: Mutex<State>,
    /// Every record of the stream below this sequence number is durable.
    durable: AtomicU64,
}

impl StreamCommit {
    /// Takes out of `st` the sleepers whose records are below `durable`,
    /// and, with `lead`, the first other one too (to lead the next sync),
    /// so that the caller wakes them once the lock is released. Only
    /// those: a sleeper whose record the sync did not cover sleeps on.
    fn take_woken(st: &mut State, durable: u64, lead: bool) -> Vec<Thread> {
        let mut woken = Vec::new();
        let mut lead = lead;
        let mut i = 0;
        while i < st.sleepers.len() {
            if st.sleepers[i].end <= durable || std::mem::take(&mut lead) {
                woken.push(st.sleepers.swap_remove(i).thread);
            } else {
                i += 1;
            }
        }
        woken
    }

    /// Wakes the sleepers whose records are below `durable` (all of them
    /// with `u64::MAX`), once the lock is released.
    fn wake_covered(&self, durable: u64) {
        let woken = StreamCommit::take_woken(&mut self.state.lock(), durable, false);
        woken.iter().for_each(Thread::unpark);
    }
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
                state: Mutex::new(State {
                    busy: false,
                    sleepers: Vec::new(),
                    next_ticket: 0,
                }),
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
            sc.wake_covered(u64::MAX);
        }
    }

    /// Returns once `target` is durable.
    ///
    /// `sync(stream)` writes out and fsyncs what has been appended to that
    /// stream, returning, for each stream, the sequence number below which
    /// it is now durable (0 for no change); at most one caller per stream
    /// runs it at a time.
    ///
    /// A caller that finds a sync running sleeps; a sync wakes exactly the
    /// sleepers whose records it made durable, plus one of the others, who
    /// leads the next sync (a thundering herd of callers the sync did not
    /// cover would only go back to sleep, on a small machine at the cost of
    /// the next sync).
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
        let mut st = sc.state.lock();
        // This caller's sleeper, while it is in the list.
        let mut asleep: Option<u64> = None;
        loop {
            // Out of the list once a sync woke it.
            asleep = asleep.filter(|&t| st.sleepers.iter().any(|s| s.ticket == t));
            let done = self.is_durable(target);
            if (done || self.is_poisoned() || !st.busy)
                && let Some(t) = asleep.take()
            {
                st.sleepers.retain(|s| s.ticket != t);
            }
            if done || self.is_poisoned() {
                // Leaving while others sleep and no sync runs (this caller
                // was picked to lead, but another stream's sync covered
                // it): one of them leads instead.
                let next = (!st.busy && !st.sleepers.is_empty()).then(|| st.sleepers.remove(0));
                drop(st);
                if let Some(next) = next {
                    next.thread.unpark();
                }
                return if done { Ok(()) } else { Err(Error::Poisoned) };
            }
            if !st.busy {
                self.lead(stream, st, &sync)?;
                if !self.is_durable(target) {
                    // The sync wrote out everything published, so the
                    // record is not published yet: its range waits for an
                    // earlier appender's (`active.rs`), likely descheduled
                    // on a busy machine. Let it run.
                    thread::yield_now();
                }
                st = sc.state.lock();
                continue;
            }
            if asleep.is_none() {
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                st.sleepers.push(Sleeper {
                    end: target.end,
                    thread: thread::current(),
                    ticket,
                });
                asleep = Some(ticket);
            }
            MutexGuard::unlocked(&mut st, || thread::park_timeout(SLEEP_BOUND));
        }
    }

    /// Runs one sync of `stream` as its leader (`st` is its locked state,
    /// with no sync running), publishes the watermarks it reports and
    /// wakes the sleepers they cover.
    fn lead(
        &self,
        stream: Stream,
        mut st: MutexGuard<'_, State>,
        sync: &impl Fn(Stream) -> io::Result<PerStream<u64>>,
    ) -> Result<()> {
        let sc = &self.streams[stream];
        st.busy = true;
        let synced = MutexGuard::unlocked(&mut st, || sync(stream));
        st.busy = false;
        let ends = match synced {
            Ok(ends) => ends,
            Err(e) => {
                crate::observe::event!(
                    error,
                    error = %e,
                    "store poisoned: a write or fsync failed; it refuses writes until reopened"
                );
                drop(st);
                self.poison();
                return Err(e.into());
            }
        };
        sc.durable.fetch_max(ends[stream], Ordering::AcqRel);
        let durable = sc.durable.load(Ordering::Acquire);
        let woken = StreamCommit::take_woken(&mut st, durable, true);
        drop(st);
        woken.iter().for_each(Thread::unpark);
        let other = &self.streams[stream.other()];
        let end = ends[stream.other()];
        if other.durable.fetch_max(end, Ordering::AcqRel) < end {
            other.wake_covered(end);
        }
        Ok(())
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
