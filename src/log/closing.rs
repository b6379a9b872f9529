//! What closing a store does to the log after the closing sync and marks
//! (DESIGN.md §5b, "Closing"): deleting the claim stream's active segment
//! when nothing needs it any more, so the next open neither reads it nor
//! orders its claims against the completes that ended them.

use super::{Log, SegmentRecord, hint_files};
use crate::durability::Stream;
use crate::error::{Result, io_context};
use crate::format::hint::hint_file_name;
use crate::format::record::Decoded;
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::loc::{Loc, seg_u32};
use crate::storage::remove_if_exists;

/// The claim stream's active segment as closing sees it.
pub(crate) struct ClosingClaims {
    id: u32,
    /// Its length when it was looked at.
    len: usize,
    /// The records that may be their key's latest.
    pub records: Vec<SegmentRecord>,
}

impl Log {
    /// The claim stream's active segment, if it may be deleted at close
    /// once no index entry points into it: it is the only segment of its
    /// stream, it holds at least one record, and every record in it has a
    /// lower sequence number than the last record or mark the main stream
    /// got since open, so the sequence numbers (and so generations) an open
    /// finds without it still rise past every claim it held. Only once the
    /// closing sync and marks are written, with nothing appended since.
    pub(crate) fn closing_claims(&self) -> Result<Option<ClosingClaims>> {
        // A header that does not decode counts as a claim segment: keep.
        let other_claim_segment = self.segments.read().sealed.values().any(|s| {
            let bytes = (*s.bytes).as_ref();
            let header = SegmentHeader::decode(bytes.get(..SEGMENT_HEADER_LEN).unwrap_or(&[]));
            !matches!(header, Ok(h) if h.stream == Stream::Main)
        });
        if other_claim_segment {
            return Ok(None);
        }
        let w = self.writer.lock();
        let a = &w.active[Stream::Claims];
        let main_last = w.active[Stream::Main].last_seq;
        let mut records = Vec::new();
        let mut max_seq = 0;
        let mut pos = SEGMENT_HEADER_LEN;
        let bytes: &[u8] = &a.buf;
        while pos < bytes.len() {
            let offset = seg_u32(pos);
            let (entry, len) = super::decode_any_at(&a.path, bytes, offset)?;
            if let Decoded::Record(rec) = entry {
                max_seq = max_seq.max(rec.seq);
                records.push(SegmentRecord {
                    hash: crate::key::key_hash(rec.key),
                    loc: Loc {
                        segment: a.id,
                        offset,
                    },
                    len: seg_u32(len),
                });
            }
            pos += len;
        }
        let deletable = !records.is_empty() && max_seq < main_last;
        Ok(deletable.then_some(ClosingClaims {
            id: a.id,
            len: bytes.len(),
            records,
        }))
    }

    /// Deletes the claim stream's active segment `claims` described (its
    /// hint file first, if one is there), and fsyncs the directory; the
    /// next open gives the stream a new segment. Does nothing if the
    /// segment changed since. The caller has checked that no index entry
    /// points into it, and everything that superseded its claims is
    /// durable (the closing sync). Returns whether it was deleted.
    pub(crate) fn remove_closing_claims(&self, claims: &ClosingClaims) -> Result<bool> {
        let w = self.writer.lock();
        let a = &w.active[Stream::Claims];
        if a.id != claims.id || a.buf.len() != claims.len || a.flushed != a.buf.len() {
            return Ok(false);
        }
        let hint = self.dir.join(hint_file_name(a.id));
        remove_if_exists(&*self.storage, &hint).map_err(|e| io_context("remove", &hint, e))?;
        self.storage
            .remove(&a.path)
            .map_err(|e| io_context("remove", &a.path, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io_context("fsync directory", &self.dir, e))?;
        self.metas.remove(a.id);
        Ok(true)
    }

    /// Writes the hint of each stream's active segment as it stands after
    /// the closing sync and marks (`claims_deleted`: the claim stream's
    /// segment was deleted and gets none), so the next open reads the
    /// segment's bytes without decoding them. The hint describes exactly
    /// the segment's durable bytes: open uses it only while the file has
    /// that length (DESIGN.md §6, "The last segment's hint"). Not marked as
    /// the segment's hint: once more is appended and the segment is
    /// sealed, its hint is written anew.
    pub(crate) fn write_active_hints(&self, claims_deleted: bool) -> Result<()> {
        let w = self.writer.lock();
        for (s, a) in w.active.iter() {
            if (s == Stream::Claims && claims_deleted) || a.dirty || a.flushed != a.buf.len() {
                continue;
            }
            let hint = hint_files::build(a.id, &a.path, &a.buf)?;
            hint_files::write(&*self.storage, &self.dir, &hint)?;
        }
        Ok(())
    }
}
