//! Checking a closed store (`verify`) and salvaging a damaged one (`repair`).

use super::recovery::{RecoveryReport, check_header, first_valid_record, scan, segment_ids};
use crate::error::{Error, Result, io_context};
use crate::format::record::{self, DecodeError};
use crate::format::segment::{HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::storage::{Storage, read_all, remove_if_exists};
use std::ops::Range;
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
    /// Bytes of torn tail at the end of the last segment (a crash mid-write,
    /// not damage); the next open cuts them.
    pub torn_tail_bytes: u64,
}

/// What [`repair`](crate::repair) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Segment files checked.
    pub segments: u64,
    /// Records kept, in every file.
    pub records_kept: u64,
    /// The files that were rewritten; empty if the store was sound.
    pub repaired: Vec<RepairedFile>,
}

impl RepairReport {
    /// Records skipped in all repaired files.
    pub fn records_skipped(&self) -> u64 {
        self.repaired.iter().map(|f| f.records_skipped).sum()
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
    /// Byte ranges of the damaged file that were not kept.
    pub skipped: Vec<Range<u64>>,
    /// Records kept from this file.
    pub records_kept: u64,
    /// Records lost in the skipped ranges: those whose headers could still be
    /// walked, and at least one per range.
    pub records_skipped: u64,
    /// Whether the segment header was damaged and written anew.
    pub header_rewritten: bool,
}

/// Reads every segment and checks every header, checksum and sequence
/// number without changing anything.
pub(crate) fn verify(storage: &dyn Storage, dir: &Path) -> Result<VerifyReport> {
    let ids = segment_ids(storage, dir)?;
    let mut report = VerifyReport::default();
    let mut scanned = RecoveryReport::default();
    let mut next_seq = 1u64;
    for (i, &id) in ids.iter().enumerate() {
        let is_last = i + 1 == ids.len();
        let path = dir.join(segment_file_name(id));
        let bytes = read_segment(storage, &path)?;
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        let Some(first_seq) = check_header(&path, id, &bytes, is_last, next_seq)? else {
            report.torn_tail_bytes += bytes.len() as u64;
            continue;
        };
        next_seq = next_seq.max(first_seq);
        let end = scan(
            &path,
            id,
            &bytes,
            is_last,
            &mut next_seq,
            &mut scanned,
            |_, _| Ok(()),
        )?;
        report.torn_tail_bytes += (bytes.len() - end) as u64;
    }
    report.records = scanned.records;
    Ok(report)
}

/// Rewrites every damaged segment with the records that check out, keeping
/// a copy of the damaged file beside it.
pub(crate) fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
    remove_leftovers(storage, dir)?;
    let ids = segment_ids(storage, dir)?;
    let mut report = RepairReport::default();
    let mut next_seq = 1u64;
    for &id in &ids {
        let path = dir.join(segment_file_name(id));
        let bytes = read_segment(storage, &path)?;
        report.segments += 1;
        let salvage = salvage(&path, id, &bytes, &mut next_seq)?;
        report.records_kept += salvage.records_kept;
        if salvage.skipped.is_empty() && !salvage.header_rewritten {
            continue;
        }
        let backup = write_backup(storage, dir, &path, &bytes)?;
        // The hint describes the damaged file; open rebuilds it.
        let hint = dir.join(crate::format::hint::hint_file_name(id));
        remove_if_exists(storage, &hint).map_err(|e| io_context("remove", &hint, e))?;
        replace(storage, dir, &path, &salvage.contents)?;
        report.repaired.push(RepairedFile {
            file: path,
            backup,
            skipped: salvage
                .skipped
                .iter()
                .map(|r| r.start as u64..r.end as u64)
                .collect(),
            records_kept: salvage.records_kept,
            records_skipped: salvage
                .skipped
                .iter()
                .map(|r| records_in(&bytes[r.clone()]))
                .sum(),
            header_rewritten: salvage.header_rewritten,
        });
    }
    Ok(report)
}

fn read_segment(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage
        .open(path)
        .map_err(|e| io_context("open", path, e))?;
    read_all(&*file).map_err(|e| io_context("read", path, e))
}

struct Salvage {
    contents: Vec<u8>,
    skipped: Vec<Range<usize>>,
    records_kept: u64,
    header_rewritten: bool,
}

/// Walks a segment keeping every record whose checksum holds and whose
/// sequence number continues the log, skipping from each bad byte to the
/// next record that checks out.
fn salvage(path: &Path, id: u32, bytes: &[u8], next_seq: &mut u64) -> Result<Salvage> {
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
    let contents = match header {
        Some(h) => {
            *next_seq = (*next_seq).max(h.first_seq);
            h.encode().to_vec()
        }
        None => {
            skipped.push(0..pos_after_header);
            SegmentHeader {
                segment_id: id,
                first_seq: *next_seq,
            }
            .encode()
            .to_vec()
        }
    };
    let mut contents = contents;
    let mut pos = pos_after_header;
    let mut records_kept = 0;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Ok((rec, len)) if rec.seq >= *next_seq => {
                contents.extend_from_slice(&bytes[pos..pos + len]);
                *next_seq = rec.seq + 1;
                records_kept += 1;
                pos += len;
            }
            Ok(_) | Err(DecodeError::Truncated | DecodeError::Invalid(_)) => {
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
        records_kept,
        header_rewritten: header.is_none(),
    })
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
