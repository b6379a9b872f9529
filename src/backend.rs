//! One claim/complete contract, several backends.
//!
//! [`Backend`] is the idempotency contract as a trait: claim a key before the
//! side effect, complete it with the response, replay it to retries, with
//! leases, fencing and fingerprints. The embedded [`Store`] implements it;
//! a backend over a shared engine (such as Redis) implements the same trait,
//! so code written against it (an HTTP layer, a message consumer) runs on
//! either without a line changed.
//!
//! ```
//! use idemkv::{Backend, Claim, Fingerprint, Store};
//! use std::time::Duration;
//!
//! /// Runs `charge` at most once per key, on whatever backend it is given.
//! async fn charge_once<B: Backend>(
//!     backend: &B,
//!     key: &[u8],
//!     body: &[u8],
//!     charge: impl FnOnce() -> Vec<u8>,
//! ) -> idemkv::Result<Vec<u8>> {
//!     match backend.claim(key, Fingerprint::of(body)).await? {
//!         Claim::Acquired(ticket) => {
//!             let response = charge(); // the side effect, once
//!             let day = Duration::from_secs(24 * 3600);
//!             backend.complete(ticket, &response, day).await?;
//!             Ok(response)
//!         }
//!         Claim::Replay(done) => Ok(done.into_response()), // a retry: same bytes
//!         Claim::InProgress { .. } => Ok(b"409 in progress".to_vec()),
//!         Claim::Mismatch => Ok(b"422 key reused".to_vec()),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idemkv::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path())?;
//! let first = charge_once(&store, b"acme:k-1", b"500", || b"201 ch_1".to_vec()).await?;
//! let retry = charge_once(&store, b"acme:k-1", b"500", || unreachable!("charged twice")).await?;
//! assert_eq!(first, retry);
//! let reused = charge_once(&store, b"acme:k-1", b"900", || unreachable!()).await?;
//! assert_eq!(reused, b"422 key reused");
//! # Ok(())
//! # }
//! ```
//!
//! On a [`Store`] value, `store.claim(..)` names the inherent, blocking
//! method; the trait's async one is `Backend::claim(&store, ..)`, or simply
//! `backend.claim(..)` in code generic over `B: Backend` as above.
//!
//! ## What every backend promises
//! The rows of the semantics table in `DESIGN.md` (§7), checked for any
//! backend by the shared suite in `idemkv::contract` (feature
//! `contract-tests`), and one rule on top: **nothing is ever reported
//! `Acquired` (or `Seen::First`, or a successful `complete`) that the backend
//! did not record as durably as it is configured to.** A backend that cannot
//! confirm a write fails closed, with [`Error::Unreachable`],
//! [`Error::TimedOut`] or [`Error::NotDurable`], and the caller does not run
//! the side effect.
//!
//! The converse does not hold: an error does not prove that nothing was
//! written. A claim whose confirmation failed (a timeout, a failed fsync, a
//! missing replica acknowledgement) may have been applied; it then holds the
//! key as an abandoned claim until its lease ends, and a retry takes it over.
//! Only [`Error::Unreachable`] says the backend received nothing.
//!
//! [`Error::Unreachable`]: crate::Error::Unreachable
//! [`Error::TimedOut`]: crate::Error::TimedOut
//! [`Error::NotDurable`]: crate::Error::NotDurable

use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::outcome::{Claim, Record, Seen, Ticket};
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The claim/complete contract of an idempotency backend.
///
/// Every method is async and returns a `Send` future that needs no
/// particular runtime from the trait (a backend's client may need one of its
/// own, such as tokio for a network client). Times in answers are `u64`
/// unix milliseconds of the backend's own clock: the embedded store's
/// [`Clock`](crate::Clock), a server's clock for a remote backend. Leases are
/// the backend's configured lease; retentions are passed per call.
///
/// Keys are bytes: build them with [`scoped_key`](crate::scoped_key) from the
/// authenticated caller, the route and the client's key. An empty key is
/// [`Error::EmptyKey`](crate::Error::EmptyKey), a key longer than the
/// backend's limit [`Error::KeyTooLong`](crate::Error::KeyTooLong).
pub trait Backend: Send + Sync {
    /// Ownership of a claimed key, handed out by [`claim`](Backend::claim):
    /// it carries the key, the fingerprint and the fencing generation.
    /// The embedded store's is [`Ticket`]; a remote backend can use
    /// [`RemoteTicket`] or its own type.
    type Ticket: BackendTicket;

    /// Claims `key` for a request with `fingerprint`: exactly one of
    /// `Acquired` (do the work), `Replay` (the stored response), `InProgress`
    /// (another owner's lease runs until the given time) or `Mismatch` (the
    /// key is live with another fingerprint, or marked seen).
    ///
    /// Atomic: of any number of concurrent claims on one key exactly one is
    /// `Acquired`. A claim on an in-progress key whose lease has passed, with
    /// the same fingerprint, takes it over with a higher generation.
    /// `Acquired` is answered only once the claim is recorded as durably as
    /// the backend is configured to; otherwise the answer is an error.
    fn claim(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Claim<Self::Ticket>>> + Send;

    /// Like [`claim`](Backend::claim), but while another owner holds the key
    /// it waits, up to `timeout`: `Replay` when the owner completes,
    /// `Acquired` when the owner releases, the key is removed or the lease
    /// passes (one waiter wins; the others wait on the new owner), and
    /// `InProgress` with the current lease end at the timeout. A zero
    /// `timeout` is a plain claim.
    fn claim_wait(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> impl Future<Output = Result<Claim<Self::Ticket>>> + Send;

    /// Stores `response` for the ticket's key, replayed byte for byte by
    /// every later claim with the same fingerprint until `retention` from
    /// now has passed. Fails with [`LeaseLost`](crate::Error::LeaseLost),
    /// writing nothing, if the ticket no longer owns the key (taken over,
    /// released, removed or expired), and with
    /// [`ResponseTooLarge`](crate::Error::ResponseTooLarge) above
    /// [`max_response_len`](Backend::max_response_len). Either way the
    /// ticket is consumed.
    fn complete(
        &self,
        ticket: Self::Ticket,
        response: &[u8],
        retention: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives the key back after a failure that is safe to retry: the key
    /// becomes absent and the next claim acquires it.
    /// [`LeaseLost`](crate::Error::LeaseLost) if the ticket no longer owns it.
    fn release(&self, ticket: Self::Ticket) -> impl Future<Output = Result<()>> + Send;

    /// Moves the ticket's lease end to `by` from now, for work that outlasts
    /// the lease, and returns the new end (unix ms); the ticket's
    /// [`lease_expires_at_ms`](BackendTicket::lease_expires_at_ms) follows.
    /// [`LeaseLost`](crate::Error::LeaseLost) if the ticket no longer owns it.
    fn extend_lease(
        &self,
        ticket: &Self::Ticket,
        by: Duration,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The key's current record, or `None` if it is absent or expired. An
    /// in-progress record whose lease passed is still returned (it can be
    /// taken over) until one retention period after its lease end.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Record>>> + Send;

    /// Purges the key now, whatever its state; a ticket for it then gets
    /// [`LeaseLost`](crate::Error::LeaseLost). Returns whether a live record
    /// was removed.
    fn remove(&self, key: &[u8]) -> impl Future<Output = Result<bool>> + Send;

    /// One-shot dedup for message consumers: `First` the first time a key is
    /// seen within `retain`, `Duplicate` while it is live in any state.
    fn mark_seen(&self, key: &[u8], retain: Duration) -> impl Future<Output = Result<Seen>> + Send;

    /// The longest response [`complete`](Backend::complete) accepts, so a
    /// caller can check before it consumes a ticket.
    fn max_response_len(&self) -> usize;
}

/// What every backend's ticket tells its holder.
///
/// The generation is the fencing token: unique for the key across its whole
/// history (never reused after a release, removal or expiry) and higher for
/// every later owner, so the backend can refuse a stale owner's writes by
/// comparing it with the generation it stored.
pub trait BackendTicket: Debug + Send + Sync + 'static {
    /// The claimed key.
    fn key(&self) -> &[u8];
    /// The fingerprint the key was claimed with.
    fn fingerprint(&self) -> Fingerprint;
    /// The fencing generation.
    fn generation(&self) -> u64;
    /// When the key was claimed (unix ms, the backend's clock).
    fn claimed_at_ms(&self) -> u64;
    /// When the lease ends (unix ms, the backend's clock), as last set by the
    /// claim or [`Backend::extend_lease`].
    fn lease_expires_at_ms(&self) -> u64;
}

impl BackendTicket for Ticket {
    fn key(&self) -> &[u8] {
        Ticket::key(self)
    }

    fn fingerprint(&self) -> Fingerprint {
        Ticket::fingerprint(self)
    }

    fn generation(&self) -> u64 {
        Ticket::generation(self)
    }

    fn claimed_at_ms(&self) -> u64 {
        Ticket::claimed_at_ms(self)
    }

    fn lease_expires_at_ms(&self) -> u64 {
        Ticket::lease_expires_at_ms(self)
    }
}

/// A ticket for backends that keep their records elsewhere (a server): the
/// key, the fingerprint, the generation the server stored with the claim,
/// and the claim and lease times of the server's clock.
///
/// A backend's `complete`, `release` and `extend_lease` send the key and the
/// generation, and the server refuses them (`LeaseLost`) unless the key's
/// stored record is an in-progress claim of that same generation. The lease
/// end is interior-mutable so that `extend_lease`, which borrows the ticket,
/// can record the new end with
/// [`set_lease_expires_at_ms`](RemoteTicket::set_lease_expires_at_ms).
///
/// ```
/// use idemkv::{BackendTicket, Fingerprint, RemoteTicket};
/// let fp = Fingerprint::of(b"body");
/// let ticket = RemoteTicket::new(b"acme:k-1", fp, 42, 1_000, 61_000);
/// assert_eq!((ticket.key(), ticket.generation()), (&b"acme:k-1"[..], 42));
/// ticket.set_lease_expires_at_ms(121_000);
/// assert_eq!(ticket.lease_expires_at_ms(), 121_000);
/// ```
#[derive(Debug)]
#[must_use = "complete or release the ticket; dropping it leaves the key in progress until the lease ends"]
pub struct RemoteTicket {
    key: Box<[u8]>,
    fingerprint: Fingerprint,
    generation: u64,
    claimed_at_ms: u64,
    lease_expires_at_ms: AtomicU64,
}

impl RemoteTicket {
    /// A ticket for a claim the backend recorded with `generation`.
    pub fn new(
        key: &[u8],
        fingerprint: Fingerprint,
        generation: u64,
        claimed_at_ms: u64,
        lease_expires_at_ms: u64,
    ) -> RemoteTicket {
        RemoteTicket {
            key: key.into(),
            fingerprint,
            generation,
            claimed_at_ms,
            lease_expires_at_ms: AtomicU64::new(lease_expires_at_ms),
        }
    }

    /// Records a new lease end, once the backend confirmed the extension.
    pub fn set_lease_expires_at_ms(&self, at_ms: u64) {
        self.lease_expires_at_ms.store(at_ms, Ordering::Relaxed);
    }
}

impl BackendTicket for RemoteTicket {
    fn key(&self) -> &[u8] {
        &self.key
    }

    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn claimed_at_ms(&self) -> u64 {
        self.claimed_at_ms
    }

    fn lease_expires_at_ms(&self) -> u64 {
        self.lease_expires_at_ms.load(Ordering::Relaxed)
    }
}
