//! Rollover: sealing a stream's active segment and starting its next one
//! (DESIGN.md §5, "Rollover").

use super::append::{ROLLING, pack, unpack};
use super::segment_files::{NewSegment, create_segment};
use super::{Active, ActiveView, Log, Sealed, StreamLog, active};
use crate::error::{Error, Result};
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::loc::MAX_SEGMENT_ID;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Log {
    /// Sleeps until the rollover under way in `st` ends (or the log is
    /// poisoned). The rollover wakes every sleeper; the timeout only bounds
    /// a missed wake-up.
    pub(super) fn wait_for_rollover(&self, st: &StreamLog) {
        let mut guard = st.rolled.lock();
        while st.reserve.0.load(Ordering::Acquire) & ROLLING != 0 && !self.commit.is_poisoned() {
            st.rolled_cv.wait_for(&mut guard, Duration::from_millis(10));
        }
    }

    /// Seals `st`'s active segment and starts the stream's next one, if the
    /// reservation word is still `observed` (else another appender is at
    /// it, or was): stop reservations, wait for those in flight, then
    /// 1. write out the buffer and fsync the file (it never changes again);
    /// 2. map it and publish it as sealed, before the active segment moves on;
    /// 3. create the next file, write its header, fsync it, fsync the directory;
    /// 4. make it active, its counters starting at or above `min_count`.
    pub(super) fn rollover(&self, st: &StreamLog, observed: u64, min_count: u64) -> Result<()> {
        if st
            .reserve
            .0
            .compare_exchange(
                observed,
                observed | ROLLING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(());
        }
        let (tail, rel, epoch) = unpack(observed);
        let outcome = self.seal_and_start(st, tail, rel, epoch, min_count);
        if outcome.is_err() {
            // The word keeps its rollover flag: every appender now sees the
            // poison and returns `Poisoned`.
            self.commit.poison();
        }
        let _guard = st.rolled.lock();
        st.rolled_cv.notify_all();
        outcome
    }

    fn seal_and_start(
        &self,
        st: &StreamLog,
        tail: usize,
        rel: u64,
        epoch: bool,
        min_count: u64,
    ) -> Result<()> {
        let mut flush = st.flush.lock();
        // SAFETY: the write-out lock is held, so no rollover swaps it.
        let sealing = unsafe { &*st.active.load(Ordering::Acquire) };
        // Every reservation before the rollover flag is published first.
        while sealing.buf.len() != tail {
            crate::sync::thread::yield_now();
        }
        let path = sealing.path.clone();
        self.write_active(st, sealing, &mut flush, tail, true)
            .map_err(|e| self.fail("write", &path, e))?;
        // A sealed segment ends at its last record: space preallocated
        // past it (now, or by an earlier open) goes.
        sealing
            .file
            .set_len(tail as u64)
            .map_err(|e| self.fail("truncate", &path, e))?;
        sealing
            .file
            .sync_data()
            .map_err(|e| self.fail("fsync", &path, e))?;
        flush.dirty = false;
        sealing
            .meta
            .synced_len
            .fetch_max(flush.flushed as u64, Ordering::Relaxed);
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let bytes = sealing.file.map().map_err(|e| self.fail("map", &path, e))?;
        let sealed_id = sealing.id;
        self.segments
            .write()
            .sealed
            .insert(sealed_id, Sealed { path, bytes });

        let base = (sealing.base + rel).max(min_count);
        let id = {
            let mut next_id = self.next_id.lock();
            let id = Some(*next_id)
                .filter(|&id| id <= MAX_SEGMENT_ID)
                .ok_or_else(|| {
                    Error::InvalidOptions(
                        "segment ids are exhausted (2^30 segments); start a new store".into(),
                    )
                })?;
            *next_id = id + 1;
            id
        };
        let next = create_segment(
            &*self.storage,
            &self.dir,
            NewSegment {
                id,
                stream: st.stream,
                base,
                size: st.capacity,
                preallocate: self.preallocate,
                buffer: flush.spare.take(),
            },
            self.metas.get_or_insert(id),
        )?;
        let next_allocated = next.allocated;
        self.counters.fsyncs.fetch_add(2, Ordering::Relaxed);
        crate::observe::event!(debug, sealed = sealed_id, next = id, "segment rolled over");
        let s = st.stream;
        // Readers move to the next buffer before the old one's allocation
        // becomes the spare.
        // SAFETY: the active segment came from `Box::into_raw`; no
        // reservation is in flight (all were published) and the write-out
        // lock, which every other user of the pointer takes, is held.
        let mut sealed = unsafe {
            active::hand_over(
                &self.segments,
                |segments, sealed: &Active, next: &mut Active| {
                    next.buf.succeed(&sealed.buf);
                    segments.active[s] = ActiveView::of(next);
                },
                &st.active,
                Box::new(next),
            )
        };
        // No reader or appender reaches the sealed buffer any more: the
        // next rollover's segment appends into its allocation.
        flush.spare = Some(sealed.buf.take_allocation());
        flush.rolled = true;
        drop(sealed);
        flush.flushed = SEGMENT_HEADER_LEN;
        flush.dirty = false;
        flush.allocated = next_allocated;
        flush.zeroed = SEGMENT_HEADER_LEN;
        st.flushed_hint.store(SEGMENT_HEADER_LEN, Ordering::Relaxed);
        st.base.store(base, Ordering::Release);
        st.reserve
            .0
            .store(pack(SEGMENT_HEADER_LEN, 0, !epoch), Ordering::Release);
        Ok(())
    }

    /// Frees the spare buffer of each stream that has not rolled over
    /// since the last call, so a store that stopped filling segments does
    /// not keep one (the background compactor calls it on its timer: a
    /// spare outlives its stream's last rollover by one to two intervals).
    pub(crate) fn release_idle_spares(&self) {
        for (_, st) in self.streams.iter() {
            let mut flush = st.flush.lock();
            if !std::mem::take(&mut flush.rolled) {
                flush.spare = None;
            }
        }
    }
}
