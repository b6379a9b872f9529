//! `verify`: read every segment and hint file of a closed store and check
//! every header, checksum, sequence number and hint, changing nothing. The
//! `dump` of the inspect tool walks the same way.

use super::read_segment;
use crate::durability::{PerStream, Stream};
use crate::error::{Error, Result, io_context};
use crate::format::hint::{
    CHECKSUM_FIELDS, HINT_ENTRY_LEN, HINT_HEADER_LEN, HintHeader, hint_file_name,
};
use crate::format::record::Decoded;
use crate::format::segment::segment_file_name;
use crate::loc::Loc;
use crate::log::hint_files;
use crate::log::scan::{check_header, last_of_stream, read_streams, scan, segment_ids, torn_end};
use crate::reports::{DamagedHint, VerifyReport};
use crate::storage::{Storage, read_all};
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

/// Reads every segment and checks every header, checksum and sequence
/// number, and every hint file against its segment, without changing
/// anything.
/// `progress(done, total)` hears of the bytes checked so far and in all.
pub(crate) fn verify(
    storage: &dyn Storage,
    dir: &Path,
    progress: &mut OnProgress<'_>,
) -> Result<VerifyReport> {
    walk(
        storage,
        dir,
        &mut |_, _, _| ControlFlow::Continue(()),
        progress,
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
    // Sequence numbers grow within each stream.
    let streams = read_streams(storage, dir, &ids)?;
    let lasts = last_of_stream(&streams);
    let mut next_seqs = PerStream([1u64; 2]);
    for (i, &id) in ids.iter().enumerate() {
        let is_last = lasts[i];
        let next_seq = &mut next_seqs[streams[i].unwrap_or(Stream::Main)];
        let path = dir.join(segment_file_name(id));
        let bytes = read_segment(storage, &path)?;
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        total = total.max(done + bytes.len() as u64);
        let Some(header) = check_header(&path, id, &bytes, is_last, *next_seq)? else {
            report.torn_tail_bytes += torn_end(&bytes, 0) as u64;
            done += bytes.len() as u64;
            on_progress(done, total);
            continue;
        };
        *next_seq = (*next_seq).max(header.first_seq);
        let mut reported = done;
        let mut marks = 0;
        let scanned = scan(
            &path,
            id,
            &bytes,
            (is_last, header.has_sync_marks()),
            next_seq,
            &mut report.records,
            |loc, entry| {
                let at = done + u64::from(loc.offset);
                if at >= reported + PROGRESS_STEP {
                    reported = at;
                    on_progress(at, total);
                }
                if let Decoded::SyncMark(_) = entry {
                    marks += 1;
                }
                Ok(on_record(&path, loc, entry))
            },
        )?;
        report.sync_marks += marks;
        let ControlFlow::Continue(end) = scanned else {
            break;
        };
        report.torn_tail_bytes += (torn_end(&bytes, end) - end) as u64;
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
    Ok(report)
}

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
    let expected = hint_files::build(id, seg_path, seg)?.encode();
    if found == expected.as_slice() {
        return Ok(None);
    }
    let offset = found
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(found.len().min(expected.len()));
    let seg_len = seg.len() as u64;
    if !is_last && hint_files::decode(found, id, seg_len).is_some() {
        // Its checksums hold, so they differ only because what they cover
        // does: name the first byte of that.
        let offset = found
            .iter()
            .zip(&expected)
            .enumerate()
            .position(|(i, (a, b))| a != b && !CHECKSUM_FIELDS.iter().any(|r| r.contains(&i)))
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
