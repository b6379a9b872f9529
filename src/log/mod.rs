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

#![allow(
    unsafe_code,
    reason = "reads of the active buffer below its published length"
)]

pub(crate) mod active;
pub(crate) mod append;
pub(crate) mod brlock;
mod closing;
pub(crate) mod commit;
pub(crate) mod hint_files;
mod meta;
mod numbering;
mod replay;
mod rollover;
pub(crate) mod scan;
mod segment_files;

pub(crate) use append::{AppendOpts, Appended, claim_segment_size};
pub(crate) use meta::{Metas, SegMeta};
pub(crate) use replay::{Applied, Recovered, RecoveryReport, RecoveryView, recover};

use crate::durability::{Durability, DurableTarget, PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::record::{self, RecordRef};
use crate::format::segment::{SEGMENT_HEADER_LEN, segment_file_name};
use crate::key::key_hash;
use crate::loc::{Loc, seg_u32};
use crate::storage::{SealedBytes, Storage, StorageFile, remove_if_exists};
use crate::stripes::Padded;
use crate::sync::{AtomicU64, AtomicUsize, Condvar, Mutex};
use active::{BufView, PublishedBuf};
use brlock::BrLock;
use commit::GroupCommit;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering;

pub(crate) struct Active {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Every byte of the segment, header included, published to readers.
    pub buf: PublishedBuf,
    /// The counter of the segment's first record: the record with relative
    /// counter `r` has counter `base + r` and sequence number
    /// `2 * (base + r) + parity` (`append.rs`).
    pub base: u64,
    pub meta: Arc<SegMeta>,
    /// The length the file was given on disk ahead of the appends
    /// (DESIGN.md §5, "Preallocation"), or 0.
    pub allocated: usize,
}

pub(crate) struct Sealed {
    pub path: PathBuf,
    pub bytes: SealedBytes,
}

/// What writing an active segment out to its file keeps: the group-commit
/// leader, the flushes of `Periodic` and `None` and rollover hold it.
pub(crate) struct Flush {
    /// How many bytes of the buffer have been written to the file.
    pub flushed: usize,
    /// Bytes were written to the file since its last fsync.
    pub dirty: bool,
    /// The length the file was given on disk ahead of the appends, or 0.
    pub allocated: usize,
    /// How far zeros were written ahead of the records (DESIGN.md §5,
    /// "Preallocation"); when it falls behind the records, the next
    /// write-out that writes zeros starts at the records' end.
    pub zeroed: usize,
    /// The buffer allocation of the segment the last rollover sealed, for
    /// the next one (DESIGN.md §5, "Rollover"): its pages are mapped
    /// already, so the next segment's appends fault none in.
    pub spare: Option<Vec<u8>>,
    /// Whether the stream rolled over since [`Log::release_idle_spares`]
    /// last looked.
    pub rolled: bool,
}

/// One write stream's appending state. Appenders reserve space with one
/// compare-and-swap on `reserve` and take no lock (`append.rs`).
pub(crate) struct StreamLog {
    pub stream: Stream,
    /// The stream's segment size.
    pub capacity: usize,
    /// The reservation word (`append.rs`): the active segment's reserved
    /// tail, the relative counter of the next record, a rollover flag, an
    /// epoch bit.
    pub reserve: Padded<AtomicU64>,
    /// The counter of the active segment's first record (`Active::base`),
    /// readable without reaching the segment.
    pub base: AtomicU64,
    /// The active segment, owned here (a `Box`). Swapped only by rollover,
    /// while no reservation is in flight and the write-out lock is held.
    pub active: AtomicPtr<Active>,
    pub flush: Mutex<Flush>,
    /// Bytes written out so far (a hint, for `None`'s write-out threshold).
    pub flushed_hint: AtomicUsize,
    /// Appenders that found a rollover under way wait here.
    pub rolled: Mutex<()>,
    pub rolled_cv: Condvar,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let active = *self.active.get_mut();
        // SAFETY: the pointer came from `Box::into_raw` and is owned here;
        // nothing else can reach it once the log is dropped.
        drop(unsafe { Box::from_raw(active) });
    }
}

/// How many times a read of a record completed but not yet published looks
/// again (spinning, then yielding the processor) before it reports the
/// location as past the segment's end: far more than the appenders before
/// it take to complete, unless one of them died mid-append.
const UNPUBLISHED_READ_TRIES: u32 = 1_000_000;

/// Where readers find records: the sealed segments and the active buffers.
struct Segments {
    sealed: BTreeMap<u32, Sealed>,
    active: PerStream<ActiveView>,
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
    meta: Arc<SegMeta>,
}

impl ActiveView {
    fn of(active: &Active) -> ActiveView {
        ActiveView {
            id: active.id,
            path: active.path.clone(),
            buf: active.buf.view(),
            meta: active.meta.clone(),
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
    /// Bytes of zeros written ahead of the records since open.
    pub zero_bytes_written: AtomicU64,
}

/// How a log writes: the settings it is opened with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogConfig {
    pub durability: Durability,
    /// Each stream's segment size.
    pub segment_size: PerStream<usize>,
    /// Whether segment files get their whole size on disk when they start
    /// (DESIGN.md §5, "Preallocation").
    pub preallocate: bool,
}

pub(crate) struct Log {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    durability: Durability,
    preallocate: bool,
    /// Whether write-outs write zeros ahead of the records (DESIGN.md §5,
    /// "Preallocation"): with `preallocate`, unless durability is `None`.
    zero_ahead: bool,
    streams: PerStream<StreamLog>,
    /// The id the next new segment of either stream gets.
    next_id: Mutex<u32>,
    segments: BrLock<Segments>,
    commit: GroupCommit,
    pub(crate) counters: LogCounters,
    pub(crate) metas: Arc<Metas>,
}

/// The segments recovery hands to a new log.
pub(crate) struct Opened {
    pub sealed: BTreeMap<u32, Sealed>,
    /// The active segment of each stream.
    pub active: PerStream<Active>,
    /// Every sequence number found is below this.
    pub next_seq: u64,
}

impl Log {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        config: LogConfig,
        metas: Arc<Metas>,
        opened: Opened,
    ) -> Log {
        let LogConfig {
            durability,
            segment_size,
            preallocate,
        } = config;
        let Opened {
            sealed,
            mut active,
            next_seq,
        } = opened;
        // Both streams count on from above every sequence number found.
        let next_count = next_seq.div_ceil(2);
        for (a, &size) in active.0.iter_mut().zip(&segment_size.0) {
            assert!(
                !sealed.contains_key(&a.id),
                "an active segment is not also sealed"
            );
            a.buf.reserve_total(size);
            a.base = next_count;
        }
        assert_ne!(
            active[Stream::Main].id,
            active[Stream::Claims].id,
            "each stream has its own segment"
        );
        let next_id = sealed
            .keys()
            .copied()
            .chain(active.0.iter().map(|a| a.id))
            .max()
            .unwrap_or(0)
            + 1;
        let view = active.each_ref().map(ActiveView::of);
        let [main, claims] = active.0;
        let stream_log = |stream: Stream, a: Active| {
            let len = a.buf.len();
            StreamLog {
                stream,
                capacity: segment_size[stream],
                reserve: Padded(AtomicU64::new(append::pack(len, 0, false))),
                base: AtomicU64::new(a.base),
                flush: Mutex::new(Flush {
                    flushed: len,
                    dirty: false,
                    allocated: a.allocated,
                    zeroed: len,
                    spare: None,
                    rolled: false,
                }),
                flushed_hint: AtomicUsize::new(len),
                active: AtomicPtr::new(Box::into_raw(Box::new(a))),
                rolled: Mutex::new(()),
                rolled_cv: Condvar::new(),
            }
        };
        Log {
            storage,
            dir,
            durability,
            preallocate,
            zero_ahead: preallocate && durability != Durability::None,
            streams: PerStream([
                stream_log(Stream::Main, main),
                stream_log(Stream::Claims, claims),
            ]),
            next_id: Mutex::new(next_id),
            segments: BrLock::new(Segments {
                sealed,
                active: view,
            }),
            // Everything recovery found is on disk.
            commit: GroupCommit::new(2 * next_count),
            counters: LogCounters::default(),
            metas,
        }
    }

    /// Runs `f` on the record at `loc`, checking its checksum first.
    pub(crate) fn read<R>(&self, loc: Loc, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let mut waited = 0u32;
        let segments = loop {
            let segments = self.segments.read();
            let Some(active) = segments.active.0.iter().find(|a| a.id == loc.segment) else {
                break segments;
            };
            // SAFETY: the buffer stays allocated and in place while the
            // segment table is read-locked (see `ActiveView`).
            let bytes = unsafe { active.buf.published() };
            // An index entry points at a completed record, but one completed
            // out of order is published only once the ranges before it are
            // (`active.rs`): a matter of their appenders' copies, so wait
            // for them, outside the lock (an appender that never completes
            // would have poisoned nothing, hence the bound).
            if loc.offset as usize >= bytes.len()
                && waited < UNPUBLISHED_READ_TRIES
                && !self.commit.is_poisoned()
            {
                drop(segments);
                waited += 1;
                crate::sync::thread::backoff(waited);
                continue;
            }
            return decode_at(&active.path, bytes, loc).map(f);
        };
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
    /// otherwise every record of the segment, read from it (without the
    /// hint's step of keeping only each key's last record in the segment:
    /// callers keep a record only if its key's index entry points at it,
    /// which an earlier record of the key never is).
    pub(crate) fn segment_records(&self, id: u32) -> Result<Vec<SegmentRecord>> {
        let Some((path, bytes)) = self.sealed_bytes(id) else {
            return Ok(Vec::new());
        };
        let bytes = (*bytes).as_ref();
        let Some(hint) = hint_files::read(&*self.storage, &self.dir, id, bytes.len() as u64) else {
            return scan_records(id, &path, bytes);
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

    /// Writes the hint file of each sealed segment of `ids` that is still
    /// there and lacks one.
    pub(crate) fn write_missing_hints(&self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            let Some(meta) = self.metas.get(id) else {
                continue;
            };
            if meta.hinted.load(Ordering::Relaxed) {
                continue;
            }
            let Some((path, bytes)) = self.sealed_bytes(id) else {
                continue;
            };
            let written = hint_files::write(
                &*self.storage,
                &self.dir,
                &hint_files::build(id, &path, (*bytes).as_ref())?,
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
    pub(crate) fn is_durable(&self, target: DurableTarget) -> bool {
        self.commit.is_durable(target)
    }

    /// The durability target a read of the record with sequence number
    /// `seq` at `loc` must wait for, or `None` if the record is durable:
    /// below both streams' watermarks (most reads, answered without a
    /// lock), or in a sealed segment (fsynced at rollover).
    pub(crate) fn read_target(&self, loc: Loc, seq: u64) -> Option<DurableTarget> {
        let target = |s: Stream| DurableTarget::covering(s, seq);
        if Stream::ALL
            .iter()
            .all(|&s| self.commit.is_durable(target(s)))
        {
            return None;
        }
        let segments = self.segments.read();
        let (s, _) = segments.active.iter().find(|(_, a)| a.id == loc.segment)?;
        Some(target(s)).filter(|&t| !self.commit.is_durable(t))
    }

    /// Returns once `target` is durable, sharing the fsync with every other
    /// caller waiting at the same time.
    pub(crate) fn wait_durable(&self, target: DurableTarget) -> Result<()> {
        self.commit.wait(target, |s| self.write_out_and_fsync(s))
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        for st in &self.streams.0 {
            self.wait_durable(self.appended_target(st))?;
        }
        Ok(())
    }

    /// Above the sequence number of every record appended so far, in either
    /// stream.
    pub(crate) fn next_seq(&self) -> u64 {
        self.streams
            .iter()
            .map(|(_, st)| self.appended_target(st).end)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.commit.is_poisoned()
    }

    /// Bytes of segment and hint files on disk (the active segments as
    /// written so far).
    pub(crate) fn disk_bytes(&self) -> u64 {
        let active: u64 = self
            .streams
            .0
            .iter()
            .map(|st| {
                let flush = st.flush.lock();
                flush.flushed.max(flush.allocated) as u64
            })
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
}

/// Calls `f` with the offset, contents and length of every record and
/// sync mark of segment `bytes`, in order, from the header on; any byte
/// that does not check out is `Corrupt`.
pub(super) fn each_entry<'a>(
    path: &Path,
    bytes: &'a [u8],
    mut f: impl FnMut(u32, record::Decoded<'a>, usize),
) -> Result<()> {
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let offset = seg_u32(pos);
        let (decoded, len) = decode_any_at(path, bytes, offset)?;
        f(offset, decoded, len);
        pos += len;
    }
    Ok(())
}

/// Every record of segment `id` (`bytes`), in order, sync marks left out.
fn scan_records(id: u32, path: &Path, bytes: &[u8]) -> Result<Vec<SegmentRecord>> {
    let mut records = Vec::new();
    each_entry(path, bytes, |offset, decoded, len| {
        if let record::Decoded::Record(rec) = decoded {
            records.push(SegmentRecord {
                hash: key_hash(rec.key),
                loc: Loc {
                    segment: id,
                    offset,
                },
                len: seg_u32(len),
            });
        }
    })?;
    Ok(records)
}

/// The record or sync mark at `offset` of a segment whose every byte must
/// check out; anything else is `Corrupt`.
pub(super) fn decode_any_at<'a>(
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

pub(super) fn decode_at<'a>(path: &Path, bytes: &'a [u8], loc: Loc) -> Result<RecordRef<'a>> {
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
