//! The store's service threads: fsyncs and deadlines for async callers.
//!
//! - the durability queues: async callers whose record is not durable yet,
//!   one queue per stream. One thread per stream drains its queue: it joins
//!   the stream's group commit for the furthest target asked for, then
//!   wakes everyone now covered. Executor threads never fsync, every async
//!   caller that arrives while an fsync runs shares the next one, and the
//!   two streams' fsyncs run at the same time, as the blocking callers'
//!   do (one thread for both made a claim's wait include the main
//!   stream's fsync: 1,000 tasks, durable, about 0.43 of the non-durable
//!   rate with the processors 70 % busy).
//! - the relay: the service thread wakes only the first few callers an
//!   fsync covered ([`DIRECT_WAKES`]) and leaves the rest in a ready list.
//!   Each covered future, when it is polled on an executor thread, wakes up
//!   to [`RELAY_WAKES`] more from the list, so the wake-ups fan out across
//!   the executor's own threads (a wake from a worker thread goes to its
//!   local run queue: no lock of the executor's shared queue, no unpark),
//!   and the service thread starts the next fsync at once instead of after
//!   hundreds of wake-ups. What the list still holds when the next fsync
//!   ends, or when the thread would go idle, it wakes itself: a caller that
//!   nothing relayed waits one fsync more at most.
//! - the timers: async waiters' deadlines (a `claim_wait` timeout or a
//!   lease end), kept in a heap and fired by the main stream's thread.

use crate::durability::{DurableTarget, PerStream, Stream};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::sync::AtomicUsize;
use crate::sync::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Callers an fsync covered that the service thread wakes itself; the
/// rest wait in the ready list for the relay.
pub(crate) const DIRECT_WAKES: usize = 4;
/// Callers each covered future wakes from the ready list when polled.
const RELAY_WAKES: usize = 16;

#[derive(Default)]
struct ServiceState {
    /// Async callers waiting for a durability target, by stream.
    durable: PerStream<Vec<(DurableTarget, Waker)>>,
    /// Async deadlines; the sequence number keeps equal instants apart.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_wakers: HashMap<u64, Waker>,
    next_timer: u64,
    stop: bool,
}

/// The per-store threads that fsync for async callers and fire their
/// deadlines. See the module docs.
#[derive(Default)]
pub(crate) struct Service {
    state: Mutex<ServiceState>,
    /// Callers whose target is met, not woken yet (see "the relay").
    ready: Mutex<Vec<Waker>>,
    /// Length of `ready`, read without its lock.
    ready_len: AtomicUsize,
    /// Each stream's thread waits here for work (the main stream's for
    /// timers too).
    work: PerStream<Condvar>,
}

impl Service {
    /// Queues `waker` until the durability target `target` is met.
    fn wake_when_durable(&self, target: DurableTarget, waker: &Waker) {
        self.state.lock().durable[target.stream].push((target, waker.clone()));
        self.work[target.stream].notify_one();
    }

    /// Wakes `waker` at `deadline`.
    pub(super) fn wake_at(&self, deadline: Instant, waker: &Waker) {
        let mut s = self.state.lock();
        let id = s.next_timer;
        s.next_timer += 1;
        s.timers.push(Reverse((deadline, id)));
        s.timer_wakers.insert(id, waker.clone());
        drop(s);
        self.work[Stream::Main].notify_one();
    }

    /// Leaves `wakers`, whose target is met, for the relay, but for the
    /// first [`DIRECT_WAKES`]; wakes first whatever an earlier fsync left
    /// that nothing relayed.
    pub(crate) fn hand_to_relay(&self, mut wakers: Vec<Waker>) {
        let stale = {
            let mut ready = self.ready.lock();
            let stale = std::mem::take(&mut *ready);
            let direct = wakers.len().min(DIRECT_WAKES);
            ready.extend(wakers.drain(direct..));
            self.ready_len.store(ready.len(), Ordering::Release);
            stale
        };
        stale.into_iter().chain(wakers).for_each(Waker::wake);
    }

    /// Wakes up to `n` callers from the ready list.
    pub(crate) fn relay(&self, n: usize) {
        if self.ready_len.load(Ordering::Acquire) == 0 {
            return;
        }
        let batch: Vec<Waker> = {
            let mut ready = self.ready.lock();
            let from = ready.len().saturating_sub(n);
            let batch = ready.split_off(from);
            self.ready_len.store(ready.len(), Ordering::Release);
            batch
        };
        batch.into_iter().for_each(Waker::wake);
    }

    /// Asks the threads to end once they have woken everyone queued.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        for (_, work) in self.work.iter() {
            work.notify_all();
        }
    }

    /// Stream `stream`'s thread: until stopped, make its queued targets
    /// durable, one group commit for all of them at a time, and (the main
    /// stream's) fire due timers.
    pub(crate) fn run(&self, log: &Log, stream: Stream) {
        let timers = stream == Stream::Main;
        let work = &self.work[stream];
        let mut s = self.state.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse((at, id))) = s.timers.peek().copied().filter(|_| timers) {
                if at > now {
                    break;
                }
                s.timers.pop();
                due.extend(s.timer_wakers.remove(&id));
            }
            if !due.is_empty() {
                drop(s);
                due.into_iter().for_each(Waker::wake);
                s = self.state.lock();
                continue;
            }
            // The furthest target queued; targets of one stream order as
            // their sequence numbers do.
            if let Some(target) = s.durable[stream]
                .iter()
                .map(|&(t, _)| t)
                .max_by_key(|t| t.end)
            {
                drop(s);
                // An error poisons the log; the woken futures then see it.
                let _ = log.wait_durable(target);
                let poisoned = log.is_poisoned();
                s = self.state.lock();
                let ready = s.durable[stream]
                    .extract_if(.., |(t, _)| poisoned || log.is_durable(*t))
                    .map(|(_, w)| w)
                    .collect();
                drop(s);
                self.hand_to_relay(ready);
                s = self.state.lock();
                continue;
            }
            if self.ready_len.load(Ordering::Acquire) > 0 {
                // Nothing to sync: wake what the relay left before idling.
                drop(s);
                self.relay(usize::MAX);
                s = self.state.lock();
                continue;
            }
            if s.stop {
                if timers {
                    let wakers: Vec<_> = s.timer_wakers.drain().map(|(_, w)| w).collect();
                    drop(s);
                    wakers.into_iter().for_each(Waker::wake);
                }
                return;
            }
            match s.timers.peek().filter(|_| timers) {
                Some(Reverse((at, _))) => {
                    let at = *at;
                    work.wait_until(&mut s, at);
                }
                None => work.wait(&mut s),
            }
        }
    }
}

/// Resolves once the durability target `target` is met, without blocking
/// the polling thread.
pub(crate) struct Durable<'a> {
    pub(crate) log: &'a Log,
    pub(crate) service: &'a Service,
    pub(crate) target: DurableTarget,
}

impl Future for Durable<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let ready = |log: &Log| {
            if log.is_poisoned() {
                Some(Err(Error::Poisoned))
            } else if log.is_durable(self.target) {
                Some(Ok(()))
            } else {
                None
            }
        };
        let out = match ready(self.log) {
            Some(out) => out,
            None => {
                self.service.wake_when_durable(self.target, cx.waker());
                // Durable meanwhile: the queued waker is woken later,
                // harmlessly.
                match ready(self.log) {
                    Some(out) => out,
                    None => return Poll::Pending,
                }
            }
        };
        self.service.relay(RELAY_WAKES);
        Poll::Ready(out)
    }
}

/// Wakers that count their wakes, for the relay's unit test and its loom
/// model.
#[cfg(test)]
pub(crate) mod counted {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A waker's count of its wakes.
    pub(crate) struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Counted {
        pub(crate) fn wakes(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// `n` fresh counts.
    pub(crate) fn counted(n: usize) -> Vec<Arc<Counted>> {
        (0..n)
            .map(|_| Arc::new(Counted(AtomicUsize::new(0))))
            .collect()
    }

    /// A waker for each count.
    pub(crate) fn wakers(counts: &[Arc<Counted>]) -> Vec<Waker> {
        counts.iter().map(|c| Waker::from(c.clone())).collect()
    }

    /// Wakes of all of `counts`.
    pub(crate) fn woken(counts: &[Arc<Counted>]) -> usize {
        counts.iter().map(|c| c.wakes()).sum()
    }
}

#[cfg(all(test, not(idemkv_loom)))]
mod tests {
    use super::counted::{counted, wakers, woken};
    use super::*;

    #[test]
    fn the_relay_wakes_every_covered_caller_once() {
        let service = Service::default();
        let first = counted(100);
        service.hand_to_relay(wakers(&first));
        assert_eq!(woken(&first), DIRECT_WAKES);
        // Each covered future that is polled wakes its share.
        service.relay(RELAY_WAKES);
        assert_eq!(woken(&first), DIRECT_WAKES + RELAY_WAKES);
        // The next fsync's hand-over wakes what nothing relayed, then its
        // own direct share.
        let second = counted(10);
        service.hand_to_relay(wakers(&second));
        assert_eq!(woken(&first), 100);
        assert_eq!(woken(&second), DIRECT_WAKES);
        service.relay(usize::MAX);
        assert_eq!(woken(&second), 10);
        assert_eq!(woken(&first), 100, "no caller woken twice");
        service.relay(RELAY_WAKES);
        assert_eq!(woken(&second), 10);
    }
}
