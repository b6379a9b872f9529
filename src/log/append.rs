//! Appending to the log without a lock: reservations, write-out and fsync
//! for the group commit, sync marks, and the closing sync (DESIGN.md §5);
//! rollover is in `rollover.rs`.
//!
//! Each stream has one reservation word (`StreamLog::reserve`):
//!
//! | bits | field |
//! |---|---|
//! | 0..32 | the active segment's reserved tail: where the next record goes |
//! | 32..62 | the relative counter of the next record |
//! | 62 | a rollover is under way: reserve nothing, wait |
//! | 63 | an epoch bit, flipped by every rollover, so a word read before a rollover never matches one after it |
//!
//! An appender reserves its record's bytes and counter with one
//! compare-and-swap, writes the record into its range of the active buffer,
//! then publishes it in reservation order (`active.rs`). A record's sequence
//! number is `2 * (base + relative counter) + parity`: each stream counts
//! on its own (main even, claims odd), so two streams never share a number
//! and never contend on one word. A record that must follow a record of
//! the other stream (a complete after its claim, a claim after an expired
//! complete) asks for a counter above that record's sequence number
//! (`AppendOpts::min_seq`), so same-key records keep their order across
//! streams as well as within one.

use super::numbering::{count_at_least, seq_of};
use super::{Active, Flush, Log, StreamLog};
use crate::durability::{Durability, DurableTarget, PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::record::{self, RecordFields, SyncMark};
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::loc::{Loc, seg_u32};
use std::path::Path;
use std::sync::atomic::Ordering;

/// In `Durability::None`, unflushed bytes are handed to the OS once this many
/// accumulate, so a crash loses a bounded amount.
const NONE_FLUSH_BYTES: usize = 1 << 20;

/// A sync mark is written once the durable length of its segment enters a
/// new stride of this many bytes (a page) past the last mark's, so marks
/// cost at most 60 bytes per 4 KiB made durable, and the durable data that
/// no mark attests yet stays under a page plus the last fsync's bytes
/// (DESIGN.md §3, §8).
pub(crate) const SYNC_MARK_STRIDE: u64 = 4096;

const TAIL_BITS: u32 = 32;
const REL_BITS: u32 = 30;
/// The largest relative counter a reservation word holds; a segment whose
/// counter would pass it rolls over (at 61 bytes a record, no segment of at
/// most 4 GiB gets there by itself).
const MAX_REL: u64 = (1 << REL_BITS) - 1;
pub(super) const ROLLING: u64 = 1 << 62;
const EPOCH: u64 = 1 << 63;

/// A reservation word.
pub(crate) fn pack(tail: usize, rel: u64, epoch: bool) -> u64 {
    debug_assert!(tail >> TAIL_BITS == 0 && rel <= MAX_REL);
    (tail as u64) | (rel << TAIL_BITS) | if epoch { EPOCH } else { 0 }
}

/// The tail, relative counter and epoch of a reservation word.
pub(crate) fn unpack(w: u64) -> (usize, u64, bool) {
    let tail = (w & ((1 << TAIL_BITS) - 1)) as usize;
    let rel = (w >> TAIL_BITS) & MAX_REL;
    (tail, rel, w & EPOCH != 0)
}

/// What an append returns: where the record went and its sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub loc: Loc,
    pub seq: u64,
    /// The record's durability target: durable once [`Log::is_durable`]
    /// says so.
    pub target: DurableTarget,
}

/// The size of the claim stream's segments for a main segment size: a
/// quarter of it, so a claim segment fills, seals and is deleted sooner,
/// but never less than what the largest claim record and a sync mark need.
pub(crate) fn claim_segment_size(segment_size: usize, max_key_len: usize) -> usize {
    (segment_size / 4)
        .max(SEGMENT_HEADER_LEN + record::SYNC_MARK_LEN + record::encoded_len(max_key_len, 0))
        .min(segment_size)
}

/// How an append is accounted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendOpts {
    /// The record's generation is its own sequence number (a fresh claim's
    /// fencing token).
    pub generation_from_seq: bool,
    /// The drop-after second of the index entry the record gets.
    pub drop_after_s: u32,
    /// The store's clock reading.
    pub now_ms: u64,
    /// The segment and length of the key's record this one supersedes,
    /// which becomes dead.
    pub supersedes: Option<(u32, u32)>,
    /// The record's sequence number must be at least this: one past the
    /// key's latest record, which may be in the other stream.
    pub min_seq: u64,
}

/// Space reserved in a stream's active segment: `start..end`, with the
/// relative counter of its first entry. The segment cannot roll over until
/// the reservation is published.
struct Reserved<'a> {
    active: &'a Active,
    start: usize,
    end: usize,
    rel: u64,
}

thread_local! {
    /// Where a record is encoded before it is copied into its reservation.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Log {
    /// Appends one record: reserves its bytes and counter, encodes it into
    /// them, publishes it, and accounts for it.
    pub(crate) fn append(&self, fields: &RecordFields<'_>, opts: AppendOpts) -> Result<Appended> {
        let s = fields.tag.stream();
        let st = &self.streams[s];
        let len = record::encoded_len(fields.key.len(), fields.value.len());
        let r = self.reserve(st, len, 1, opts.min_seq)?;
        let active = r.active;
        let seq = seq_of(s, active.base + r.rel);
        debug_assert!(seq >= opts.min_seq, "a record follows its key's latest");
        // Invariant (§9): only the active segment, never a sealed one, is
        // appended to.
        debug_assert!(
            !self.segments.read().sealed.contains_key(&active.id),
            "a sealed segment is never written"
        );
        let mut fields = *fields;
        if opts.generation_from_seq {
            fields.generation = seq;
        }
        // SAFETY: `r.start..r.end` is this appender's reservation, and the
        // slice is gone before it is published.
        let place = unsafe { active.buf.region_mut(r.start, len) };
        record::encode_into(place, seq, &fields);
        active.meta.record(len, opts.drop_after_s, opts.now_ms);
        let loc = Loc {
            segment: active.id,
            offset: seg_u32(r.start),
        };
        // The last touch of the segment: once the record is published, a
        // rollover may free it.
        active
            .buf
            .publisher()
            .publish(r.start, r.end, rel_tag(r.rel + 1));
        if let Some((segment, dead)) = opts.supersedes {
            self.add_dead(segment, dead);
        }
        self.counters.bytes_appended.add(len as u64);
        match self.durability {
            Durability::Periodic(_) => self.write_out(st, false)?,
            // Another appender's write-out, or a rollover, may have moved
            // the hint past this record's end since it was published.
            Durability::None
                if r.end
                    .saturating_sub(st.flushed_hint.load(Ordering::Relaxed))
                    >= NONE_FLUSH_BYTES =>
            {
                self.write_out(st, true)?;
            }
            _ => {}
        }
        Ok(Appended {
            loc,
            seq,
            target: DurableTarget::covering(s, seq),
        })
    }

    /// Reserves `len` bytes and `entries` counters in stream `st`'s active
    /// segment, the first counter at least the one of `min_seq`; rolls the
    /// segment over when they do not fit.
    fn reserve(
        &self,
        st: &StreamLog,
        len: usize,
        entries: u64,
        min_seq: u64,
    ) -> Result<Reserved<'_>> {
        let min_count = count_at_least(st.stream, min_seq);
        loop {
            if self.commit.is_poisoned() {
                return Err(Error::Poisoned);
            }
            let w = st.reserve.0.load(Ordering::Acquire);
            if w & ROLLING != 0 {
                self.wait_for_rollover(st);
                continue;
            }
            let (tail, rel, epoch) = unpack(w);
            // Read after the word: a base from after a rollover comes with
            // a word whose epoch differs, and the exchange below fails.
            let base = st.base.load(Ordering::Acquire);
            let first = rel.max(min_count.saturating_sub(base));
            if tail + len > st.capacity || first + entries > MAX_REL {
                self.rollover(st, w, min_count)?;
                continue;
            }
            let next = pack(tail + len, first + entries, epoch);
            if st
                .reserve
                .0
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: the active segment is swapped only by a rollover,
                // which waits for this reservation to be published first.
                let active = unsafe { &*st.active.load(Ordering::Acquire) };
                debug_assert_eq!(active.base, base);
                return Ok(Reserved {
                    active,
                    start: tail,
                    end: tail + len,
                    rel: first,
                });
            }
        }
    }

    /// Counts `len` bytes of segment `id` dead: found among the active
    /// segments through the segment table (a read lock of the caller's own
    /// stripe), where a complete's claim usually is, else in the figures
    /// of every segment.
    fn add_dead(&self, id: u32, len: u32) {
        let segments = self.segments.read();
        match segments.active.0.iter().find(|v| v.id == id) {
            Some(v) => v.meta.dead_bytes.add(u64::from(len)),
            None => {
                drop(segments);
                self.metas.add_dead(id, len);
            }
        }
    }

    /// Appends a sync mark to stream `s` attesting `synced_len` durable
    /// bytes of the active segment `id`, unless the segment has rolled over
    /// (it is sealed, fsynced whole) or has no room left (it will be).
    fn append_mark(&self, s: Stream, id: u32, synced_len: u64, now_ms: u64) -> Result<()> {
        let st = &self.streams[s];
        let w = st.reserve.0.load(Ordering::Acquire);
        if w & ROLLING != 0 || unpack(w).0 + record::SYNC_MARK_LEN > st.capacity {
            return Ok(());
        }
        let r = self.reserve(st, record::SYNC_MARK_LEN, 1, 0)?;
        let attests = if r.active.id == id { synced_len } else { 0 };
        let mark = SyncMark {
            seq: seq_of(s, r.active.base + r.rel),
            // A rollover in between sealed the segment the fsync was of;
            // the new one's header is all that is durable of it.
            synced_len: attests.max(SEGMENT_HEADER_LEN as u64),
            written_at_ms: now_ms,
        };
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            record::encode_sync_mark(scratch, &mark);
            // SAFETY: `r.start..r.end` is this appender's reservation.
            unsafe { r.active.buf.write(r.start, scratch) };
        });
        r.active.meta.sync_mark(record::SYNC_MARK_LEN);
        // The last touch of the segment (see `append`).
        r.active
            .buf
            .publisher()
            .publish(r.start, r.end, rel_tag(r.rel + 1));
        self.counters
            .bytes_appended
            .add(record::SYNC_MARK_LEN as u64);
        Ok(())
    }

    /// The target covering everything appended to stream `st` so far:
    /// every record reserved, so also those whose appends returned but
    /// which are not published yet (`active.rs`).
    pub(super) fn appended_target(&self, st: &StreamLog) -> DurableTarget {
        let _flush = st.flush.lock();
        // SAFETY: the write-out lock is held, so no rollover swaps it.
        let active = unsafe { &*st.active.load(Ordering::Acquire) };
        // A rollover under way waits for this lock before it seals, so the
        // word's counter is still the active segment's.
        let (_, next_rel, _) = unpack(st.reserve.0.load(Ordering::Acquire));
        DurableTarget {
            stream: st.stream,
            end: seq_of(st.stream, active.base + next_rel),
        }
    }

    /// Makes everything appended so far durable, then writes a sync mark in
    /// each active segment that lacks one for what is now durable, and
    /// makes those marks durable too. A store closed this way has proof on
    /// disk that every byte of its active segments was fsynced, so damage
    /// anywhere in them is reported at the next open, never taken for a
    /// torn tail.
    pub(crate) fn close(&self, now_ms: u64) -> Result<()> {
        self.sync()?;
        for st in &self.streams.0 {
            let (id, meta) = {
                let _flush = st.flush.lock();
                // SAFETY: the write-out lock is held, so no rollover swaps it.
                let active = unsafe { &*st.active.load(Ordering::Acquire) };
                (active.id, active.meta.clone())
            };
            let synced = meta.synced_len.load(Ordering::Relaxed);
            if meta.marked_len.fetch_max(synced, Ordering::Relaxed) < synced {
                self.append_mark(st.stream, id, synced, now_ms)?;
            }
        }
        self.sync()?;
        self.cut_preallocation()
    }

    /// Writes out what stream `st` has published since the last write-out;
    /// with `if_free`, only if no one else is writing it out.
    fn write_out(&self, st: &StreamLog, if_free: bool) -> Result<()> {
        let mut flush = match if_free {
            true => match st.flush.try_lock() {
                Some(f) => f,
                None => return Ok(()),
            },
            false => st.flush.lock(),
        };
        // SAFETY: the write-out lock is held, so no rollover swaps it.
        let active = unsafe { &*st.active.load(Ordering::Acquire) };
        let upto = active.buf.len();
        self.write_active(st, active, &mut flush, upto, false)
            .map_err(|e| self.fail("write", &active.path, e))
    }

    /// The group-commit leader's work for stream `s`: write out what is
    /// published, then fsync the active file, outside the write-out lock so
    /// appends continue meanwhile. Every record of the stream below the
    /// returned end is then durable: in that file, or in a sealed segment,
    /// which rollover fsynced. The other stream is not touched: its own
    /// leader may be syncing it at the same time. Last, a sync mark attests
    /// what the fsync made durable, when it is owed.
    pub(super) fn write_out_and_fsync(&self, s: Stream) -> std::io::Result<PerStream<u64>> {
        let st = &self.streams[s];
        let mut ends = PerStream([0; 2]);
        let (file, meta, id, written) = {
            let mut flush = st.flush.lock();
            // SAFETY: the write-out lock is held, so no rollover swaps it.
            let active = unsafe { &*st.active.load(Ordering::Acquire) };
            let (published, next_rel) = active.buf.published_and_tag();
            self.write_active(st, active, &mut flush, published, false)?;
            // Invariant (§9): the watermark this cycle reports is never
            // past what was written: every published byte is in the file
            // the fsync below covers.
            assert_eq!(flush.flushed, published, "written out before the fsync");
            ends[s] = seq_of(s, active.base + u64::from(next_rel));
            let file = std::mem::take(&mut flush.dirty).then(|| active.file.clone());
            (file, active.meta.clone(), active.id, published as u64)
        };
        if let Some(file) = file {
            file.sync_data()?;
            // Only now, after the fsync returned: a mark attests this.
            meta.synced_len.fetch_max(written, Ordering::Relaxed);
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let synced = meta.synced_len.load(Ordering::Relaxed);
        let marked = meta.marked_len.load(Ordering::Relaxed);
        if synced / SYNC_MARK_STRIDE > marked / SYNC_MARK_STRIDE
            && meta.marked_len.fetch_max(synced, Ordering::Relaxed) < synced
        {
            let now_ms = meta.last_write_ms.load(Ordering::Relaxed);
            self.append_mark(s, id, synced, now_ms)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(ends)
    }

    pub(super) fn fail(&self, op: &str, path: &Path, e: std::io::Error) -> Error {
        crate::observe::event!(
            error,
            op,
            path = %path.display(),
            error = %e,
            "store poisoned: it refuses writes until reopened"
        );
        self.commit.poison();
        io_context(op, path, e)
    }
}

/// The tag published with a length: the relative counter of the next
/// record after it.
pub(crate) fn rel_tag(next_rel: u64) -> u32 {
    // At most `MAX_REL`: a reservation's counters end at or below it.
    u32::try_from(next_rel.min(MAX_REL)).unwrap_or(u32::MAX)
}

/// How far ahead of the records a durable stream's write-out writes zeros
/// into its file, in one write whenever less than half of it is left.
const ZERO_AHEAD: usize = 256 << 10;

/// What zeros are written from.
static ZEROS: [u8; ZERO_AHEAD] = [0; ZERO_AHEAD];

impl Log {
    /// Writes out the bytes of `active` from `flush.flushed` up to `upto`,
    /// which the caller read as published (appenders go on publishing
    /// meanwhile).
    ///
    /// If the log writes zeros ahead and the segment is not `sealing` (it
    /// is cut at its last record right after), the file is first written
    /// with zeros up to [`ZERO_AHEAD`] past `upto` whenever less than half
    /// of that is left:
    /// an `fdatasync` after appends into space that was only allocated
    /// must also commit the file system's record that the space is now
    /// written (ext4 journals the conversion of unwritten extents), while
    /// appends over zeros already written change nothing but data. That
    /// made a 4 KiB append and `fdatasync` take about 110 us instead of
    /// 165-195 us on this project's test machines (DESIGN.md §5,
    /// "Preallocation"). The zeros lie past the records, where recovery
    /// reads zeros as space never written.
    pub(super) fn write_active(
        &self,
        st: &StreamLog,
        active: &Active,
        flush: &mut Flush,
        upto: usize,
        sealing: bool,
    ) -> std::io::Result<()> {
        if flush.flushed >= upto {
            return Ok(());
        }
        if self.zero_ahead && !sealing && upto + ZERO_AHEAD / 2 > flush.zeroed {
            let from = flush.zeroed.max(upto);
            let end = (upto + ZERO_AHEAD).min(st.capacity);
            if end > from {
                active
                    .file
                    .write_all_at(from as u64, &ZEROS[..end - from])?;
                self.counters
                    .zero_bytes_written
                    .fetch_add((end - from) as u64, Ordering::Relaxed);
            }
            flush.zeroed = end;
        }
        let bytes = &active.buf.bytes()[..upto];
        active
            .file
            .write_all_at(flush.flushed as u64, &bytes[flush.flushed..])?;
        if self.durability == Durability::None {
            let _ = active
                .file
                .start_writeback(flush.flushed as u64, (upto - flush.flushed) as u64);
        }
        flush.flushed = upto;
        flush.dirty = true;
        st.flushed_hint.store(upto, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log in `dir` under `Durability::None` with these segment sizes,
    /// keeping every record it replays.
    fn open_log(dir: &std::path::Path, segment_size: PerStream<usize>) -> Log {
        use crate::log::replay::{Applied, recover};
        let (log, _) = recover(
            std::sync::Arc::new(crate::storage::FsStorage),
            dir,
            super::super::LogConfig {
                durability: Durability::None,
                segment_size,
                preallocate: false,
            },
            std::sync::Arc::default(),
            |_, _| {},
            |_, _| {
                Ok(Applied {
                    drop_after_s: 0,
                    kept: true,
                })
            },
        )
        .unwrap();
        log
    }

    #[test]
    fn reservation_words_round_trip() {
        for (tail, rel, epoch) in [
            (32, 0, false),
            (4096, 17, true),
            (u32::MAX as usize, MAX_REL, true),
        ] {
            let w = pack(tail, rel, epoch);
            assert_eq!(unpack(w), (tail, rel, epoch));
            assert_eq!(w & ROLLING, 0, "a packed word never says rollover");
        }
    }

    /// A record completed before the one reserved ahead of it is in the
    /// index at once (its appender returned), but published only when the
    /// earlier one is: a read of it waits for that instead of reporting
    /// its location as past the segment's end, and `sync` waits for it
    /// too instead of covering only what is published.
    #[test]
    fn a_record_completed_out_of_order_is_read_and_synced_once_published() {
        use crate::format::record::Tag;
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), PerStream([1 << 20, 1 << 18]));
        let fields = |key: &'static [u8]| RecordFields {
            tag: Tag::Claim,
            key,
            value: b"",
            fingerprint: 7,
            generation: 1,
            since_ms: 1,
            until_ms: 2,
        };
        let st = &log.streams[Stream::Claims];
        let len = record::encoded_len(5, 0);
        let first = log.reserve(st, len, 1, 0).unwrap();
        let second = log.reserve(st, len, 1, 0).unwrap();
        let seq = |r: &Reserved<'_>| seq_of(Stream::Claims, r.active.base + r.rel);
        // SAFETY: each range is this test's own reservation.
        let place = unsafe { second.active.buf.region_mut(second.start, len) };
        record::encode_into(place, seq(&second), &fields(b"key-2"));
        let loc = Loc {
            segment: second.active.id,
            offset: seg_u32(second.start),
        };
        second
            .active
            .buf
            .publisher()
            .publish(second.start, second.end, rel_tag(second.rel + 1));
        let second_target = DurableTarget::covering(Stream::Claims, seq(&second));
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| log.read(loc, |r| r.key.to_vec()));
            // `sync` covers what was appended, published or not.
            let syncer = scope.spawn(|| log.sync().map(|()| log.is_durable(second_target)));
            // Both find the record unpublished meanwhile (nothing here
            // waits for them to start; either way they must see it).
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: as above.
            let place = unsafe { first.active.buf.region_mut(first.start, len) };
            record::encode_into(place, seq(&first), &fields(b"key-1"));
            first
                .active
                .buf
                .publisher()
                .publish(first.start, first.end, rel_tag(first.rel + 1));
            assert_eq!(reader.join().unwrap().unwrap(), b"key-2");
            assert!(
                syncer.join().unwrap().unwrap(),
                "sync made the record durable"
            );
        });
        assert_eq!(log.read(loc, |r| r.key.to_vec()).unwrap(), b"key-2");
    }

    /// From the second rollover on, a segment appends into the buffer
    /// allocation of the segment sealed the rollover before it, which still
    /// holds that segment's records: every record reads back as its own,
    /// from the buffer while active and from the file once sealed, and
    /// after reopening.
    #[test]
    fn a_segment_reuses_a_sealed_buffer_and_reads_only_its_own_records() {
        use crate::format::record::Tag;
        let dir = tempfile::tempdir().unwrap();
        let open = || open_log(dir.path(), PerStream([1 << 16, 1 << 14]));
        let log = open();
        let key = |i: usize| format!("key-{i:06}").into_bytes();
        let st = &log.streams[Stream::Claims];
        let buffer = || {
            // SAFETY: the test is the only appender, so no rollover frees
            // the segment while it is looked at.
            unsafe { &*st.active.load(Ordering::Acquire) }
                .buf
                .bytes()
                .as_ptr() as usize
        };
        let (mut locs, mut buffers, mut reused) = (Vec::new(), vec![buffer()], 0);
        for i in 0..2_000 {
            let spare = st.flush.lock().spare.as_ref().map(|b| b.as_ptr() as usize);
            let this_key = key(i);
            let fields = RecordFields {
                tag: Tag::Claim,
                key: &this_key,
                value: b"",
                fingerprint: i as u128,
                generation: 1,
                since_ms: 1,
                until_ms: 2,
            };
            locs.push(
                log.append(
                    &fields,
                    AppendOpts {
                        generation_from_seq: false,
                        drop_after_s: 0,
                        now_ms: 1,
                        supersedes: None,
                        min_seq: 0,
                    },
                )
                .unwrap()
                .loc,
            );
            let now = buffer();
            let rolled = now != *buffers.last().unwrap();
            if rolled {
                // The spare is held while the next segment is made, so a
                // fresh allocation could not land at its address.
                if let Some(spare) = spare {
                    assert_eq!(now, spare, "the next segment appends into the spare");
                    reused += 1;
                }
                buffers.push(now);
            }
            if rolled || i % 97 == 0 {
                for (j, &loc) in locs.iter().enumerate() {
                    let read = log.read(loc, |r| (r.key.to_vec(), r.fingerprint));
                    assert_eq!(read.unwrap(), (key(j), j as u128));
                }
            }
        }
        assert!(buffers.len() >= 5, "{} segments", buffers.len());
        assert!(
            reused >= buffers.len() - 2,
            "{reused} of {} buffers reused",
            buffers.len()
        );
        // A spare outlives its stream's last rollover by one look.
        assert!(st.flush.lock().spare.is_some());
        log.release_idle_spares();
        assert!(st.flush.lock().spare.is_some(), "rolled over since");
        log.release_idle_spares();
        assert!(st.flush.lock().spare.is_none(), "idle since the last look");
        log.close(1).unwrap();
        drop(log);
        let log = open();
        for (j, &loc) in locs.iter().enumerate() {
            let k = log.read(loc, |r| r.key.to_vec()).unwrap();
            assert_eq!(k, key(j));
        }
    }

    #[test]
    fn streams_count_in_disjoint_numbers() {
        for count in 0..100 {
            assert_eq!(seq_of(Stream::Main, count) % 2, 0);
            assert_eq!(seq_of(Stream::Claims, count) % 2, 1);
            for s in Stream::ALL {
                assert_eq!(count_at_least(s, seq_of(s, count)), count);
                assert!(seq_of(s, count_at_least(s, count)) >= count);
            }
        }
    }
}
