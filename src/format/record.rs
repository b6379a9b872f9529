//! Record encoding and decoding.
//!
//! Every record has the same 60-byte header followed by the key and a value
//! (the stored response, for `Complete` records; empty otherwise). The CRC
//! covers everything after itself, sequence number included, so a record
//! copied to the wrong place or a stale byte range cannot pass as current.
//!
//! Besides the key records there is one more kind, the *sync mark* (tag 6,
//! format version 3): no key, no value, written into a segment after an
//! fsync to say how many of the segment's bytes that fsync made durable.
//! Recovery uses marks to tell a torn, never-synced tail from damage to
//! data that was fsynced (DESIGN.md §6).

use super::bytes::{le_u32, le_u64, le_u128};
use crate::durability::Stream;

/// Bytes before the key in every record.
pub(crate) const RECORD_HEADER_LEN: usize = 60;
/// Where a record's (or sync mark's) tag byte is; zero is never a tag.
pub(crate) const TAG_OFFSET: usize = 4;
/// Longest key the format can hold (the key length field is a `u16`).
pub(crate) const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest value the format accepts; larger lengths are treated as damage.
pub(crate) const MAX_VALUE_LEN: usize = 1 << 30;

const OFF_TAG: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_KEY_LEN: usize = 6;
const OFF_VALUE_LEN: usize = 8;
const OFF_SEQ: usize = 12;
const OFF_FINGERPRINT: usize = 20;
const OFF_GENERATION: usize = 36;
const OFF_SINCE: usize = 44;
const OFF_UNTIL: usize = 52;
const _: () = assert!(OFF_UNTIL + 8 == RECORD_HEADER_LEN);

/// Tag byte of a sync mark. Not a [`Tag`]: a mark says nothing about a key.
pub(crate) const SYNC_MARK_TAG: u8 = 6;
/// Encoded length of a sync mark: a record header, no key, no value.
pub(crate) const SYNC_MARK_LEN: usize = RECORD_HEADER_LEN;

/// What a record says about its key.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// The key is in progress: claimed, taken over, or its lease extended.
    Claim = 1,
    /// The key is completed with the value as its response.
    Complete = 2,
    /// The owner gave the key back; it is absent.
    Release = 3,
    /// The key was purged; it is absent.
    Remove = 4,
    /// The key was marked seen (one-shot dedup).
    Seen = 5,
}

impl Tag {
    /// The write stream a record of this tag is appended to: claims to
    /// their own, everything else to the main stream (DESIGN.md §3a).
    pub(crate) fn stream(self) -> Stream {
        match self {
            Tag::Claim => Stream::Claims,
            _ => Stream::Main,
        }
    }
}

impl TryFrom<u8> for Tag {
    type Error = u8;
    fn try_from(v: u8) -> Result<Tag, u8> {
        Ok(match v {
            1 => Tag::Claim,
            2 => Tag::Complete,
            3 => Tag::Release,
            4 => Tag::Remove,
            5 => Tag::Seen,
            other => return Err(other),
        })
    }
}

/// The fields a caller chooses for a new record; the log adds the sequence
/// number and the checksum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordFields<'a> {
    pub tag: Tag,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub fingerprint: u128,
    pub generation: u64,
    /// `claimed_at_ms` (Claim), `completed_at_ms` (Complete, Seen), or the
    /// time of the release/removal.
    pub since_ms: u64,
    /// `lease_expires_at_ms` (Claim), `expires_at_ms` (Complete, Seen), 0 otherwise.
    pub until_ms: u64,
}

/// A decoded record borrowing its key and value from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub tag: Tag,
    pub seq: u64,
    pub fingerprint: u128,
    pub generation: u64,
    pub since_ms: u64,
    pub until_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes end before the record does.
    Truncated,
    /// The bytes are not a valid record.
    Invalid(&'static str),
}

/// Total encoded size of a record with these key and value lengths.
pub(crate) const fn encoded_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Appends the encoding of `rec` with sequence number `seq` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, seq: u64, rec: &RecordFields<'_>) {
    let start = out.len();
    out.resize(start + encoded_len(rec.key.len(), rec.value.len()), 0);
    encode_into(&mut out[start..], seq, rec);
}

/// Encodes `rec` with sequence number `seq` into `out`, which must be
/// exactly [`encoded_len`] bytes long.
pub(crate) fn encode_into(out: &mut [u8], seq: u64, rec: &RecordFields<'_>) {
    debug_assert!(!rec.key.is_empty() && rec.key.len() <= MAX_KEY_LEN);
    debug_assert!(rec.value.len() <= MAX_VALUE_LEN);
    debug_assert!(rec.tag == Tag::Complete || rec.value.is_empty());
    // Callers bound both (options, `complete`); a longer one would encode a
    // record that decodes as another, so this is checked in every build.
    assert!(
        rec.key.len() <= MAX_KEY_LEN
            && rec.value.len() <= MAX_VALUE_LEN
            && out.len() == encoded_len(rec.key.len(), rec.value.len()),
        "a record's key and value fit their length fields and its place"
    );
    let key_len = u16::try_from(rec.key.len()).unwrap_or(u16::MAX);
    let value_len = u32::try_from(rec.value.len()).unwrap_or(u32::MAX);
    let (head, body) = out.split_at_mut(RECORD_HEADER_LEN);
    head[OFF_TAG] = rec.tag as u8;
    head[OFF_FLAGS] = 0;
    head[OFF_KEY_LEN..OFF_VALUE_LEN].copy_from_slice(&key_len.to_le_bytes());
    head[OFF_VALUE_LEN..OFF_SEQ].copy_from_slice(&value_len.to_le_bytes());
    head[OFF_SEQ..OFF_FINGERPRINT].copy_from_slice(&seq.to_le_bytes());
    head[OFF_FINGERPRINT..OFF_GENERATION].copy_from_slice(&rec.fingerprint.to_le_bytes());
    head[OFF_GENERATION..OFF_SINCE].copy_from_slice(&rec.generation.to_le_bytes());
    head[OFF_SINCE..OFF_UNTIL].copy_from_slice(&rec.since_ms.to_le_bytes());
    head[OFF_UNTIL..].copy_from_slice(&rec.until_ms.to_le_bytes());
    let (key, value) = body.split_at_mut(rec.key.len());
    key.copy_from_slice(rec.key);
    value.copy_from_slice(rec.value);
    let crc = crc32fast::hash(&out[OFF_TAG..]);
    out[..OFF_TAG].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed fields of a record header, checked for structure but not yet
/// against the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The record's tag, or `None` for a sync mark.
    pub tag: Option<Tag>,
    pub seq: u64,
    /// Encoded length of the whole record.
    pub len: usize,
}

/// The `generation` field of the record starting at `buf`, read without any
/// check; `None` if `buf` is shorter than a record header.
pub(crate) fn peek_generation(buf: &[u8]) -> Option<u64> {
    (buf.len() >= RECORD_HEADER_LEN).then(|| le_u64(buf, OFF_GENERATION))
}

/// Checks the header at the start of `buf` without reading the key, the
/// value or the checksum: tag, flags and lengths, each bounded by the format
/// maximums and by the bytes present.
pub(crate) fn peek_header(buf: &[u8]) -> Result<Header, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        // A header that already fails its cheap checks is damage, not a tail.
        if let Some(&tag) = buf.get(OFF_TAG) {
            tag_of(tag)?;
        }
        return Err(DecodeError::Truncated);
    }
    let tag = tag_of(buf[OFF_TAG])?;
    if buf[OFF_FLAGS] != 0 {
        return Err(DecodeError::Invalid("unknown record flags"));
    }
    let key_len = usize::from(u16::from_le_bytes([buf[OFF_KEY_LEN], buf[OFF_KEY_LEN + 1]]));
    let value_len = usize::try_from(le_u32(buf, OFF_VALUE_LEN)).unwrap_or(usize::MAX);
    if tag.is_none() {
        if key_len != 0 || value_len != 0 {
            return Err(DecodeError::Invalid("sync mark carries a key or a value"));
        }
        return Ok(Header {
            tag,
            seq: le_u64(buf, OFF_SEQ),
            len: SYNC_MARK_LEN,
        });
    }
    if key_len == 0 {
        return Err(DecodeError::Invalid("record has an empty key"));
    }
    if value_len > MAX_VALUE_LEN {
        return Err(DecodeError::Invalid(
            "record value length exceeds the format maximum",
        ));
    }
    if tag != Some(Tag::Complete) && value_len != 0 {
        return Err(DecodeError::Invalid("record of this tag carries a value"));
    }
    let len = encoded_len(key_len, value_len);
    if buf.len() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(Header {
        tag,
        seq: le_u64(buf, OFF_SEQ),
        len,
    })
}

/// The tag a tag byte names: `Some` for a key record, `None` for a sync mark.
fn tag_of(byte: u8) -> Result<Option<Tag>, DecodeError> {
    if byte == SYNC_MARK_TAG {
        return Ok(None);
    }
    Tag::try_from(byte)
        .map(Some)
        .map_err(|_| DecodeError::Invalid("unknown record tag"))
}

/// A sync mark: written after an fsync of its segment, it proves that the
/// segment's first `synced_len` bytes were durable before the mark was
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncMark {
    pub seq: u64,
    /// Bytes of the segment, from its start, that an fsync had made durable
    /// when this mark was written.
    pub synced_len: u64,
    /// The store's clock when the mark was written (unix ms).
    pub written_at_ms: u64,
}

/// Appends the encoding of a sync mark with sequence number `seq` to `out`.
pub(crate) fn encode_sync_mark(out: &mut Vec<u8>, mark: &SyncMark) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.push(SYNC_MARK_TAG);
    out.push(0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&mark.seq.to_le_bytes());
    out.extend_from_slice(&0u128.to_le_bytes());
    out.extend_from_slice(&mark.synced_len.to_le_bytes());
    out.extend_from_slice(&mark.written_at_ms.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&out[start + OFF_TAG..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, SYNC_MARK_LEN);
}

/// What a valid entry of a segment is: a key record or a sync mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    Record(RecordRef<'a>),
    SyncMark(SyncMark),
}

impl Decoded<'_> {
    /// The sequence number, from the counter of the entry's stream.
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Decoded::Record(r) => r.seq,
            Decoded::SyncMark(m) => m.seq,
        }
    }
}

/// Decodes the record or sync mark at the start of `buf`, returning it and
/// its length.
///
/// Lengths are bounded by the format maximums and by the bytes present before
/// anything is sliced, and the checksum is verified.
pub(crate) fn decode_any(buf: &[u8]) -> Result<(Decoded<'_>, usize), DecodeError> {
    let Header {
        tag,
        seq,
        len: total,
    } = peek_header(buf)?;
    if crc32fast::hash(&buf[OFF_TAG..total]) != le_u32(buf, 0) {
        return Err(DecodeError::Invalid("record checksum mismatch"));
    }
    let Some(tag) = tag else {
        if le_u128(buf, OFF_FINGERPRINT) != 0 || le_u64(buf, OFF_UNTIL) != 0 {
            return Err(DecodeError::Invalid(
                "sync mark has non-zero reserved fields",
            ));
        }
        let mark = SyncMark {
            seq,
            synced_len: le_u64(buf, OFF_GENERATION),
            written_at_ms: le_u64(buf, OFF_SINCE),
        };
        return Ok((Decoded::SyncMark(mark), total));
    };
    let key_len = usize::from(u16::from_le_bytes([buf[OFF_KEY_LEN], buf[OFF_KEY_LEN + 1]]));
    let key_end = RECORD_HEADER_LEN + key_len;
    let rec = RecordRef {
        tag,
        seq,
        fingerprint: le_u128(buf, OFF_FINGERPRINT),
        generation: le_u64(buf, OFF_GENERATION),
        since_ms: le_u64(buf, OFF_SINCE),
        until_ms: le_u64(buf, OFF_UNTIL),
        key: &buf[RECORD_HEADER_LEN..key_end],
        value: &buf[key_end..total],
    };
    Ok((Decoded::Record(rec), total))
}

/// Decodes the key record at the start of `buf`, returning it and its
/// length; a sync mark there is `Invalid` (an index entry or a hint never
/// points at one).
pub(crate) fn decode(buf: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    match decode_any(buf)? {
        (Decoded::Record(rec), len) => Ok((rec, len)),
        (Decoded::SyncMark(_), _) => Err(DecodeError::Invalid(
            "a sync mark stands where a key record belongs",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(key: &'a [u8], value: &'a [u8]) -> RecordFields<'a> {
        RecordFields {
            tag: if value.is_empty() {
                Tag::Claim
            } else {
                Tag::Complete
            },
            key,
            value,
            fingerprint: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            generation: 5,
            since_ms: 1_000,
            until_ms: 2_000,
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(&mut out, 42, &sample(b"key", b"response"));
        let (r, n) = decode(&out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(
            (r.tag, r.seq, r.generation, r.key, r.value),
            (Tag::Complete, 42, 5, &b"key"[..], &b"response"[..])
        );
        assert_eq!((r.since_ms, r.until_ms), (1_000, 2_000));
    }

    #[test]
    fn zeros_never_decode() {
        for len in 0..200 {
            assert!(decode(&vec![0u8; len]).is_err(), "len {len}");
        }
        assert_eq!(
            decode(&[0u8; 100]),
            Err(DecodeError::Invalid("unknown record tag"))
        );
    }

    #[test]
    fn every_prefix_is_truncated_and_every_flip_is_caught() {
        let mut out = Vec::new();
        encode(&mut out, 1, &sample(b"k", b"v"));
        for cut in 0..out.len() {
            assert_eq!(
                decode(&out[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut d = out.clone();
                d[i] ^= 1 << bit;
                if let Ok((r, _)) = decode(&d) {
                    panic!("flip at {i} bit {bit} decoded as {r:?}");
                }
            }
        }
    }

    #[test]
    fn sync_marks_round_trip_and_are_never_key_records() {
        let mark = SyncMark {
            seq: 9,
            synced_len: 4096,
            written_at_ms: 77,
        };
        let mut out = Vec::new();
        encode_sync_mark(&mut out, &mark);
        assert_eq!(out.len(), SYNC_MARK_LEN);
        assert_eq!(
            decode_any(&out),
            Ok((Decoded::SyncMark(mark), SYNC_MARK_LEN))
        );
        assert!(matches!(decode(&out), Err(DecodeError::Invalid(_))));
        assert_eq!(peek_header(&out).map(|h| (h.tag, h.seq)), Ok((None, 9)));
        for cut in 0..out.len() {
            assert_eq!(decode_any(&out[..cut]), Err(DecodeError::Truncated));
        }
        for i in 0..out.len() {
            let mut d = out.clone();
            d[i] ^= 0x40;
            assert!(decode_any(&d).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn lengths_are_bounded_before_use() {
        let mut out = Vec::new();
        encode(&mut out, 1, &sample(b"k", b"v"));
        out[OFF_VALUE_LEN..OFF_VALUE_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&out), Err(DecodeError::Invalid(_))));
    }
}
