//! Opening the log: rebuild the index from each sealed segment's hint, or
//! by scanning the segment where there is none, and from a scan of each
//! stream's last segment; cut a torn tail, refuse real corruption
//! (DESIGN.md §6).
//!
//! The claim stream is replayed first, then the main stream. A key's
//! records reach the index in log order within a stream; where a main
//! record meets an entry from the claim stream, their sequence numbers
//! decide which is newer (see `apply_recovered` in `store.rs`).
//!
//! | found on disk | what open does |
//! |---|---|
//! | no segment files | creates segment 1 (main stream) and 2 (claim stream) |
//! | no segment of one stream (a version 1 store has no claim stream) | creates one |
//! | a segment file named with id 0 or above 2^30 - 1 | `Corrupt` |
//! | bad record in a sealed (not last of its stream) segment | `Corrupt` |
//! | bad or incomplete record at the end of a stream's last segment, nothing valid after it | truncates there, fsyncs, counts the bytes |
//! | bad record in a stream's last segment with a valid record after it | `Corrupt` |
//! | newest segment with a bad header and no valid record in it (crash while creating it) | removes it, fsyncs the directory |
//! | header with a valid checksum and an unknown version | `IncompatibleFormat` |

mod hinted;
mod last;
mod view;

pub(crate) use view::{Applied, Recovered, RecoveryView};

use super::hint_files::{self, Hint};
use super::scan::{
    checked, first_valid_record, is_damage, read_header, scan, segment_ids, torn_end,
};
use super::segment_files::{NewSegment, create_segment, cut_to, preallocate};
use super::{Active, Log, LogConfig, Metas, Opened, Sealed};
use crate::durability::{PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN, HintEntry};
use crate::format::record::Decoded;
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::index::SHARDS;
use crate::loc::MAX_SEGMENT_ID;
use crate::storage::{Storage, StorageFile, read_all};
use hinted::{Hinted, ShardScratch, ShardedHint, Tally, apply_shard, parallel, read_chunk};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use view::ViewBase;

/// Hints with at least this many entries in all are read and applied by
/// several threads; for fewer a thread costs more than it saves.
const PARALLEL_HINT_ENTRIES: usize = 4096;
/// At most this many threads work on an open.
const MAX_THREADS: usize = 8;
/// Hinted segments are read and applied in chunks of about this many
/// entries, which bounds what an open holds in memory beside the index
/// (32 bytes per entry).
const HINT_CHUNK_ENTRIES: usize = 1 << 22;

/// What recovery found and did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecoveryReport {
    pub records: u64,
    pub torn_tail_bytes: u64,
    /// Sealed segments whose index came from their hint file.
    pub hinted_segments: u64,
    /// Streams' last segments opened from the hint closing wrote.
    pub hinted_last_segments: u64,
    /// Bytes of hint files written by the open.
    pub hint_bytes_written: u64,
}

/// Removes hint files whose segment is gone and temporary hint files of an
/// interrupted write.
fn remove_stale_hints(storage: &dyn Storage, dir: &Path, ids: &[u32]) -> Result<()> {
    for name in storage.list(dir).map_err(|e| io_context("list", dir, e))? {
        let orphan = match name.strip_suffix(".hint") {
            Some(stem) => stem
                .parse::<u32>()
                .is_ok_and(|id| ids.binary_search(&id).is_err()),
            None => name.ends_with(".hint.tmp"),
        };
        if orphan {
            let path = dir.join(&name);
            storage
                .remove(&path)
                .map_err(|e| io_context("remove", &path, e))?;
        }
    }
    Ok(())
}

/// A segment file as `classify` found it: opened, its header checked.
struct Found {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    header: SegmentHeader,
    /// Entries its hint lists, from the hint's header (0 without a hint).
    listed: usize,
}

/// Reads every segment's header to learn its stream. The newest segment may
/// have a torn header (a crash while it was being created, before anything
/// was written to it): if no valid record is in it, it is removed. Any
/// other bad header is `Corrupt`.
fn classify(
    storage: &dyn Storage,
    dir: &Path,
    ids: &mut Vec<u32>,
    report: &mut RecoveryReport,
) -> Result<BTreeMap<u32, Found>> {
    let mut found = BTreeMap::new();
    for (i, &id) in ids.iter().enumerate() {
        let (path, file, decoded) = read_header(storage, dir, id)?;
        let newest = i + 1 == ids.len();
        if newest && is_damage(&decoded) {
            let bytes = read_all(&*file).map_err(|e| io_context("read", &path, e))?;
            if first_valid_record(&bytes, 0, 1).is_none() {
                drop(file);
                storage
                    .remove(&path)
                    .map_err(|e| io_context("remove", &path, e))?;
                storage
                    .sync_dir(dir)
                    .map_err(|e| io_context("fsync directory", dir, e))?;
                report.torn_tail_bytes += torn_end(&bytes, 0) as u64;
                ids.pop();
                break;
            }
        }
        let header = checked(&path, id, decoded)?;
        found.insert(
            id,
            Found {
                path,
                file,
                header,
                listed: 0,
            },
        );
    }
    Ok(found)
}

/// Where a batch's entries are, and the bytes of the stream's last segment
/// when the batch is that segment (it is not mapped: its bytes were read).
#[derive(Clone, Copy)]
struct BatchSource<'a> {
    entries: &'a [HintEntry],
    current: Option<(u32, &'a [u8])>,
}

impl<'a> BatchSource<'a> {
    fn sealed(entries: &'a [HintEntry]) -> Self {
        BatchSource {
            entries,
            current: None,
        }
    }
}

/// What replaying the segments of both streams works with.
struct Replay<'r, F> {
    storage: &'r dyn Storage,
    dir: &'r Path,
    /// Every segment, by id.
    found: BTreeMap<u32, Found>,
    threads: usize,
    metas: &'r Metas,
    apply: &'r F,
}

impl<F> Replay<'_, F>
where
    F: Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
{
    /// Maps and checks the hints of sealed segments `ids`, decoding their
    /// entries into `buf` on `threads` threads; `None` for a segment
    /// without a usable hint.
    fn read_hints(
        &self,
        ids: &[u32],
        threads: usize,
        buf: &mut Vec<HintEntry>,
    ) -> Vec<Result<Option<ShardedHint>>> {
        let listed: Vec<usize> = ids.iter().map(|id| self.found[id].listed).collect();
        let len_of = |i: usize| {
            let f = &self.found[&ids[i]];
            f.file.len().map_err(|e| io_context("stat", &f.path, e))
        };
        read_chunk(self.storage, self.dir, ids, &len_of, &listed, threads, buf)
    }

    /// Maps sealed segment `id` and publishes it to later views.
    fn map_sealed(&self, id: u32, sealed: &mut BTreeMap<u32, Sealed>) -> Result<()> {
        let f = &self.found[&id];
        let bytes = f.file.map().map_err(|e| io_context("map", &f.path, e))?;
        let path = f.path.clone();
        sealed.insert(id, Sealed { path, bytes });
        Ok(())
    }

    /// Applies the entries of a run of consecutive hinted segments, already
    /// mapped into `sealed`, and empties `batch`. Entries of different keys
    /// do not depend on each other and a key's entries all fall in one
    /// shard, so the shards are filled in parallel, each in the order of its
    /// table's slots, as long as each key's entries keep their log order.
    fn apply_batch(
        &self,
        batch: &mut Vec<Hinted>,
        sealed: &BTreeMap<u32, Sealed>,
        base: ViewBase<'_>,
        report: &mut RecoveryReport,
        threads: usize,
        BatchSource { entries, current }: BatchSource<'_>,
    ) -> Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let (current_id, current) = current.unwrap_or((u32::MAX, &[]));
        let view = RecoveryView {
            sealed,
            current_id,
            current,
            current_path: &self.found[&first.id].path,
            base,
        };
        let listed: usize = batch.iter().map(|h| h.hint.entries.len()).sum();
        let threads = if listed < PARALLEL_HINT_ENTRIES {
            1
        } else {
            threads
        };
        let mut tallies = vec![Tally::new(); batch.len()];
        for shard in parallel(SHARDS, threads, ShardScratch::default, |scratch, shard| {
            apply_shard(batch, entries, shard, &view, self.apply, scratch)
        }) {
            for (t, s) in tallies.iter_mut().zip(shard?) {
                *t = t.merge(s);
            }
        }
        for (h, tally) in batch.drain(..).zip(tallies) {
            let header = &h.hint.header;
            // Records the hint leaves out were superseded in the segment.
            let unlisted = h
                .len
                .saturating_sub(SEGMENT_HEADER_LEN as u64)
                .saturating_sub(tally.bytes);
            Tally {
                bytes: tally.bytes + unlisted,
                dead: tally.dead + unlisted,
                last_ms: header.last_ms,
                ..tally
            }
            .into_meta(&self.metas.get_or_insert(h.id));
            let hint_bytes = (HINT_HEADER_LEN + h.hint.entries.len() * HINT_ENTRY_LEN) as u64;
            if h.last {
                self.metas
                    .get_or_insert(h.id)
                    .hint_bytes
                    .store(hint_bytes, Ordering::Relaxed);
            } else {
                self.metas.set_hinted(h.id, hint_bytes);
            }
            report.records += u64::from(header.records);
            report.hinted_segments += 1;
        }
        Ok(())
    }

    /// Reads segment `id`, which has no usable hint or is the last of its
    /// stream, and hands each record to `apply`: returns its valid bytes (a
    /// torn tail of the last segment cut) and, for a sealed segment, the
    /// hint gathered on the way.
    fn scan_segment(
        &self,
        id: u32,
        is_last: bool,
        next_seq: &mut u64,
        report: &mut RecoveryReport,
        sealed: &BTreeMap<u32, Sealed>,
        base: ViewBase<'_>,
    ) -> Result<(Vec<u8>, Option<Hint>)> {
        let Found {
            path, file, header, ..
        } = &self.found[&id];
        let mut bytes = read_all(&**file).map_err(|e| io_context("read", path, e))?;
        *next_seq = (*next_seq).max(header.first_seq);

        let mut tally = Tally::new();
        // A sealed segment's hint is gathered on the same pass.
        let mut hint = (!is_last).then(hint_files::Builder::default);
        let rules = (is_last, header.has_sync_marks());
        let records = &mut report.records;
        let scanned = scan(path, id, &bytes, rules, next_seq, records, |loc, entry| {
            let rec = match entry {
                Decoded::Record(rec) => rec,
                Decoded::SyncMark(mark) => {
                    tally.add_sync_mark();
                    if let Some(hint) = &mut hint {
                        hint.sync_mark(mark);
                    }
                    return Ok(ControlFlow::Continue(()));
                }
            };
            let view = RecoveryView {
                sealed,
                current_id: id,
                current: &bytes,
                current_path: path,
                base,
            };
            let r = Recovered::scanned(loc, rec);
            tally.add(r.len, r.since_ms, (self.apply)(&r, &view)?);
            if let Some(hint) = &mut hint {
                hint.add(loc.offset, rec);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        // The callback never ends the scan early.
        let ControlFlow::Continue(end) = scanned else {
            unreachable!("the replay's callback always continues")
        };
        tally.into_meta(&self.metas.get_or_insert(id));
        let hint = hint.map(|h| h.finish(id, bytes.len() as u64));

        if end < bytes.len() {
            debug_assert!(is_last, "only a stream's last segment may have a torn tail");
            // Zeros past the valid prefix are preallocated space, not a
            // torn tail; anything else there is cut (and the space
            // allocated again when the segment becomes active).
            let torn = torn_end(&bytes, end) - end;
            if torn > 0 {
                file.set_len(end as u64)
                    .map_err(|e| io_context("truncate", path, e))?;
                file.sync_data().map_err(|e| io_context("fsync", path, e))?;
                report.torn_tail_bytes += torn as u64;
            }
            // The capacity stays: the log reserves the whole segment for
            // the active buffer anyway.
            bytes.truncate(end);
        }
        Ok((bytes, hint))
    }

    /// One stream's replay: its sealed segments, a chunk at a time (hints
    /// are read and checked in parallel, then each run of hinted segments is
    /// applied as one batch, and a segment without a usable hint is scanned
    /// in between), then its last segment, always scanned. Returns the last
    /// segment, ready to append to, and the stream's next sequence number.
    fn stream(
        &self,
        ids: &[u32],
        sealed: &mut BTreeMap<u32, Sealed>,
        base: ViewBase<'_>,
        report: &mut RecoveryReport,
        new_hints: &mut Vec<Hint>,
    ) -> Result<Option<(Active, u64)>> {
        let Some((&last_id, sealed_ids)) = ids.split_last() else {
            return Ok(None);
        };
        let listed_of = |id: &u32| self.found[id].listed;
        let mut next_seq = 1u64;
        let mut start = 0;
        // The entries of a chunk's hints: one buffer for every chunk.
        let mut chunk_entries = Vec::new();
        while start < sealed_ids.len() {
            let mut end = start + 1;
            let mut entries = listed_of(&sealed_ids[start]);
            while end < sealed_ids.len()
                && entries + listed_of(&sealed_ids[end]) <= HINT_CHUNK_ENTRIES
            {
                entries += listed_of(&sealed_ids[end]);
                end += 1;
            }
            let workers = if entries < PARALLEL_HINT_ENTRIES {
                1
            } else {
                self.threads
            };
            let chunk = &sealed_ids[start..end];
            let mut batch = Vec::new();
            let hints = self.read_hints(chunk, workers, &mut chunk_entries);
            for (&id, hint) in chunk.iter().zip(hints) {
                self.map_sealed(id, sealed)?;
                if let Some(hint) = hint? {
                    let first_seq = self.found[&id].header.first_seq;
                    next_seq = next_seq.max(first_seq).max(hint.header.last_seq + 1);
                    batch.push(Hinted {
                        id,
                        len: hint.header.segment_len,
                        hint,
                        last: false,
                    });
                    continue;
                }
                // Everything before this segment first, in log order.
                let e = BatchSource::sealed(&chunk_entries);
                self.apply_batch(&mut batch, sealed, base, report, workers, e)?;
                let (_, hint) =
                    self.scan_segment(id, false, &mut next_seq, report, sealed, base)?;
                // A sealed segment's scan gathers its hint.
                new_hints.extend(hint);
            }
            let e = BatchSource::sealed(&chunk_entries);
            self.apply_batch(&mut batch, sealed, base, report, workers, e)?;
            start = end;
        }

        let bytes = match self.last_from_hint(last_id, &mut next_seq, report, sealed, base)? {
            Some(bytes) => bytes,
            None => {
                self.scan_segment(last_id, true, &mut next_seq, report, sealed, base)?
                    .0
            }
        };
        let f = &self.found[&last_id];
        let meta = self.metas.get_or_insert(last_id);
        // Open fsyncs the segment; the next group commit's mark then attests
        // everything recovered.
        meta.marked_len
            .fetch_max(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
        let active = Active {
            id: last_id,
            path: f.path.clone(),
            file: f.file.clone(),
            buf: bytes.into(),
            // Set by the log from the counters of both streams.
            base: 0,
            meta,
            // Given at the end of recovery, when the segment is active.
            allocated: 0,
        };
        Ok(Some((active, next_seq)))
    }
}

/// Opens the log in `dir`, calling `apply` for every valid record: first the
/// claim stream's, then the main stream's, each stream's records of a key in
/// log order (records of different keys may come in any order). `reserve`
/// gets the keys the hints list and the threads the open works on, first.
pub(crate) fn recover(
    storage: Arc<dyn Storage>,
    dir: &Path,
    config: LogConfig,
    metas: Arc<Metas>,
    reserve: impl FnOnce(usize, usize),
    apply: impl Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
) -> Result<(Log, RecoveryReport)> {
    let mut ids = segment_ids(&*storage, dir)?;
    if let Some(&bad) = ids.iter().find(|&&id| id == 0 || id > MAX_SEGMENT_ID) {
        return Err(Error::Corrupt {
            file: dir.join(segment_file_name(bad)),
            offset: 0,
            reason: format!("segment id {bad} is outside 1..=2^30-1, so no store wrote it"),
        });
    }
    let mut report = RecoveryReport::default();
    let mut found = classify(&*storage, dir, &mut ids, &mut report)?;
    remove_stale_hints(&*storage, dir, &ids)?;
    for (&id, f) in found.iter_mut() {
        f.listed = hint_files::listed(&*storage, dir, id).unwrap_or(0);
    }
    let of_stream = |want: Stream| -> Vec<u32> {
        found
            .iter()
            .filter(|(_, f)| f.header.stream == want)
            .map(|(&id, _)| id)
            .collect()
    };
    let (claim_ids, main_ids) = (of_stream(Stream::Claims), of_stream(Stream::Main));
    // Size the index once for the keys the hints list, rather than growing
    // it step by step while it fills. Most claims on disk are of keys whose
    // completes are listed too, so the larger stream's count is the guess;
    // keys only one stream holds beyond it grow the table as they come.
    let listed_in = |ids: &[u32]| -> usize { ids.iter().map(|id| found[id].listed).sum() };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    reserve(listed_in(&main_ids).max(listed_in(&claim_ids)), threads);
    let replay = Replay {
        storage: &*storage,
        dir,
        found,
        threads,
        metas: &metas,
        apply: &apply,
    };
    // Hints of scanned sealed segments, written once the whole log checked
    // out: a failed open changes no file.
    let mut new_hints = Vec::new();
    let mut sealed = BTreeMap::new();
    let mut base = ViewBase {
        claims: &claim_ids,
        claims_active: None,
    };
    let claims = replay.stream(&claim_ids, &mut sealed, base, &mut report, &mut new_hints)?;
    if let Some((active, _)) = &claims {
        base.claims_active = Some((active.id, active.buf.bytes(), &active.path));
    }
    let main = replay.stream(&main_ids, &mut sealed, base, &mut report, &mut new_hints)?;
    for hint in &new_hints {
        // Best effort: without its hint a segment is scanned again at the
        // next open, or hinted by the next compaction.
        if let Ok(bytes) = hint_files::write(&*storage, dir, hint) {
            metas.set_hinted(hint.header.segment_id, bytes);
            report.hint_bytes_written += bytes;
        }
    }
    let next_seq = [&claims, &main]
        .into_iter()
        .flatten()
        .map(|(_, next)| *next)
        .max()
        .unwrap_or(1);
    let mut next_id = ids.last().map_or(1, |id| id + 1);
    let has_marks = |id: u32| replay.found[&id].header.has_sync_marks();
    // A stream with no segment yet (a new store, or one written by format
    // version 1) gets its first, main before claims. A stream whose last
    // segment predates sync marks (format version 1 or 2) goes on in a new
    // segment: the old one is fsynced and sealed, so that a build that
    // reads only older versions refuses the store (`IncompatibleFormat`)
    // rather than meeting a mark it does not know.
    let mut start = |stream: Stream, found: Option<(Active, u64)>| -> Result<Active> {
        match found {
            Some((active, _)) if has_marks(active.id) => return Ok(active),
            Some((old, _)) => {
                // A sealed segment ends at its last record (as rollover
                // leaves one): zeros or a torn tail past it, which open
                // reads as such only in a stream's last segment, go.
                cut_to(&*old.file, old.buf.len())
                    .map_err(|e| io_context("truncate", &old.path, e))?;
                old.file
                    .sync_data()
                    .map_err(|e| io_context("fsync", &old.path, e))?;
                let bytes = old
                    .file
                    .map()
                    .map_err(|e| io_context("map", &old.path, e))?;
                sealed.insert(
                    old.id,
                    Sealed {
                        path: old.path,
                        bytes,
                    },
                );
            }
            None => {}
        }
        let id = next_id;
        next_id += 1;
        create_segment(
            &*storage,
            dir,
            NewSegment {
                id,
                stream,
                base: next_seq.div_ceil(2),
                size: config.segment_size[stream],
                preallocate: config.preallocate,
                buffer: None,
            },
            metas.get_or_insert(id),
        )
    };
    let mut active = PerStream([start(Stream::Main, main)?, start(Stream::Claims, claims)?]);
    // What open found in the active files may be only in the page cache (a
    // process that died before its fsync). Answers given from now on rest on
    // it, so it is made durable first; the first append to each then writes
    // a sync mark attesting it.
    for (a, size) in active.0.iter_mut().zip(config.segment_size.0) {
        if config.preallocate && a.allocated < size {
            a.allocated = preallocate(&*a.file, &a.path, size);
        }
        a.file
            .sync_data()
            .map_err(|e| io_context("fsync", &a.path, e))?;
        a.meta
            .synced_len
            .fetch_max(a.buf.len() as u64, Ordering::Relaxed);
    }
    let log = Log::new(
        storage.clone(),
        dir.to_path_buf(),
        config,
        metas.clone(),
        Opened {
            sealed,
            active,
            next_seq,
        },
    );
    Ok((log, report))
}
