//! Applying hinted segments: hints read and checked on several threads,
//! their entries sorted into index shard order and applied shard by shard
//! (DESIGN.md §6, steps 4 and 5).

use super::view::{Applied, Recovered, RecoveryView};
use crate::error::Result;
use crate::format::bytes::le_u64;
use crate::format::hint::HintHeader;
use crate::format::hint::{HINT_ENTRY_LEN, HintEntry};
use crate::format::record::{self, Tag};
use crate::index::{SHARDS, shard_of};
use crate::loc::Loc;
use crate::log::SegMeta;
use crate::log::hint_files;
use crate::storage::Storage;
use parking_lot::Mutex;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A segment's figures summed over records without touching shared
/// counters per record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tally {
    pub(super) bytes: u64,
    pub(super) dead: u64,
    pub(super) min_drop_s: u32,
    pub(super) max_drop_s: u32,
    pub(super) first_ms: u64,
    pub(super) last_ms: u64,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            bytes: 0,
            dead: 0,
            min_drop_s: u32::MAX,
            max_drop_s: 0,
            first_ms: u64::MAX,
            last_ms: 0,
        }
    }

    pub(super) fn add(&mut self, len: u32, since_ms: u64, applied: Applied) {
        self.first_ms = self.first_ms.min(since_ms);
        self.last_ms = self.last_ms.max(since_ms);
        self.bytes += u64::from(len);
        if !applied.kept {
            self.dead += u64::from(len);
        }
        self.min_drop_s = self.min_drop_s.min(applied.drop_after_s);
        self.max_drop_s = self.max_drop_s.max(applied.drop_after_s);
    }

    /// A sync mark's bytes: dead from the start.
    pub(super) fn add_sync_mark(&mut self) {
        self.bytes += record::SYNC_MARK_LEN as u64;
        self.dead += record::SYNC_MARK_LEN as u64;
    }

    pub(super) fn merge(self, other: Tally) -> Tally {
        Tally {
            bytes: self.bytes + other.bytes,
            dead: self.dead + other.dead,
            min_drop_s: self.min_drop_s.min(other.min_drop_s),
            max_drop_s: self.max_drop_s.max(other.max_drop_s),
            first_ms: self.first_ms.min(other.first_ms),
            last_ms: self.last_ms.max(other.last_ms),
        }
    }

    pub(super) fn into_meta(self, meta: &SegMeta) {
        use std::sync::atomic::Ordering::Relaxed;
        meta.bytes.add(self.bytes);
        meta.dead_bytes.add(self.dead);
        meta.min_drop_after_s.fetch_min(self.min_drop_s, Relaxed);
        meta.max_drop_after_s.fetch_max(self.max_drop_s, Relaxed);
        meta.first_write_ms.fetch_min(self.first_ms, Relaxed);
        meta.last_write_ms.fetch_max(self.last_ms, Relaxed);
    }
}

/// An entry that holds nothing, to fill an entry buffer with.
const NO_ENTRY: HintEntry = HintEntry {
    hash: 0,
    tag: Tag::Claim,
    until_ms: 0,
    offset: 0,
    len: 0,
};

/// A checked hint whose entries were decoded into a chunk's entry buffer,
/// ordered by index shard, in offset order within a shard.
pub(super) struct ShardedHint {
    pub(super) header: HintHeader,
    /// Where its entries are in the chunk's buffer.
    pub(super) entries: Range<usize>,
    /// Shard `s` has `entries.start + starts[s]..entries.start + starts[s + 1]`.
    starts: [u32; SHARDS + 1],
}

impl ShardedHint {
    /// Checks hint file bytes as `hint::decode` does and decodes the
    /// entries straight into shard order, into `out`, which must be exactly
    /// as long as the hint's entry count (from its header, read before) and
    /// starts at `at` in the chunk's buffer.
    pub(super) fn decode_into(
        bytes: &[u8],
        id: u32,
        segment_len: u64,
        out: &mut [HintEntry],
        at: usize,
    ) -> Option<ShardedHint> {
        let (header, body) = hint_files::entry_bytes(bytes, id, segment_len)?;
        if body.len() != out.len() * HINT_ENTRY_LEN {
            return None;
        }
        let mut starts = [0u32; SHARDS + 1];
        for chunk in body.chunks_exact(HINT_ENTRY_LEN) {
            let hash = le_u64(chunk, 0);
            starts[shard_of(hash) + 1] += 1;
        }
        for s in 0..SHARDS {
            starts[s + 1] += starts[s];
        }
        let mut next = starts;
        hint_files::decode_entries(body, segment_len, |e| {
            let s = shard_of(e.hash);
            out[next[s] as usize] = e;
            next[s] += 1;
        })?;
        Some(ShardedHint {
            header,
            entries: at..at + out.len(),
            starts,
        })
    }

    /// Where shard `shard`'s entries are in the chunk's buffer.
    pub(super) fn shard(&self, shard: usize) -> Range<usize> {
        self.entries.start + self.starts[shard] as usize
            ..self.entries.start + self.starts[shard + 1] as usize
    }
}

/// Maps, checks and decodes the hints of segments `ids` (segment `ids[i]`
/// is `len_of(i)` bytes long, its hint's header states `listed[i]`
/// entries) on up to `threads` threads, into `buf`, which is reused from
/// chunk to chunk: one allocation for a whole open, instead of a buffer
/// per hint and per thread that the allocator might keep after open.
/// `None` for a segment without a usable hint.
pub(super) fn read_chunk(
    storage: &dyn Storage,
    dir: &Path,
    ids: &[u32],
    len_of: &(dyn Fn(usize) -> Result<u64> + Sync),
    listed: &[usize],
    threads: usize,
    buf: &mut Vec<HintEntry>,
) -> Vec<Result<Option<ShardedHint>>> {
    buf.clear();
    buf.resize(listed.iter().sum(), NO_ENTRY);
    let mut rest: &mut [HintEntry] = buf;
    let mut slots = Vec::with_capacity(ids.len());
    let mut at = 0;
    for &n in listed {
        let (out, tail) = std::mem::take(&mut rest).split_at_mut(n);
        slots.push(Mutex::new((at, out)));
        rest = tail;
        at += n;
    }
    parallel(
        ids.len(),
        threads,
        || (),
        |(), i| {
            let len = len_of(i)?;
            let mut slot = slots[i].lock();
            let (at, out) = &mut *slot;
            Ok(hint_files::map(storage, dir, ids[i]).and_then(|bytes| {
                ShardedHint::decode_into((*bytes).as_ref(), ids[i], len, out, *at)
            }))
        },
    )
}

/// A hinted segment waiting for its entries to be applied.
pub(super) struct Hinted {
    pub(super) id: u32,
    pub(super) len: u64,
    pub(super) hint: ShardedHint,
    /// The stream's last segment, from the hint closing wrote: not marked
    /// as hinted, so its hint is written anew once it is sealed.
    pub(super) last: bool,
}

/// What one thread's `apply_shard` calls reuse from shard to shard: the
/// counting sort's buckets and its output.
#[derive(Default)]
pub(super) struct ShardScratch {
    at: Vec<u32>,
    ordered: Vec<BatchEntry>,
}

/// An entry of a hinted segment in a batch, with the segment's place in
/// the batch.
#[derive(Clone, Copy)]
pub(super) struct BatchEntry {
    pub(super) entry: HintEntry,
    pub(super) seg: u32,
}

/// Runs `job` for `0..jobs` on up to `threads` threads, each with its own
/// scratch state from `init`; results in job order.
pub(super) fn parallel<S, T: Send>(
    jobs: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    job: impl Fn(&mut S, usize) -> T + Sync,
) -> Vec<T> {
    let threads = threads.min(jobs);
    if threads <= 1 {
        let mut state = init();
        return (0..jobs).map(|i| job(&mut state, i)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= jobs {
                return done;
            }
            done.push((i, job(&mut state, i)));
        }
    };
    let mut done = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut done = work();
        for other in others {
            done.extend(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Applies one shard's entries from every segment of `batch`; returns each
/// segment's tally of them.
///
/// The entries are first put in the order of their home slots in the
/// shard's table, near enough: by the top bits of their 32 hash bits (a
/// counting sort with about as many buckets as entries), so the table fills
/// front to back rather than at random. Within a bucket they keep their log
/// order, so a key's entries still come in log order.
pub(super) fn apply_shard<F>(
    batch: &[Hinted],
    entries: &[HintEntry],
    shard: usize,
    view: &RecoveryView<'_>,
    apply: &F,
    scratch: &mut ShardScratch,
) -> Result<Vec<Tally>>
where
    F: Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
{
    let slices = || {
        batch
            .iter()
            .enumerate()
            .map(move |(seg, h)| (seg as u32, &entries[h.hint.shard(shard)]))
    };
    let n: usize = slices().map(|(_, s)| s.len()).sum();
    // About one entry a bucket, so a bucket covers a few slots.
    let bits = n.next_power_of_two().trailing_zeros().min(20);
    let bucket = |e: &HintEntry| ((u64::from(e.hash as u32) << bits) >> 32) as usize;
    let ShardScratch { at, ordered } = scratch;
    at.clear();
    at.resize((1 << bits) + 1, 0);
    for (_, s) in slices() {
        for e in s {
            at[bucket(e) + 1] += 1;
        }
    }
    for b in 0..1 << bits {
        at[b + 1] += at[b];
    }
    let Some((_, first)) = slices().find(|(_, s)| !s.is_empty()) else {
        return Ok(vec![Tally::new(); batch.len()]);
    };
    ordered.clear();
    ordered.resize(
        n,
        BatchEntry {
            entry: first[0],
            seg: 0,
        },
    );
    for (seg, s) in slices() {
        for e in s {
            let b = bucket(e);
            ordered[at[b] as usize] = BatchEntry { entry: *e, seg };
            at[b] += 1;
        }
    }
    let mut tallies = vec![Tally::new(); batch.len()];
    for &BatchEntry { entry: e, seg } in ordered.iter() {
        let h = &batch[seg as usize];
        let first_ms = h.hint.header.first_ms;
        let rec = Recovered {
            loc: Loc {
                segment: h.id,
                offset: e.offset,
            },
            hash: e.hash,
            tag: e.tag,
            since_ms: first_ms,
            until_ms: e.until_ms,
            len: e.len,
            key: None,
            seq: None,
            generation: None,
        };
        tallies[seg as usize].add(e.len, first_ms, apply(&rec, view)?);
    }
    Ok(tallies)
}
