//! `claim_wait` and the async API: the same operations as the blocking
//! ones, but a caller waits for another owner or for durability without
//! holding a thread (async) or without polling (blocking).

use super::Store;
use crate::engine::{Engine, Pending};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::key::key_hash;
use crate::notify::key_waiters::{park_until, thread_waker};
use crate::outcome::Claim;
use std::time::{Duration, Instant};

/// When the caller should try again: the owner's lease end, as an instant
/// of the monotonic clock, but no later than `deadline`.
fn retry_at(engine: &Engine, lease_expires_at_ms: u64, deadline: Instant) -> Instant {
    let left_ms = lease_expires_at_ms.saturating_sub(engine.clock.now_ms());
    // One extra millisecond: a takeover needs the lease to have passed.
    Instant::now()
        .checked_add(Duration::from_millis(left_ms.saturating_add(1)))
        .map_or(deadline, |at| at.min(deadline))
}

/// One waiting claim: the key, and when the caller stops waiting.
pub(super) struct Wait<'a> {
    pub(super) engine: &'a Engine,
    key: &'a [u8],
    pub(super) hash: u64,
    fingerprint: Fingerprint,
    deadline: Instant,
}

/// What one look at the key decided.
pub(super) enum Attempt {
    /// Not in progress, or out of time: give this answer.
    Answer(Pending<Claim>),
    /// In progress: sleep until woken or `retry`. If nothing woke the caller
    /// and `retry` is the deadline, `InProgress` is the answer.
    Sleep {
        retry: Instant,
        in_progress: Pending<Claim>,
    },
}

impl<'a> Wait<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        key: &'a [u8],
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Self> {
        engine.check_key(key)?;
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        Ok(Wait {
            engine,
            key,
            hash: key_hash(key),
            fingerprint,
            deadline,
        })
    }

    /// Claims once; the caller has registered its interest first.
    pub(super) fn attempt(&self) -> Result<Attempt> {
        let e = self.engine;
        let (claim, needed) = e.claim(self.key, self.fingerprint)?;
        Ok(match claim {
            Claim::InProgress {
                lease_expires_at_ms,
            } if Instant::now() < self.deadline => {
                e.counters.claim_waits.inc();
                Attempt::Sleep {
                    retry: retry_at(e, lease_expires_at_ms, self.deadline),
                    in_progress: (claim, needed),
                }
            }
            answer => Attempt::Answer((answer, needed)),
        })
    }

    /// Whether a sleep that nobody cut short, until `retry`, ends the wait.
    pub(super) fn timed_out(&self, fired: bool, retry: Instant) -> bool {
        !fired && retry >= self.deadline
    }
}

impl Store {
    /// Like [`claim`](Store::claim), but while another caller holds the key
    /// it waits, up to `timeout`, instead of answering `InProgress` at once.
    ///
    /// Returns as soon as the owner completes (`Replay`), releases the key
    /// or has it removed (`Acquired` for this caller), or lets its lease
    /// pass (`Acquired`, a takeover). At the timeout it answers
    /// `InProgress` with the owner's current lease end. The wait costs no
    /// polling: the owner's write wakes the caller, and a lease end is a
    /// single timed sleep. A `timeout` of zero behaves like `claim`.
    ///
    /// ```
    /// # fn main() -> idemkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use idemkv::{Claim, Fingerprint, Store};
    /// use std::time::Duration;
    ///
    /// let store = Store::open(dir.path())?;
    /// let fp = Fingerprint::of(b"body");
    /// let Claim::Acquired(ticket) = store.claim("k", fp)? else { unreachable!() };
    /// let waiter = {
    ///     let store = store.clone();
    ///     std::thread::spawn(move || store.claim_wait("k", fp, Duration::from_secs(30)))
    /// };
    /// store.complete(ticket, b"done")?;
    /// match waiter.join().unwrap()? {
    ///     Claim::Replay(done) => assert_eq!(done.response(), b"done"),
    ///     other => panic!("expected a replay, got {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn claim_wait(
        &self,
        key: impl AsRef<[u8]>,
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Claim> {
        let wait = Wait::new(self.engine(), key.as_ref(), fingerprint, timeout)?;
        let waker = thread_waker();
        loop {
            // Registered before looking, so a write after the look wakes us.
            let registration = wait.engine.waiters.register(wait.hash, waker.clone());
            let answer = match wait.attempt()? {
                Attempt::Answer(answer) => answer,
                Attempt::Sleep { retry, in_progress } => {
                    let fired = park_until(registration.interest(), retry);
                    if !wait.timed_out(fired, retry) {
                        continue;
                    }
                    in_progress
                }
            };
            drop(registration);
            return wait.engine.settle(answer);
        }
    }
}
