//! The ceiling: an in-memory hash map in 64 locked shards, no I/O at all.
//!
//! It follows the same protocol as the peers (fingerprints, leases,
//! expiries), so the gap to it is what storage costs.

use super::{Engine, LEASE, Outcome, RETENTION, Result, now_ms};
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Number of shards; a power of two.
const SHARDS: usize = 64;

/// A stored record.
enum Slot {
    /// Claimed, lease runs until this time (unix ms).
    InProgress { fp: u128, lease_ms: u64 },
    /// Completed, kept until this time (unix ms).
    Completed {
        fp: u128,
        expires_ms: u64,
        response: Arc<[u8]>,
    },
}

/// One shard: keys to records.
type Shard = Mutex<HashMap<Box<[u8]>, Slot>>;

/// 64 shards of `Mutex<HashMap<key, record>>`.
pub struct ShardedMap {
    shards: Box<[Shard]>,
}

impl ShardedMap {
    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[(xxh3_64(key) >> 58) as usize % SHARDS]
    }
}

impl Engine for ShardedMap {
    type Ticket = ();
    type Response = Arc<[u8]>;

    fn open(_dir: &Path, _durable: bool) -> Result<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Ok(ShardedMap { shards })
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Arc<[u8]>>> {
        let now = now_ms();
        let claimed = Slot::InProgress {
            fp,
            lease_ms: now + LEASE.as_millis() as u64,
        };
        let mut shard = self.shard(key).lock();
        if let Some(slot) = shard.get_mut(key) {
            let (stored_fp, expires) = match slot {
                Slot::InProgress { fp, lease_ms } => (*fp, *lease_ms),
                Slot::Completed { fp, expires_ms, .. } => (*fp, *expires_ms),
            };
            if expires > now {
                return Ok(if stored_fp != fp {
                    Outcome::Mismatch
                } else {
                    match slot {
                        Slot::Completed { response, .. } => Outcome::Replay(response.clone()),
                        Slot::InProgress { .. } => Outcome::InProgress,
                    }
                });
            }
            *slot = claimed;
            return Ok(Outcome::Acquired(()));
        }
        shard.insert(key.into(), claimed);
        Ok(Outcome::Acquired(()))
    }

    fn complete(&self, key: &[u8], fp: u128, _ticket: (), response: &[u8]) -> Result<()> {
        let done = Slot::Completed {
            fp,
            expires_ms: now_ms() + RETENTION.as_millis() as u64,
            response: response.into(),
        };
        match self.shard(key).lock().get_mut(key) {
            Some(slot) => *slot = done,
            None => return Err("complete of a key that was never claimed".into()),
        }
        Ok(())
    }
}
