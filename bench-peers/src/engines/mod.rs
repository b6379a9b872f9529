//! The engines under test, behind one small claim/complete interface.
//!
//! idemkv implements the idempotency protocol itself. For the general-purpose
//! peers this module supplies it: a claim is an atomic insert-if-absent of an
//! in-progress record `{fingerprint, lease expiry}`, a complete overwrites it
//! with the completed record `{fingerprint, expiry, response}`, and a replay
//! reads the record, checks the fingerprint and hands back the response bytes.

pub mod fjall_engine;
pub mod idem;
pub mod map;
pub mod map_wal;
pub mod redb_engine;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod sled_engine;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors from any engine, boxed: the harness only reports them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result with a [`BoxError`].
pub type Result<T> = std::result::Result<T, BoxError>;

/// How long a claim's lease lasts.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long a completed record is kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a claim found.
pub enum Outcome<T, R> {
    /// The caller owns the key: do the work, then complete it.
    Acquired(T),
    /// The key was completed with the same fingerprint: the stored response.
    Replay(R),
    /// Another caller holds the key.
    InProgress,
    /// The key is live with another fingerprint.
    Mismatch,
}

/// An engine opened on a fresh directory for one repetition.
pub trait Engine: Send + Sync + Sized + 'static {
    /// Proof of a successful claim, handed to [`Engine::complete`].
    type Ticket;
    /// The stored response of a replay.
    type Response: AsRef<[u8]>;

    /// Opens the engine in `dir`; `durable` asks for every acknowledged
    /// write to be on disk (fsynced) before the call returns.
    fn open(dir: &Path, durable: bool) -> Result<Self>;

    /// Claims `key` for a request with fingerprint `fp`.
    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<Self::Ticket, Self::Response>>;

    /// Completes a claimed key with `response`.
    fn complete(&self, key: &[u8], fp: u128, ticket: Self::Ticket, response: &[u8]) -> Result<()>;
}

/// Record tag of an in-progress claim.
const IN_PROGRESS: u8 = 0;
/// Record tag of a completed key.
const COMPLETED: u8 = 1;
/// Bytes before the response in an encoded record: tag, fingerprint, expiry.
pub const HEADER_LEN: usize = 1 + 16 + 8;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The in-progress record a peer stores on claim.
pub fn encode_in_progress(fp: u128, now_ms: u64) -> [u8; HEADER_LEN] {
    let mut rec = [0u8; HEADER_LEN];
    rec[0] = IN_PROGRESS;
    rec[1..17].copy_from_slice(&fp.to_le_bytes());
    rec[17..25].copy_from_slice(&(now_ms + LEASE.as_millis() as u64).to_le_bytes());
    rec
}

/// The completed record a peer stores on complete.
pub fn encode_completed(fp: u128, now_ms: u64, response: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER_LEN + response.len());
    rec.push(COMPLETED);
    rec.extend_from_slice(&fp.to_le_bytes());
    rec.extend_from_slice(&(now_ms + RETENTION.as_millis() as u64).to_le_bytes());
    rec.extend_from_slice(response);
    rec
}

/// What a stored record means to a new claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No live record: the claim may write its own (a takeover if a record
    /// had expired).
    Free,
    /// Completed with the same fingerprint: replay the response.
    Replay,
    /// Held by a live claim.
    InProgress,
    /// Live with another fingerprint.
    Mismatch,
}

/// Classifies a stored record for a claim with fingerprint `fp` at `now_ms`.
///
/// # Errors
/// A record too short to hold the header is reported as corrupt.
pub fn classify(rec: &[u8], fp: u128, now_ms: u64) -> Result<Found> {
    if rec.len() < HEADER_LEN {
        return Err(format!("stored record of {} bytes is too short", rec.len()).into());
    }
    let stored_fp = u128::from_le_bytes(rec[1..17].try_into().expect("16 bytes"));
    let expires = u64::from_le_bytes(rec[17..25].try_into().expect("8 bytes"));
    if expires <= now_ms {
        return Ok(Found::Free);
    }
    Ok(if stored_fp != fp {
        Found::Mismatch
    } else if rec[0] == COMPLETED {
        Found::Replay
    } else {
        Found::InProgress
    })
}

/// A stored record's bytes seen as its response only.
pub struct Tail<B>(pub B);

impl<B: AsRef<[u8]>> AsRef<[u8]> for Tail<B> {
    fn as_ref(&self) -> &[u8] {
        &self.0.as_ref()[HEADER_LEN..]
    }
}

/// Maps a classified record to the outcome a peer hands back, `None` when
/// the key is free to write.
pub fn outcome_of<T, B>(found: Found, rec: B) -> Option<Outcome<T, Tail<B>>> {
    match found {
        Found::Free => None,
        Found::Replay => Some(Outcome::Replay(Tail(rec))),
        Found::InProgress => Some(Outcome::InProgress),
        Found::Mismatch => Some(Outcome::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_classify() {
        let now = 1_000_000;
        let p = encode_in_progress(7, now);
        assert_eq!(classify(&p, 7, now).unwrap(), Found::InProgress);
        assert_eq!(classify(&p, 8, now).unwrap(), Found::Mismatch);
        assert_eq!(
            classify(&p, 7, now + LEASE.as_millis() as u64).unwrap(),
            Found::Free
        );
        let c = encode_completed(7, now, b"resp");
        assert_eq!(classify(&c, 7, now).unwrap(), Found::Replay);
        assert_eq!(Tail(&c[..]).as_ref(), b"resp");
        assert!(classify(&c[..3], 7, now).is_err());
    }
}
