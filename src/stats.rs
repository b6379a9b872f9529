//! Counters for operators.

use crate::stripes::{Padded, STRIPES, stripe};
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the store's counters since it was opened, and of its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls to `claim`.
    pub claims: u64,
    /// Claims answered `Acquired` (fresh keys and takeovers).
    pub acquired: u64,
    /// Claims answered `Replay`: duplicates prevented.
    pub replays: u64,
    /// Claims answered `InProgress`.
    pub in_progress: u64,
    /// Claims answered `Mismatch`.
    pub mismatches: u64,
    /// Acquisitions that took over an in-progress key whose lease had passed.
    pub takeovers: u64,
    /// Successful `complete` calls.
    pub completes: u64,
    /// Successful `release` calls.
    pub releases: u64,
    /// Successful `extend_lease` calls.
    pub lease_extensions: u64,
    /// `complete`, `release` or `extend_lease` refused with `LeaseLost`.
    pub lease_lost: u64,
    /// `remove` calls that removed a live key.
    pub removes: u64,
    /// `mark_seen` calls answered `First`.
    pub seen_first: u64,
    /// `mark_seen` calls answered `Duplicate`.
    pub seen_duplicates: u64,
    /// Expired records dropped from the index when their key was next
    /// touched (a claim, `mark_seen` or `remove` of an expired key).
    pub expirations: u64,
    /// Keys present now (in progress, completed or seen, not expired).
    pub live_keys: u64,
    /// Entries in the in-memory index: live keys, and expired or removed
    /// ones whose records still shadow older records on disk.
    pub indexed_keys: u64,
    /// Bytes the in-memory index takes (entries, control bytes and spare
    /// capacity); keys themselves are not kept in memory.
    pub index_memory_bytes: u64,
    /// Bytes of segment and hint files on disk.
    pub bytes_on_disk: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Bytes of records appended since open.
    pub bytes_appended: u64,
    /// Bytes of hint files written since open (by the open itself and by
    /// compaction).
    pub hint_bytes_written: u64,
    /// Bytes of zeros written into segment files ahead of the records
    /// since open (DESIGN.md §5, "Preallocation": a durable store writes
    /// the space it appends into before it appends, so each `fdatasync`
    /// commits data alone). The write amplification that costs is this
    /// over `bytes_appended`; 0 with `Durability::None` or
    /// `Options::preallocate(false)`.
    pub zero_bytes_written: u64,
    /// Sealed segments whose index the open rebuilt from hint files rather
    /// than by reading them.
    pub segments_opened_from_hints: u64,
    /// Streams whose last segment the open read from the hint closing
    /// wrote for it rather than by decoding it (0 to 2; DESIGN.md §6, "The
    /// last segment's hint"). Like a sealed segment opened from its hint,
    /// its records are checked when they are read, not at open.
    pub last_segments_opened_from_hints: u64,
    /// fsyncs issued since open (group commit makes this far fewer than writes).
    pub fsyncs: u64,
    /// Records read back from disk when the store was opened.
    pub recovered_records: u64,
    /// Bytes of torn tail cut off each stream's last segment (and of a torn
    /// newest segment removed) when the store was opened.
    pub torn_tail_bytes_truncated: u64,
    /// Segments compaction deleted whole, since open.
    pub segments_dropped: u64,
    /// Segments compaction rewrote, since open.
    pub segments_rewritten: u64,
    /// Bytes of segment files compaction deleted, since open.
    pub bytes_reclaimed: u64,
    /// Bytes of records compaction copied forward, since open.
    pub bytes_copied: u64,
    /// Expired index entries compaction evicted, since open.
    pub entries_evicted: u64,
    /// Times a `claim_wait` caller went to sleep on a key in progress, since open.
    pub claim_waits: u64,
    /// `claim_wait` callers waiting right now.
    pub waiting: u64,
    /// Whether the store refuses writes after a failed write or fsync.
    pub poisoned: bool,
    /// Claim outcomes per namespace named with
    /// [`Options::namespace`](crate::Options::namespace), in the order named.
    pub namespaces: Vec<NamespaceStats>,
}

/// Claim outcomes of the keys of one namespace, since open.
///
/// The retry rate an operator watches is `(replays + in_progress) / claims`:
/// the share of requests that were retries of one already seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceStats {
    /// The name given to [`Options::namespace`](crate::Options::namespace).
    pub name: String,
    /// Claims on keys of this namespace.
    pub claims: u64,
    /// Of those, answered `Acquired`.
    pub acquired: u64,
    /// Of those, answered `Replay`.
    pub replays: u64,
    /// Of those, answered `InProgress`.
    pub in_progress: u64,
    /// Of those, answered `Mismatch`.
    pub mismatches: u64,
}

/// A counter bumped on the hot path. A single shared atomic would move its
/// cache line between cores on every claim; each thread instead adds to its
/// own stripe, and reading sums the stripes.
#[derive(Default)]
pub(crate) struct Counter([Padded<AtomicU64>; STRIPES]);

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
    /// Sets the sum to `n` (racing adds may be lost: for figures that are
    /// estimates anyway, such as a segment's dead bytes).
    pub(crate) fn set(&self, n: u64) {
        for (i, s) in self.0.iter().enumerate() {
            s.0.store(if i == 0 { n } else { 0 }, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub claims: Counter,
    pub acquired: Counter,
    pub replays: Counter,
    pub in_progress: Counter,
    pub mismatches: Counter,
    pub takeovers: Counter,
    pub completes: Counter,
    pub releases: Counter,
    pub lease_extensions: Counter,
    pub lease_lost: Counter,
    pub removes: Counter,
    pub seen_first: Counter,
    pub seen_duplicates: Counter,
    pub expirations: Counter,
    pub claim_waits: Counter,
}
