//! Opening the log: scan every segment in order, hand each record to the
//! caller (who rebuilds the index), cut a torn tail, refuse real corruption.
//!
//! | found on disk | what open does |
//! |---|---|
//! | no segment files | creates segment 1 |
//! | bad record in a sealed (not last) segment | `Corrupt` |
//! | bad or incomplete record at the end of the last segment, nothing valid after it | truncates there, fsyncs, counts the bytes |
//! | bad record in the last segment with a valid record after it | `Corrupt` |
//! | last segment with a bad header and no valid record after it (crash during rollover) | rewrites the header |
//! | header with a valid checksum and another version | `IncompatibleFormat` |

use super::{Active, Loc, Log, Metas, Opened, Sealed, SegMeta, create_segment};
use crate::error::{Error, Result, io_context};
use crate::format::FORMAT_VERSION;
use crate::format::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN};
use crate::format::record::{self, DecodeError, RecordRef, Tag};
use crate::format::segment::{
    HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::options::Durability;
use crate::storage::{Storage, read_all};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Hints with at least this many entries are applied by two threads; for
/// smaller ones a thread costs more than it saves.
const PARALLEL_HINT_ENTRIES: usize = 4096;

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
/// key) or from a hint file (without: the key is read only if a hash
/// matches another entry's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovered<'a> {
    pub loc: Loc,
    pub hash: u64,
    pub tag: Tag,
    pub time_a_ms: u64,
    pub time_b_ms: u64,
    pub len: u32,
    pub key: Option<&'a [u8]>,
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
        }
    }
}

/// Read access to the records recovered so far, for key comparisons while
/// the index is rebuilt.
pub(crate) struct RecoveryView<'a> {
    sealed: &'a BTreeMap<u32, Sealed>,
    current_id: u32,
    current: &'a [u8],
    current_path: &'a Path,
}

impl<'a> RecoveryView<'a> {
    /// Runs `f` on the already-recovered record at `loc`.
    pub(crate) fn read<R>(&self, loc: Loc, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        self.record(loc).map(f)
    }

    /// The already-recovered record at `loc`.
    pub(crate) fn record(&self, loc: Loc) -> Result<RecordRef<'a>> {
        let (path, bytes): (&Path, &[u8]) = if loc.segment == self.current_id {
            (self.current_path, self.current)
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
        };
        super::decode_at(path, bytes, loc)
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

/// Opens the log in `dir`, calling `apply` for every valid record in log order.
pub(crate) fn recover(
    storage: Arc<dyn Storage>,
    dir: &Path,
    durability: Durability,
    segment_size: usize,
    metas: Arc<Metas>,
    reserve: impl FnOnce(usize),
    apply: impl Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
) -> Result<(Log, RecoveryReport)> {
    let ids = segment_ids(&*storage, dir)?;
    remove_stale_hints(&*storage, dir, &ids)?;
    // Size the index once for the keys the hints list, rather than growing
    // it step by step while it fills.
    let hinted: usize = ids
        .iter()
        .filter_map(|&id| super::hint::listed(&*storage, dir, id))
        .sum();
    reserve(hinted);
    let mut report = RecoveryReport::default();
    // Hints of scanned sealed segments, written once the whole log checked
    // out: a failed open changes no file.
    let mut new_hints = Vec::new();
    let mut sealed = BTreeMap::new();
    let mut next_seq = 1u64;
    let finish = |sealed, active, next_seq| {
        let opened = Opened {
            sealed,
            active,
            next_seq,
        };
        Log::new(
            storage.clone(),
            dir.to_path_buf(),
            durability,
            segment_size,
            metas.clone(),
            opened,
        )
    };
    let Some(&last_id) = ids.last() else {
        let active = create_segment(
            &*storage,
            dir,
            1,
            next_seq,
            segment_size,
            metas.get_or_insert(1),
        )?;
        return Ok((finish(sealed, active, next_seq), report));
    };

    for &id in &ids {
        let is_last = id == last_id;
        let path = dir.join(segment_file_name(id));
        let file = storage
            .open(&path)
            .map_err(|e| io_context("open", &path, e))?;
        let meta = metas.get_or_insert(id);

        if !is_last {
            let len = file.len().map_err(|e| io_context("stat", &path, e))?;
            if let Some(hint) = super::hint::read(&*storage, dir, id, len) {
                let map = file.map().map_err(|e| io_context("map", &path, e))?;
                let first_seq = check_header(&path, id, (*map).as_ref(), false, next_seq)?
                    .expect("a sealed segment's header is checked strictly");
                next_seq = next_seq.max(first_seq).max(hint.header.last_seq + 1);
                sealed.insert(
                    id,
                    Sealed {
                        path: path.clone(),
                        bytes: map,
                    },
                );
                let view = RecoveryView {
                    sealed: &sealed,
                    current_id: u32::MAX,
                    current: &[],
                    current_path: &path,
                };
                // Two threads fill the index, each its own half of the
                // shards; each key's entries stay in log order.
                let apply_part = |part: usize| -> Result<Tally> {
                    let mut tally = Tally::new();
                    for e in hint
                        .entries
                        .iter()
                        .filter(|e| crate::index::shard_of(e.hash) % 2 == part)
                    {
                        let r = Recovered {
                            loc: Loc {
                                segment: id,
                                offset: e.offset,
                            },
                            hash: e.hash,
                            tag: e.tag,
                            time_a_ms: hint.header.first_ms,
                            time_b_ms: e.time_b_ms,
                            len: e.len,
                            key: None,
                        };
                        tally.add(e.len, hint.header.first_ms, apply(&r, &view)?);
                    }
                    Ok(tally)
                };
                let tally = if hint.entries.len() < PARALLEL_HINT_ENTRIES {
                    apply_part(0)?.merge(apply_part(1)?)
                } else {
                    std::thread::scope(|s| {
                        let other = s.spawn(|| apply_part(1));
                        let mine = apply_part(0);
                        let theirs = other
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        Ok::<_, Error>(mine?.merge(theirs?))
                    })?
                };
                // Records the hint leaves out were superseded in the segment.
                let unlisted = len
                    .saturating_sub(SEGMENT_HEADER_LEN as u64)
                    .saturating_sub(tally.bytes);
                Tally {
                    bytes: tally.bytes + unlisted,
                    dead: tally.dead + unlisted,
                    last_ms: hint.header.last_ms,
                    ..tally
                }
                .into_meta(&meta);
                let hint_bytes = (HINT_HEADER_LEN + hint.entries.len() * HINT_ENTRY_LEN) as u64;
                metas.set_hinted(id, hint_bytes);
                report.records += u64::from(hint.header.records);
                report.hinted_segments += 1;
                continue;
            }
        }

        // No usable hint (or the last segment): read and scan the segment.
        let mut bytes = read_all(&*file).map_err(|e| io_context("read", &path, e))?;
        let first_seq = match check_header(&path, id, &bytes, is_last, next_seq)? {
            Some(first_seq) => first_seq,
            None => {
                // Torn creation of the newest segment: nothing was ever
                // acknowledged in it, so start it again.
                file.set_len(0)
                    .map_err(|e| io_context("truncate", &path, e))?;
                let header = SegmentHeader {
                    segment_id: id,
                    first_seq: next_seq,
                }
                .encode();
                file.write_all_at(0, &header)
                    .map_err(|e| io_context("write", &path, e))?;
                file.sync_data()
                    .map_err(|e| io_context("fsync", &path, e))?;
                report.torn_tail_bytes += bytes.len() as u64;
                bytes = header.to_vec();
                next_seq
            }
        };
        next_seq = next_seq.max(first_seq);

        let mut tally = Tally::new();
        // A sealed segment's hint is gathered on the same pass.
        let mut hint = (!is_last).then(super::hint::Builder::default);
        let end = scan(
            &path,
            id,
            &bytes,
            is_last,
            &mut next_seq,
            &mut report,
            |loc, rec| {
                let view = RecoveryView {
                    sealed: &sealed,
                    current_id: id,
                    current: &bytes,
                    current_path: &path,
                };
                let r = Recovered::scanned(loc, rec);
                tally.add(r.len, r.time_a_ms, apply(&r, &view)?);
                if let Some(hint) = &mut hint {
                    hint.add(loc.offset, rec);
                }
                Ok(())
            },
        )?;
        tally.into_meta(&meta);
        let hint = hint.map(|h| h.finish(id, bytes.len() as u64));

        if end < bytes.len() {
            debug_assert!(is_last, "only the last segment may have a torn tail");
            file.set_len(end as u64)
                .map_err(|e| io_context("truncate", &path, e))?;
            file.sync_data()
                .map_err(|e| io_context("fsync", &path, e))?;
            report.torn_tail_bytes += (bytes.len() - end) as u64;
            bytes.truncate(end);
        }

        if is_last {
            for hint in &new_hints {
                // Best effort: without its hint a segment is scanned again
                // at the next open, or hinted by the next compaction.
                if let Ok(bytes) = super::hint::write(&*storage, dir, hint) {
                    metas.set_hinted(hint.header.segment_id, bytes);
                    report.hint_bytes_written += bytes;
                }
            }
            let active = Active {
                id,
                path,
                file,
                flushed: bytes.len(),
                buf: bytes,
                meta: metas.get_or_insert(id),
            };
            return Ok((finish(sealed, active, next_seq), report));
        }
        new_hints.push(hint.expect("a sealed segment gathers its hint"));
        drop(bytes);
        let map = file.map().map_err(|e| io_context("map", &path, e))?;
        sealed.insert(id, Sealed { path, bytes: map });
    }
    unreachable!("the loop returns at the last segment")
}

/// The header's `first_seq`, or `None` for a torn header on the last segment.
pub(super) fn check_header(
    path: &Path,
    id: u32,
    bytes: &[u8],
    is_last: bool,
    next_seq: u64,
) -> Result<Option<u64>> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    match SegmentHeader::decode(bytes) {
        Ok(h) if h.segment_id != id => Err(corrupt(
            12,
            format!(
                "header names segment {} but the file name says {id}",
                h.segment_id
            ),
        )),
        Ok(h) => Ok(Some(h.first_seq)),
        Err(HeaderError::Version(found)) => Err(Error::IncompatibleFormat {
            file: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(_) if is_last && first_valid_record(bytes, 0, next_seq).is_none() => Ok(None),
        Err(e) => Err(corrupt(0, e.reason())),
    }
}

/// Decodes every record of one segment, returning the length of its valid
/// prefix. A bad record is a torn tail only in the last segment and only if no
/// valid record follows it.
pub(super) fn scan<'b>(
    path: &Path,
    id: u32,
    bytes: &'b [u8],
    is_last: bool,
    next_seq: &mut u64,
    report: &mut RecoveryReport,
    mut apply: impl FnMut(Loc, &RecordRef<'b>) -> Result<()>,
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
        match record::decode(&bytes[pos..]) {
            Ok((rec, len)) => {
                if rec.seq < *next_seq {
                    return Err(corrupt(
                        pos,
                        format!(
                            "sequence number {} goes backwards (expected at least {})",
                            rec.seq, next_seq
                        ),
                    ));
                }
                *next_seq = rec.seq + 1;
                apply(
                    Loc {
                        segment: id,
                        offset,
                    },
                    &rec,
                )?;
                report.records += 1;
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
                if let Some(valid) = first_valid_record(bytes, pos + 1, *next_seq) {
                    return Err(corrupt(
                        pos,
                        format!("{reason}, and a valid record follows at byte {valid}"),
                    ));
                }
                return Ok(pos);
            }
        }
    }
    Ok(pos)
}

/// Offset of the first position at or after `from` where a valid record
/// decodes, if any. A record that belongs after the damage has a sequence
/// number of at least `min_seq` and below `min_seq` plus the number of
/// records that could fit; that cheap test runs before the checksum, so
/// scanning garbage costs linear time, not a checksum per position.
pub(super) fn first_valid_record(bytes: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let max_seq = min_seq.saturating_add((bytes.len() / record::RECORD_HEADER_LEN) as u64 + 1);
    (from..bytes.len()).find(|&p| {
        record::peek_header(&bytes[p..]).is_ok_and(|h| (min_seq..max_seq).contains(&h.seq))
            && record::decode(&bytes[p..]).is_ok()
    })
}
