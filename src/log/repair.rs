//! Checking a closed store (`verify`) and salvaging a damaged one (`repair`).

use super::Loc;
use super::Stream;
use super::recovery::{
    RecoveryReport, check_header, durable_past, first_valid_record, last_of_stream, read_streams,
    scan, segment_ids,
};
use crate::error::{Error, Result, io_context};
use crate::format::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN, HintHeader, hint_file_name};
use crate::format::record::{self, Decoded};
use crate::format::segment::{HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::storage::{Storage, read_all, remove_if_exists};
use std::io;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

/// What [`verify`](crate::verify) found: a store whose every checksum holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Records whose checksum and sequence number checked out.
    pub records: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Bytes of torn tail at the end of each stream's last segment: writes
    /// that were never fsynced, cut short or partly lost by a crash, not
    /// damage (DESIGN.md §6). The next open cuts them.
    pub torn_tail_bytes: u64,
    /// Sync marks found: each attests how much of its segment an fsync had
    /// made durable.
    pub sync_marks: u64,
    /// Hint files that matched their segment byte for byte.
    pub hints: u64,
    /// Hint files that fail their own checks or describe another segment.
    /// Open ignores such a hint and scans the segment instead, so no record
    /// is at risk, but the bytes on disk are not what was written. (A hint
    /// that passes its checks yet disagrees with its segment would be
    /// trusted by open: that is `Corrupt`, not listed here.)
    pub damaged_hints: Vec<DamagedHint>,
}

/// A hint file that open would ignore (and rebuild), found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedHint {
    /// The hint file.
    pub file: PathBuf,
    /// The first byte that differs from the hint its segment calls for.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// What [`repair`](crate::repair) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Segment files checked.
    pub segments: u64,
    /// Records kept, in every file.
    pub records_kept: u64,
    /// Bytes of torn tails cut from the end of streams: writes that were
    /// never fsynced (DESIGN.md §6), so no acknowledged record was among
    /// them. Open would have cut them too.
    pub torn_tail_bytes: u64,
    /// The files that were rewritten to skip damage; empty if nothing but
    /// torn tails was found.
    pub repaired: Vec<RepairedFile>,
}

impl RepairReport {
    /// Records skipped in all repaired files.
    pub fn records_skipped(&self) -> u64 {
        self.repaired.iter().map(|f| f.records_skipped).sum()
    }

    /// Whether every record that was fsynced survived: nothing was skipped
    /// but torn tails (never fsynced) and rewritten segment headers. When
    /// this is false, the records in [`RepairedFile::skipped`] are lost.
    pub fn salvaged_everything(&self) -> bool {
        self.records_skipped() == 0
    }

    /// Bytes skipped in all repaired files.
    pub fn bytes_skipped(&self) -> u64 {
        self.repaired
            .iter()
            .flat_map(|f| &f.skipped)
            .map(|r| r.end - r.start)
            .sum()
    }
}

/// One damaged segment and what repair salvaged from it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairedFile {
    /// The segment file, now holding only records that check out.
    pub file: PathBuf,
    /// The untouched copy of the damaged file.
    pub backup: PathBuf,
    /// Byte ranges of the damaged file that were not kept: damage to data
    /// that had been fsynced, and the torn tail if there was one.
    pub skipped: Vec<Range<u64>>,
    /// Bytes of the torn tail cut from the end of the file (the last range
    /// of `skipped`), zero if it had none.
    pub torn_tail_bytes: u64,
    /// Records kept from this file.
    pub records_kept: u64,
    /// Records lost in the skipped ranges of damage (not the torn tail, and
    /// not a damaged segment header): those whose headers could still be
    /// walked, and at least one per range.
    pub records_skipped: u64,
    /// Whether the segment header was damaged and written anew.
    pub header_rewritten: bool,
}

/// Reads every segment and checks every header, checksum and sequence
/// number, and every hint file against its segment, without changing
/// anything.
pub(crate) fn verify(storage: &dyn Storage, dir: &Path) -> Result<VerifyReport> {
    walk(
        storage,
        dir,
        &mut |_, _, _| ControlFlow::Continue(()),
        &mut |_, _| {},
        true,
    )
}

/// Called with each record and sync mark a [`walk`] decodes: its file,
/// where it starts, the entry. `Break` ends the walk early (it then returns what it found
/// so far).
pub(crate) type OnRecord<'f> = dyn FnMut(&Path, Loc, &Decoded<'_>) -> ControlFlow<()> + 'f;

/// Called as a [`walk`] advances: bytes checked so far, bytes to check in all.
pub(crate) type OnProgress<'f> = dyn FnMut(u64, u64) + 'f;

/// Progress is reported at least every this many bytes within a segment.
const PROGRESS_STEP: u64 = 1 << 20;

/// The checks of [`verify`], handing every record to `on_record` in log
/// order and reporting progress in bytes; hint files are checked only if
/// `check_hints`.
pub(crate) fn walk(
    storage: &dyn Storage,
    dir: &Path,
    on_record: &mut OnRecord<'_>,
    on_progress: &mut OnProgress<'_>,
    check_hints: bool,
) -> Result<VerifyReport> {
    let ids = segment_ids(storage, dir)?;
    let hint_of = |id: u32| dir.join(hint_file_name(id));
    let mut total = 0u64;
    for &id in &ids {
        total += file_len(storage, &dir.join(segment_file_name(id)))?;
        if check_hints {
            total += file_len(storage, &hint_of(id))?;
        }
    }
    let mut done = 0u64;
    on_progress(done, total);
    let mut report = VerifyReport::default();
    let mut scanned = RecoveryReport::default();
    // Sequence numbers grow within each stream.
    let streams = read_streams(storage, dir, &ids)?;
    let lasts = last_of_stream(&streams);
    let mut next_seqs = [1u64; 2];
    let mut stopped = false;
    for (i, &id) in ids.iter().enumerate() {
        let is_last = lasts[i];
        let next_seq = &mut next_seqs[streams[i].unwrap_or(Stream::Main) as usize];
        let path = dir.join(segment_file_name(id));
        let bytes = read_segment(storage, &path)?;
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        total = total.max(done + bytes.len() as u64);
        let Some(header) = check_header(&path, id, &bytes, is_last, *next_seq)? else {
            report.torn_tail_bytes += bytes.len() as u64;
            done += bytes.len() as u64;
            on_progress(done, total);
            continue;
        };
        *next_seq = (*next_seq).max(header.first_seq);
        let mut reported = done;
        let scanned_to = scan(
            &path,
            id,
            &bytes,
            (is_last, header.has_sync_marks()),
            next_seq,
            &mut scanned,
            |loc, entry| {
                let at = done + u64::from(loc.offset);
                if at >= reported + PROGRESS_STEP {
                    reported = at;
                    on_progress(at, total);
                }
                if let Decoded::SyncMark(_) = entry {
                    report.sync_marks += 1;
                }
                match on_record(&path, loc, entry) {
                    ControlFlow::Continue(()) => Ok(()),
                    ControlFlow::Break(()) => {
                        stopped = true;
                        Err(Error::Io(io::ErrorKind::Interrupted.into()))
                    }
                }
            },
        );
        if stopped {
            break;
        }
        let end = scanned_to?;
        report.torn_tail_bytes += (bytes.len() - end) as u64;
        done += bytes.len() as u64;
        on_progress(done, total);
        if check_hints {
            let hint = hint_of(id);
            let Some(hint_bytes) = read_if_exists(storage, &hint)? else {
                continue;
            };
            total = total.max(done + hint_bytes.len() as u64);
            match check_hint(&path, id, &bytes[..end], &hint, &hint_bytes, is_last)? {
                None => report.hints += 1,
                Some(damaged) => report.damaged_hints.push(damaged),
            }
            done += hint_bytes.len() as u64;
            on_progress(done, total);
        }
    }
    report.records = scanned.records;
    Ok(report)
}

/// The checksum fields of a hint header (`entries_crc`, `crc`; DESIGN.md §3b).
const HINT_CHECKSUMS: [Range<usize>; 2] = [52..56, 60..64];

/// Compares a hint file with the hint its segment calls for. `None` if they
/// match byte for byte; a hint open would ignore is returned as damaged; a
/// hint open would trust that disagrees with its segment is `Corrupt`.
fn check_hint(
    seg_path: &Path,
    id: u32,
    seg: &[u8],
    path: &Path,
    found: &[u8],
    is_last: bool,
) -> Result<Option<DamagedHint>> {
    let expected = super::hint::build(id, seg_path, seg)?.encode();
    if found == expected.as_slice() {
        return Ok(None);
    }
    let offset = found
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(found.len().min(expected.len()));
    let seg_len = seg.len() as u64;
    if !is_last && super::hint::decode(found, id, seg_len).is_some() {
        // Its checksums hold, so they differ only because what they cover
        // does: name the first byte of that.
        let offset = found
            .iter()
            .zip(&expected)
            .enumerate()
            .position(|(i, (a, b))| a != b && !HINT_CHECKSUMS.iter().any(|r| r.contains(&i)))
            .unwrap_or(offset);
        let what = if offset < HINT_HEADER_LEN {
            "its header".to_string()
        } else {
            format!("entry {}", (offset - HINT_HEADER_LEN) / HINT_ENTRY_LEN)
        };
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: format!(
                "the hint passes its checksums but {what} disagrees with its segment, so \
                 open would trust it; delete this hint file and it is rebuilt from the segment"
            ),
        });
    }
    let entry = offset.saturating_sub(HINT_HEADER_LEN) / HINT_ENTRY_LEN;
    let body = &found[HINT_HEADER_LEN.min(found.len())..];
    let reason = match HintHeader::decode(found) {
        _ if found.len() < HINT_HEADER_LEN => format!(
            "the hint is {} bytes, shorter than its {HINT_HEADER_LEN}-byte header",
            found.len()
        ),
        None => "the hint header fails its checks (magic, version or checksum)".to_string(),
        Some(h) if h.segment_id != id => format!("the hint names segment {}", h.segment_id),
        Some(h) if h.segment_len != seg_len => format!(
            "the hint describes a segment of {} bytes; the segment has {seg_len}",
            h.segment_len
        ),
        Some(_) if is_last => "the newest segment has a hint, which open never reads".to_string(),
        Some(h) if body.len() as u64 != u64::from(h.count) * HINT_ENTRY_LEN as u64 => format!(
            "the hint holds {} bytes of entries, not the {} its header counts",
            body.len(),
            h.count
        ),
        Some(h) if crc32fast::hash(body) != h.entries_crc => {
            format!("hint entry {entry} is damaged (the entries checksum fails)")
        }
        Some(_) => "the hint disagrees with its segment".to_string(),
    };
    Ok(Some(DamagedHint {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }))
}

fn file_len(storage: &dyn Storage, path: &Path) -> Result<u64> {
    match storage.open(path) {
        Ok(file) => file.len().map_err(|e| io_context("stat", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_context("open", path, e)),
    }
}

fn read_if_exists(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match storage.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_context("open", path, e)),
    };
    read_all(&*file)
        .map(Some)
        .map_err(|e| io_context("read", path, e))
}

/// Rewrites every damaged segment with the records that check out, keeping
/// a copy of the damaged file beside it, and cuts each stream's torn tail,
/// so that every stream is again a prefix of what was written.
pub(crate) fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
    remove_leftovers(storage, dir)?;
    let ids = segment_ids(storage, dir)?;
    let lasts = last_of_stream(&read_streams(storage, dir, &ids)?);
    let mut report = RepairReport::default();
    // Sequence numbers grow within each stream.
    let mut next_seqs = [1u64; 2];
    for (&id, &is_last) in ids.iter().zip(&lasts) {
        let path = dir.join(segment_file_name(id));
        let bytes = read_segment(storage, &path)?;
        report.segments += 1;
        let salvage = salvage(&path, id, &bytes, &mut next_seqs, is_last)?;
        report.records_kept += salvage.records_kept;
        let torn = salvage.torn.clone().map_or(0, |r| r.len());
        report.torn_tail_bytes += torn as u64;
        if salvage.skipped.is_empty() && !salvage.header_rewritten {
            if torn > 0 {
                cut_torn_tail(storage, &path, salvage.contents.len())?;
            }
            continue;
        }
        let backup = write_backup(storage, dir, &path, &bytes)?;
        // The hint describes the damaged file; open rebuilds it.
        let hint = dir.join(hint_file_name(id));
        remove_if_exists(storage, &hint).map_err(|e| io_context("remove", &hint, e))?;
        replace(storage, dir, &path, &salvage.contents)?;
        report.repaired.push(RepairedFile {
            file: path,
            backup,
            skipped: salvage
                .skipped
                .iter()
                .chain(&salvage.torn)
                .map(|r| r.start as u64..r.end as u64)
                .collect(),
            torn_tail_bytes: torn as u64,
            records_kept: salvage.records_kept,
            records_skipped: salvage
                .skipped
                .iter()
                .filter(|r| r.start >= SEGMENT_HEADER_LEN)
                .map(|r| records_in(&bytes[r.clone()]))
                .sum(),
            header_rewritten: salvage.header_rewritten,
        });
    }
    Ok(report)
}

/// Cuts a stream's torn tail where open would: truncate, then fsync.
fn cut_torn_tail(storage: &dyn Storage, path: &Path, len: usize) -> Result<()> {
    let file = storage
        .open(path)
        .map_err(|e| io_context("open", path, e))?;
    file.set_len(len as u64)
        .map_err(|e| io_context("truncate", path, e))?;
    file.sync_data().map_err(|e| io_context("fsync", path, e))
}

fn read_segment(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage
        .open(path)
        .map_err(|e| io_context("open", path, e))?;
    read_all(&*file).map_err(|e| io_context("read", path, e))
}

struct Salvage {
    contents: Vec<u8>,
    /// Damaged ranges skipped (a damaged header's included).
    skipped: Vec<Range<usize>>,
    /// The torn tail cut from a stream's last segment.
    torn: Option<Range<usize>>,
    records_kept: u64,
    header_rewritten: bool,
}

/// Walks a segment keeping every record whose checksum holds and whose
/// sequence number continues its stream, skipping from each bad byte to the
/// next record that checks out, except that in a stream's last segment bad
/// bytes that the segment does not prove durable are a torn tail: they and
/// everything after them are cut, as open would (DESIGN.md §6). A header
/// that does not decode is rewritten; its stream is then the one the
/// records call for, and the torn-tail rule is the older one (any valid
/// record after the bad bytes proves them durable), as the segment's
/// version is unknown.
fn salvage(
    path: &Path,
    id: u32,
    bytes: &[u8],
    next_seqs: &mut [u64; 2],
    is_last: bool,
) -> Result<Salvage> {
    let header = match SegmentHeader::decode(bytes) {
        Ok(h) if h.segment_id == id => Some(h),
        Err(HeaderError::Version(found)) => {
            return Err(Error::IncompatibleFormat {
                file: path.to_path_buf(),
                found,
                supported: crate::format::FORMAT_VERSION,
            });
        }
        _ => None,
    };
    let mut skipped = Vec::new();
    let pos_after_header = SEGMENT_HEADER_LEN.min(bytes.len());
    let stream = header.map_or_else(|| stream_of_records(bytes), |h| h.stream);
    let marks = header.is_some_and(|h| h.has_sync_marks());
    let next_seq = &mut next_seqs[stream as usize];
    let mut contents = match header {
        Some(h) => {
            *next_seq = (*next_seq).max(h.first_seq);
            h.encode().to_vec()
        }
        None => {
            skipped.push(0..pos_after_header);
            SegmentHeader::new(id, *next_seq, stream).encode().to_vec()
        }
    };
    let mut pos = pos_after_header;
    let mut records_kept = 0;
    let mut torn = None;
    while pos < bytes.len() {
        match record::decode_any(&bytes[pos..]) {
            Ok((entry, len)) if entry.seq() >= *next_seq => {
                match entry {
                    Decoded::Record(_) => {
                        contents.extend_from_slice(&bytes[pos..pos + len]);
                        records_kept += 1;
                    }
                    // A mark's durable length moves with the bytes skipped
                    // before it; the repaired file is fsynced whole.
                    Decoded::SyncMark(mark) => record::encode_sync_mark(
                        &mut contents,
                        &record::SyncMark {
                            synced_len: shifted(mark.synced_len, &skipped),
                            ..mark
                        },
                    ),
                }
                *next_seq = entry.seq() + 1;
                pos += len;
            }
            _ if is_last && durable_past(bytes, pos, *next_seq, marks).is_none() => {
                torn = Some(pos..bytes.len());
                break;
            }
            _ => {
                let resume = first_valid_record(bytes, pos + 1, *next_seq).unwrap_or(bytes.len());
                skipped.push(pos..resume);
                pos = resume;
            }
        }
    }
    skipped.retain(|r| !r.is_empty());
    Ok(Salvage {
        contents,
        skipped,
        torn,
        records_kept,
        header_rewritten: header.is_none(),
    })
}

/// Where byte `offset` of a damaged file lands once the `skipped` ranges
/// before it are left out (an offset inside a skipped range lands at its
/// start).
fn shifted(offset: u64, skipped: &[Range<usize>]) -> u64 {
    let removed: u64 = skipped
        .iter()
        .filter(|r| r.start as u64 >= SEGMENT_HEADER_LEN as u64 && (r.start as u64) < offset)
        .map(|r| (r.end as u64).min(offset) - r.start as u64)
        .sum();
    offset - removed
}

/// The stream of a segment whose header is lost: the claim stream if every
/// record that checks out is a claim (there is at least one), else main.
fn stream_of_records(bytes: &[u8]) -> Stream {
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut claims = false;
    while let Some(at) = first_valid_record(bytes, pos, 0) {
        let Ok((entry, len)) = record::decode_any(&bytes[at..]) else {
            break;
        };
        match entry {
            Decoded::Record(rec) if rec.tag != record::Tag::Claim => return Stream::Main,
            Decoded::Record(_) => claims = true,
            Decoded::SyncMark(_) => {}
        }
        pos = at + len;
    }
    if claims { Stream::Claims } else { Stream::Main }
}

/// Records in a damaged byte range: those whose headers chain from its
/// start, at least one.
fn records_in(range: &[u8]) -> u64 {
    let mut count = 0;
    let mut pos = 0;
    while pos < range.len() {
        count += 1;
        match record::peek_header(&range[pos..]) {
            Ok(h) => pos += h.len,
            Err(_) => break,
        }
    }
    count.max(1)
}

/// Temporary and backup names never parse as segment files.
const REPAIR_TMP_EXT: &str = "repair-tmp";
const BACKUP_EXT: &str = "damaged";

fn remove_leftovers(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let names = storage.list(dir).map_err(|e| io_context("list", dir, e))?;
    for name in names.iter().filter(|n| n.ends_with(REPAIR_TMP_EXT)) {
        let path = dir.join(name);
        storage
            .remove(&path)
            .map_err(|e| io_context("remove", &path, e))?;
    }
    Ok(())
}

/// Copies the damaged file to `NAME.damaged` (or `NAME.damaged.N` if that
/// exists) and makes the copy durable.
fn write_backup(storage: &dyn Storage, dir: &Path, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let names = storage.list(dir).map_err(|e| io_context("list", dir, e))?;
    let base = format!(
        "{}.{BACKUP_EXT}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment")
    );
    let name = (0u32..)
        .map(|n| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            }
        })
        .find(|candidate| !names.contains(candidate))
        .expect("an unused name exists");
    let backup = dir.join(name);
    write_durably(storage, &backup, bytes)?;
    Ok(backup)
}

/// Replaces `path` with `contents` atomically: write a temporary file,
/// fsync it, fsync the directory, rename it over `path`, fsync the directory.
fn replace(storage: &dyn Storage, dir: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("seg.{REPAIR_TMP_EXT}"));
    write_durably(storage, &tmp, contents)?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))?;
    storage
        .rename(&tmp, path)
        .map_err(|e| io_context("rename", &tmp, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))
}

fn write_durably(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    let file = storage
        .create(path)
        .map_err(|e| io_context("create", path, e))?;
    file.write_all_at(0, bytes)
        .map_err(|e| io_context("write", path, e))?;
    file.sync_data().map_err(|e| io_context("fsync", path, e))
}
