//! Request fingerprints: what makes a retry "the same request".

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

/// A 128-bit digest of the request an idempotency key was used with.
///
/// A claim on a live key with a different fingerprint answers
/// [`Claim::Mismatch`](crate::Claim::Mismatch): the client reused a key for a
/// different request. Build it from the parts of the request that must not
/// change between retries (method, path, body), not from headers that do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct Fingerprint(u128);

impl Fingerprint {
    /// The XXH3-128 digest of `bytes`.
    pub fn of(bytes: impl AsRef<[u8]>) -> Self {
        Fingerprint(xxh3_128(bytes.as_ref()))
    }

    /// The digest of several parts, each prefixed by its length, so that
    /// `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Xxh3::new();
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Fingerprint(h.digest128())
    }

    /// A fingerprint computed elsewhere.
    pub const fn from_u128(v: u128) -> Self {
        Fingerprint(v)
    }

    /// The raw 128-bit value, as stored on disk.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}
