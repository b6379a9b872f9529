//! What the index rebuild sees of the records recovered so far.

use crate::error::{Error, Result};
use crate::format::record::{self, RecordRef, Tag};
use crate::loc::{Loc, seg_u32};
use crate::log::Sealed;
use std::collections::BTreeMap;
use std::path::Path;

/// A record as recovery hands it to the index rebuild: from a scan (with its
/// key and sequence number) or from a hint file (without: they are read
/// only if needed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovered<'a> {
    pub loc: Loc,
    pub hash: u64,
    pub tag: Tag,
    pub since_ms: u64,
    pub until_ms: u64,
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

impl<'a> Recovered<'a> {
    pub(super) fn scanned(loc: Loc, rec: &RecordRef<'a>) -> Recovered<'a> {
        Recovered {
            loc,
            hash: crate::key::key_hash(rec.key),
            tag: rec.tag,
            since_ms: rec.since_ms,
            until_ms: rec.until_ms,
            len: seg_u32(record::encoded_len(rec.key.len(), rec.value.len())),
            key: Some(rec.key),
            seq: Some(rec.seq),
            generation: Some(rec.generation),
        }
    }
}

/// What every view of one open shares: the claim stream's segment ids, and
/// its active segment's bytes once it was scanned.
#[derive(Clone, Copy)]
pub(super) struct ViewBase<'a> {
    pub(super) claims: &'a [u32],
    pub(super) claims_active: Option<(u32, &'a [u8], &'a Path)>,
}

/// Read access to the records recovered so far, for key comparisons while
/// the index is rebuilt.
pub(crate) struct RecoveryView<'a> {
    pub(super) sealed: &'a BTreeMap<u32, Sealed>,
    pub(super) current_id: u32,
    pub(super) current: &'a [u8],
    pub(super) current_path: &'a Path,
    pub(super) base: ViewBase<'a>,
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
        crate::log::decode_at(path, bytes, loc)
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
