//! `repair`: salvage a damaged, closed store (DESIGN.md §8, "Verify and
//! repair").

use super::read_segment;
use crate::durability::{PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::hint::hint_file_name;
use crate::format::record::{self, Decoded};
use crate::format::segment::{HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::log::scan::{
    durable_past, first_valid_record, last_of_stream, read_streams, segment_ids, torn_end,
};
use crate::reports::{RepairReport, RepairedFile};
use crate::storage::{Storage, remove_if_exists, replace_durably, write_new_durably};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Rewrites every damaged segment with the records that check out, keeping
/// a copy of the damaged file beside it, and cuts each stream's torn tail,
/// so that every stream is again a prefix of what was written.
pub(crate) fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
    remove_leftovers(storage, dir)?;
    let ids = segment_ids(storage, dir)?;
    let lasts = last_of_stream(&read_streams(storage, dir, &ids)?);
    let mut report = RepairReport::default();
    // Sequence numbers grow within each stream.
    let mut next_seqs = PerStream([1u64; 2]);
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
    next_seqs: &mut PerStream<u64>,
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
    let next_seq = &mut next_seqs[stream];
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
                torn = Some(pos..torn_end(bytes, pos));
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
        .ok_or_else(|| {
            Error::Io(std::io::Error::other(format!(
                "no free name for a backup copy of {}; remove old {BACKUP_EXT} copies",
                path.display()
            )))
        })?;
    let backup = dir.join(name);
    write_new_durably(storage, &backup, bytes)?;
    Ok(backup)
}

/// Replaces `path` with `contents` atomically (`storage::replace_durably`).
fn replace(storage: &dyn Storage, dir: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("seg.{REPAIR_TMP_EXT}"));
    replace_durably(storage, dir, &tmp, path, contents)
}
