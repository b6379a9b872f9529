//! The async relay (`src/notify/service.rs`): after an fsync the service
//! thread hands the covered callers' wakers over, waking the first few and
//! leaving the rest in a ready list, while covered futures polled on
//! executor threads relay wakes from that list.
//!
//! The service is the real one; its ready list is a loom mutex and its
//! length a loom atomic. A hand-over races two relays of executor threads;
//! then the service thread's idle path wakes whatever is left. Checked in
//! every interleaving: each waker is woken exactly once.

use super::explore;
use crate::notify::service::counted::{counted, wakers};
use crate::notify::service::{DIRECT_WAKES, Service};
use loom::thread;
use std::sync::Arc;

#[test]
fn every_covered_caller_is_woken_exactly_once() {
    explore("async relay, a hand-over racing two relays", || {
        let service = Arc::new(Service::default());
        let first = counted(DIRECT_WAKES + 2);
        service.hand_to_relay(wakers(&first));
        let relays: Vec<_> = [1, 2]
            .into_iter()
            .map(|n| {
                let service = service.clone();
                thread::spawn(move || service.relay(n))
            })
            .collect();
        // The next fsync's hand-over, while the relays run.
        let second = counted(DIRECT_WAKES + 1);
        service.hand_to_relay(wakers(&second));
        for r in relays {
            r.join().unwrap();
        }
        // The service thread's idle path.
        service.relay(usize::MAX);
        for c in first.iter().chain(&second) {
            assert_eq!(c.wakes(), 1, "woken exactly once");
        }
    });
}
