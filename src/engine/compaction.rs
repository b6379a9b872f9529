//! TTL-ordered compaction: drop whole segments whose records have all
//! expired, rewrite sparse ones, and evict what expired from the index.
//!
//! One pass, for each sealed segment, oldest first:
//! 1. if every record's drop-after time has passed, *drop* it: evict its
//!    index entries (the keys come from the records' hashes), delete the
//!    file, fsync the directory. No record is copied.
//! 2. otherwise, if it is due, *walk* it: every index entry still pointing
//!    into it whose drop-after time passed is evicted; what remains is its
//!    live bytes. A walk is due when its live fraction fell below the
//!    threshold, or when some of its records expired since the last walk
//!    (each walk records the earliest drop-after time left in it).
//! 3. if after the walk nothing is live, drop it; if its live fraction is
//!    below the threshold and it would otherwise stay on disk for more than
//!    twice its write span plus two seconds (drop-after times are whole
//!    seconds): a long-retention record among short ones,
//!    *rewrite* it: copy each live record to its stream's active segment under its
//!    key's shard lock, fsync the copies, then drop it.
//!
//! With a fixed retention, records expire in the order they were written, so
//! segments expire whole and are dropped without copying; rewriting is for
//! mixed retentions and for segments full of superseded records.

use crate::durability::{PerStream, Stream};
use crate::error::Result;
use crate::format::record::RecordFields;
use crate::index::{Entry, Index, Shard, shard_of};
use crate::log::{AppendOpts, Log, SegmentRecord};
use crate::reports::CompactionReport;
use crate::retention::gone;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Compaction settings and running totals.
#[derive(Debug)]
pub(crate) struct Compaction {
    /// Rewrite a segment whose live fraction falls below this.
    pub threshold: f64,
    /// One pass at a time.
    pub running: Mutex<()>,
    pub segments_dropped: AtomicU64,
    pub segments_rewritten: AtomicU64,
    pub bytes_reclaimed: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub entries_evicted: AtomicU64,
    /// Wakes the background compactor, when there is one.
    wake: OnceLock<Sender<()>>,
    /// The active segment each stream's last write went to, to notice a
    /// rollover.
    active_seen: PerStream<AtomicU32>,
}

impl Compaction {
    pub(crate) fn new(threshold: f64) -> Self {
        Compaction {
            threshold,
            running: Mutex::new(()),
            segments_dropped: AtomicU64::new(0),
            segments_rewritten: AtomicU64::new(0),
            bytes_reclaimed: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            entries_evicted: AtomicU64::new(0),
            wake: OnceLock::new(),
            active_seen: PerStream([AtomicU32::new(0), AtomicU32::new(0)]),
        }
    }

    /// Lets writes wake the background compactor through `wake` (DESIGN.md
    /// §5b, "When a pass runs").
    pub(crate) fn set_wake(&self, wake: Sender<()>) {
        let _ = self.wake.set(wake);
    }

    /// After a write of stream `stream` to segment `segment`: if the stream
    /// rolled over since its last write (one relaxed load per write
    /// otherwise) and a sealed segment has work (something in it expired,
    /// or its live fraction is below the threshold), wakes the background
    /// compactor, so expiry keeps up however fast segments fill, whatever
    /// `compaction_interval` is.
    pub(crate) fn after_write(&self, log: &Log, stream: Stream, segment: u32, now_ms: u64) {
        let seen = &self.active_seen[stream];
        if seen.load(Relaxed) == segment || seen.swap(segment, Relaxed) == segment {
            return;
        }
        let Some(wake) = self.wake.get() else {
            return;
        };
        let due = log.sealed_ids().into_iter().any(|id| {
            log.metas.get(id).is_some_and(|m| {
                gone(m.min_drop_after_s.load(Relaxed), now_ms) || m.live_fraction() < self.threshold
            })
        });
        if due {
            // Full: a wake-up is pending already.
            let _ = wake.try_send(());
        }
    }

    fn add(&self, r: &CompactionReport) {
        self.segments_dropped.fetch_add(r.segments_dropped, Relaxed);
        self.segments_rewritten
            .fetch_add(r.segments_rewritten, Relaxed);
        self.bytes_reclaimed.fetch_add(r.bytes_reclaimed, Relaxed);
        self.bytes_copied.fetch_add(r.bytes_copied, Relaxed);
        self.entries_evicted.fetch_add(r.entries_evicted, Relaxed);
    }
}

/// Runs one compaction pass over `log` and `index` at `now_ms`; see the
/// module docs. One pass at a time.
pub(crate) fn compact(
    log: &Log,
    index: &Index,
    compaction: &Compaction,
    now_ms: u64,
) -> Result<CompactionReport> {
    run_pass(log, index, compaction, now_ms, true)
}

/// The pass that closing a store runs (DESIGN.md §5b, "Closing"): what a
/// compaction pass does but rewrite, so that closing copies no record. It
/// drops the segments whose entries all expired and the claim segments
/// whose claims were all superseded, and writes the hint of every sealed
/// segment left.
pub(crate) fn closing_pass(
    log: &Log,
    index: &Index,
    compaction: &Compaction,
    now_ms: u64,
) -> Result<CompactionReport> {
    run_pass(log, index, compaction, now_ms, false)
}

fn run_pass(
    log: &Log,
    index: &Index,
    compaction: &Compaction,
    now_ms: u64,
    rewrite: bool,
) -> Result<CompactionReport> {
    let _one_at_a_time = compaction.running.lock();
    let mut report = CompactionReport::default();
    let pass = Pass {
        log,
        index,
        threshold: compaction.threshold,
        rewrite,
        // Taken before the pass reads any segment: every record it finds
        // is below it.
        floor: log.next_seq(),
    };
    let outcome = pass.run(now_ms, &mut report);
    compaction.add(&report);
    match &outcome {
        Ok(()) if report == CompactionReport::default() => {}
        Ok(()) => crate::observe::event!(info, report = ?report, "compaction pass"),
        Err(_e) => crate::observe::event!(error, error = %_e, "compaction failed"),
    }
    outcome.map(|()| report)
}

/// What one pass works on.
struct Pass<'a> {
    log: &'a Log,
    index: &'a Index,
    /// Rewrite a segment whose live fraction falls below this.
    threshold: f64,
    /// Whether sparse segments are rewritten (not while closing).
    rewrite: bool,
    /// Above the sequence number of every record the pass reads: the
    /// floor an eviction leaves in its shard (`Shard::evict_at`).
    floor: u64,
}

impl Pass<'_> {
    fn run(&self, now_ms: u64, report: &mut CompactionReport) -> Result<()> {
        // Whether this pass made everything appended so far durable.
        let mut synced = false;
        let ids = self.log.sealed_ids();
        for &id in &ids {
            let Some(meta) = self.log.metas.get(id) else {
                continue;
            };
            if gone(meta.max_drop_after_s.load(Relaxed), now_ms) {
                let records = self.log.segment_records(id)?;
                self.drop_segment(id, &records, now_ms, report)?;
                continue;
            }
            let sparse = meta.live_fraction() < self.threshold;
            // Something in it expired since the last walk (the walk moves
            // `min_drop_after_s` to the earliest live entry).
            let expiring = gone(meta.min_drop_after_s.load(Relaxed), now_ms);
            if !sparse && !expiring {
                continue;
            }
            let records = self.log.segment_records(id)?;
            let (live_bytes, min_live_drop_s) = self.walk(&records, now_ms, report);
            meta.min_drop_after_s.store(min_live_drop_s, Relaxed);
            let total = meta.bytes.get();
            meta.dead_bytes.set(total.saturating_sub(live_bytes));
            let stays_for_ms = u64::from(meta.max_drop_after_s.load(Relaxed))
                .saturating_mul(1000)
                .saturating_sub(now_ms);
            if live_bytes == 0 {
                // The walk just evicted every entry; nothing needs the
                // segment once the records that superseded its own are
                // durable: a claim segment is deleted only after the
                // completes that ended its claims, so a power loss cannot
                // leave a key with neither.
                if !synced {
                    self.log.sync()?;
                    synced = true;
                }
                report.bytes_reclaimed += self.log.remove_sealed(id)?;
                report.segments_dropped += 1;
            } else if self.rewrite
                && meta.live_fraction() < self.threshold
                && stays_for_ms > 2 * meta.span_ms() + 2 * 1000
            {
                self.rewrite(id, &records, now_ms, report)?;
            }
        }
        // Last, so a segment deleted above (a claim segment whose claims
        // were all completed, most often) never gets a hint; and only of
        // the segments this pass looked at: one sealed meanwhile (a claim
        // segment most often) is the next pass's, which its rollover woke.
        self.log.write_missing_hints(&ids)
    }

    /// Evicts the expired entries that point at `records`; returns the live
    /// bytes left and the earliest drop-after second among them.
    ///
    /// The records are taken in the order of their shards and, within a
    /// shard, of their home slots ([`walk_order`]), and each shard lock
    /// covers up to [`WALK_BATCH`] of them: taken in segment order, every
    /// record cost a lock of its own (contended with the writers, which
    /// hold it while appending) and a cache miss in a random place of a
    /// table of hundreds of megabytes.
    fn walk(
        &self,
        records: &[SegmentRecord],
        now_ms: u64,
        report: &mut CompactionReport,
    ) -> (u64, u32) {
        let (mut live, mut min_drop) = (0u64, u32::MAX);
        let order = walk_order(records);
        let same_shard = |a: &u32, b: &u32| {
            shard_of(records[*a as usize].hash) == shard_of(records[*b as usize].hash)
        };
        for run in order.chunk_by(same_shard) {
            for batch in run.chunks(WALK_BATCH) {
                let mut shard = self.index.shard(records[batch[0] as usize].hash);
                for &i in batch {
                    let r = &records[i as usize];
                    if let Some(entry) = unexpired_entry(&mut shard, r, self.floor, now_ms, report)
                    {
                        live += u64::from(r.len);
                        min_drop = min_drop.min(entry.drop_after_s);
                    }
                }
            }
        }
        (live, min_drop)
    }

    /// Deletes a segment whose index entries have all expired. Leaves it if
    /// an entry still needs it (its figures were stale).
    fn drop_segment(
        &self,
        id: u32,
        records: &[SegmentRecord],
        now_ms: u64,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let (live, _) = self.walk(records, now_ms, report);
        if live > 0 {
            return Ok(());
        }
        report.bytes_reclaimed += self.log.remove_sealed(id)?;
        report.segments_dropped += 1;
        Ok(())
    }

    /// Copies every live record of a segment to its stream's active segment, makes
    /// the copies durable, then deletes the segment.
    #[expect(
        clippy::expect_used,
        reason = "each entry is moved under the shard lock it was found under"
    )]
    fn rewrite(
        &self,
        id: u32,
        records: &[SegmentRecord],
        now_ms: u64,
        report: &mut CompactionReport,
    ) -> Result<()> {
        for r in records {
            let mut shard = self.index.shard(r.hash);
            let Some(entry) = unexpired_entry(&mut shard, r, self.floor, now_ms, report) else {
                continue;
            };
            let owned = self.log.read(r.loc, OwnedRecord::of)?;
            let app = self.log.append(
                &owned.fields(),
                AppendOpts {
                    generation_from_seq: false,
                    drop_after_s: entry.drop_after_s,
                    now_ms,
                    // The old segment goes as a whole.
                    supersedes: None,
                    // The copy is the key's latest record, after the original.
                    min_seq: owned.seq + 1,
                },
            )?;
            let moved = Entry::new(r.hash, app.loc, entry.state(), entry.drop_after_s);
            *shard
                .at_mut(r.hash, r.loc)
                .expect("entry found under this lock") = moved;
            report.bytes_copied += u64::from(r.len);
        }
        self.log.sync()?;
        report.bytes_reclaimed += self.log.remove_sealed(id)?;
        report.segments_rewritten += 1;
        Ok(())
    }
}

/// How many records a walk probes under one lock of their shard: enough
/// that the lock costs little beside the probes, few enough that a writer
/// waiting for the shard waits a few microseconds at most.
const WALK_BATCH: usize = 64;

/// The positions of `records` ordered by shard and, within a shard, by the
/// top bits of the hash that place an entry's home slot (`Shard::home`):
/// a counting sort on a 16-bit key, two passes over the records.
fn walk_order(records: &[SegmentRecord]) -> Vec<u32> {
    const BITS: u32 = 16;
    let shard_bits = crate::index::SHARDS.trailing_zeros();
    let key = |r: &SegmentRecord| {
        let home = (r.hash as u32) >> (32 - (BITS - shard_bits));
        (shard_of(r.hash) << (BITS - shard_bits)) | home as usize
    };
    let mut starts = vec![0u32; (1 << BITS) + 1];
    for r in records {
        starts[key(r) + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let mut order = vec![0u32; records.len()];
    for (i, r) in records.iter().enumerate() {
        let at = &mut starts[key(r)];
        order[*at as usize] = i as u32;
        *at += 1;
    }
    order
}

/// The index entry still pointing at `r`, if it has not expired; an expired
/// one is evicted, leaving `floor` in the shard (`Shard::evict_at`).
fn unexpired_entry(
    shard: &mut Shard,
    r: &SegmentRecord,
    floor: u64,
    now_ms: u64,
    report: &mut CompactionReport,
) -> Option<Entry> {
    let entry = *shard.at_mut(r.hash, r.loc)?;
    if gone(entry.drop_after_s, now_ms) {
        shard.evict_at(r.hash, r.loc, floor);
        report.entries_evicted += 1;
        return None;
    }
    Some(entry)
}

/// A record copied out of a segment, so no lock on the segment is held
/// while the copy is appended.
struct OwnedRecord {
    tag: crate::format::record::Tag,
    seq: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    fingerprint: u128,
    generation: u64,
    since_ms: u64,
    until_ms: u64,
}

impl OwnedRecord {
    fn of(r: crate::format::record::RecordRef<'_>) -> OwnedRecord {
        OwnedRecord {
            tag: r.tag,
            seq: r.seq,
            key: r.key.to_vec(),
            value: r.value.to_vec(),
            fingerprint: r.fingerprint,
            generation: r.generation,
            since_ms: r.since_ms,
            until_ms: r.until_ms,
        }
    }

    fn fields(&self) -> RecordFields<'_> {
        RecordFields {
            tag: self.tag,
            key: &self.key,
            value: &self.value,
            fingerprint: self.fingerprint,
            generation: self.generation,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loc::Loc;

    #[test]
    fn the_walk_takes_every_record_once_shard_by_shard() {
        let records: Vec<SegmentRecord> = (0..10_000u32)
            .map(|i| SegmentRecord {
                hash: xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()),
                loc: Loc {
                    segment: 1,
                    offset: i * 100,
                },
                len: 100,
            })
            .collect();
        let order = walk_order(&records);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<u32>>(), "a permutation");
        let key = |i: &u32| {
            let h = records[*i as usize].hash;
            (shard_of(h), h as u32 >> 22)
        };
        assert!(
            order.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
            "by shard, then by home slot"
        );
    }
}
