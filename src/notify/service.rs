//! The store's service thread: fsyncs and deadlines for async callers.
//!
//! - the durability queue: async callers whose record is not durable yet.
//!   One thread per store drains it: it joins the group commit for the
//!   furthest target asked for on each stream, then wakes everyone now
//!   covered. Executor threads never fsync, and every async caller that
//!   arrives while an fsync runs shares the next one.
//! - the timers: async waiters' deadlines (a `claim_wait` timeout or a
//!   lease end), kept in a heap and fired by the same thread.

use crate::durability::{DurableTarget, PerStream};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::sync::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct ServiceState {
    /// Async callers waiting for a durability target.
    durable: Vec<(DurableTarget, Waker)>,
    /// Async deadlines; the sequence number keeps equal instants apart.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_wakers: HashMap<u64, Waker>,
    next_timer: u64,
    stop: bool,
}

/// The per-store thread that fsyncs for async callers and fires their
/// deadlines. See the module docs.
#[derive(Default)]
pub(crate) struct Service {
    state: Mutex<ServiceState>,
    work: Condvar,
}

impl Service {
    /// Queues `waker` until the durability target `target` is met.
    fn wake_when_durable(&self, target: DurableTarget, waker: &Waker) {
        self.state.lock().durable.push((target, waker.clone()));
        self.work.notify_one();
    }

    /// Wakes `waker` at `deadline`.
    pub(super) fn wake_at(&self, deadline: Instant, waker: &Waker) {
        let mut s = self.state.lock();
        let id = s.next_timer;
        s.next_timer += 1;
        s.timers.push(Reverse((deadline, id)));
        s.timer_wakers.insert(id, waker.clone());
        drop(s);
        self.work.notify_one();
    }

    /// Asks the thread to end once it has woken everyone queued.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.work.notify_all();
    }

    /// The thread's loop: until stopped, fire due timers and make queued
    /// positions durable, one group commit for all of them at a time.
    pub(crate) fn run(&self, log: &Log) {
        let mut s = self.state.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse((at, id))) = s.timers.peek().copied() {
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
            if !s.durable.is_empty() {
                // The furthest target queued of each stream; targets of one
                // stream order as their sequence numbers do.
                let mut furthest = PerStream([None; 2]);
                for &(t, _) in &s.durable {
                    let f = &mut furthest[t.stream];
                    *f = (*f).max(Some(t.end));
                }
                drop(s);
                let targets = furthest
                    .iter()
                    .filter_map(|(stream, end)| end.map(|end| DurableTarget { stream, end }));
                for target in targets.collect::<Vec<_>>() {
                    // An error poisons the log; the woken futures then see it.
                    let _ = log.wait_durable(target);
                }
                let poisoned = log.is_poisoned();
                s = self.state.lock();
                let (ready, waiting) = std::mem::take(&mut s.durable)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(t, _)| poisoned || log.is_durable(*t));
                s.durable = waiting;
                drop(s);
                ready.into_iter().for_each(|(_, w)| w.wake());
                s = self.state.lock();
                continue;
            }
            if s.stop {
                let wakers: Vec<_> = s.timer_wakers.drain().map(|(_, w)| w).collect();
                drop(s);
                wakers.into_iter().for_each(Waker::wake);
                return;
            }
            match s.timers.peek() {
                Some(Reverse((at, _))) => {
                    let at = *at;
                    self.work.wait_until(&mut s, at);
                }
                None => self.work.wait(&mut s),
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
        if let Some(out) = ready(self.log) {
            return Poll::Ready(out);
        }
        self.service.wake_when_durable(self.target, cx.waker());
        // Durable meanwhile: the queued waker is woken later, harmlessly.
        match ready(self.log) {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}
