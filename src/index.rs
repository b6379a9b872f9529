//! The in-memory index: key -> where the key's latest record is.
//!
//! Keys are not held in memory, and neither is a key's state: an entry is 16
//! bytes (part of the key's hash, the record's location and state, and the
//! second after which nothing about the key needs keeping). A lookup finds
//! the entries whose hash matches and reads each one's record to compare the
//! full key, so two keys whose hashes collide stay two entries; that read
//! also yields the fingerprint, generation and times the answer needs. The
//! index is split into shards, each behind its own lock, so operations on
//! different keys rarely meet.

use crate::error::Result;
use crate::log::Loc;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

/// Number of shards; a power of two.
pub(crate) const SHARDS: usize = 64;
/// Shard selection uses hash bits 32.., so the 32 bits an entry keeps are
/// independent of the shard.
const SHARD_SHIFT: u32 = 32;
/// Segment ids must fit the 30 bits an entry gives them.
pub(crate) const MAX_SEGMENT_ID: u32 = (1 << 30) - 1;

/// What the latest record of a key makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Released or removed: absent, but the tombstone record still shadows
    /// older records on disk until `drop_after_s`.
    Absent = 0,
    InProgress = 1,
    Completed = 2,
    Seen = 3,
}

impl State {
    fn from_bits(bits: u32) -> State {
        match bits & 3 {
            0 => State::Absent,
            1 => State::InProgress,
            2 => State::Completed,
            _ => State::Seen,
        }
    }
}

/// One key's index entry: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The low 32 bits of the key's XXH3-64 hash.
    hash: u32,
    /// Segment id (high 30 bits) and `State` (low 2 bits).
    segment_state: u32,
    offset: u32,
    /// Unix second after which the record, and every older record of the
    /// key that it shadows, has expired: the entry and its record may go.
    pub drop_after_s: u32,
}

impl Entry {
    pub(crate) fn new(hash: u64, loc: Loc, state: State, drop_after_s: u32) -> Entry {
        debug_assert!(loc.segment <= MAX_SEGMENT_ID);
        Entry {
            hash: hash as u32,
            segment_state: (loc.segment << 2) | state as u32,
            offset: loc.offset,
            drop_after_s,
        }
    }

    pub(crate) fn loc(&self) -> Loc {
        Loc {
            segment: self.segment_state >> 2,
            offset: self.offset,
        }
    }

    pub(crate) fn state(&self) -> State {
        State::from_bits(self.segment_state)
    }

    /// Whether the entry's hash bits agree with a key hash.
    fn has_hash(&self, hash: u64) -> bool {
        self.hash == hash as u32
    }
}

/// The hash hashbrown places an entry by: the kept 32 bits, spread over 64
/// so both the bucket index (low bits) and the control tag (top bits) vary.
fn table_hash(hash32: u32) -> u64 {
    u64::from(hash32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
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

    /// Makes room for `keys` more entries spread over the shards.
    pub(crate) fn reserve(&self, keys: usize) {
        let per_shard = keys / SHARDS + keys / SHARDS / 8 + 16;
        for s in self.shards.iter() {
            s.0.lock().table.reserve(per_shard, |e| table_hash(e.hash));
        }
    }

    /// Calls `f` on every entry, one shard at a time (the shard stays locked
    /// during its calls).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entry)) {
        for s in self.shards.iter() {
            s.0.lock().table.iter().for_each(&mut f);
        }
    }

    /// Bytes the index holds in memory: entries, control bytes and spare
    /// capacity of every shard.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let cap = s.0.lock().table.capacity();
                // hashbrown keeps one control byte per bucket plus a group's
                // worth of trailing control bytes; buckets are capacity * 8/7.
                let buckets = if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two()
                };
                buckets * (std::mem::size_of::<Entry>() + 1) + if buckets > 0 { 16 } else { 0 }
            })
            .sum::<usize>()
            + std::mem::size_of_val(&*self.shards)
    }
}

/// The shard that owns `hash`.
pub(crate) fn shard_of(hash: u64) -> usize {
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

/// The equality hashbrown probes with: hash bits first, then `matches`. The
/// first error `matches` returns is kept in `failure` and ends the search.
fn confirm<'a>(
    hash: u64,
    matches: Matcher<'a>,
    failure: &'a mut Option<crate::error::Error>,
) -> impl FnMut(&Entry) -> bool + 'a {
    move |e| {
        e.has_hash(hash)
            && failure.is_none()
            && matches(e).unwrap_or_else(|err| {
                *failure = Some(err);
                false
            })
    }
}

impl Shard {
    /// The entry for the key `matches` confirms, among entries with `hash`.
    pub(crate) fn find(&mut self, hash: u64, matches: Matcher<'_>) -> Result<Option<&mut Entry>> {
        let mut failure = None;
        let found = self.table.find_mut(
            table_hash(hash as u32),
            confirm(hash, matches, &mut failure),
        );
        failure.map_or(Ok(found), Err)
    }

    /// The slot of the key `matches` confirms: its entry, or the place to
    /// insert one (one probe where `find` then `insert` would take two).
    pub(crate) fn slot(
        &mut self,
        hash: u64,
        matches: Matcher<'_>,
    ) -> Result<hashbrown::hash_table::Entry<'_, Entry>> {
        let mut failure = None;
        let slot = self.table.entry(
            table_hash(hash as u32),
            confirm(hash, matches, &mut failure),
            |e| table_hash(e.hash),
        );
        failure.map_or(Ok(slot), Err)
    }

    /// Adds an entry for a key that has none.
    pub(crate) fn insert(&mut self, entry: Entry) {
        self.table
            .insert_unique(table_hash(entry.hash), entry, |e| table_hash(e.hash));
    }

    /// The entry that sits exactly at `loc`, if any, to update.
    pub(crate) fn at_mut(&mut self, hash: u64, loc: Loc) -> Option<&mut Entry> {
        self.table.find_mut(table_hash(hash as u32), |e| {
            e.has_hash(hash) && e.loc() == loc
        })
    }

    /// Removes the entry that sits exactly at `loc` (whatever its key), if any.
    pub(crate) fn remove_at(&mut self, hash: u64, loc: Loc) -> Option<Entry> {
        self.table
            .find_entry(table_hash(hash as u32), |e| {
                e.has_hash(hash) && e.loc() == loc
            })
            .ok()
            .map(|occupied| occupied.remove().0)
    }
}

/// A unix-ms time as the unix second at or after it, saturating.
pub(crate) fn ceil_s(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: u64, offset: u32) -> Entry {
        Entry::new(hash, Loc { segment: 1, offset }, State::Completed, 10)
    }

    #[test]
    fn colliding_hashes_stay_separate_keys() {
        let mut s = Shard::default();
        s.insert(entry(7, 100));
        s.insert(entry(7, 200));
        let found = s
            .find(7, &mut |e| Ok(e.loc().offset == 200))
            .unwrap()
            .unwrap();
        assert_eq!(found.loc().offset, 200);
        let removed = s
            .remove_at(
                7,
                Loc {
                    segment: 1,
                    offset: 100,
                },
            )
            .unwrap();
        assert_eq!(removed.loc().offset, 100);
        assert!(
            s.find(7, &mut |e| Ok(e.loc().offset == 100))
                .unwrap()
                .is_none()
        );
        assert!(
            s.find(7, &mut |e| Ok(e.loc().offset == 200))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn entry_is_sixteen_bytes_and_packs_its_fields() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        let loc = Loc {
            segment: MAX_SEGMENT_ID,
            offset: u32::MAX,
        };
        for state in [
            State::Absent,
            State::InProgress,
            State::Completed,
            State::Seen,
        ] {
            let e = Entry::new(u64::MAX, loc, state, 5);
            assert_eq!((e.loc(), e.state(), e.drop_after_s), (loc, state, 5));
        }
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(
            (ceil_s(0), ceil_s(1), ceil_s(1000), ceil_s(1001)),
            (0, 1, 1, 2)
        );
        assert_eq!(ceil_s(u64::MAX), u32::MAX);
    }
}
