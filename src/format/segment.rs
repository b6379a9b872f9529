//! Segment file header and naming.

use super::bytes::{le_u32, le_u64};
use super::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::durability::Stream;

/// First eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"IDEMKVSG";
/// Bytes in a segment header; records start at this offset.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Extension of segment files: `0000000001.seg`.
pub(crate) const SEGMENT_EXT: &str = "seg";

const OFF_VERSION: usize = 8;
const OFF_SEGMENT_ID: usize = 12;
const OFF_FIRST_SEQ: usize = 16;
const OFF_FLAGS: usize = 24;
const OFF_CRC: usize = 28;
const _: () = assert!(OFF_CRC + 4 == SEGMENT_HEADER_LEN);

/// Flag bit 0: the segment belongs to the claim stream.
const FLAG_CLAIMS: u32 = 1;
/// The first format version whose segments carry sync marks.
pub(crate) const SYNC_MARKS_VERSION: u32 = 3;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Matches the number in the file name; ids grow by one per rollover.
    pub segment_id: u32,
    /// Sequence number the first record of this segment gets (or would get).
    /// Keeps sequence numbers growing even when every older segment is gone.
    pub first_seq: u64,
    /// The write stream (flag bit 0; version 1 segments are all `Main`).
    pub stream: Stream,
    /// The format version the segment was written in. Sync marks exist
    /// from version 3 on; a stream's last segment of an older version is
    /// checked by the older rule (DESIGN.md §6).
    pub version: u32,
}

/// Why a header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Truncated,
    BadMagic,
    BadChecksum,
    BadFlags,
    Version(u32),
}

impl HeaderError {
    pub(crate) fn reason(self) -> String {
        match self {
            HeaderError::Truncated => "segment header is incomplete".into(),
            HeaderError::BadMagic => "segment header magic is wrong".into(),
            HeaderError::BadChecksum => "segment header checksum mismatch".into(),
            HeaderError::BadFlags => "segment header has unknown flags".into(),
            HeaderError::Version(v) => format!("segment header names format version {v}"),
        }
    }
}

impl SegmentHeader {
    /// The header of a new segment, in the version this build writes.
    pub(crate) fn new(segment_id: u32, first_seq: u64, stream: Stream) -> SegmentHeader {
        SegmentHeader {
            segment_id,
            first_seq,
            stream,
            version: FORMAT_VERSION,
        }
    }

    /// Whether the segment's format has sync marks (version 3 on).
    pub(crate) fn has_sync_marks(&self) -> bool {
        self.version >= SYNC_MARKS_VERSION
    }

    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        debug_assert!(
            (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.version)
                && (self.version > 1 || self.stream == Stream::Main),
            "a header this build can read back"
        );
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[..OFF_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[OFF_VERSION..OFF_SEGMENT_ID].copy_from_slice(&self.version.to_le_bytes());
        b[OFF_SEGMENT_ID..OFF_FIRST_SEQ].copy_from_slice(&self.segment_id.to_le_bytes());
        b[OFF_FIRST_SEQ..OFF_FLAGS].copy_from_slice(&self.first_seq.to_le_bytes());
        let flags = match self.stream {
            Stream::Main => 0,
            Stream::Claims => FLAG_CLAIMS,
        };
        b[OFF_FLAGS..OFF_CRC].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(b) = b.get(..SEGMENT_HEADER_LEN) else {
            return Err(HeaderError::Truncated);
        };
        if b[..OFF_VERSION] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32fast::hash(&b[..OFF_CRC]) != le_u32(b, OFF_CRC) {
            return Err(HeaderError::BadChecksum);
        }
        let version = le_u32(b, OFF_VERSION);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        // Version 1 knew one stream and no flags.
        let known = if version == 1 { 0 } else { FLAG_CLAIMS };
        let flags = le_u32(b, OFF_FLAGS);
        if flags & !known != 0 {
            return Err(HeaderError::BadFlags);
        }
        Ok(SegmentHeader {
            segment_id: le_u32(b, OFF_SEGMENT_ID),
            first_seq: le_u64(b, OFF_FIRST_SEQ),
            stream: if flags & FLAG_CLAIMS != 0 {
                Stream::Claims
            } else {
                Stream::Main
            },
            version,
        })
    }
}

/// `0000000042.seg` for segment 42.
pub(crate) fn segment_file_name(id: u32) -> String {
    format!("{id:010}.{SEGMENT_EXT}")
}

/// The segment id a file name encodes, if it is a segment file name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 10 || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader::new(7, 99, Stream::Main);
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let c = SegmentHeader {
            stream: Stream::Claims,
            ..h
        };
        assert_eq!(SegmentHeader::decode(&c.encode()), Ok(c));
        assert_eq!(SegmentHeader::decode(&b[..31]), Err(HeaderError::Truncated));
        assert_eq!(
            SegmentHeader::decode(&[0u8; 32]),
            Err(HeaderError::BadMagic)
        );
        for i in 8..32 {
            let mut d = b;
            d[i] ^= 0x01;
            assert_eq!(
                SegmentHeader::decode(&d),
                Err(HeaderError::BadChecksum),
                "byte {i}"
            );
        }
    }

    /// Re-seals `b` with `version` and `flags`.
    fn reseal(mut b: [u8; SEGMENT_HEADER_LEN], version: u32, flags: u32) -> [u8; 32] {
        b[OFF_VERSION..OFF_SEGMENT_ID].copy_from_slice(&version.to_le_bytes());
        b[OFF_FLAGS..OFF_CRC].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn versions_and_flags() {
        let b = SegmentHeader::new(3, 5, Stream::Main).encode();
        let v1 = SegmentHeader::decode(&reseal(b, 1, 0)).expect("version 1 reads");
        assert_eq!(v1.stream, Stream::Main);
        assert_eq!(
            SegmentHeader::decode(&reseal(b, 1, FLAG_CLAIMS)),
            Err(HeaderError::BadFlags),
            "version 1 had no flags"
        );
        assert_eq!(
            SegmentHeader::decode(&reseal(b, 2, 2)),
            Err(HeaderError::BadFlags)
        );
        let v2 = SegmentHeader::decode(&reseal(b, 2, FLAG_CLAIMS)).expect("version 2 reads");
        assert_eq!((v2.version, v2.stream), (2, Stream::Claims));
        assert!(!v2.has_sync_marks() && SegmentHeader::decode(&b).unwrap().has_sync_marks());
        assert_eq!(
            SegmentHeader::decode(&reseal(b, 4, 0)),
            Err(HeaderError::Version(4))
        );
        assert_eq!(
            SegmentHeader::decode(&reseal(b, 0, 0)),
            Err(HeaderError::Version(0))
        );
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42), "0000000042.seg");
        assert_eq!(parse_segment_file_name("0000000042.seg"), Some(42));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000042.seg.tmp"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
        assert_eq!(parse_segment_file_name("9999999999.seg"), None);
    }
}
