//! The segmented append-only log: appends, reads, rollover and syncs.
//!
//! The log has two write streams, each a run of segments: claims go to the
//! *claim stream*, every other record to the *main stream* (DESIGN.md §3).
//! A claim is superseded by its complete within a lease, so claim segments
//! die young and are deleted without copying, while main segments hold what
//! the retention keeps. Segment ids and sequence numbers are shared by both
//! streams; a record's sequence number orders it against the other stream.
//!
//! The newest segment of each stream is *active*: its bytes live in an
//! in-memory buffer that is written to the file behind it (`flushed` marks
//! how far) and read from directly. Older segments are *sealed*: fully
//! written, fsynced, never changed again, and read through a map.
//!
//! Reads take no lock that writers hold: the segment table (sealed maps and
//! a view of the active buffer) sits behind a reader-striped lock that only
//! rollover and segment deletion write, and the active buffer's first
//! `active_len` bytes never change once published.
//!
//! Lock order: an index shard, then `writer`, then `segments` or the group
//! commit's leader lock. Nothing takes them in another order.

pub(crate) mod active;
pub(crate) mod brlock;
pub(crate) mod hint;
mod meta;
mod recovery;
mod repair;

pub(crate) use meta::{Metas, SegMeta};
pub(crate) use recovery::{Applied, Recovered, RecoveryReport, RecoveryView, recover};
pub use repair::{DamagedHint, RepairReport, RepairedFile, VerifyReport};
pub(crate) use repair::{repair, verify, walk};

use crate::commit::GroupCommit;
use crate::error::{Error, Result, io_context};
use crate::format::record::{self, RecordFields, RecordRef};
pub(crate) use crate::format::segment::Stream;
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::options::Durability;
use crate::storage::{SealedBytes, Storage, StorageFile, remove_if_exists};
use active::{BufView, PublishedBuf};
use brlock::BrLock;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// In `Durability::None`, unflushed bytes are handed to the OS once this many
/// accumulate, so a crash loses a bounded amount.
const NONE_FLUSH_BYTES: usize = 1 << 20;

/// Where a record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub segment: u32,
    pub offset: u32,
}

impl Loc {
    /// The location whose [`lpos`](Loc::lpos) is `lpos`.
    pub(crate) fn from_lpos(lpos: u64) -> Loc {
        Loc {
            segment: (lpos >> 32) as u32,
            offset: lpos as u32,
        }
    }

    /// The record's position in the whole log.
    pub(crate) fn lpos(self) -> u64 {
        lpos(self.segment, self.offset as usize)
    }
}

fn lpos(segment: u32, offset: usize) -> u64 {
    let offset = u32::try_from(offset).expect("segment offsets fit in u32 (segment_size bound)");
    (u64::from(segment) << 32) | u64::from(offset)
}

/// What an append returns: where the record went and its sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub loc: Loc,
    pub seq: u64,
    /// The record's durability target (its stream and the sequence number
    /// just past it): durable once [`Log::is_durable`] says so.
    pub target: u64,
}

pub(crate) struct Active {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Every byte of the segment, header included, published to readers.
    pub buf: PublishedBuf,
    /// How many bytes of `buf` have been written to `file`.
    pub flushed: usize,
    /// Bytes were written to `file` since its last fsync.
    pub dirty: bool,
    /// The durable length that a sync mark in this segment attests (or
    /// that needs none, such as the header of a new segment). When the
    /// segment's `meta.synced_len` passes it, the next append writes a mark.
    pub marked_len: u64,
    pub meta: Arc<SegMeta>,
}

pub(crate) struct Sealed {
    pub path: PathBuf,
    pub bytes: SealedBytes,
}

struct Writer {
    /// The active segment of each stream, indexed by `Stream as usize`.
    active: [Active; 2],
    next_seq: u64,
    /// The id the next new segment of either stream gets.
    next_id: u32,
    /// Where a record is encoded before it is copied into the active buffer.
    scratch: Vec<u8>,
}

/// Where readers find records: the sealed segments and the active buffers.
struct Segments {
    sealed: BTreeMap<u32, Sealed>,
    active: [ActiveView; 2],
}

/// The active segment as readers see it: its id, path and a view of its
/// buffer (`active.rs`). The buffer is allocated once at its full segment
/// size, so appends never move it, and it is freed only after rollover has
/// swapped this view to the next segment under the segment table's write
/// lock.
struct ActiveView {
    id: u32,
    path: PathBuf,
    buf: BufView,
}

impl ActiveView {
    fn of(active: &Active) -> ActiveView {
        ActiveView {
            id: active.id,
            path: active.path.clone(),
            buf: active.buf.view(),
        }
    }
}

/// A record of a sealed segment, as compaction sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentRecord {
    pub hash: u64,
    pub loc: Loc,
    pub len: u32,
}

/// Counters the log keeps for `Stats`.
#[derive(Default)]
pub(crate) struct LogCounters {
    pub fsyncs: AtomicU64,
    pub bytes_appended: crate::stats::Counter,
    /// Bytes of hint files written since open.
    pub hint_bytes_written: AtomicU64,
}

pub(crate) struct Log {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    durability: Durability,
    /// The segment size of each stream.
    segment_size: [usize; 2],
    writer: Mutex<Writer>,
    segments: BrLock<Segments>,
    commit: GroupCommit,
    pub(crate) counters: LogCounters,
    pub(crate) metas: Arc<Metas>,
}

/// The segments recovery hands to a new log.
pub(crate) struct Opened {
    pub sealed: BTreeMap<u32, Sealed>,
    /// The active segment of each stream, indexed by `Stream as usize`.
    pub active: [Active; 2],
    pub next_seq: u64,
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
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        durability: Durability,
        segment_size: [usize; 2],
        metas: Arc<Metas>,
        opened: Opened,
    ) -> Log {
        let Opened {
            sealed,
            mut active,
            next_seq,
        } = opened;
        for (a, size) in active.iter_mut().zip(segment_size) {
            assert_eq!(
                a.flushed,
                a.buf.len(),
                "recovery hands over a fully written segment"
            );
            assert!(
                !sealed.contains_key(&a.id),
                "an active segment is not also sealed"
            );
            a.buf.reserve_total(size);
        }
        assert_ne!(
            active[0].id, active[1].id,
            "each stream has its own segment"
        );
        let next_id = sealed
            .keys()
            .copied()
            .chain(active.iter().map(|a| a.id))
            .max()
            .unwrap_or(0)
            + 1;
        let counters = LogCounters::default();
        let view = active.each_ref().map(ActiveView::of);
        Log {
            storage,
            dir,
            durability,
            segment_size,
            writer: Mutex::new(Writer {
                active,
                next_seq,
                next_id,
                scratch: Vec::new(),
            }),
            segments: BrLock::new(Segments {
                sealed,
                active: view,
            }),
            // Everything recovery found is on disk.
            commit: GroupCommit::new(next_seq),
            counters,
            metas,
        }
    }

    /// Appends one record, preceded by a sync mark if an fsync of the
    /// stream's active segment completed since its last mark.
    pub(crate) fn append(&self, fields: &RecordFields<'_>, opts: AppendOpts) -> Result<Appended> {
        if self.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let len = record::encoded_len(fields.key.len(), fields.value.len());
        let s = Stream::of(fields.tag) as usize;
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
            offset: u32::try_from(offset).expect("bounded by segment_size"),
        };
        let unflushed = active.buf.len() - active.flushed;
        if let Some((segment, dead)) = opts.supersedes {
            // Usually the record superseded is in an active segment: counted
            // here, under the lock already held, with no map lookup.
            match w.active.iter().find(|a| a.id == segment) {
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
            target: crate::commit::target(s, seq + 1),
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
            for s in 0..2 {
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

    /// Runs `f` on the record at `loc`, checking its checksum first.
    pub(crate) fn read<R>(&self, loc: Loc, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let segments = self.segments.read();
        for active in &segments.active {
            if loc.segment == active.id {
                // SAFETY: the buffer stays allocated and in place while the
                // segment table is read-locked (see `ActiveView`).
                let bytes = unsafe { active.buf.published() };
                return decode_at(&active.path, bytes, loc).map(f);
            }
        }
        let Some(s) = segments.sealed.get(&loc.segment) else {
            return Err(Error::Corrupt {
                file: self.dir.join(segment_file_name(loc.segment)),
                offset: u64::from(loc.offset),
                reason: "the index points into a segment that does not exist".into(),
            });
        };
        decode_at(&s.path, (*s.bytes).as_ref(), loc).map(f)
    }

    /// Ids of the sealed segments, oldest first.
    pub(crate) fn sealed_ids(&self) -> Vec<u32> {
        self.segments.read().sealed.keys().copied().collect()
    }

    /// The records of a sealed segment that may be their key's latest: its
    /// key's hash, where it is, and its length. From the hint file when it
    /// is there and checks out, so the segment itself is not read;
    /// otherwise built from the segment as its hint would be.
    pub(crate) fn segment_records(&self, id: u32) -> Result<Vec<SegmentRecord>> {
        let Some((path, bytes)) = self.sealed_bytes(id) else {
            return Ok(Vec::new());
        };
        let bytes = (*bytes).as_ref();
        let hint = match hint::read(&*self.storage, &self.dir, id, bytes.len() as u64) {
            Some(h) => h,
            None => hint::build(id, &path, bytes)?,
        };
        Ok(hint
            .entries
            .iter()
            .map(|e| SegmentRecord {
                hash: e.hash,
                loc: Loc {
                    segment: id,
                    offset: e.offset,
                },
                len: e.len,
            })
            .collect())
    }

    fn sealed_bytes(&self, id: u32) -> Option<(PathBuf, SealedBytes)> {
        self.segments
            .read()
            .sealed
            .get(&id)
            .map(|s| (s.path.clone(), s.bytes.clone()))
    }

    /// Writes the hint file of every sealed segment that lacks one.
    pub(crate) fn write_missing_hints(&self) -> Result<()> {
        for id in self.sealed_ids() {
            let Some(meta) = self.metas.get(id) else {
                continue;
            };
            if meta.hinted.load(Ordering::Relaxed) {
                continue;
            }
            let Some((path, bytes)) = self.sealed_bytes(id) else {
                continue;
            };
            let written = hint::write(
                &*self.storage,
                &self.dir,
                &hint::build(id, &path, (*bytes).as_ref())?,
            )?;
            self.metas.set_hinted(id, written);
            self.counters
                .hint_bytes_written
                .fetch_add(written, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletes a sealed segment whose records are all dead or copied:
    /// unpublish it, delete its hint and the segment file, fsync the
    /// directory. Returns the bytes freed.
    ///
    /// A failure here is reported but does not poison the store: a segment
    /// file that survives holds only records that are dead or have newer
    /// copies, so replaying it changes nothing.
    pub(crate) fn remove_sealed(&self, id: u32) -> Result<u64> {
        let Some(s) = self.segments.write().sealed.remove(&id) else {
            return Ok(0);
        };
        let hint_len = self
            .metas
            .get(id)
            .map_or(0, |m| m.hint_bytes.load(Ordering::Relaxed));
        let len = (*s.bytes).as_ref().len() as u64;
        let path = s.path.clone();
        drop(s);
        self.metas.remove(id);
        let hint = self.dir.join(crate::format::hint::hint_file_name(id));
        remove_if_exists(&*self.storage, &hint).map_err(|e| io_context("remove", &hint, e))?;
        self.storage
            .remove(&path)
            .map_err(|e| io_context("remove", &path, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io_context("fsync directory", &self.dir, e))?;
        Ok(len + hint_len)
    }

    /// Whether a durability target (from [`Appended::target`] or
    /// [`read_target`](Log::read_target)) is met.
    pub(crate) fn is_durable(&self, target: u64) -> bool {
        self.commit.is_durable(target)
    }

    /// The durability target a read of the record with sequence number
    /// `seq` at `loc` must wait for, or `None` if the record is durable:
    /// below both streams' watermarks (most reads, answered without a
    /// lock), or in a sealed segment (fsynced at rollover).
    pub(crate) fn read_target(&self, loc: Loc, seq: u64) -> Option<u64> {
        let target = |s: usize| crate::commit::target(s, seq + 1);
        if (0..2).all(|s| self.commit.is_durable(target(s))) {
            return None;
        }
        let segments = self.segments.read();
        let s = segments.active.iter().position(|a| a.id == loc.segment)?;
        Some(target(s)).filter(|&t| !self.commit.is_durable(t))
    }

    /// Returns once `target` is durable, sharing the fsync with every other
    /// caller waiting at the same time.
    pub(crate) fn wait_durable(&self, target: u64) -> Result<()> {
        self.commit.wait(target, |s| self.write_out_and_fsync(s))
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        let end = self.writer.lock().next_seq;
        for s in 0..2 {
            self.wait_durable(crate::commit::target(s, end))?;
        }
        Ok(())
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.commit.is_poisoned()
    }

    /// Bytes of segment and hint files on disk (the active segments as
    /// written so far).
    pub(crate) fn disk_bytes(&self) -> u64 {
        let active: u64 = self
            .writer
            .lock()
            .active
            .iter()
            .map(|a| a.flushed as u64)
            .sum();
        let sealed: u64 = self
            .segments
            .read()
            .sealed
            .values()
            .map(|s| (*s.bytes).as_ref().len() as u64)
            .sum();
        sealed + active + self.metas.hint_bytes()
    }

    /// Number of segment files.
    pub(crate) fn segment_count(&self) -> u64 {
        self.segments.read().sealed.len() as u64 + 2
    }

    /// The group-commit leader's work for stream `s`: write out its buffer,
    /// then fsync its active file, outside the writer lock so appends
    /// continue meanwhile. Every record of the stream appended before the
    /// lock was released is then durable: in that file, or in a sealed
    /// segment, which rollover fsynced. If the other stream had nothing
    /// unsynced at that moment, it is durable to the same point.
    fn write_out_and_fsync(&self, s: usize) -> std::io::Result<[u64; 2]> {
        let (file, ends) = {
            let mut w = self.writer.lock();
            let a = &mut w.active[s];
            flush_active(a)?;
            let file = std::mem::take(&mut a.dirty)
                .then(|| (a.file.clone(), a.meta.clone(), a.flushed as u64));
            let end = w.next_seq;
            let other = &w.active[1 - s];
            let other_clean = !other.dirty && other.flushed == other.buf.len();
            let mut ends = [0; 2];
            ends[s] = end;
            if other_clean {
                ends[1 - s] = end;
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

    fn flush(&self, w: &mut Writer, s: usize) -> Result<()> {
        let a = &mut w.active[s];
        flush_active(a).map_err(|e| self.fail("write", &a.path, e))
    }

    /// Seals stream `s`'s active segment and starts the stream's next one:
    /// 1. write out the buffer and fsync the file (it never changes again);
    /// 2. map it and publish it as sealed, before the active id moves on;
    /// 3. create the next file, write its header, fsync it, fsync the directory;
    /// 4. make it active.
    fn rollover(&self, w: &mut Writer, s: usize) -> Result<()> {
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
            .filter(|&id| id <= crate::index::MAX_SEGMENT_ID)
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
            Stream::ALL[s],
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
        buf,
        meta,
    })
}

/// The record or sync mark at `offset` of a segment whose every byte must
/// check out; anything else is `Corrupt`.
fn decode_any_at<'a>(
    path: &Path,
    bytes: &'a [u8],
    offset: u32,
) -> Result<(record::Decoded<'a>, usize)> {
    let corrupt = |reason: &str| Error::Corrupt {
        file: path.to_path_buf(),
        offset: u64::from(offset),
        reason: reason.into(),
    };
    let tail = bytes
        .get(offset as usize..)
        .ok_or_else(|| corrupt("record offset is past the end of the segment"))?;
    record::decode_any(tail).map_err(|e| match e {
        record::DecodeError::Truncated => corrupt("record is cut short"),
        record::DecodeError::Invalid(why) => corrupt(why),
    })
}

fn decode_at<'a>(path: &Path, bytes: &'a [u8], loc: Loc) -> Result<RecordRef<'a>> {
    let corrupt = |reason: &str| Error::Corrupt {
        file: path.to_path_buf(),
        offset: u64::from(loc.offset),
        reason: reason.into(),
    };
    let tail = bytes
        .get(loc.offset as usize..)
        .ok_or_else(|| corrupt("record offset is past the end of the segment"))?;
    match record::decode(tail) {
        Ok((rec, _)) => Ok(rec),
        Err(record::DecodeError::Truncated) => Err(corrupt("record is cut short")),
        Err(record::DecodeError::Invalid(why)) => Err(corrupt(why)),
    }
}
