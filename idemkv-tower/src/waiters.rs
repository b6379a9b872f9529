//! The bound on requests waiting for another request with the same key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts the requests parked in `claim_wait`, per scoped key and in all.
#[derive(Debug)]
pub(crate) struct Waiters {
    per_key: usize,
    total: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_key: HashMap<Box<[u8]>, usize>,
    total: usize,
}

/// One waiter's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct WaiterPermit {
    waiters: Arc<Waiters>,
    key: Box<[u8]>,
}

impl Waiters {
    pub(crate) fn new(per_key: usize, total: usize) -> Waiters {
        Waiters {
            per_key,
            total,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The counts stay consistent whatever panicked: every change is
        // one statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place to wait on `key`, or `None` when `key` already has its
    /// maximum of waiters or all keys together have theirs.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: &[u8]) -> Option<WaiterPermit> {
        let mut state = self.state();
        if state.total >= self.total {
            return None;
        }
        let n = state.by_key.get(key).copied().unwrap_or(0);
        if n >= self.per_key {
            return None;
        }
        state.by_key.insert(key.into(), n + 1);
        state.total += 1;
        Some(WaiterPermit {
            waiters: Arc::clone(self),
            key: key.into(),
        })
    }

    /// How many requests wait now.
    pub(crate) fn waiting(&self) -> usize {
        self.state().total
    }

    /// How many keys have waiters now.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.state().by_key.len()
    }
}

impl Drop for WaiterPermit {
    fn drop(&mut self) {
        let mut state = self.waiters.state();
        state.total -= 1;
        if let Some(n) = state.by_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                state.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_each_key_and_the_total_and_frees_on_drop() {
        let w = Arc::new(Waiters::new(2, 3));
        let a1 = w.try_acquire(b"a").unwrap();
        let a2 = w.try_acquire(b"a").unwrap();
        assert!(w.try_acquire(b"a").is_none(), "two per key");
        let b1 = w.try_acquire(b"b").unwrap();
        assert!(w.try_acquire(b"c").is_none(), "three in all");
        assert_eq!(w.waiting(), 3);
        drop(a1);
        assert_eq!(w.waiting(), 2);
        let a3 = w.try_acquire(b"a").unwrap();
        drop((a2, a3, b1));
        assert_eq!((w.waiting(), w.keys()), (0, 0), "no entry left behind");
    }
}
