//! Appending to the log: records and sync marks into the active buffers,
//! write-out and fsync for the group commit, rollover, and the closing sync
//! (DESIGN.md §5).

use super::active::{self, PublishedBuf};
use super::{Active, ActiveView, Log, Sealed, SegMeta, Writer};
use crate::durability::{Durability, DurableTarget, PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::record::{self, RecordFields};
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::loc::{Loc, MAX_SEGMENT_ID, seg_u32};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// In `Durability::None`, unflushed bytes are handed to the OS once this many
/// accumulate, so a crash loses a bounded amount.
const NONE_FLUSH_BYTES: usize = 1 << 20;

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
}

impl Log {
    /// Appends one record, preceded by a sync mark if an fsync of the
    /// stream's active segment completed since its last mark.
    pub(crate) fn append(&self, fields: &RecordFields<'_>, opts: AppendOpts) -> Result<Appended> {
        if self.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let len = record::encoded_len(fields.key.len(), fields.value.len());
        let s = fields.tag.stream();
        let mut w = self.writer.lock();
        if w.active[s].buf.len() + len + pending_mark_len(&w.active[s], false)
            > self.segment_size[s]
        {
            self.rollover(&mut w, s)?;
        }
        let w = &mut *w;
        w.scratch.clear();
        let mark = encode_pending_mark(
            &mut w.active[s],
            &mut w.scratch,
            &mut w.next_seq,
            opts.now_ms,
            false,
        );
        debug_assert!(
            w.active[s].buf.len() + mark + len <= self.segment_size[s],
            "options bound a record and a mark to one segment"
        );
        let seq = w.next_seq;
        w.next_seq += 1;
        // Invariants (§9): sequence numbers rise along each stream, and only
        // the active segment, never a sealed one, is appended to.
        debug_assert!(seq > w.active[s].last_seq, "sequence numbers rise");
        w.active[s].last_seq = seq;
        debug_assert!(
            !self.segments.read().sealed.contains_key(&w.active[s].id),
            "a sealed segment is never written"
        );
        let offset = w.active[s].buf.len() + mark;
        let mut fields = *fields;
        if opts.generation_from_seq {
            fields.generation = seq;
        }
        record::encode(&mut w.scratch, seq, &fields);
        debug_assert_eq!(w.scratch.len(), mark + len);
        let active = &mut w.active[s];
        active.buf.append(&w.scratch);
        active.meta.record(len, opts.drop_after_s, opts.now_ms);
        let loc = Loc {
            segment: active.id,
            offset: seg_u32(offset),
        };
        let unflushed = active.buf.len() - active.flushed;
        if let Some((segment, dead)) = opts.supersedes {
            // Usually the record superseded is in an active segment: counted
            // here, under the lock already held, with no map lookup.
            match w
                .active
                .iter()
                .find(|(_, a)| a.id == segment)
                .map(|(_, a)| a)
            {
                Some(a) => {
                    a.meta
                        .dead_bytes
                        .fetch_add(u64::from(dead), Ordering::Relaxed);
                }
                None => self.metas.add_dead(segment, dead),
            }
        }
        self.counters.bytes_appended.add((mark + len) as u64);
        match self.durability {
            Durability::Periodic(_) => self.flush(w, s)?,
            Durability::None if unflushed >= NONE_FLUSH_BYTES => self.flush(w, s)?,
            _ => {}
        }
        Ok(Appended {
            loc,
            seq,
            target: DurableTarget::covering(s, seq),
        })
    }

    /// Makes everything appended so far durable, then writes a sync mark in
    /// each active segment that lacks one for what is now durable, and
    /// makes those marks durable too. A store closed this way has proof on
    /// disk that every byte of its active segments was fsynced, so damage
    /// anywhere in them is reported at the next open, never taken for a
    /// torn tail.
    pub(crate) fn close(&self, now_ms: u64) -> Result<()> {
        self.sync()?;
        {
            let mut w = self.writer.lock();
            let w = &mut *w;
            for s in Stream::ALL {
                let a = &mut w.active[s];
                if a.buf.len() + pending_mark_len(a, true) > self.segment_size[s] {
                    continue;
                }
                w.scratch.clear();
                if encode_pending_mark(a, &mut w.scratch, &mut w.next_seq, now_ms, true) > 0 {
                    a.buf.append(&w.scratch);
                    self.counters
                        .bytes_appended
                        .add(record::SYNC_MARK_LEN as u64);
                }
            }
        }
        self.sync()
    }

    /// The group-commit leader's work for stream `s`: write out its buffer,
    /// then fsync its active file, outside the writer lock so appends
    /// continue meanwhile. Every record of the stream appended before the
    /// lock was released is then durable: in that file, or in a sealed
    /// segment, which rollover fsynced. If the other stream had nothing
    /// unsynced at that moment, it is durable to the same point.
    pub(super) fn write_out_and_fsync(&self, s: Stream) -> std::io::Result<PerStream<u64>> {
        let (file, ends) = {
            let mut w = self.writer.lock();
            let a = &mut w.active[s];
            flush_active(a)?;
            // Invariant (§9): the watermark this cycle reports (`end`) is
            // never past what was written: every byte appended so far is
            // in the file the fsync below covers.
            assert_eq!(a.flushed, a.buf.len(), "written out before the fsync");
            let file = std::mem::take(&mut a.dirty)
                .then(|| (a.file.clone(), a.meta.clone(), a.flushed as u64));
            let end = w.next_seq;
            let other = &w.active[s.other()];
            let other_clean = !other.dirty && other.flushed == other.buf.len();
            let mut ends = PerStream([0; 2]);
            ends[s] = end;
            if other_clean {
                ends[s.other()] = end;
            }
            (file, ends)
        };
        if let Some((file, meta, flushed)) = file {
            file.sync_data()?;
            // Only now, after the fsync returned: a mark attests this.
            meta.synced_len.fetch_max(flushed, Ordering::Relaxed);
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ends)
    }

    fn flush(&self, w: &mut Writer, s: Stream) -> Result<()> {
        let a = &mut w.active[s];
        flush_active(a).map_err(|e| self.fail("write", &a.path, e))
    }

    /// Seals stream `s`'s active segment and starts the stream's next one:
    /// 1. write out the buffer and fsync the file (it never changes again);
    /// 2. map it and publish it as sealed, before the active id moves on;
    /// 3. create the next file, write its header, fsync it, fsync the directory;
    /// 4. make it active.
    fn rollover(&self, w: &mut Writer, s: Stream) -> Result<()> {
        self.flush(w, s)?;
        let sealing = &mut w.active[s];
        let path = sealing.path.clone();
        sealing
            .file
            .sync_data()
            .map_err(|e| self.fail("fsync", &path, e))?;
        sealing.dirty = false;
        sealing
            .meta
            .synced_len
            .fetch_max(sealing.flushed as u64, Ordering::Relaxed);
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let bytes = sealing.file.map().map_err(|e| self.fail("map", &path, e))?;
        let sealed_id = sealing.id;
        self.segments
            .write()
            .sealed
            .insert(sealed_id, Sealed { path, bytes });

        let id = Some(w.next_id)
            .filter(|&id| id <= MAX_SEGMENT_ID)
            .ok_or_else(|| {
                self.commit.poison();
                Error::InvalidOptions(
                    "segment ids are exhausted (2^30 segments); start a new store".into(),
                )
            })?;
        let next = create_segment(
            &*self.storage,
            &self.dir,
            id,
            w.next_seq,
            s,
            self.segment_size[s],
            self.metas.get_or_insert(id),
        )
        .inspect_err(|_| self.commit.poison())?;
        w.next_id = id + 1;
        self.counters.fsyncs.fetch_add(2, Ordering::Relaxed);
        crate::observe::event!(debug, sealed = sealed_id, next = id, "segment rolled over");
        // Readers move to the next buffer before the old one is freed.
        active::hand_over(
            &self.segments,
            |segments, next| segments.active[s] = ActiveView::of(next),
            &mut w.active[s],
            next,
        );
        Ok(())
    }

    fn fail(&self, op: &str, path: &Path, e: std::io::Error) -> Error {
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

/// A sync mark is written once the durable length of its segment enters a
/// new stride of this many bytes (a page) past the last mark's, so marks
/// cost at most 60 bytes per 4 KiB made durable, and the durable data that
/// no mark attests yet stays under a page plus the last fsync's bytes
/// (DESIGN.md §3, §8).
pub(crate) const SYNC_MARK_STRIDE: u64 = 4096;

/// Whether a sync mark is owed in `a`: with `forced`, as soon as an fsync
/// made more of it durable than its last mark attests; otherwise once that
/// reaches a new stride.
fn mark_owed(a: &Active, forced: bool) -> Option<u64> {
    let synced_len = a.meta.synced_len.load(Ordering::Relaxed);
    let owed = if forced {
        synced_len > a.marked_len
    } else {
        synced_len / SYNC_MARK_STRIDE > a.marked_len / SYNC_MARK_STRIDE
    };
    owed.then_some(synced_len)
}

/// Bytes of the sync mark the next append to `a` writes first, if one is
/// owed.
fn pending_mark_len(a: &Active, forced: bool) -> usize {
    mark_owed(a, forced).map_or(0, |_| record::SYNC_MARK_LEN)
}

/// Encodes the sync mark `a` is owed, if any, into `out`, taking its
/// sequence number from `next_seq`; returns its length (0 for none).
fn encode_pending_mark(
    a: &mut Active,
    out: &mut Vec<u8>,
    next_seq: &mut u64,
    now_ms: u64,
    forced: bool,
) -> usize {
    let Some(synced_len) = mark_owed(a, forced) else {
        return 0;
    };
    // An fsync covers only bytes that were written before it.
    assert!(
        synced_len <= a.flushed as u64,
        "a segment is durable only as far as it was written"
    );
    record::encode_sync_mark(
        out,
        &record::SyncMark {
            seq: *next_seq,
            synced_len,
            written_at_ms: now_ms,
        },
    );
    debug_assert!(*next_seq > a.last_seq, "sequence numbers rise");
    a.last_seq = *next_seq;
    *next_seq += 1;
    a.marked_len = synced_len;
    a.meta.sync_mark(record::SYNC_MARK_LEN);
    record::SYNC_MARK_LEN
}

fn flush_active(a: &mut Active) -> std::io::Result<()> {
    if a.flushed < a.buf.len() {
        a.file.write_all_at(a.flushed as u64, &a.buf[a.flushed..])?;
        a.flushed = a.buf.len();
        a.dirty = true;
    }
    Ok(())
}

/// Creates segment `id` of `stream` with its header, fsyncs it and the
/// directory.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    first_seq: u64,
    stream: Stream,
    segment_size: usize,
    meta: Arc<SegMeta>,
) -> Result<Active> {
    let path = dir.join(segment_file_name(id));
    let file = storage
        .create(&path)
        .map_err(|e| io_context("create", &path, e))?;
    let header = SegmentHeader::new(id, first_seq, stream).encode();
    file.write_all_at(0, &header)
        .map_err(|e| io_context("write", &path, e))?;
    file.sync_data()
        .map_err(|e| io_context("fsync", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))?;
    let mut buf = PublishedBuf::with_capacity(segment_size);
    buf.append(&header);
    // The header is durable and needs no mark.
    meta.synced_len
        .fetch_max(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
    Ok(Active {
        id,
        path,
        file,
        flushed: buf.len(),
        dirty: false,
        marked_len: SEGMENT_HEADER_LEN as u64,
        last_seq: 0,
        buf,
        meta,
    })
}
