//! Hint files: a sealed segment's index in a compact, checksummed form, so
//! that open rebuilds the index without reading record payloads.
//!
//! A hint lists, in offset order, each record that is the last one for its
//! key within the segment (superseded records of the same segment are left
//! out: they are dead whatever happens later). It is derived data: a hint
//! that is missing, fails a check, or describes another length of segment is
//! ignored and rebuilt from the segment.

use super::bytes::{le_u32, le_u64};
use super::record::Tag;

/// First eight bytes of every hint file.
pub(crate) const HINT_MAGIC: [u8; 8] = *b"IDEMKVHT";
/// The hint format version.
pub(crate) const HINT_VERSION: u32 = 1;
/// Bytes in a hint header.
pub(crate) const HINT_HEADER_LEN: usize = 64;
/// Bytes per hint entry.
pub(crate) const HINT_ENTRY_LEN: usize = 24;
/// Extension of hint files: `0000000001.hint`.
pub(crate) const HINT_EXT: &str = "hint";

const OFF_VERSION: usize = 8;
const OFF_SEGMENT_ID: usize = 12;
const OFF_SEGMENT_LEN: usize = 16;
const OFF_FIRST_MS: usize = 24;
const OFF_LAST_MS: usize = 32;
const OFF_LAST_SEQ: usize = 40;
const OFF_COUNT: usize = 48;
const OFF_ENTRIES_CRC: usize = 52;
const OFF_RECORDS: usize = 56;
const OFF_CRC: usize = 60;
const _: () = assert!(OFF_CRC + 4 == HINT_HEADER_LEN);

/// The header's checksum fields, `entries_crc` and `crc`: bytes that differ
/// whenever anything they cover does.
pub(crate) const CHECKSUM_FIELDS: [std::ops::Range<usize>; 2] =
    [OFF_ENTRIES_CRC..OFF_ENTRIES_CRC + 4, OFF_CRC..OFF_CRC + 4];

/// Bits of `tag_time` below the tag.
const TAG_SHIFT: u32 = 56;
/// The latest `until_ms` a hint entry holds (about year 2,285,000); later
/// ones are saturated to it.
pub(crate) const MAX_HINT_UNTIL_MS: u64 = (1 << TAG_SHIFT) - 1;

/// A hint file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintHeader {
    pub segment_id: u32,
    /// Length of the segment file the hint describes.
    pub segment_len: u64,
    /// Earliest and latest `since_ms` of the segment's records: its write span.
    pub first_ms: u64,
    pub last_ms: u64,
    /// Highest sequence number in the segment, so sequence numbers keep
    /// growing when the segment is not scanned.
    pub last_seq: u64,
    pub count: u32,
    /// Records in the segment, listed or not.
    pub records: u32,
    /// CRC-32 of all entry bytes.
    pub entries_crc: u32,
}

/// One listed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintEntry {
    /// XXH3-64 of the record's key.
    pub hash: u64,
    pub tag: Tag,
    /// The record's `until_ms` (lease end or expiry).
    pub until_ms: u64,
    pub offset: u32,
    /// Encoded length of the record.
    pub len: u32,
}

impl HintHeader {
    pub(crate) fn encode(&self) -> [u8; HINT_HEADER_LEN] {
        let mut b = [0u8; HINT_HEADER_LEN];
        b[..OFF_VERSION].copy_from_slice(&HINT_MAGIC);
        b[OFF_VERSION..OFF_SEGMENT_ID].copy_from_slice(&HINT_VERSION.to_le_bytes());
        b[OFF_SEGMENT_ID..OFF_SEGMENT_LEN].copy_from_slice(&self.segment_id.to_le_bytes());
        b[OFF_SEGMENT_LEN..OFF_FIRST_MS].copy_from_slice(&self.segment_len.to_le_bytes());
        b[OFF_FIRST_MS..OFF_LAST_MS].copy_from_slice(&self.first_ms.to_le_bytes());
        b[OFF_LAST_MS..OFF_LAST_SEQ].copy_from_slice(&self.last_ms.to_le_bytes());
        b[OFF_LAST_SEQ..OFF_COUNT].copy_from_slice(&self.last_seq.to_le_bytes());
        b[OFF_COUNT..OFF_ENTRIES_CRC].copy_from_slice(&self.count.to_le_bytes());
        b[OFF_ENTRIES_CRC..OFF_RECORDS].copy_from_slice(&self.entries_crc.to_le_bytes());
        b[OFF_RECORDS..OFF_CRC].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32fast::hash(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; `None` if anything is off.
    pub(crate) fn decode(b: &[u8]) -> Option<HintHeader> {
        let b = b.get(..HINT_HEADER_LEN)?;
        let valid = b[..OFF_VERSION] == HINT_MAGIC
            && crc32fast::hash(&b[..OFF_CRC]) == le_u32(b, OFF_CRC)
            && le_u32(b, OFF_VERSION) == HINT_VERSION;
        valid.then(|| HintHeader {
            segment_id: le_u32(b, OFF_SEGMENT_ID),
            segment_len: le_u64(b, OFF_SEGMENT_LEN),
            first_ms: le_u64(b, OFF_FIRST_MS),
            last_ms: le_u64(b, OFF_LAST_MS),
            last_seq: le_u64(b, OFF_LAST_SEQ),
            count: le_u32(b, OFF_COUNT),
            records: le_u32(b, OFF_RECORDS),
            entries_crc: le_u32(b, OFF_ENTRIES_CRC),
        })
    }
}

impl HintEntry {
    /// Appends the entry's 24 bytes. An `until_ms` past what 56 bits hold
    /// (a retention of millions of years, or `Duration::MAX`) is saturated,
    /// never wrapped: the entry still expires after every real time.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let until_ms = self.until_ms.min(MAX_HINT_UNTIL_MS);
        let tag_time = (u64::from(self.tag as u8) << TAG_SHIFT) | until_ms;
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&tag_time.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    /// Decodes one entry; `None` for an unknown tag.
    pub(crate) fn decode(b: &[u8]) -> Option<HintEntry> {
        let b = b.get(..HINT_ENTRY_LEN)?;
        let tag_time = le_u64(b, 8);
        let tag = Tag::try_from((tag_time >> TAG_SHIFT) as u8).ok()?;
        Some(HintEntry {
            hash: le_u64(b, 0),
            tag,
            until_ms: tag_time & ((1 << TAG_SHIFT) - 1),
            offset: le_u32(b, 16),
            len: le_u32(b, 20),
        })
    }
}

/// `0000000042.hint` for segment 42.
pub(crate) fn hint_file_name(id: u32) -> String {
    format!("{id:010}.{HINT_EXT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_entries_round_trip() {
        let h = HintHeader {
            segment_id: 4,
            segment_len: 4096,
            first_ms: 10,
            last_ms: 20,
            last_seq: 9,
            count: 2,
            records: 3,
            entries_crc: 7,
        };
        assert_eq!(HintHeader::decode(&h.encode()), Some(h));
        for i in 0..HINT_HEADER_LEN {
            let mut b = h.encode();
            b[i] ^= 1;
            assert_eq!(HintHeader::decode(&b), None, "flip at {i}");
        }
        let e = HintEntry {
            hash: u64::MAX,
            tag: Tag::Complete,
            until_ms: 1_700_000_000_000,
            offset: 32,
            len: 200,
        };
        let mut out = Vec::new();
        e.encode_into(&mut out);
        assert_eq!(out.len(), HINT_ENTRY_LEN);
        assert_eq!(HintEntry::decode(&out), Some(e));
    }

    #[test]
    fn a_far_future_expiry_saturates_instead_of_wrapping() {
        for until_ms in [MAX_HINT_UNTIL_MS + 5, u64::MAX, MAX_HINT_UNTIL_MS, 7] {
            let mut out = Vec::new();
            HintEntry {
                hash: 9,
                tag: Tag::Complete,
                until_ms,
                offset: 32,
                len: 100,
            }
            .encode_into(&mut out);
            let back = HintEntry::decode(&out).unwrap();
            assert_eq!(back.tag, Tag::Complete, "{until_ms}");
            assert_eq!(back.until_ms, until_ms.min(MAX_HINT_UNTIL_MS), "{until_ms}");
        }
    }
}
