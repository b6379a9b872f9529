//! The engine's counters and sizes as a [`Stats`] snapshot.

use super::{Current, Engine};
use crate::index::State;
use crate::stats::Stats;

impl Engine {
    /// The counters; `count_live` walks the index to count live keys.
    pub(crate) fn stats(&self, count_live: bool) -> Stats {
        let now_ms = self.clock.now_ms();
        let (mut live, mut indexed) = (0u64, 0u64);
        self.index.for_each(|e| {
            indexed += 1;
            if count_live && e.state() != State::Absent {
                let cur = self.log.read(e.loc(), |r| Current::of(&r));
                live += u64::from(cur.is_ok_and(|c| c.is_live(now_ms, self.retention_ms)));
            }
        });
        let c = &self.counters;
        let lc = &self.log.counters;
        use std::sync::atomic::Ordering::Relaxed;
        Stats {
            claims: c.claims.get(),
            acquired: c.acquired.get(),
            replays: c.replays.get(),
            in_progress: c.in_progress.get(),
            mismatches: c.mismatches.get(),
            takeovers: c.takeovers.get(),
            completes: c.completes.get(),
            releases: c.releases.get(),
            lease_extensions: c.lease_extensions.get(),
            lease_lost: c.lease_lost.get(),
            removes: c.removes.get(),
            seen_first: c.seen_first.get(),
            seen_duplicates: c.seen_duplicates.get(),
            expirations: c.expirations.get(),
            live_keys: live,
            indexed_keys: indexed,
            index_memory_bytes: self.index.memory_bytes() as u64,
            bytes_on_disk: self.log.disk_bytes(),
            segments: self.log.segment_count(),
            bytes_appended: lc.bytes_appended.get(),
            fsyncs: lc.fsyncs.load(Relaxed),
            hint_bytes_written: lc.hint_bytes_written.load(Relaxed)
                + self.recovery.hint_bytes_written,
            zero_bytes_written: lc.zero_bytes_written.load(Relaxed),
            segments_opened_from_hints: self.recovery.hinted_segments,
            last_segments_opened_from_hints: self.recovery.hinted_last_segments,
            recovered_records: self.recovery.records,
            segments_dropped: self.compaction.segments_dropped.load(Relaxed),
            segments_rewritten: self.compaction.segments_rewritten.load(Relaxed),
            bytes_reclaimed: self.compaction.bytes_reclaimed.load(Relaxed),
            bytes_copied: self.compaction.bytes_copied.load(Relaxed),
            entries_evicted: self.compaction.entries_evicted.load(Relaxed),
            torn_tail_bytes_truncated: self.recovery.torn_tail_bytes,
            claim_waits: c.claim_waits.get(),
            waiting: self.waiters.len() as u64,
            poisoned: self.log.is_poisoned(),
            namespaces: self.namespaces.snapshot(),
        }
    }
}
