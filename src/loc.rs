//! Where a record lives: a segment id and an offset in it.

/// Segment ids must fit the 30 bits an entry gives them; id 0 marks an
/// empty slot and is never a segment's.
pub(crate) const MAX_SEGMENT_ID: u32 = (1 << 30) - 1;

/// Where a record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub segment: u32,
    pub offset: u32,
}

impl Loc {
    /// The location whose [`lpos`](Loc::lpos) is `lpos`.
    pub(crate) fn from_lpos(lpos: u64) -> Loc {
        Loc {
            segment: (lpos >> 32) as u32,
            offset: lpos as u32,
        }
    }

    /// The record's position in the whole log.
    pub(crate) fn lpos(self) -> u64 {
        lpos(self.segment, self.offset as usize)
    }
}

/// A length or an offset within one segment, as the `u32` the index, hint
/// files and records keep it in.
#[expect(
    clippy::expect_used,
    reason = "segments are at most MAX_SEGMENT_SIZE (u32::MAX) bytes, which options validate"
)]
pub(crate) fn seg_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a segment holds at most u32::MAX bytes")
}

pub(crate) fn lpos(segment: u32, offset: usize) -> u64 {
    let offset = seg_u32(offset);
    (u64::from(segment) << 32) | u64::from(offset)
}
