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

use super::hint::Hint;
use super::{Active, Loc, Log, Metas, Opened, Sealed, SegMeta, Stream, create_segment};
use crate::error::{Error, Result, io_context};
use crate::format::FORMAT_VERSION;
use crate::format::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN, HintEntry};
use crate::format::record::{self, DecodeError, Decoded, RecordRef, Tag};
use crate::format::segment::{
    HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::index::{MAX_SEGMENT_ID, SHARDS, shard_of};
use crate::options::Durability;
use crate::storage::{Storage, StorageFile, read_all};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// Bytes of hint files written by the open.
    pub hint_bytes_written: u64,
}

/// A record as recovery hands it to the index rebuild: from a scan (with its
/// key and sequence number) or from a hint file (without: they are read
/// only if needed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovered<'a> {
    pub loc: Loc,
    pub hash: u64,
    pub tag: Tag,
    pub time_a_ms: u64,
    pub time_b_ms: u64,
    pub len: u32,
    pub key: Option<&'a [u8]>,
    pub seq: Option<u64>,
    pub generation: Option<u64>,
}

/// What the index rebuild made of one record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applied {
    /// The drop-after second of the record's entry.
    pub drop_after_s: u32,
    /// Whether the record got an entry (its drop-after time had not passed).
    pub kept: bool,
}

/// A segment's figures summed over records without touching shared
/// counters per record.
#[derive(Debug, Clone, Copy)]
struct Tally {
    bytes: u64,
    dead: u64,
    min_drop_s: u32,
    max_drop_s: u32,
    first_ms: u64,
    last_ms: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            bytes: 0,
            dead: 0,
            min_drop_s: u32::MAX,
            max_drop_s: 0,
            first_ms: u64::MAX,
            last_ms: 0,
        }
    }

    fn add(&mut self, len: u32, time_a_ms: u64, applied: Applied) {
        self.first_ms = self.first_ms.min(time_a_ms);
        self.last_ms = self.last_ms.max(time_a_ms);
        self.bytes += u64::from(len);
        if !applied.kept {
            self.dead += u64::from(len);
        }
        self.min_drop_s = self.min_drop_s.min(applied.drop_after_s);
        self.max_drop_s = self.max_drop_s.max(applied.drop_after_s);
    }

    /// A sync mark's bytes: dead from the start.
    fn add_sync_mark(&mut self) {
        self.bytes += record::SYNC_MARK_LEN as u64;
        self.dead += record::SYNC_MARK_LEN as u64;
    }

    fn merge(self, other: Tally) -> Tally {
        Tally {
            bytes: self.bytes + other.bytes,
            dead: self.dead + other.dead,
            min_drop_s: self.min_drop_s.min(other.min_drop_s),
            max_drop_s: self.max_drop_s.max(other.max_drop_s),
            first_ms: self.first_ms.min(other.first_ms),
            last_ms: self.last_ms.max(other.last_ms),
        }
    }

    fn into_meta(self, meta: &SegMeta) {
        use std::sync::atomic::Ordering::Relaxed;
        meta.bytes.fetch_add(self.bytes, Relaxed);
        meta.dead_bytes.fetch_add(self.dead, Relaxed);
        meta.min_drop_after_s.fetch_min(self.min_drop_s, Relaxed);
        meta.max_drop_after_s.fetch_max(self.max_drop_s, Relaxed);
        meta.first_write_ms.fetch_min(self.first_ms, Relaxed);
        meta.last_write_ms.fetch_max(self.last_ms, Relaxed);
    }
}

impl<'a> Recovered<'a> {
    fn scanned(loc: Loc, rec: &RecordRef<'a>) -> Recovered<'a> {
        Recovered {
            loc,
            hash: crate::index::key_hash(rec.key),
            tag: rec.tag,
            time_a_ms: rec.time_a_ms,
            time_b_ms: rec.time_b_ms,
            len: u32::try_from(record::encoded_len(rec.key.len(), rec.value.len()))
                .expect("records fit a segment"),
            key: Some(rec.key),
            seq: Some(rec.seq),
            generation: Some(rec.generation),
        }
    }
}

/// What every view of one open shares: the claim stream's segment ids, and
/// its active segment's bytes once it was scanned.
#[derive(Clone, Copy)]
struct ViewBase<'a> {
    claims: &'a [u32],
    claims_active: Option<(u32, &'a [u8], &'a Path)>,
}

/// Read access to the records recovered so far, for key comparisons while
/// the index is rebuilt.
pub(crate) struct RecoveryView<'a> {
    sealed: &'a BTreeMap<u32, Sealed>,
    current_id: u32,
    current: &'a [u8],
    current_path: &'a Path,
    base: ViewBase<'a>,
}

impl<'a> RecoveryView<'a> {
    /// Runs `f` on the already-recovered record at `loc`.
    pub(crate) fn read<R>(&self, loc: Loc, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        self.record(loc).map(f)
    }

    /// Whether segment `id` belongs to the claim stream.
    pub(crate) fn is_claims(&self, id: u32) -> bool {
        self.base.claims.binary_search(&id).is_ok()
    }

    /// The already-recovered record at `loc`.
    pub(crate) fn record(&self, loc: Loc) -> Result<RecordRef<'a>> {
        let (path, bytes) = self.segment(loc)?;
        super::decode_at(path, bytes, loc)
    }

    /// The `generation` field of the record at `loc`, read without checking
    /// the record's checksum; `None` if it is out of the segment's bounds.
    /// Only for a shortcut that a damaged field can only turn off: two such
    /// reads must agree exactly for it to be taken.
    pub(crate) fn peek_generation(&self, loc: Loc) -> Option<u64> {
        let (_, bytes) = self.segment(loc).ok()?;
        record::peek_generation(bytes.get(loc.offset as usize..)?)
    }

    /// The encoded length of the record at `loc` as its header states it,
    /// without checking the record's checksum (for dead-byte figures, which
    /// only steer compaction); the checked length if the header does not
    /// pass its cheap checks.
    pub(crate) fn record_len(&self, loc: Loc) -> Result<usize> {
        let (_, bytes) = self.segment(loc)?;
        match bytes.get(loc.offset as usize..).map(record::peek_header) {
            Some(Ok(h)) => Ok(h.len),
            _ => self
                .record(loc)
                .map(|r| record::encoded_len(r.key.len(), r.value.len())),
        }
    }

    /// The file and bytes of the segment `loc` is in.
    fn segment(&self, loc: Loc) -> Result<(&'a Path, &'a [u8])> {
        Ok(if loc.segment == self.current_id {
            (self.current_path, self.current)
        } else if let Some((_, bytes, path)) = self
            .base
            .claims_active
            .filter(|(id, _, _)| *id == loc.segment)
        {
            (path, bytes)
        } else {
            let s = self
                .sealed
                .get(&loc.segment)
                .ok_or_else(|| Error::Corrupt {
                    file: self.current_path.to_path_buf(),
                    offset: u64::from(loc.offset),
                    reason: "a record refers to a segment that does not exist".into(),
                })?;
            (&s.path, (*s.bytes).as_ref())
        })
    }
}

/// The ids of the segment files in `dir`, oldest first.
pub(super) fn segment_ids(storage: &dyn Storage, dir: &Path) -> Result<Vec<u32>> {
    let names = storage.list(dir).map_err(|e| io_context("list", dir, e))?;
    let mut ids: Vec<u32> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids)
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

/// A hint whose entries are ordered by index shard, in offset order within
/// a shard.
struct ShardedHint {
    hint: Hint,
    /// Shard `s` has `hint.entries[starts[s]..starts[s + 1]]`.
    starts: Vec<u32>,
}

impl ShardedHint {
    /// Checks hint file bytes as `hint::decode` does and decodes the
    /// entries straight into shard order.
    fn decode(bytes: &[u8], id: u32, segment_len: u64) -> Option<ShardedHint> {
        let (header, body) = super::hint::entry_bytes(bytes, id, segment_len)?;
        let mut starts = vec![0u32; SHARDS + 1];
        for chunk in body.chunks_exact(HINT_ENTRY_LEN) {
            let hash = u64::from_le_bytes(chunk[..8].try_into().expect("eight bytes"));
            starts[shard_of(hash) + 1] += 1;
        }
        for s in 0..SHARDS {
            starts[s + 1] += starts[s];
        }
        let mut at = starts.clone();
        let mut entries = vec![
            HintEntry {
                hash: 0,
                tag: Tag::Claim,
                time_b_ms: 0,
                offset: 0,
                len: 0,
            };
            body.len() / HINT_ENTRY_LEN
        ];
        super::hint::decode_entries(body, segment_len, |e| {
            let s = shard_of(e.hash);
            entries[at[s] as usize] = e;
            at[s] += 1;
        })?;
        Some(ShardedHint {
            hint: Hint { header, entries },
            starts,
        })
    }

    fn shard(&self, shard: usize) -> std::ops::Range<usize> {
        self.starts[shard] as usize..self.starts[shard + 1] as usize
    }
}

/// A hinted segment waiting for its entries to be applied.
struct Hinted {
    id: u32,
    len: u64,
    hint: ShardedHint,
}

/// An entry of a hinted segment in a batch, with the segment's place in
/// the batch.
#[derive(Clone, Copy)]
struct BatchEntry {
    entry: HintEntry,
    seg: u32,
}

/// Runs `job` for `0..jobs` on up to `threads` threads, each with its own
/// scratch state from `init`; results in job order.
fn parallel<S, T: Send>(
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
fn apply_shard<F>(
    batch: &[Hinted],
    shard: usize,
    view: &RecoveryView<'_>,
    apply: &F,
) -> Result<Vec<Tally>>
where
    F: Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
{
    let slices = || {
        batch
            .iter()
            .enumerate()
            .map(move |(seg, h)| (seg as u32, &h.hint.hint.entries[h.hint.shard(shard)]))
    };
    let n: usize = slices().map(|(_, s)| s.len()).sum();
    // About one entry a bucket, so a bucket covers a few slots.
    let bits = n.next_power_of_two().trailing_zeros().min(20);
    let bucket = |e: &HintEntry| ((u64::from(e.hash as u32) << bits) >> 32) as usize;
    let mut at = vec![0u32; (1 << bits) + 1];
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
    let mut ordered = vec![
        BatchEntry {
            entry: first[0],
            seg: 0
        };
        n
    ];
    for (seg, s) in slices() {
        for e in s {
            let b = bucket(e);
            ordered[at[b] as usize] = BatchEntry { entry: *e, seg };
            at[b] += 1;
        }
    }
    let mut tallies = vec![Tally::new(); batch.len()];
    for BatchEntry { entry: e, seg } in ordered {
        let h = &batch[seg as usize];
        let first_ms = h.hint.hint.header.first_ms;
        let rec = Recovered {
            loc: Loc {
                segment: h.id,
                offset: e.offset,
            },
            hash: e.hash,
            tag: e.tag,
            time_a_ms: first_ms,
            time_b_ms: e.time_b_ms,
            len: e.len,
            key: None,
            seq: None,
            generation: None,
        };
        tallies[seg as usize].add(e.len, first_ms, apply(&rec, view)?);
    }
    Ok(tallies)
}

/// A decoded segment header, or why it did not decode.
type DecodedHeader = std::result::Result<SegmentHeader, HeaderError>;

/// Opens segment `id` and decodes its header, reading those 32 bytes only.
fn read_header(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
) -> Result<(PathBuf, Arc<dyn StorageFile>, DecodedHeader)> {
    let path = dir.join(segment_file_name(id));
    let file = storage
        .open(&path)
        .map_err(|e| io_context("open", &path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let decoded = match file.read_exact_at(0, &mut head) {
        Ok(()) => SegmentHeader::decode(&head),
        Err(_) => Err(HeaderError::Truncated),
    };
    Ok((path, file, decoded))
}

/// The stream each segment's header names; `None` where the header does
/// not decode.
pub(super) fn read_streams(
    storage: &dyn Storage,
    dir: &Path,
    ids: &[u32],
) -> Result<Vec<Option<Stream>>> {
    ids.iter()
        .map(|&id| Ok(read_header(storage, dir, id)?.2.ok().map(|h| h.stream)))
        .collect()
}

/// Whether each segment is the last of its stream. A segment whose header
/// does not decode counts as last only if it is the newest of all: only the
/// segment created last can have a torn header.
pub(super) fn last_of_stream(streams: &[Option<Stream>]) -> Vec<bool> {
    (0..streams.len())
        .map(|i| match streams[i] {
            None => i + 1 == streams.len(),
            Some(s) => !streams[i + 1..].contains(&Some(s)),
        })
        .collect()
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
                report.torn_tail_bytes += bytes.len() as u64;
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
    /// Reads and checks the hints of sealed segments `ids`, on `threads`
    /// threads; `None` for a segment without a usable hint.
    fn read_hints(&self, ids: &[u32], threads: usize) -> Vec<Result<Option<ShardedHint>>> {
        parallel(ids.len(), threads, Vec::new, |buf, i| {
            let (id, f) = (ids[i], &self.found[&ids[i]]);
            let len = f.file.len().map_err(|e| io_context("stat", &f.path, e))?;
            Ok(super::hint::read_into(self.storage, self.dir, id, buf)
                .and_then(|()| ShardedHint::decode(buf, id, len)))
        })
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
    ) -> Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let view = RecoveryView {
            sealed,
            current_id: u32::MAX,
            current: &[],
            current_path: &sealed[&first.id].path,
            base,
        };
        let entries: usize = batch.iter().map(|h| h.hint.hint.entries.len()).sum();
        let threads = if entries < PARALLEL_HINT_ENTRIES {
            1
        } else {
            threads
        };
        let mut tallies = vec![Tally::new(); batch.len()];
        for shard in parallel(
            SHARDS,
            threads,
            || (),
            |(), shard| apply_shard(batch, shard, &view, self.apply),
        ) {
            for (t, s) in tallies.iter_mut().zip(shard?) {
                *t = t.merge(s);
            }
        }
        for (h, tally) in batch.drain(..).zip(tallies) {
            let header = &h.hint.hint.header;
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
            let hint_bytes = (HINT_HEADER_LEN + h.hint.hint.entries.len() * HINT_ENTRY_LEN) as u64;
            self.metas.set_hinted(h.id, hint_bytes);
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
        let mut hint = (!is_last).then(super::hint::Builder::default);
        let rules = (is_last, header.has_sync_marks());
        let end = scan(path, id, &bytes, rules, next_seq, report, |loc, entry| {
            let rec = match entry {
                Decoded::Record(rec) => rec,
                Decoded::SyncMark(mark) => {
                    tally.add_sync_mark();
                    if let Some(hint) = &mut hint {
                        hint.sync_mark(mark);
                    }
                    return Ok(());
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
            tally.add(r.len, r.time_a_ms, (self.apply)(&r, &view)?);
            if let Some(hint) = &mut hint {
                hint.add(loc.offset, rec);
            }
            Ok(())
        })?;
        tally.into_meta(&self.metas.get_or_insert(id));
        let hint = hint.map(|h| h.finish(id, bytes.len() as u64));

        if end < bytes.len() {
            debug_assert!(is_last, "only a stream's last segment may have a torn tail");
            file.set_len(end as u64)
                .map_err(|e| io_context("truncate", path, e))?;
            file.sync_data().map_err(|e| io_context("fsync", path, e))?;
            report.torn_tail_bytes += (bytes.len() - end) as u64;
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
            for (&id, hint) in chunk.iter().zip(self.read_hints(chunk, workers)) {
                self.map_sealed(id, sealed)?;
                if let Some(hint) = hint? {
                    let first_seq = self.found[&id].header.first_seq;
                    next_seq = next_seq.max(first_seq).max(hint.hint.header.last_seq + 1);
                    batch.push(Hinted {
                        id,
                        len: hint.hint.header.segment_len,
                        hint,
                    });
                    continue;
                }
                // Everything before this segment first, in log order.
                self.apply_batch(&mut batch, sealed, base, report, workers)?;
                let (_, hint) =
                    self.scan_segment(id, false, &mut next_seq, report, sealed, base)?;
                new_hints.push(hint.expect("a sealed segment gathers its hint"));
            }
            self.apply_batch(&mut batch, sealed, base, report, workers)?;
            start = end;
        }

        let (bytes, _) = self.scan_segment(last_id, true, &mut next_seq, report, sealed, base)?;
        let f = &self.found[&last_id];
        let active = Active {
            id: last_id,
            path: f.path.clone(),
            file: f.file.clone(),
            flushed: bytes.len(),
            dirty: false,
            // Open fsyncs the segment; the first append then writes a mark
            // attesting everything recovered.
            marked_len: SEGMENT_HEADER_LEN as u64,
            buf: bytes.into(),
            meta: self.metas.get_or_insert(last_id),
        };
        Ok(Some((active, next_seq)))
    }
}

/// Opens the log in `dir`, calling `apply` for every valid record: first the
/// claim stream's, then the main stream's, each stream's records of a key in
/// log order (records of different keys may come in any order).
pub(crate) fn recover(
    storage: Arc<dyn Storage>,
    dir: &Path,
    durability: Durability,
    segment_size: [usize; 2],
    metas: Arc<Metas>,
    reserve: impl FnOnce(usize),
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
        f.listed = super::hint::listed(&*storage, dir, id).unwrap_or(0);
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
    reserve(listed_in(&main_ids).max(listed_in(&claim_ids)));
    let replay = Replay {
        storage: &*storage,
        dir,
        found,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
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
        base.claims_active = Some((active.id, &active.buf, &active.path));
    }
    let main = replay.stream(&main_ids, &mut sealed, base, &mut report, &mut new_hints)?;
    for hint in &new_hints {
        // Best effort: without its hint a segment is scanned again at the
        // next open, or hinted by the next compaction.
        if let Ok(bytes) = super::hint::write(&*storage, dir, hint) {
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
            id,
            next_seq,
            stream,
            segment_size[stream as usize],
            metas.get_or_insert(id),
        )
    };
    let active = [start(Stream::Main, main)?, start(Stream::Claims, claims)?];
    // What open found in the active files may be only in the page cache (a
    // process that died before its fsync). Answers given from now on rest on
    // it, so it is made durable first; the first append to each then writes
    // a sync mark attesting it.
    for a in &active {
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
        durability,
        segment_size,
        metas.clone(),
        Opened {
            sealed,
            active,
            next_seq,
        },
    );
    Ok((log, report))
}

/// The segment's header, or `None` for a torn header on the last segment
/// (with `is_last`: the newest segment of all).
pub(super) fn check_header(
    path: &Path,
    id: u32,
    bytes: &[u8],
    is_last: bool,
    next_seq: u64,
) -> Result<Option<SegmentHeader>> {
    match SegmentHeader::decode(bytes) {
        decoded
            if is_last
                && is_damage(&decoded)
                && first_valid_record(bytes, 0, next_seq).is_none() =>
        {
            Ok(None)
        }
        decoded => checked(path, id, decoded).map(Some),
    }
}

/// Whether a header failed to decode for a reason other than its version:
/// damage, or a header never wholly written.
fn is_damage(decoded: &DecodedHeader) -> bool {
    matches!(decoded, Err(e) if !matches!(e, HeaderError::Version(_)))
}

/// The header of segment `id` at `path`, or the error open reports for it:
/// `IncompatibleFormat` for another version, `Corrupt` for damage or a
/// header naming another segment.
fn checked(path: &Path, id: u32, decoded: DecodedHeader) -> Result<SegmentHeader> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    match decoded {
        Ok(h) if h.segment_id != id => Err(corrupt(
            12,
            format!(
                "header names segment {} but the file name says {id}",
                h.segment_id
            ),
        )),
        Ok(h) => Ok(h),
        Err(HeaderError::Version(found)) => Err(Error::IncompatibleFormat {
            file: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(e) => Err(corrupt(0, e.reason())),
    }
}

/// Decodes every record and sync mark of one segment, returning the length
/// of its valid prefix (DESIGN.md §6).
///
/// A bad record in a sealed segment is `Corrupt`: rollover fsynced all of
/// it. In a stream's last segment it is a torn tail, cut here, unless the
/// segment proves that the bad bytes were fsynced: a valid sync mark after
/// them attesting a durable length past them (format version 3), or, in an
/// older segment without marks, any valid record after them.
pub(super) fn scan<'b>(
    path: &Path,
    id: u32,
    bytes: &'b [u8],
    (is_last, marks): (bool, bool),
    next_seq: &mut u64,
    report: &mut RecoveryReport,
    mut apply: impl FnMut(Loc, &Decoded<'b>) -> Result<()>,
) -> Result<usize> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: PathBuf::from(path),
        offset: offset as u64,
        reason,
    };
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let offset =
            u32::try_from(pos).map_err(|_| corrupt(pos, "segment is larger than 4 GiB".into()))?;
        match record::decode_any(&bytes[pos..]) {
            Ok((entry, len)) => {
                let seq = entry.seq();
                if seq < *next_seq {
                    return Err(corrupt(
                        pos,
                        format!(
                            "sequence number {seq} goes backwards (expected at least {next_seq})"
                        ),
                    ));
                }
                if let Decoded::SyncMark(mark) = &entry {
                    if !marks {
                        return Err(corrupt(
                            pos,
                            "a sync mark in a segment of a format version without them".into(),
                        ));
                    }
                    if mark.synced_len > pos as u64 {
                        return Err(corrupt(
                            pos,
                            format!(
                                "sync mark attests {} durable bytes, past its own position",
                                mark.synced_len
                            ),
                        ));
                    }
                } else {
                    report.records += 1;
                }
                *next_seq = seq + 1;
                apply(
                    Loc {
                        segment: id,
                        offset,
                    },
                    &entry,
                )?;
                pos += len;
            }
            Err(err) => {
                let reason = match err {
                    DecodeError::Truncated => "record is cut short".to_string(),
                    DecodeError::Invalid(why) => why.to_string(),
                };
                if !is_last {
                    return Err(corrupt(pos, format!("{reason} in a sealed segment")));
                }
                return match durable_past(bytes, pos, *next_seq, marks) {
                    Some(proof) => Err(corrupt(pos, format!("{reason}, {proof}"))),
                    None => Ok(pos),
                };
            }
        }
    }
    Ok(pos)
}

/// Why the bad bytes at `bad` of a stream's last segment lie in data that
/// was fsynced, if the segment proves it; `None` means they lie beyond
/// every durable length the segment attests: a torn tail.
///
/// With sync marks (format version 3): the proof is a valid mark after
/// `bad` (with a sequence number of at least `min_seq`, so it was written
/// after the records before `bad`) whose synced length passes `bad`. A mark
/// is written only after the fsync it attests returned, so its claim holds
/// even when the mark itself was never fsynced. Without marks (versions 1
/// and 2): any valid record after `bad`, the older, stricter rule.
pub(super) fn durable_past(bytes: &[u8], bad: usize, min_seq: u64, marks: bool) -> Option<String> {
    let mut from = bad + 1;
    while let Some(at) = first_valid_record(bytes, from, min_seq) {
        let (entry, len) = record::decode_any(&bytes[at..]).ok()?;
        match entry {
            _ if !marks => return Some(format!("and a valid record follows at byte {at}")),
            Decoded::SyncMark(m) if m.synced_len > bad as u64 && m.synced_len <= at as u64 => {
                return Some(format!(
                    "inside the first {} bytes that the sync mark at byte {at} attests were \
                     fsynced: damage to durable data, not a torn write",
                    m.synced_len
                ));
            }
            _ => from = at + len,
        }
    }
    None
}

/// Offset of the first position at or after `from` where a valid record
/// or sync mark decodes, if any. A record that belongs after the damage has a sequence
/// number of at least `min_seq`. There is no upper bound: the other stream's
/// records take sequence numbers too, so a stream's numbers can jump by any
/// amount. The header's cheap checks (tag, flags, lengths that fit) run
/// before the checksum, so garbage rarely costs a checksum.
pub(super) fn first_valid_record(bytes: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    (from..bytes.len()).find(|&p| {
        record::peek_header(&bytes[p..]).is_ok_and(|h| h.seq >= min_seq)
            && record::decode_any(&bytes[p..]).is_ok()
    })
}
