//! The key-waiter hand-off (`src/notify/key_waiters.rs`): a `claim_wait` caller
//! registers its interest in a key, then looks at the key under its shard
//! lock and sleeps while it is in progress; a write changes the key under
//! that lock and fires every interest registered on it.
//!
//! The shard lock and the key's state are a loom mutex around a flag; the
//! waiters are the real `KeyWaiters`, `park_until` and thread wakers (under
//! loom a timed park parks until unparked, so a lost wake-up is a deadlock
//! loom reports). Checked in every interleaving: each waiter ends, having
//! seen the write; no interest is left registered, and the count that
//! writers read to skip the map ends at zero.

use super::explore;
use crate::notify::key_waiters::{KeyWaiters, park_until, thread_waker};
use crate::sync::Mutex;
use loom::thread;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HASH: u64 = 0xfeed_f00d_0000_0001;

struct Key {
    waiters: KeyWaiters,
    /// The key's shard lock, guarding whether its claim is in progress.
    in_progress: Mutex<bool>,
}

/// `claim_wait`'s loop: register, look, sleep until fired, look again.
fn wait_for_the_owner(key: &Key) {
    let waker = thread_waker();
    loop {
        let registration = key.waiters.register(HASH, waker.clone());
        if !*key.in_progress.lock() {
            return;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(
            park_until(registration.interest(), far),
            "under loom a park ends only when woken"
        );
    }
}

#[test]
fn a_write_wakes_every_waiter_registered_before_it() {
    explore("key waiters, 2 waiters and the owner's write", || {
        let key = Arc::new(Key {
            waiters: KeyWaiters::default(),
            in_progress: Mutex::new(true),
        });
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let key = key.clone();
                thread::spawn(move || wait_for_the_owner(&key))
            })
            .collect();
        // The owner completes: the engine's write step, which fires the
        // interests while it still holds the shard lock.
        {
            let mut in_progress = key.in_progress.lock();
            *in_progress = false;
            key.waiters.notify(HASH);
        }
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!(key.waiters.len(), 0, "every interest left the map");
    });
}
