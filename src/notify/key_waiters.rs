//! Callers of `claim_wait` whose key is in progress, and how they sleep.
//!
//! A write to the key (the engine's one write step does it, so complete,
//! release, remove and a lease extension all do) wakes every waiter on that
//! key. A waiter registers *before* it looks at the key, so a write that
//! lands after the look always finds it. Writers pay one atomic load when
//! nobody waits. Every waiter, blocking or async, is a [`Waker`]: a
//! blocking caller's unparks its thread, an async caller's is its task's.

use super::service::Service;
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, AtomicUsize, Mutex};
use std::collections::HashMap;
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
