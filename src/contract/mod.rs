//! The shared contract suite: every semantics row of the embedded store, as
//! tests generic over [`Backend`], for any backend to run (feature
//! `contract-tests`).
//!
//! A backend crate enables the feature in its dev-dependencies, implements
//! [`Harness`] in its tests (fresh backends, a way to move the backend's
//! clock), and expands [`contract_tests!`](crate::contract_tests) there: one
//! test per contract row, named like the functions of this module, each on
//! a harness of its own. For the embedded store (the full version, with
//! durability modes and a disk that fails, is `tests/backend_contract.rs`):
//!
//! ```
//! use idemkv::contract::Harness;
//! use idemkv::{ManualClock, Options, Store};
//! use std::{future::Future, sync::Arc, sync::Mutex, time::Duration};
//!
//! /// Stores on a manual clock, each in a directory of its own.
//! struct Embedded {
//!     clock: Arc<ManualClock>,
//!     dirs: Mutex<Vec<tempfile::TempDir>>,
//! }
//!
//! impl Embedded {
//!     fn new() -> Self {
//!         let clock = Arc::new(ManualClock::new(1_000_000));
//!         Embedded { clock, dirs: Mutex::default() }
//!     }
//! }
//!
//! impl Harness for Embedded {
//!     type Backend = Store;
//!
//!     fn backend(&self, lease: Duration, retention: Duration) -> impl Future<Output = Store> + Send {
//!         let dir = tempfile::tempdir().unwrap();
//!         let options = Options::new().clock(self.clock.clone()).lease(lease).retention(retention);
//!         let store = options.open(dir.path()).unwrap();
//!         self.dirs.lock().unwrap().push(dir);
//!         std::future::ready(store)
//!     }
//!
//!     fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send {
//!         self.clock.advance(by); // a real server's harness sleeps instead
//!         std::future::ready(())
//!     }
//!
//!     fn spawn<F>(&self, task: F) -> impl Future<Output = F::Output> + Send
//!     where
//!         F: Future + Send + 'static,
//!         F::Output: Send + 'static,
//!     {
//!         let task = tokio::spawn(task); // racers in parallel, not only interleaved
//!         async move { task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) }
//!     }
//! }
//!
//! // One test per contract row:
//! idemkv::contract_tests! {
//!     #[tokio::test(flavor = "multi_thread")]
//!     harness = Embedded::new();
//! }
//! # fn main() {
//! #     tokio::runtime::Runtime::new().unwrap().block_on(async {
//! #         idemkv::contract::lease_takeover_has_a_higher_generation(&Embedded::new()).await;
//! #         idemkv::contract::claim_wait_is_woken_by_complete(&Embedded::new()).await;
//! #     });
//! # }
//! ```
//!
//! Or run every row in one test with [`run_all`], or one by name with
//! [`run`]. A failed row panics with what was expected and what the backend
//! answered.
//!
//! ## Time
//! The suite never sleeps to let a lease or a retention pass: it calls
//! [`Harness::advance`]. The embedded store's harness moves a
//! [`ManualClock`](crate::ManualClock); a real server's leases run on the
//! server's own clock, so its harness sleeps. Durations that must pass are
//! [`SHORT`] (or a small multiple of it), so a real-time run stays fast;
//! durations that must not pass are [`LONG`]. Where a row checks that a
//! short-lived record is still present before it lets it pass, it gives
//! itself at least three [`SHORT`]s of margin. `claim_wait` timeouts are
//! real time for every backend.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test suite: a step that fails is a failed test"
)]

mod claims;
mod expiry;
mod leases;
mod waiting;

pub use claims::*;
pub use expiry::*;
pub use leases::*;
pub use waiting::*;

use crate::backend::{Backend, BackendTicket};
use crate::error::{Error, Result};
use crate::outcome::{Claim, Completed};
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

/// A lease or retention that no row lets pass.
pub const LONG: Duration = Duration::from_secs(600);

/// The lease or retention that rows let pass, through [`Harness::advance`].
pub const SHORT: Duration = Duration::from_millis(200);

/// The `claim_wait` timeout of rows that expect an answer before it: long
/// enough for any backend, short enough that a backend that wrongly waits
/// fails the row instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Concurrent tasks in each race.
pub const RACERS: usize = 32;

/// What a backend provides to run the suite.
///
/// Each row takes one harness and asks it for fresh backends (a fresh
/// directory, a fresh key prefix on a server): keys of one backend never
/// meet another's. The futures are `Send`; the suite itself needs no
/// runtime, and joins concurrent tasks with [`spawn`](Harness::spawn).
pub trait Harness: Send + Sync {
    /// The backend under test.
    type Backend: Backend + Clone + 'static;

    /// A fresh, empty backend whose claims hold a lease of `lease`, and whose
    /// in-progress records stay present (for a takeover) until `retention`
    /// after their lease ends (the embedded store's `Options::lease` and
    /// `Options::retention`). Panics if it cannot make one.
    fn backend(
        &self,
        lease: Duration,
        retention: Duration,
    ) -> impl Future<Output = Self::Backend> + Send;

    /// Moves the clock of every backend this harness made forward by at
    /// least `by`: a manual clock's `advance`, or, for a server whose clock
    /// cannot be moved, a sleep of `by` plus the server's clock granularity.
    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send;

    /// Runs `task` concurrently with the caller and resolves to its output;
    /// a panic in the task must reach the caller. The default runs it
    /// inline, interleaved with the other tasks of its row; a harness on a
    /// multi-threaded runtime spawns it there, so racers run in parallel.
    fn spawn<F>(&self, task: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        task
    }

    /// Cuts `backend` off so that it can no longer confirm writes (a failed
    /// disk, a dead server, a partition), for the fail-closed row. Resolves
    /// to `false` if this harness cannot; that row is then skipped.
    fn break_writes(&self, backend: &Self::Backend) -> impl Future<Output = bool> + Send {
        let _ = backend;
        std::future::ready(false)
    }
}

/// The contract rows in the order [`run_all`] runs them. This list feeds
/// [`TESTS`], [`run_all`], [`run`] and [`contract_tests!`](crate::contract_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_rows {
    ($callback:ident $args:tt) => {
        $crate::$callback! { $args
            claim_complete_replay_byte_for_byte,
            racing_claims_have_one_winner,
            racing_fingerprints_have_one_winner_and_mismatches,
            racing_claims_on_distinct_keys_all_acquire,
            racing_takeovers_have_one_winner,
            racing_mark_seen_has_one_first,
            mismatch_on_every_path,
            bad_input_is_a_typed_error,
            in_progress_until_the_lease_ends,
            lease_takeover_has_a_higher_generation,
            stale_owner_is_refused_and_changes_nothing,
            late_owner_without_takeover_may_finish,
            extend_lease_moves_the_lease,
            release_then_reclaim,
            remove_purges_and_fences,
            completed_records_expire_after_their_retention,
            abandoned_claim_expires_after_lease_plus_retention,
            mark_seen_first_then_duplicate_until_it_expires,
            claim_wait_is_woken_by_complete,
            claim_wait_is_woken_by_release,
            claim_wait_is_woken_by_remove,
            claim_wait_is_woken_by_lease_end,
            claim_wait_times_out_with_in_progress,
            claim_wait_outlasted_by_an_extended_lease,
            unconfirmed_writes_fail_closed,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_emit {
    ([names] $($name:ident),* $(,)?) => {
        /// The name of every contract row, in the order [`run_all`] runs them.
        pub const TESTS: &[&str] = &[$(stringify!($name)),*];

        /// Runs every contract row against backends from `harness`, in
        /// order, and panics at the first failure, naming the row.
        pub async fn run_all<H: Harness>(harness: &H) {
            $( run(harness, stringify!($name)).await; )*
        }

        /// Runs the contract row named `name` (one of [`TESTS`]); returns
        /// `false` if there is no such row.
        pub async fn run<H: Harness>(harness: &H, name: &str) -> bool {
            match name {
                $( stringify!($name) => $name(harness).await, )*
                _ => return false,
            }
            true
        }
    };
    ([tests $attrs:tt $harness:expr] $($name:ident),* $(,)?) => {
        $( $crate::__contract_emit!([one $attrs $harness] $name); )*
    };
    ([one [$(#[$attr:meta])*] $harness:expr] $name:ident) => {
        $(#[$attr])*
        async fn $name() {
            $crate::contract::$name(&$harness).await
        }
    };
}

crate::__contract_rows!(__contract_emit[names]);

/// Expands to one test function per contract row, each running that row on
/// a harness of its own: `contract_tests! { #[attributes] harness = expression; }`.
///
/// The attributes make each function a test on the backend's runtime, such
/// as `#[tokio::test(flavor = "multi_thread")]`; the expression is evaluated
/// once per test. Expand it in a module of its own to run the suite on
/// several harnesses (durability modes, server configurations). See the
/// [module docs](crate::contract) for a whole harness.
#[macro_export]
macro_rules! contract_tests {
    ($(#[$attr:meta])* harness = $harness:expr $(;)?) => {
        $crate::__contract_rows!(__contract_emit[tests [$(#[$attr])*] $harness]);
    };
}

// Helpers shared by the rows.

/// Lets `by`, plus a millisecond, pass on the backend's clock: whatever
/// ended at `now + by` has ended.
async fn pass<H: Harness>(h: &H, by: Duration) {
    h.advance(by + Duration::from_millis(1)).await;
}

/// A duration in whole milliseconds, as the backends store them.
fn ms(d: Duration) -> u64 {
    crate::clock::duration_ms(d)
}

/// The ticket of a claim that must be `Acquired`.
#[track_caller]
fn acquired<T: Debug>(answer: Result<Claim<T>>, what: &str) -> T {
    match answer {
        Ok(Claim::Acquired(ticket)) => ticket,
        other => panic!("{what}: expected Acquired, got {other:?}"),
    }
}

/// The stored record of a claim that must be `Replay`.
#[track_caller]
fn replayed<T: Debug>(answer: Result<Claim<T>>, what: &str) -> Completed {
    match answer {
        Ok(Claim::Replay(done)) => done,
        other => panic!("{what}: expected Replay, got {other:?}"),
    }
}

/// The lease end of a claim that must be `InProgress`.
#[track_caller]
fn in_progress<T: Debug>(answer: Result<Claim<T>>, what: &str) -> u64 {
    match answer {
        Ok(Claim::InProgress {
            lease_expires_at_ms,
        }) => lease_expires_at_ms,
        other => panic!("{what}: expected InProgress, got {other:?}"),
    }
}

/// Checks that a claim answered `Mismatch`.
#[track_caller]
fn mismatch<T: Debug>(answer: Result<Claim<T>>, what: &str) {
    match answer {
        Ok(Claim::Mismatch) => {}
        other => panic!("{what}: expected Mismatch, got {other:?}"),
    }
}

/// Checks that a stale ticket's call was refused with `LeaseLost`.
#[track_caller]
fn lease_lost<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::LeaseLost) => {}
        other => panic!("{what}: expected Err(LeaseLost), got {other:?}"),
    }
}

/// A claim that must acquire `key`.
async fn claim_new<B: Backend>(b: &B, key: &[u8], fp: crate::Fingerprint) -> B::Ticket {
    let what = format!("claim of {:?}", String::from_utf8_lossy(key));
    acquired(b.claim(key, fp).await, &what)
}

/// Claims and completes `key` with `response`, kept for `retention`.
async fn complete_new<B: Backend>(
    b: &B,
    key: &[u8],
    fp: crate::Fingerprint,
    response: &[u8],
    retention: Duration,
) -> u64 {
    let ticket = claim_new(b, key, fp).await;
    let generation = ticket.generation();
    b.complete(ticket, response, retention)
        .await
        .expect("the owner completes its claim");
    generation
}

/// Runs every future at once, on the calling task, and returns their
/// outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(outputs.iter_mut().filter_map(Option::take).collect())
    })
    .await
}

/// Runs both futures at once, on the calling task.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut out_a, mut out_b) = (None, None);
    poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        if out_a.is_some() && out_b.is_some() {
            Poll::Ready((out_a.take().unwrap(), out_b.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Resolves after `d` of real time, on any runtime (a thread keeps the
/// time). Used only to let spawned waiters reach their wait; no row's
/// verdict depends on how long it took.
fn pause(d: Duration) -> impl Future<Output = ()> + Send {
    struct Shared {
        done: AtomicBool,
        waker: parking_lot::Mutex<Option<Waker>>,
    }
    let shared = Arc::new(Shared {
        done: AtomicBool::new(false),
        waker: parking_lot::Mutex::new(None),
    });
    let mut started = false;
    poll_fn(move |cx| {
        *shared.waker.lock() = Some(cx.waker().clone());
        if shared.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !started {
            started = true;
            let shared = shared.clone();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                shared.done.store(true, Ordering::Release);
                if let Some(w) = shared.waker.lock().take() {
                    w.wake();
                }
            });
        }
        Poll::Pending
    })
}

/// Bytes of every value, a CRLF and a NUL: what a replay must not alter.
fn every_byte() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    v.extend_from_slice(b"\r\n\0{\"id\":\"ch_1\"}\0");
    v
}
