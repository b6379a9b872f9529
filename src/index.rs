//! The in-memory index: key hash -> where the key's latest record is and what
//! state it puts the key in.
//!
//! Keys are not held in memory. An entry is found by its 64-bit XXH3 hash and
//! then confirmed by reading the key from the record it points at, so two keys
//! whose hashes collide stay two entries. The index is split into shards, each
//! behind its own lock, so operations on different keys rarely meet.

use crate::error::Result;
use crate::log::Loc;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

/// Number of shards; a power of two.
pub(crate) const SHARDS: usize = 64;
/// Shard selection uses hash bits well away from the low bits (bucket index)
/// and the top seven (hashbrown's control tag), so neither loses entropy.
const SHARD_SHIFT: u32 = 40;

/// The state a key's latest record puts it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    InProgress,
    Completed,
    Seen,
}

/// One key's index entry: 40 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub hash: u64,
    pub loc: Loc,
    /// Lease end for `InProgress`, expiry for `Completed` and `Seen`.
    pub deadline_ms: u64,
    /// The fencing generation of the claim (`InProgress`) or of the claim that
    /// was completed.
    pub generation: u64,
    pub state: State,
}

impl Entry {
    /// Whether the key is present at `now_ms`. An in-progress record whose
    /// lease ended stays present (it can be taken over) until a further
    /// retention period has passed, then it is absent like an expired record.
    pub(crate) fn is_live(&self, now_ms: u64, retention_ms: u64) -> bool {
        match self.state {
            State::InProgress => now_ms < self.deadline_ms.saturating_add(retention_ms),
            State::Completed | State::Seen => now_ms < self.deadline_ms,
        }
    }
}

#[repr(align(128))]
struct Padded<T>(T);

pub(crate) struct Index {
    shards: Box<[Padded<Mutex<Shard>>]>,
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
        }
    }

    /// Locks the shard that owns `hash`.
    pub(crate) fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.shards[shard_of(hash)].0.lock()
    }

    /// Calls `f` on every entry, one shard at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entry)) {
        for s in self.shards.iter() {
            s.0.lock().table.iter().for_each(&mut f);
        }
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
}

/// The hash a key is indexed by.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[derive(Default)]
pub(crate) struct Shard {
    table: HashTable<Entry>,
}

/// Decides whether an entry with the right hash is the key looked for
/// (by reading the key from the log).
pub(crate) type Matcher<'a> = &'a mut dyn FnMut(&Entry) -> Result<bool>;

impl Shard {
    /// The entry for the key `matches` confirms, among entries with `hash`.
    pub(crate) fn find(&mut self, hash: u64, matches: Matcher<'_>) -> Result<Option<&mut Entry>> {
        let mut failure = None;
        let found = self.table.find_mut(hash, |e| {
            e.hash == hash
                && failure.is_none()
                && matches(e).unwrap_or_else(|err| {
                    failure = Some(err);
                    false
                })
        });
        match failure {
            Some(err) => Err(err),
            None => Ok(found),
        }
    }

    /// The in-progress entry holding claim `generation`. Generations are
    /// sequence numbers, unique in the store, so no key comparison is needed.
    pub(crate) fn find_claim(&mut self, hash: u64, generation: u64) -> Option<&mut Entry> {
        self.table.find_mut(hash, |e| {
            e.hash == hash && e.generation == generation && e.state == State::InProgress
        })
    }

    /// Adds an entry for a key that has none.
    pub(crate) fn insert(&mut self, entry: Entry) {
        self.table.insert_unique(entry.hash, entry, |e| e.hash);
    }

    /// Sets the entry for the key `matches` confirms, inserting if absent.
    pub(crate) fn upsert(&mut self, entry: Entry, matches: Matcher<'_>) -> Result<()> {
        match self.find(entry.hash, matches)? {
            Some(e) => *e = entry,
            None => self.insert(entry),
        }
        Ok(())
    }

    /// Removes and returns the entry for the key `matches` confirms.
    pub(crate) fn remove(&mut self, hash: u64, matches: Matcher<'_>) -> Result<Option<Entry>> {
        let mut failure = None;
        let found = self.table.find_entry(hash, |e| {
            e.hash == hash
                && failure.is_none()
                && matches(e).unwrap_or_else(|err| {
                    failure = Some(err);
                    false
                })
        });
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(found.ok().map(|occupied| occupied.remove().0))
    }

    /// Removes the in-progress entry holding claim `generation`.
    pub(crate) fn remove_claim(&mut self, hash: u64, generation: u64) -> Option<Entry> {
        self.table
            .find_entry(hash, |e| {
                e.hash == hash && e.generation == generation && e.state == State::InProgress
            })
            .ok()
            .map(|occupied| occupied.remove().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: u64, offset: u32) -> Entry {
        Entry {
            hash,
            loc: Loc { segment: 1, offset },
            deadline_ms: 10,
            generation: u64::from(offset),
            state: State::Completed,
        }
    }

    #[test]
    fn colliding_hashes_stay_separate_keys() {
        let mut s = Shard::default();
        s.insert(entry(7, 100));
        s.insert(entry(7, 200));
        let found = s
            .find(7, &mut |e| Ok(e.loc.offset == 200))
            .unwrap()
            .unwrap();
        assert_eq!(found.loc.offset, 200);
        let removed = s
            .remove(7, &mut |e| Ok(e.loc.offset == 100))
            .unwrap()
            .unwrap();
        assert_eq!(removed.loc.offset, 100);
        assert!(
            s.find(7, &mut |e| Ok(e.loc.offset == 100))
                .unwrap()
                .is_none()
        );
        assert!(
            s.find(7, &mut |e| Ok(e.loc.offset == 200))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn entry_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn liveness_follows_state() {
        let mut e = entry(1, 1);
        assert!(e.is_live(9, 100) && !e.is_live(10, 100));
        e.state = State::InProgress;
        assert!(e.is_live(109, 100) && !e.is_live(110, 100));
    }
}
