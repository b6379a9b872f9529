//! What the store hands back: claims, tickets, records.

use crate::fingerprint::Fingerprint;
use std::sync::atomic::{AtomicU64, Ordering};

/// The answer to [`Store::claim`](crate::Store::claim): exactly one of four.
///
/// `T` is the ticket type of the backend that answered: [`Ticket`] for the
/// embedded [`Store`](crate::Store) (the default, so `Claim` alone means
/// `Claim<Ticket>`), [`Backend::Ticket`](crate::Backend::Ticket) for a
/// backend used through the [`Backend`](crate::Backend) trait.
#[derive(Debug)]
#[must_use = "a claim says whether to run the side effect; ignoring it defeats the store"]
pub enum Claim<T = Ticket> {
    /// You own the key: do the work, then `complete` or `release` the ticket.
    Acquired(T),
    /// The key was completed earlier: answer with this stored response.
    Replay(Completed),
    /// Another caller owns the key and its lease runs until this time.
    /// HTTP: 409 Conflict with `Retry-After`.
    InProgress {
        /// When the owner's lease ends (unix ms) and a takeover becomes possible.
        lease_expires_at_ms: u64,
    },
    /// The key is live with a different request fingerprint: the client
    /// reused a key for another request. HTTP: 422.
    Mismatch,
}

/// Ownership of a claimed key: proof that this caller may complete it.
///
/// Carries the key and a fencing generation. If the lease passes and another
/// caller takes the key over, this ticket's `complete`, `release` and
/// `extend_lease` fail with [`Error::LeaseLost`](crate::Error::LeaseLost).
/// Dropping a ticket without completing or releasing it leaves the claim in
/// progress until its lease ends: the side effect may have happened, so
/// nothing is released implicitly.
#[derive(Debug)]
#[must_use = "complete or release the ticket; dropping it leaves the key in progress until the lease ends"]
pub struct Ticket {
    pub(crate) key: Box<[u8]>,
    pub(crate) hash: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) generation: u64,
    pub(crate) claimed_at_ms: u64,
    pub(crate) lease_expires_at_ms: AtomicU64,
    /// Log position of the claim record this ticket last wrote (the claim
    /// or its latest lease extension). While the key's index entry points
    /// there, that record is the key's latest, with no need to read it.
    pub(crate) lpos: AtomicU64,
    /// The sequence number of that record: the ticket's next write must
    /// follow it.
    pub(crate) claim_seq: AtomicU64,
}

impl Ticket {
    /// The claimed key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The fingerprint the key was claimed with.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fencing generation: unique within the store and higher for every
    /// later claim, so a takeover always outranks the ticket it replaces.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the claim was made (unix ms).
    pub fn claimed_at_ms(&self) -> u64 {
        self.claimed_at_ms
    }

    /// When the lease ends (unix ms), as last set by the claim or `extend_lease`.
    pub fn lease_expires_at_ms(&self) -> u64 {
        self.lease_expires_at_ms.load(Ordering::Relaxed)
    }
}

/// A completed record: the stored response and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub(crate) response: Vec<u8>,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) completed_at_ms: u64,
    pub(crate) expires_at_ms: u64,
}

impl Completed {
    /// A completed record as a backend read it: for backends other than the
    /// embedded store, which build their answers from what their server
    /// returned. `expires_at_ms` is when the record stops being replayed.
    pub fn new(
        response: Vec<u8>,
        fingerprint: Fingerprint,
        completed_at_ms: u64,
        expires_at_ms: u64,
    ) -> Completed {
        Completed {
            response,
            fingerprint,
            completed_at_ms,
            expires_at_ms,
        }
    }

    /// The response, byte for byte as passed to `complete`.
    pub fn response(&self) -> &[u8] {
        &self.response
    }

    /// The response, without copying.
    pub fn into_response(self) -> Vec<u8> {
        self.response
    }

    /// The fingerprint of the request that produced the response.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// When `complete` was called (unix ms).
    pub fn completed_at_ms(&self) -> u64 {
        self.completed_at_ms
    }

    /// When the record stops being replayed (unix ms).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }
}

/// What [`Store::get`](crate::Store::get) finds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Completed, with its stored response.
    Completed(Completed),
    /// Claimed and not yet completed. The lease may already have passed; the
    /// next claim then takes the key over.
    InProgress {
        /// The fingerprint the key was claimed with.
        fingerprint: Fingerprint,
        /// When the current owner claimed it (unix ms).
        claimed_at_ms: u64,
        /// When the owner's lease ends (unix ms).
        lease_expires_at_ms: u64,
    },
    /// Marked by [`Store::mark_seen`](crate::Store::mark_seen).
    Seen {
        /// When it was first marked (unix ms).
        seen_at_ms: u64,
        /// When the mark expires (unix ms).
        expires_at_ms: u64,
    },
}

/// The answer to [`Store::mark_seen`](crate::Store::mark_seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "Seen says whether the message is a duplicate"]
pub enum Seen {
    /// First time: process the message.
    First,
    /// The key is already live (seen, claimed or completed): skip it.
    Duplicate,
}
