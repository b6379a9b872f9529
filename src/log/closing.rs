//! What closing a store does to the log after the closing sync and marks
//! (DESIGN.md §5b, "Closing"): the claim stream moved to a new, empty
//! segment and its active segment deleted when nothing needs it any more,
//! so the next open neither reads it nor orders its claims against the
//! completes that ended them; and the active segments' hints.

use super::segment_files::{NewSegment, create_segment};
use super::{Log, SegmentRecord, hint_files};
use crate::durability::Stream;
use crate::error::{Result, io_context};
use crate::format::hint::hint_file_name;
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::loc::MAX_SEGMENT_ID;
use crate::storage::remove_if_exists;
use std::sync::atomic::Ordering;

/// The claim stream's active segment as closing sees it.
pub(crate) struct ClosingClaims {
    id: u32,
    /// Its length when it was looked at.
    len: usize,
    /// Its records: whether an index entry points at one decides.
    pub records: Vec<SegmentRecord>,
}

impl Log {
    /// The claim stream's active segment and its records, if it holds any
    /// (an empty one has nothing to save). Only once the closing sync and
    /// marks are written, with nothing appended since.
    pub(crate) fn closing_claims(&self) -> Result<Option<ClosingClaims>> {
        let st = &self.streams[Stream::Claims];
        let _flush = st.flush.lock();
        // SAFETY: the write-out lock is held, so no rollover swaps it.
        let a = unsafe { &*st.active.load(Ordering::Acquire) };
        let bytes: &[u8] = a.buf.bytes();
        let records = super::scan_records(a.id, &a.path, bytes)?;
        Ok((!records.is_empty()).then_some(ClosingClaims {
            id: a.id,
            len: bytes.len(),
            records,
        }))
    }

    /// Moves the claim stream to a new, empty segment and deletes the one
    /// `claims` described (its hint file first, if one is there):
    /// 1. create the next segment (the next id, `first_seq` the next
    ///    sequence number), **fsync it**, **fsync the directory**;
    /// 2. remove the old segment's hint and file, **fsync the directory**.
    ///
    /// The new segment keeps segment ids and sequence numbers rising past
    /// everything the deleted one held, so no location or generation is
    /// ever used twice. Does nothing if the segment changed since. The
    /// caller has checked that no index entry points into it, and
    /// everything that superseded its claims is durable (the closing
    /// sync). Returns whether it was deleted. The store is closing: the
    /// writer is not moved to the new segment, and nothing is appended.
    pub(crate) fn remove_closing_claims(&self, claims: &ClosingClaims) -> Result<bool> {
        let st = &self.streams[Stream::Claims];
        let flush = st.flush.lock();
        // SAFETY: the write-out lock is held, so no rollover swaps it.
        let a = unsafe { &*st.active.load(Ordering::Acquire) };
        let len = a.buf.len();
        let (_, next_rel) = a.buf.published_and_tag();
        let mut next_id = self.next_id.lock();
        let unchanged = a.id == claims.id && len == claims.len;
        if !unchanged || flush.dirty || flush.flushed != len || *next_id > MAX_SEGMENT_ID {
            return Ok(false);
        }
        let old = a.path.clone();
        let id = *next_id;
        // Header only: no buffer beyond it is needed.
        drop(create_segment(
            &*self.storage,
            &self.dir,
            NewSegment {
                id,
                stream: Stream::Claims,
                base: a.base + u64::from(next_rel),
                size: SEGMENT_HEADER_LEN,
                preallocate: false,
                buffer: None,
            },
            self.metas.get_or_insert(id),
        )?);
        *next_id = id + 1;
        drop(next_id);
        let hint = self.dir.join(hint_file_name(claims.id));
        remove_if_exists(&*self.storage, &hint).map_err(|e| io_context("remove", &hint, e))?;
        self.storage
            .remove(&old)
            .map_err(|e| io_context("remove", &old, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io_context("fsync directory", &self.dir, e))?;
        self.metas.remove(claims.id);
        Ok(true)
    }

    /// Writes the hint of each stream's active segment as it stands after
    /// the closing sync and marks (`claims_moved`: the claim stream was
    /// moved to a new, empty segment, which needs none), so the next open
    /// reads the segment's bytes without decoding them. The hint describes
    /// exactly the segment's durable bytes: open uses it only while the
    /// file has that length (DESIGN.md §6, "The last segment's hint"). Not
    /// marked as the segment's hint: once more is appended and the segment
    /// is sealed, its hint is written anew.
    pub(crate) fn write_active_hints(&self, claims_moved: bool) -> Result<()> {
        for st in &self.streams.0 {
            let flush = st.flush.lock();
            // SAFETY: the write-out lock is held, so no rollover swaps it.
            let a = unsafe { &*st.active.load(Ordering::Acquire) };
            let len = a.buf.len();
            if (st.stream == Stream::Claims && claims_moved) || flush.dirty || flush.flushed != len
            {
                continue;
            }
            let hint = hint_files::build(a.id, &a.path, a.buf.bytes())?;
            hint_files::write(&*self.storage, &self.dir, &hint)?;
        }
        Ok(())
    }
}
