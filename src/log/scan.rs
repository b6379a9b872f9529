//! Reading segment files without trusting them: the directory listing,
//! headers, and the record-by-record scan that tells a torn tail from
//! damage (DESIGN.md §6). Open, `verify`, `dump` and `repair` all read
//! segments through here.

use crate::durability::Stream;
use crate::error::{Error, Result, io_context};
use crate::format::FORMAT_VERSION;
use crate::format::record::{self, DecodeError, Decoded};
use crate::format::segment::{
    HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::loc::Loc;
use crate::storage::{Storage, StorageFile};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ids of the segment files in `dir`, oldest first.
pub(crate) fn segment_ids(storage: &dyn Storage, dir: &Path) -> Result<Vec<u32>> {
    let names = storage.list(dir).map_err(|e| io_context("list", dir, e))?;
    let mut ids: Vec<u32> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A decoded segment header, or why it did not decode.
type DecodedHeader = std::result::Result<SegmentHeader, HeaderError>;

/// Opens segment `id` and decodes its header, reading those 32 bytes only.
pub(crate) fn read_header(
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
pub(crate) fn read_streams(
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
pub(crate) fn last_of_stream(streams: &[Option<Stream>]) -> Vec<bool> {
    (0..streams.len())
        .map(|i| match streams[i] {
            None => i + 1 == streams.len(),
            Some(s) => !streams[i + 1..].contains(&Some(s)),
        })
        .collect()
}

/// The segment's header, or `None` for a torn header on the last segment
/// (with `is_last`: the newest segment of all).
pub(crate) fn check_header(
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
pub(crate) fn is_damage(decoded: &DecodedHeader) -> bool {
    matches!(decoded, Err(e) if !matches!(e, HeaderError::Version(_)))
}

/// The header of segment `id` at `path`, or the error open reports for it:
/// `IncompatibleFormat` for another version, `Corrupt` for damage or a
/// header naming another segment.
pub(crate) fn checked(path: &Path, id: u32, decoded: DecodedHeader) -> Result<SegmentHeader> {
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
///
/// `apply` gets every valid record and mark in order; it can end the scan
/// early with `Break`, and the scan then returns `Break` too. Otherwise it
/// returns where the valid prefix ends. `records` counts the key records.
pub(crate) fn scan<'b>(
    path: &Path,
    id: u32,
    bytes: &'b [u8],
    (is_last, marks): (bool, bool),
    next_seq: &mut u64,
    records: &mut u64,
    mut apply: impl FnMut(Loc, &Decoded<'b>) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<(), usize>> {
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
                    *records += 1;
                }
                *next_seq = seq + 1;
                let at = Loc {
                    segment: id,
                    offset,
                };
                if apply(at, &entry)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
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
                    None => Ok(ControlFlow::Continue(pos)),
                };
            }
        }
    }
    Ok(ControlFlow::Continue(pos))
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
pub(crate) fn durable_past(bytes: &[u8], bad: usize, min_seq: u64, marks: bool) -> Option<String> {
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

/// Where the bytes that are not zeros end, at or after `end`: a stream's
/// last segment may be preallocated, and the zeros past its valid prefix
/// are space never written, not a torn tail.
pub(crate) fn torn_end(bytes: &[u8], end: usize) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(end, |last| (last + 1).max(end))
}

/// Offset of the first position at or after `from` where a valid record
/// or sync mark decodes, if any. A record that belongs after the damage has a sequence
/// number of at least `min_seq`. There is no upper bound: the other stream's
/// records take sequence numbers too, so a stream's numbers can jump by any
/// amount. The header's cheap checks (tag, flags, lengths that fit) run
/// before the checksum, so garbage rarely costs a checksum.
pub(crate) fn first_valid_record(bytes: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let mut p = from;
    while p < bytes.len() {
        // No record has a zero tag: skip to the next position whose tag
        // byte is not zero (long runs of preallocated zeros cost a scan).
        let tag_at = p.checked_add(record::TAG_OFFSET)?;
        p += bytes.get(tag_at..)?.iter().position(|&b| b != 0)?;
        if record::peek_header(&bytes[p..]).is_ok_and(|h| h.seq >= min_seq)
            && record::decode_any(&bytes[p..]).is_ok()
        {
            return Some(p);
        }
        p += 1;
    }
    None
}
