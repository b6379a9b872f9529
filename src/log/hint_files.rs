//! Building, writing and reading hint files (format in `format::hint`).

use crate::error::Result;
use crate::format::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN, HintEntry, HintHeader, hint_file_name};
use crate::format::record::{self, Decoded, RecordRef, SyncMark};
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::key::key_hash;
use crate::loc::seg_u32;
use crate::storage::{SealedBytes, Storage, replace_durably};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

/// A hasher for keys that are hashes already: the key is its own hash.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A decoded, checked hint.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pub header: HintHeader,
    pub entries: Vec<HintEntry>,
}

/// Builds the hint of a sealed segment from its bytes: the last record of
/// each key, in offset order. A record that fails its checks is `Corrupt`.
pub(crate) fn build(id: u32, path: &Path, bytes: &[u8]) -> Result<Hint> {
    let mut builder = Builder::default();
    crate::log::each_entry(path, bytes, |offset, decoded, _| match decoded {
        Decoded::Record(rec) => builder.add(offset, &rec),
        Decoded::SyncMark(mark) => builder.sync_mark(&mark),
    })?;
    Ok(builder.finish(id, bytes.len() as u64))
}

/// Collects a hint record by record, as a segment is read in order.
#[derive(Default)]
pub(crate) struct Builder<'a> {
    entries: Vec<Option<HintEntry>>,
    /// Each entry's key.
    keys: Vec<&'a [u8]>,
    /// The entry of each key hash's latest record, keyed by the hash the
    /// entry carries anyway (no second hash of the key).
    last_of: HashMap<u64, usize, BuildHasherDefault<HashIsKey>>,
    /// The latest entry of each key whose hash an earlier, different key
    /// took in `last_of` (64-bit hashes: in practice empty).
    collided: HashMap<&'a [u8], usize>,
    first_ms: Option<u64>,
    last_ms: u64,
    last_seq: u64,
    records: u32,
}

impl<'a> Builder<'a> {
    /// Adds the record at `offset`.
    pub(crate) fn add(&mut self, offset: u32, rec: &RecordRef<'a>) {
        self.add_hashed(offset, rec, key_hash(rec.key))
    }

    /// [`add`](Builder::add) with the key's hash given.
    fn add_hashed(&mut self, offset: u32, rec: &RecordRef<'a>, hash: u64) {
        let len = record::encoded_len(rec.key.len(), rec.value.len());
        self.first_ms = Some(self.first_ms.map_or(rec.since_ms, |t| t.min(rec.since_ms)));
        self.last_ms = self.last_ms.max(rec.since_ms);
        self.last_seq = self.last_seq.max(rec.seq);
        self.records += 1;
        let index = self.entries.len();
        let previous = match self.last_of.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(index);
                None
            }
            Entry::Occupied(mut e) if self.keys[*e.get()] == rec.key => Some(e.insert(index)),
            Entry::Occupied(_) => self.collided.insert(rec.key, index),
        };
        if let Some(previous) = previous {
            self.entries[previous] = None;
        }
        self.keys.push(rec.key);
        self.entries.push(Some(HintEntry {
            hash,
            tag: rec.tag,
            until_ms: rec.until_ms,
            offset,
            len: seg_u32(len),
        }));
    }

    /// Notes a sync mark: not listed, but its sequence number counts.
    pub(crate) fn sync_mark(&mut self, mark: &SyncMark) {
        self.last_seq = self.last_seq.max(mark.seq);
    }

    /// The hint of segment `id`, `segment_len` bytes long.
    pub(crate) fn finish(self, id: u32, segment_len: u64) -> Hint {
        let entries: Vec<HintEntry> = self.entries.into_iter().flatten().collect();
        let header = HintHeader {
            segment_id: id,
            segment_len,
            first_ms: self.first_ms.unwrap_or(0),
            last_ms: self.last_ms,
            last_seq: self.last_seq,
            records: self.records,
            // At most one entry per record of at least 61 bytes.
            count: seg_u32(entries.len()),
            // Computed over the encoded entries by `encode`.
            entries_crc: 0,
        };
        Hint { header, entries }
    }
}

impl Hint {
    /// The file's bytes: the header, with the checksum of the entries that
    /// follow it, then the entries.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; HINT_HEADER_LEN];
        bytes.reserve(self.entries.len() * HINT_ENTRY_LEN);
        for e in &self.entries {
            e.encode_into(&mut bytes);
        }
        let entries_crc = crc32fast::hash(&bytes[HINT_HEADER_LEN..]);
        bytes[..HINT_HEADER_LEN].copy_from_slice(
            &HintHeader {
                entries_crc,
                ..self.header
            }
            .encode(),
        );
        bytes
    }
}

/// Writes a hint durably: a temporary file, fsync, rename, directory fsync
/// (`storage::replace_durably`).
/// Returns the file's size.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, hint: &Hint) -> Result<u64> {
    let name = hint_file_name(hint.header.segment_id);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = hint.encode();
    replace_durably(storage, dir, &tmp, &path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Reads the hint of segment `id` if it exists and passes every check
/// against a segment of `segment_len` bytes; `None` means "scan the segment".
pub(crate) fn read(storage: &dyn Storage, dir: &Path, id: u32, segment_len: u64) -> Option<Hint> {
    let mut bytes = Vec::new();
    read_into(storage, dir, id, &mut bytes)?;
    decode(&bytes, id, segment_len)
}

/// Reads the hint file of segment `id` into `buf` (reusing its memory);
/// `None` if it cannot be read. Nothing is checked yet.
pub(crate) fn read_into(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    buf: &mut Vec<u8>,
) -> Option<()> {
    let file = storage.open(&dir.join(hint_file_name(id))).ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?;
    buf.clear();
    buf.resize(len, 0);
    file.read_exact_at(0, buf).ok()
}

/// The hint file of segment `id`, mapped (nothing checked yet); `None` if
/// it cannot be opened or mapped. Hint files are written whole and renamed
/// into place, and nothing writes them while the store is locked, so the
/// map does not change under its reader.
pub(crate) fn map(storage: &dyn Storage, dir: &Path, id: u32) -> Option<SealedBytes> {
    storage.open(&dir.join(hint_file_name(id))).ok()?.map().ok()
}

/// How many entries the hint of segment `id` lists, from its header alone
/// (for sizing the index before the hints are read in full).
pub(crate) fn listed(storage: &dyn Storage, dir: &Path, id: u32) -> Option<usize> {
    let file = storage.open(&dir.join(hint_file_name(id))).ok()?;
    let mut header = [0u8; HINT_HEADER_LEN];
    file.read_exact_at(0, &mut header).ok()?;
    HintHeader::decode(&header)
        .filter(|h| h.segment_id == id)
        .and_then(|h| usize::try_from(h.count).ok())
}

/// Checks and decodes hint file bytes. Every length is bounded by the bytes
/// present; offsets must rise and stay inside the segment.
pub(crate) fn decode(bytes: &[u8], id: u32, segment_len: u64) -> Option<Hint> {
    let (header, body) = entry_bytes(bytes, id, segment_len)?;
    let mut entries = Vec::with_capacity(body.len() / HINT_ENTRY_LEN);
    decode_entries(body, segment_len, |e| entries.push(e))?;
    Some(Hint { header, entries })
}

/// The checked hint's entries' raw bytes, `HINT_ENTRY_LEN` each, if the
/// header, length and checksum check out; each entry's key hash is its
/// first eight bytes, little-endian.
pub(crate) fn entry_bytes(bytes: &[u8], id: u32, segment_len: u64) -> Option<(HintHeader, &[u8])> {
    let header = HintHeader::decode(bytes)?;
    let count = usize::try_from(header.count).ok()?;
    let body = bytes.get(HINT_HEADER_LEN..)?;
    let valid = header.segment_id == id
        && header.segment_len == segment_len
        && header.records >= header.count
        && body.len() == count.checked_mul(HINT_ENTRY_LEN)?
        && crc32fast::hash(body) == header.entries_crc;
    valid.then_some((header, body))
}

/// Decodes and checks the entries `entry_bytes` returned, handing each to
/// `f` in file order: offsets must rise and stay inside the segment.
pub(crate) fn decode_entries(
    body: &[u8],
    segment_len: u64,
    mut f: impl FnMut(HintEntry),
) -> Option<()> {
    let mut next_offset = SEGMENT_HEADER_LEN as u64;
    for chunk in body.chunks_exact(HINT_ENTRY_LEN) {
        let e = HintEntry::decode(chunk)?;
        let end = u64::from(e.offset) + u64::from(e.len);
        if u64::from(e.offset) < next_offset
            || end > segment_len
            || (e.len as usize) <= record::RECORD_HEADER_LEN
        {
            return None;
        }
        next_offset = end;
        f(e);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{RecordFields, Tag, encode};
    use crate::format::segment::SegmentHeader;

    #[test]
    fn keys_whose_hashes_collide_keep_their_own_last_records() {
        let rec = |key: &'static [u8], t| RecordRef {
            tag: Tag::Complete,
            seq: t,
            fingerprint: 1,
            generation: 1,
            since_ms: t,
            until_ms: t + 100,
            key,
            value: b"",
        };
        let mut builder = Builder::default();
        // Two keys under one hash, and a third key of its own.
        for (offset, key, hash) in [
            (100, b"a", 7),
            (200, b"b", 7),
            (300, b"a", 7),
            (400, b"c", 9),
            (500, b"b", 7),
            (600, b"b", 7),
        ] {
            builder.add_hashed(offset, &rec(key, u64::from(offset)), hash);
        }
        let hint = builder.finish(1, 1000);
        let offsets: Vec<u32> = hint.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [300, 400, 600]);
    }

    #[test]
    fn keeps_the_last_record_of_each_key_and_checks_itself() {
        let mut seg = SegmentHeader::new(3, 1, crate::durability::Stream::Main)
            .encode()
            .to_vec();
        let rec = |tag, key: &'static [u8], value: &'static [u8], t| RecordFields {
            tag,
            key,
            value,
            fingerprint: 1,
            generation: 1,
            since_ms: t,
            until_ms: t + 100,
        };
        encode(&mut seg, 1, &rec(Tag::Claim, b"a", b"", 10));
        encode(&mut seg, 2, &rec(Tag::Claim, b"b", b"", 11));
        encode(&mut seg, 3, &rec(Tag::Complete, b"a", b"done", 12));
        let hint = build(3, Path::new("seg"), &seg).unwrap();
        assert_eq!(hint.entries.len(), 2);
        assert_eq!(
            (hint.entries[0].tag, hint.entries[1].tag),
            (Tag::Claim, Tag::Complete)
        );
        assert_eq!((hint.header.first_ms, hint.header.last_ms), (10, 12));

        let bytes = hint.encode();
        let len = seg.len() as u64;
        assert!(decode(&bytes, 3, len).is_some());
        assert!(decode(&bytes, 4, len).is_none(), "another segment");
        assert!(
            decode(&bytes, 3, len + 1).is_none(),
            "another length of segment"
        );
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(decode(&damaged, 3, len).is_none(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1], 3, len).is_none());
    }
}
