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
//!
//! Each shard is an open-addressing table of entries and nothing else: a
//! power-of-two number of 16-byte slots, an empty slot being one whose
//! segment id is 0 (no segment has that id). A key's home slot is given by
//! the top bits of the 32 hash bits its entry keeps; collisions probe the
//! following slots (linear probing, wrapping at the end). Removal shifts the
//! entries after the hole back instead of leaving a tombstone, so the load
//! is exactly the live entries over the slots, however long the churn. A
//! table doubles when an insert would take its load above 0.85 and halves
//! when a removal leaves it below 0.2, so after growing it is more than 0.42
//! full: at most 16 / 0.425 = 38 bytes per entry.

use crate::error::Result;
use crate::loc::{Loc, MAX_SEGMENT_ID};
use crate::stripes::Padded;
use parking_lot::{Mutex, MutexGuard};

/// Number of shards; a power of two.
pub(crate) const SHARDS: usize = 64;

/// From this many keys on, [`Index::reserve`] allocates the tables on
/// several threads.
const PARALLEL_RESERVE_KEYS: usize = 1 << 18;
/// Shard selection uses hash bits 32.., so the 32 bits an entry keeps are
/// independent of the shard.
const SHARD_SHIFT: u32 = 32;

/// The smallest table a shard allocates.
const MIN_SLOTS: usize = 8;
/// A table grows when an insert would take its load above
/// `GROW_LOAD.0 / GROW_LOAD.1`.
const GROW_LOAD: (usize, usize) = (17, 20);
/// A table shrinks when a removal leaves its load below `1 / SHRINK_BELOW`.
const SHRINK_BELOW: usize = 5;

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
    /// Segment id (high 30 bits) and `State` (low 2 bits). Segment id 0
    /// marks an empty table slot.
    segment_state: u32,
    offset: u32,
    /// Unix second after which the record, and every older record of the
    /// key that it shadows, has expired: the entry and its record may go.
    pub drop_after_s: u32,
}

impl Entry {
    /// An empty table slot.
    const EMPTY: Entry = Entry {
        hash: 0,
        segment_state: 0,
        offset: 0,
        drop_after_s: 0,
    };

    pub(crate) fn new(hash: u64, loc: Loc, state: State, drop_after_s: u32) -> Entry {
        assert!(
            (1..=MAX_SEGMENT_ID).contains(&loc.segment),
            "segment id {} outside 1..=2^30-1",
            loc.segment
        );
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

    fn is_empty(&self) -> bool {
        self.segment_state >> 2 == 0
    }
}

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

    /// Makes room for `keys` more entries spread over the shards. A shard
    /// gets its share plus four standard deviations; in the rare shard that
    /// gets more, the table grows once. The tables are allocated here, at
    /// once: open calls this before it allocates anything else sizeable, so
    /// no table is wedged among the buffers open frees later, which would
    /// keep the allocator from returning their memory (with glibc, a table
    /// this early gets a mapping of its own).
    ///
    /// For [`PARALLEL_RESERVE_KEYS`] keys or more, up to `threads` threads
    /// (the open's own) share the shards: each new table is written whole
    /// (every slot empty), and the page faults and zeroing of those writes
    /// were the largest part of an open's time spent on one thread.
    pub(crate) fn reserve(&self, keys: usize, threads: usize) {
        let share = keys / SHARDS;
        let per_shard = share + 4 * share.isqrt() + 16;
        let reserve_all = |shards: &[Padded<Mutex<Shard>>]| {
            for s in shards {
                s.0.lock().reserve(per_shard);
            }
        };
        if keys < PARALLEL_RESERVE_KEYS || threads <= 1 {
            return reserve_all(&self.shards);
        }
        let mut parts = self.shards.chunks(SHARDS.div_ceil(threads));
        let mine = parts.next().unwrap_or(&[]);
        std::thread::scope(|scope| {
            for part in parts {
                scope.spawn(move || reserve_all(part));
            }
            reserve_all(mine);
        });
    }

    /// Calls `f` on every entry, one shard at a time (the shard stays locked
    /// during its calls).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entry)) {
        for s in self.shards.iter() {
            s.0.lock().iter().for_each(&mut f);
        }
    }

    /// Bytes the index holds in memory: the slots of every shard, full or
    /// empty, and the shards themselves.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().memory_bytes())
            .sum::<usize>()
            + std::mem::size_of_val(&*self.shards)
    }
}

/// The shard that owns `hash`.
pub(crate) fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
}

/// One shard's table (see the module comment).
#[derive(Default)]
pub(crate) struct Shard {
    /// A power of two of slots, or none.
    slots: Box<[Entry]>,
    /// Slots that hold an entry.
    len: usize,
    /// Above the sequence number of every record whose entry compaction
    /// evicted from this shard while the record may still be on disk
    /// (DESIGN.md §5b): a record of a key with no entry is written above
    /// it, so at the next open it outranks those records, whose entries the
    /// key no longer shows.
    evicted_floor: u64,
}

/// Decides whether an entry with the right hash is the key looked for
/// (by reading the key from the log).
pub(crate) type Matcher<'a> = &'a mut dyn FnMut(&Entry) -> Result<bool>;

/// Where a probe for a key ended.
enum Probe {
    /// At the key's entry.
    Found(usize),
    /// At the empty slot the key's entry would go to (`usize::MAX` in a
    /// table without slots).
    Vacant(usize),
}

/// The slot of a key, as `Shard::slot` finds it.
pub(crate) enum Slot<'a> {
    Occupied(Occupied<'a>),
    Vacant(Vacant<'a>),
}

/// A slot that holds the key's entry.
pub(crate) struct Occupied<'a> {
    shard: &'a mut Shard,
    pos: usize,
}

/// The place a key's entry goes: the empty slot its probe ended at.
pub(crate) struct Vacant<'a> {
    shard: &'a mut Shard,
    pos: usize,
    hash: u32,
}

impl Occupied<'_> {
    pub(crate) fn get(&self) -> &Entry {
        &self.shard.slots[self.pos]
    }

    pub(crate) fn get_mut(&mut self) -> &mut Entry {
        &mut self.shard.slots[self.pos]
    }

    /// Removes the entry from the table.
    pub(crate) fn remove(self) -> Entry {
        self.shard.remove_pos(self.pos)
    }
}

impl<'a> Vacant<'a> {
    /// Puts the key's entry in place (the table grows first if it must).
    pub(crate) fn insert(self, entry: Entry) -> &'a mut Entry {
        debug_assert_eq!(entry.hash, self.hash, "the entry of the key probed for");
        let pos = if self.shard.must_grow(1) {
            self.shard.grow();
            self.shard.place(entry)
        } else {
            self.shard.slots[self.pos] = entry;
            self.pos
        };
        self.shard.len += 1;
        &mut self.shard.slots[pos]
    }
}

/// Slots for `len` entries at a load of at most `max.0 / max.1`.
fn slots_for(len: usize, max: (usize, usize)) -> usize {
    let needed = (len * max.1).div_ceil(max.0);
    needed.next_power_of_two().max(MIN_SLOTS)
}

impl Shard {
    /// The entry for the key `matches` confirms, among entries with `hash`.
    pub(crate) fn find(&mut self, hash: u64, matches: Matcher<'_>) -> Result<Option<&mut Entry>> {
        match self.probe(hash as u32, |e| matches(e))? {
            Probe::Found(pos) => Ok(Some(&mut self.slots[pos])),
            Probe::Vacant(_) => Ok(None),
        }
    }

    /// The slot of the key `matches` confirms: its entry, or the place to
    /// insert one (one probe where `find` then `insert` would take two).
    pub(crate) fn slot(&mut self, hash: u64, matches: Matcher<'_>) -> Result<Slot<'_>> {
        Ok(match self.probe(hash as u32, |e| matches(e))? {
            Probe::Found(pos) => Slot::Occupied(Occupied { shard: self, pos }),
            Probe::Vacant(pos) => Slot::Vacant(Vacant {
                shard: self,
                pos,
                hash: hash as u32,
            }),
        })
    }

    /// Adds an entry for a key that has none.
    pub(crate) fn insert(&mut self, entry: Entry) {
        debug_assert!(!entry.is_empty());
        if self.must_grow(1) {
            self.grow();
        }
        self.place(entry);
        self.len += 1;
    }

    /// Makes room for `additional` more entries without growing on the way.
    pub(crate) fn reserve(&mut self, additional: usize) {
        if self.slots.is_empty() {
            self.resize(slots_for(additional, GROW_LOAD));
        } else if self.must_grow(additional) {
            self.resize(slots_for(self.len + additional, GROW_LOAD));
        }
    }

    /// The entry that sits exactly at `loc`, if any, to update.
    pub(crate) fn at_mut(&mut self, hash: u64, loc: Loc) -> Option<&mut Entry> {
        let pos = self.position_at(hash, loc)?;
        Some(self.entry_mut(pos))
    }

    /// Where the entry that sits exactly at `loc` is, if any: for callers
    /// that return the entry on one branch and use the shard on another.
    pub(crate) fn position_at(&self, hash: u64, loc: Loc) -> Option<usize> {
        match self.probe_loc(hash, loc) {
            Probe::Found(pos) => Some(pos),
            Probe::Vacant(_) => None,
        }
    }

    /// The entry at a position from [`position_at`](Shard::position_at),
    /// with no change to the shard in between.
    pub(crate) fn entry_mut(&mut self, pos: usize) -> &mut Entry {
        &mut self.slots[pos]
    }

    /// Removes the entry that sits exactly at `loc` (whatever its key), if any.
    pub(crate) fn remove_at(&mut self, hash: u64, loc: Loc) -> Option<Entry> {
        match self.probe_loc(hash, loc) {
            Probe::Found(pos) => Some(self.remove_pos(pos)),
            Probe::Vacant(_) => None,
        }
    }

    /// Entries in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// See the field: the least sequence number a record of a key without
    /// an entry in this shard may take.
    pub(crate) fn evicted_floor(&self) -> u64 {
        self.evicted_floor
    }

    /// Removes the entry of `hash` at `loc` because its drop-after time
    /// passed, while its record, whose sequence number is below `floor`,
    /// may stay on disk.
    pub(crate) fn evict_at(&mut self, hash: u64, loc: Loc, floor: u64) -> Option<Entry> {
        self.evicted_floor = self.evicted_floor.max(floor);
        self.remove_at(hash, loc)
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter(|e| !e.is_empty())
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// The slot where entries with `hash` start their probe: the hash's top
    /// bits, so entries sorted by hash fill the table front to back.
    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.slots.len() as u64) >> 32) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Walks from the home slot of `hash` over the entries with that hash
    /// until `matches` confirms one or an empty slot ends the run. Every
    /// entry with the hash lies in that run, so all of them are tried.
    fn probe<E>(
        &self,
        hash: u32,
        mut matches: impl FnMut(&Entry) -> std::result::Result<bool, E>,
    ) -> std::result::Result<Probe, E> {
        if self.slots.is_empty() {
            return Ok(Probe::Vacant(usize::MAX));
        }
        let mask = self.mask();
        let mut pos = self.home(hash);
        loop {
            let e = &self.slots[pos];
            if e.is_empty() {
                return Ok(Probe::Vacant(pos));
            }
            if e.hash == hash && matches(e)? {
                return Ok(Probe::Found(pos));
            }
            pos = (pos + 1) & mask;
        }
    }

    fn probe_loc(&self, hash: u64, loc: Loc) -> Probe {
        let found = self.probe(hash as u32, |e| {
            Ok::<_, std::convert::Infallible>(e.loc() == loc)
        });
        match found {
            Ok(probe) => probe,
            Err(never) => match never {},
        }
    }

    /// Whether adding `additional` entries would take the load past its bound.
    fn must_grow(&self, additional: usize) -> bool {
        (self.len + additional) * GROW_LOAD.1 > self.slots.len() * GROW_LOAD.0
    }

    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(MIN_SLOTS));
    }

    /// Puts `entry` in the first empty slot from its home; the caller counts it.
    fn place(&mut self, entry: Entry) -> usize {
        let mask = self.mask();
        let mut pos = self.home(entry.hash);
        while !self.slots[pos].is_empty() {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = entry;
        pos
    }

    /// Moves every entry to a table of `slots` slots.
    fn resize(&mut self, slots: usize) {
        debug_assert!(slots.is_power_of_two() && slots > self.len);
        let old = std::mem::replace(
            &mut self.slots,
            vec![Entry::EMPTY; slots].into_boxed_slice(),
        );
        // Old slots in order are nearly in hash order, so the new table too
        // fills front to back.
        for e in old.iter().filter(|e| !e.is_empty()) {
            self.place(*e);
        }
    }

    /// Empties slot `pos` and closes the gap: each later entry of the run
    /// that may sit earlier (its home is not between the hole and itself)
    /// moves into the hole, which moves on to where it was.
    fn remove_pos(&mut self, pos: usize) -> Entry {
        let removed = self.slots[pos];
        let mask = self.mask();
        let mut hole = pos;
        let mut next = (pos + 1) & mask;
        loop {
            let e = self.slots[next];
            if e.is_empty() {
                break;
            }
            let home = self.home(e.hash);
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = e;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = Entry::EMPTY;
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * SHRINK_BELOW < self.slots.len() {
            self.resize(slots_for(self.len, (1, 2)));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::key_hash;

    /// Where a test entry's record is: `offset` of segment 1.
    fn at(offset: u32) -> Loc {
        Loc { segment: 1, offset }
    }

    fn entry(hash: u64, offset: u32) -> Entry {
        Entry::new(hash, at(offset), State::Completed, 10)
    }

    #[test]
    fn a_reserve_on_several_threads_sizes_every_shard() {
        let index = Index::new();
        let keys = PARALLEL_RESERVE_KEYS * 2;
        index.reserve(keys, 2);
        let share = keys / SHARDS;
        for s in index.shards.iter() {
            let shard = s.0.lock();
            assert!(
                !shard.must_grow(share),
                "every shard holds its share without growing"
            );
        }
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
        let removed = s.remove_at(7, at(100)).unwrap();
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

    /// Hash bits for test key `k`: few distinct values, so many keys
    /// collide, and some whose home is the last slot, so runs wrap.
    fn test_hash(k: u32, spread: u8) -> u64 {
        let h32 = match spread {
            0 => u32::MAX,
            1 => u32::MAX - 1,
            2 => 0,
            3 => 0x8000_0000,
            _ => k.wrapping_mul(0x9E37_79B9),
        };
        u64::from(h32) | (u64::from(k) << 32)
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert the key, or update its entry.
        Put(u32, u32),
        /// Remove through `slot`.
        Remove(u32),
        /// Remove through `remove_at`.
        RemoveAt(u32),
        Get(u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..96u32, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0..96u32).prop_map(Op::Remove),
            1 => (0..96u32).prop_map(Op::RemoveAt),
            1 => (0..96u32).prop_map(Op::Get),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// The table against a `HashMap`: keys are told apart only through
        /// the matcher (the entry's offset is the key), hash bits collide
        /// often and runs wrap around the table's end; the table grows and
        /// shrinks on the way.
        #[test]
        fn behaves_like_a_map(
            spreads in proptest::collection::vec(0..8u8, 96),
            ops in proptest::collection::vec(op(), 1..600),
        ) {
            use std::collections::HashMap;
            let mut s = Shard::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            let hash = |k: u32| test_hash(k, spreads[k as usize]);
            let loc = |k: u32| Loc { segment: 1 + k % 3, offset: k };
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let mut probed = Vec::new();
                        let slot = s
                            .slot(hash(k), &mut |e| {
                                probed.push(e.loc().offset);
                                Ok(e.loc().offset == k)
                            })
                            .unwrap();
                        match slot {
                            Slot::Occupied(mut o) => o.get_mut().drop_after_s = v,
                            Slot::Vacant(vac) => {
                                vac.insert(Entry::new(hash(k), loc(k), State::Seen, v));
                            }
                        }
                        // Only entries with the key's hash bits were confirmed.
                        for other in probed {
                            proptest::prop_assert_eq!(hash(other) as u32, hash(k) as u32);
                        }
                        model.insert(k, v);
                    }
                    Op::Remove(k) => {
                        let slot = s.slot(hash(k), &mut |e| Ok(e.loc().offset == k)).unwrap();
                        let removed = match slot {
                            Slot::Occupied(o) => Some(o.remove().drop_after_s),
                            Slot::Vacant(_) => None,
                        };
                        proptest::prop_assert_eq!(removed, model.remove(&k));
                    }
                    Op::RemoveAt(k) => {
                        let removed = s.remove_at(hash(k), loc(k)).map(|e| e.drop_after_s);
                        proptest::prop_assert_eq!(removed, model.remove(&k));
                    }
                    Op::Get(k) => {
                        let found = s
                            .find(hash(k), &mut |e| Ok(e.loc().offset == k))
                            .unwrap()
                            .map(|e| e.drop_after_s);
                        proptest::prop_assert_eq!(found, model.get(&k).copied());
                        let at = s.at_mut(hash(k), loc(k)).map(|e| e.drop_after_s);
                        proptest::prop_assert_eq!(at, model.get(&k).copied());
                    }
                }
                proptest::prop_assert_eq!(s.len(), model.len());
                proptest::prop_assert!(s.len() * GROW_LOAD.1 <= s.slots.len() * GROW_LOAD.0);
            }
            // Every key is still reachable, and nothing else is there.
            for (&k, &v) in &model {
                let found = s.find(hash(k), &mut |e| Ok(e.loc().offset == k)).unwrap();
                proptest::prop_assert_eq!(found.map(|e| e.drop_after_s), Some(v));
            }
            let mut listed: Vec<(u32, u32)> =
                s.iter().map(|e| (e.loc().offset, e.drop_after_s)).collect();
            listed.sort_unstable();
            let mut expected: Vec<(u32, u32)> = model.into_iter().collect();
            expected.sort_unstable();
            proptest::prop_assert_eq!(listed, expected);
        }
    }

    #[test]
    fn a_matcher_error_ends_the_search() {
        let mut s = Shard::default();
        s.insert(entry(7, 100));
        let err = s.find(7, &mut |_| {
            Err(crate::error::Error::InvalidOptions("read failed".into()))
        });
        assert!(err.is_err());
    }

    /// Keys inserted while as many expire, for many times the live count:
    /// tables keep no tombstones, so memory stays put.
    #[test]
    fn churn_keeps_memory_per_key_bounded() {
        const LIVE: u64 = 200_000;
        let index = Index::new();
        let hash = |i: u64| key_hash(&i.to_le_bytes());
        let loc = |i: u64| Loc {
            segment: 1 + (i / 1000) as u32,
            offset: (i % 1000) as u32,
        };
        let insert = |i: u64| {
            index
                .shard(hash(i))
                .insert(Entry::new(hash(i), loc(i), State::Completed, 1))
        };
        for i in 0..LIVE {
            insert(i);
        }
        let mut worst = 0f64;
        for i in LIVE..LIVE * 11 {
            let gone = i - LIVE;
            assert!(
                index
                    .shard(hash(gone))
                    .remove_at(hash(gone), loc(gone))
                    .is_some()
            );
            insert(i);
            if i % 10_000 == 0 {
                worst = worst.max(index.memory_bytes() as f64 / LIVE as f64);
            }
        }
        let mut entries = 0;
        index.for_each(|_| entries += 1);
        assert_eq!(entries, LIVE);
        assert!(worst <= 40.0, "{worst:.1} bytes per live key");
    }

    /// A table sized by `reserve` and filled stays within the bound too.
    #[test]
    fn reserved_tables_are_not_oversized() {
        for keys in [1_000u64, 100_000, 1_000_000] {
            let index = Index::new();
            index.reserve(keys as usize, 1);
            for i in 0..keys {
                let h = key_hash(&i.to_le_bytes());
                index
                    .shard(h)
                    .insert(Entry::new(h, at(i as u32), State::Completed, 1));
            }
            let per_key = index.memory_bytes() as f64 / keys as f64;
            assert!(
                keys < 100_000 || per_key <= 40.0,
                "{keys}: {per_key:.1} bytes per key"
            );
        }
    }

    #[test]
    fn removing_most_keys_shrinks_the_table() {
        let mut s = Shard::default();
        for i in 0..10_000u32 {
            s.insert(entry(u64::from(i.wrapping_mul(0x9E37_79B9)), i));
        }
        let big = s.memory_bytes();
        for i in 0..9_900u32 {
            let h = u64::from(i.wrapping_mul(0x9E37_79B9));
            assert!(s.remove_at(h, at(i)).is_some());
        }
        assert!(
            s.memory_bytes() * 16 <= big,
            "{} of {big}",
            s.memory_bytes()
        );
        for i in 9_900..10_000u32 {
            let h = u64::from(i.wrapping_mul(0x9E37_79B9));
            assert!(s.at_mut(h, at(i)).is_some());
        }
    }

    #[test]
    fn segment_zero_is_never_an_entry() {
        let made = std::panic::catch_unwind(|| {
            Entry::new(
                1,
                Loc {
                    segment: 0,
                    offset: 0,
                },
                State::Seen,
                1,
            )
        });
        assert!(made.is_err());
        assert!(Entry::EMPTY.is_empty());
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
}
