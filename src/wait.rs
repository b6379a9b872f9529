//! Waiting without polling: for a key's owner to finish, for a record to
//! become durable, for a deadline.
//!
//! Every waiter, blocking or async, is a [`Waker`]: a blocking caller's waker
//! unparks its thread, an async caller's is its task's. Three places hold
//! wakers:
//!
//! - [`KeyWaiters`]: callers of `claim_wait` whose key is in progress. A
//!   write to the key (the engine's one write step does it, so complete,
//!   release, remove and a lease extension all do) wakes every waiter on
//!   that key. A waiter registers *before* it looks
//!   at the key, so a write that lands after the look always finds it.
//!   Writers pay one atomic load when nobody waits.
//! - the [`Service`]'s durability queue: async callers whose record is not
//!   durable yet. One thread per store drains it: it joins the group commit
//!   for the highest position asked for, then wakes everyone now covered.
//!   Executor threads never fsync, and every async caller that arrives
//!   while an fsync runs shares the next one.
//! - the [`Service`]'s timers: async waiters' deadlines (a `claim_wait`
//!   timeout or a lease end), kept in a heap and fired by the same thread.

use crate::error::{Error, Result};
use crate::log::Log;
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, AtomicUsize, Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// Number of lock shards of the key-waiter map.
const WAITER_SHARDS: usize = 16;

/// One waiter's interest in one key: set when a write to the key fires it.
pub(crate) struct Interest {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Interest {
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Sets the waker to call when fired (an async task moves between polls).
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

/// Callers waiting for a key's in-progress claim to end, by key hash.
pub(crate) struct KeyWaiters {
    /// Registered interests across all shards; writers skip the map at zero.
    count: AtomicUsize,
    shards: Vec<Mutex<HashMap<u64, Vec<Arc<Interest>>>>>,
}

impl Default for KeyWaiters {
    fn default() -> Self {
        KeyWaiters {
            count: AtomicUsize::new(0),
            shards: (0..WAITER_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl KeyWaiters {
    fn shard(&self, hash: u64) -> &Mutex<HashMap<u64, Vec<Arc<Interest>>>> {
        &self.shards[(hash >> 60) as usize % WAITER_SHARDS]
    }

    /// Registers a fresh interest in `hash`; it leaves the map when fired
    /// or when the returned guard drops.
    pub(crate) fn register(&self, hash: u64, waker: Waker) -> Registration<'_> {
        let interest = Arc::new(Interest {
            fired: AtomicBool::new(false),
            waker: Mutex::new(Some(waker)),
        });
        self.shard(hash)
            .lock()
            .entry(hash)
            .or_default()
            .push(interest.clone());
        self.count.fetch_add(1, Ordering::AcqRel);
        Registration {
            waiters: self,
            hash,
            interest,
        }
    }

    /// Interests registered now.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Wakes every waiter on `hash`. Costs one atomic load when none waits.
    pub(crate) fn notify(&self, hash: u64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let fired = self.shard(hash).lock().remove(&hash);
        for interest in fired.into_iter().flatten() {
            self.count.fetch_sub(1, Ordering::AcqRel);
            interest.fire();
        }
    }
}

/// A registered interest; unregisters on drop if not fired.
pub(crate) struct Registration<'a> {
    waiters: &'a KeyWaiters,
    hash: u64,
    interest: Arc<Interest>,
}

impl Registration<'_> {
    pub(crate) fn interest(&self) -> &Interest {
        &self.interest
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut shard = self.waiters.shard(self.hash).lock();
        if let Some(list) = shard.get_mut(&self.hash)
            && let Some(at) = list.iter().position(|i| Arc::ptr_eq(i, &self.interest))
        {
            list.swap_remove(at);
            if list.is_empty() {
                shard.remove(&self.hash);
            }
            self.waiters.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Wakes a blocked thread.
pub(crate) struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(thread::current())))
}

/// Blocks the calling thread until `interest` fires or `deadline` passes.
/// Returns whether it fired.
pub(crate) fn park_until(interest: &Interest, deadline: Instant) -> bool {
    loop {
        if interest.fired() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::park_timeout(deadline - now);
    }
}

#[derive(Default)]
struct ServiceState {
    /// Async callers waiting for a durability target.
    durable: Vec<(u64, Waker)>,
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
    fn wake_when_durable(&self, target: u64, waker: &Waker) {
        self.state.lock().durable.push((target, waker.clone()));
        self.work.notify_one();
    }

    /// Wakes `waker` at `deadline`.
    fn wake_at(&self, deadline: Instant, waker: &Waker) {
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
                let mut furthest = [None; 2];
                for &(t, _) in &s.durable {
                    let f = &mut furthest[crate::commit::target_stream(t)];
                    *f = (*f).max(Some(t));
                }
                drop(s);
                for target in furthest.into_iter().flatten() {
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
    pub(crate) target: u64,
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

/// Resolves with `true` when `interest` fires, or `false` at `deadline`.
pub(crate) struct Fired<'a> {
    pub(crate) interest: &'a Interest,
    pub(crate) service: &'a Service,
    pub(crate) deadline: Instant,
    pub(crate) timer_set: bool,
}

impl Future for Fired<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.interest.fired() {
            return Poll::Ready(true);
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(false);
        }
        self.interest.set_waker(cx.waker());
        if !self.timer_set {
            self.timer_set = true;
            self.service.wake_at(self.deadline, cx.waker());
        }
        if self.interest.fired() {
            return Poll::Ready(true);
        }
        Poll::Pending
    }
}
