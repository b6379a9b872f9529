//! What maintenance reports: a compaction pass, a `verify`, a `repair`.
//! Public types at a leaf, so every layer can hand them back.

use std::ops::Range;
use std::path::PathBuf;

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Segments deleted whole, without copying anything.
    pub segments_dropped: u64,
    /// Segments whose live records were copied forward before deletion.
    pub segments_rewritten: u64,
    /// Bytes of segment files deleted.
    pub bytes_reclaimed: u64,
    /// Bytes of records copied forward.
    pub bytes_copied: u64,
    /// Index entries evicted because they expired.
    pub entries_evicted: u64,
}

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
