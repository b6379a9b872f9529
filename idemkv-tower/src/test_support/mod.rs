//! End-to-end scenarios over real TCP, generic over the backend (feature
//! `test-support`).
//!
//! Each scenario starts an axum server on 127.0.0.1 with an
//! [`IdempotencyLayer`](crate::IdempotencyLayer) over a backend from an [`E2eHarness`], drives it
//! with a hyper client (and raw TCP where a client must hang up), and
//! asserts what the client sees and how many times the handler ran. A
//! backend crate runs them all with [`e2e_tests!`](crate::e2e_tests):
//!
//! ```ignore
//! use idemkv_tower::test_support::{BreakSwitch, E2eHarness};
//!
//! struct RedisE2e { /* a server address, a namespace per backend */ }
//!
//! impl E2eHarness for RedisE2e {
//!     type Backend = RedisBackend;
//!     async fn backend(&self) -> RedisBackend { /* a fresh namespace */ }
//!     async fn reopen(&self) -> RedisBackend { /* a new client, same namespace */ }
//!     async fn set_down(&self, _: &BreakSwitch, down: bool) { /* stop or restart the server */ }
//! }
//!
//! idemkv_tower::e2e_tests! {
//!     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//!     harness = RedisE2e::new("redis://127.0.0.1:6379");
//! }
//! ```
//!
//! The scenarios need a multi-threaded tokio runtime and never assert on
//! wall-clock time; they wait for conditions (a handler started, requests
//! parked) by polling, with a generous bound.

mod bounds;
mod flow;
mod support;

pub use bounds::*;
pub use flow::*;
pub use support::{Answer, BreakSwitch, Breakable, Client, Server, Shop, app, until};

use idemkv::Backend;
use std::future::Future;

/// Where the scenarios get their backends.
pub trait E2eHarness: Send + Sync {
    /// The backend under test.
    type Backend: Backend + 'static;

    /// A fresh, empty backend, with a lease of at least 10 s.
    fn backend(&self) -> impl Future<Output = Self::Backend> + Send;

    /// The records of the backend most recently returned by
    /// [`backend`](E2eHarness::backend), as a restarted server finds them:
    /// for the embedded store, the same directory opened again (once the
    /// stopped server let go of it); for a remote backend, a new client of
    /// the same server and namespace.
    fn reopen(&self) -> impl Future<Output = Self::Backend> + Send;

    /// Takes the backend most recently returned by
    /// [`backend`](E2eHarness::backend) down (`down`: returns once its
    /// calls fail with [`Unreachable`](idemkv::Error::Unreachable)) or
    /// brings it back up with its records (`!down`: returns once its calls
    /// succeed again). The scenarios that need an outage serve
    /// that backend wrapped in a [`Breakable`], and pass its switch.
    ///
    /// The default flips `switch`: calls then fail with
    /// [`Unreachable`](idemkv::Error::Unreachable) without reaching the
    /// backend, the stand-in for an outage of a backend that lives in the
    /// process (the embedded store). A harness for a remote backend stops
    /// its server for real instead (a kill by PID, or a pause) and starts
    /// it again on the same address with the same data, leaving the switch
    /// alone, so that the scenarios see the backend's own errors and its
    /// own recovery.
    fn set_down(&self, switch: &BreakSwitch, down: bool) -> impl Future<Output = ()> + Send {
        switch.set_down(down);
        std::future::ready(())
    }
}

/// Lists every scenario, for [`e2e_tests!`](crate::e2e_tests) and
/// [`SCENARIOS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __e2e_scenarios {
    ($callback:ident $args:tt) => {
        $crate::$callback! { $args
            concurrent_duplicates_run_once,
            retries_replay_identical_bytes,
            mismatch_is_422_and_keys_are_scoped,
            in_progress_is_409_with_retry_after,
            server_error_releases_then_the_retry_runs,
            server_error_is_stored_when_release_is_off,
            panic_releases_the_key,
            records_survive_a_restart,
            backend_down_is_503_and_the_handler_does_not_run,
            failed_complete_still_answers_and_never_runs_twice,
            client_hangup_does_not_abandon_the_claim,
            caller_is_required_by_default,
            fingerprint_covers_what_the_spec_says,
            missing_key_is_400_and_other_methods_pass,
            bound_key_length,
            bound_key_header,
            bound_caller_length,
            bound_request_body,
            bound_response_body,
            bound_waiters_per_key,
            bound_waiters_in_all,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __e2e_emit {
    ([names] $($name:ident),* $(,)?) => {
        /// The name of every scenario, in the order [`run_all`] runs them.
        pub const SCENARIOS: &[&str] = &[$(stringify!($name)),*];

        /// Runs every scenario in order, each on its own backends.
        pub async fn run_all<H: E2eHarness>(harness: &H) {
            $( $name(harness).await; )*
        }
    };
    ([tests $attrs:tt $harness:expr] $($name:ident),* $(,)?) => {
        $( $crate::__e2e_emit!([one $attrs $harness] $name); )*
    };
    ([one [$(#[$attr:meta])*] $harness:expr] $name:ident) => {
        $(#[$attr])*
        async fn $name() {
            $crate::test_support::$name(&$harness).await
        }
    };
}

crate::__e2e_scenarios!(__e2e_emit[names]);

/// Expands to one test function per end-to-end scenario, each on a harness
/// of its own: `e2e_tests! { #[attributes] harness = expression; }`.
///
/// The attributes make each function a test on a multi-threaded tokio
/// runtime; the expression is evaluated once per test.
#[macro_export]
macro_rules! e2e_tests {
    ($(#[$attr:meta])* harness = $harness:expr $(;)?) => {
        $crate::__e2e_scenarios!(__e2e_emit[tests [$(#[$attr])*] $harness]);
    };
}
