//! Damage that is not a torn tail is reported, never cut away: a bad record
//! with valid records after it, any bad record in a sealed segment, a header
//! with a wrong magic, and a header naming another format version. Open fails
//! with an error naming the file and offset, and leaves every file as it was.

mod common;

use common::{
    RECORD_HEADER_LEN, acquire_with, copy_dir, record_spans, set_version, small_segments,
    stream_paths,
};
use idemkv::{Durability, Error, FORMAT_VERSION, Fingerprint, ManualClock, Options};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

const START_MS: u64 = 1_700_000_000_000;

/// Small segments, so the workload spans several of them.
fn options() -> Options {
    small_segments(
        Options::new()
            .durability(Durability::Immediate)
            .clock(Arc::new(ManualClock::new(START_MS)))
            // Closing then leaves the segments unhinted, so open reads
            // (and checks) every record of the damaged segment.
            .background_compaction(false),
    )
}

/// A store with three or more segments of completed keys and some claims.
fn build() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    for i in 0..72 {
        let key = format!("order-{i}");
        let ticket = acquire_with(&store, &key, Fingerprint::of(&key));
        if i % 7 == 3 {
            drop(ticket); // left in progress
        } else {
            let response = format!("201 created order {i} {}", "x".repeat(i % 40));
            store.complete(ticket, response.as_bytes()).unwrap();
        }
    }
    drop(store);
    let segs = segment_paths(dir.path());
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    for seg in &segs {
        assert!(
            record_spans(&fs::read(seg).unwrap()).len() >= 3,
            "{} holds too few records",
            seg.display()
        );
    }
    dir
}

/// The segment files of `dir`: the main stream's, oldest first, then the
/// claim stream's. Tests name a segment by its place in this list.
fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    [stream_paths(dir, false), stream_paths(dir, true)].concat()
}

/// Places in [`segment_paths`] of each stream's newest (active) segment:
/// main, then claims.
fn active_indices(dir: &Path) -> [usize; 2] {
    let main = stream_paths(dir, false).len();
    [main - 1, main + stream_paths(dir, true).len() - 1]
}

/// `(start, len)` of every record of segment `index` (0 is the oldest) in
/// `dir`, which must be undamaged.
fn spans_of(dir: &Path, index: usize) -> Vec<(usize, usize)> {
    record_spans(&fs::read(&segment_paths(dir)[index]).unwrap())
}

/// Every regular file in `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A copy of `fixture` with `damage` applied to the bytes of segment `index`
/// (0 is the oldest); returns the copy and the damaged file's path.
fn damaged_copy(
    fixture: &Path,
    index: usize,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (TempDir, PathBuf) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(fixture, copy.path());
    let file = segment_paths(copy.path()).swap_remove(index);
    let mut bytes = fs::read(&file).unwrap();
    damage(&mut bytes);
    fs::write(&file, &bytes).unwrap();
    (copy, file)
}

/// Opens `dir`, which must fail; checks that the failed open changed no file
/// and released the directory (a second open fails the same way, not with
/// `Locked`).
fn open_fails(dir: &Path, ctx: &str) -> Error {
    let before = snapshot(dir);
    let err = match options().open(dir) {
        Ok(store) => panic!("{ctx}: open succeeded with stats {:?}", store.stats()),
        Err(e) => e,
    };
    assert!(
        snapshot(dir) == before,
        "{ctx}: a failed open must leave every file byte-identical ({err})"
    );
    let again = options().open(dir).err();
    assert_eq!(
        again.as_ref().map(|e| e.to_string()),
        Some(err.to_string()),
        "{ctx}: a second open must fail the same way"
    );
    err
}

fn assert_corrupt(err: &Error, want_file: &Path, want_offset: u64, ctx: &str) {
    let Error::Corrupt { file, offset, .. } = err else {
        panic!("{ctx}: expected Corrupt, got {err:?}");
    };
    assert_eq!(file, want_file, "{ctx}: the file named");
    assert_eq!(*offset, want_offset, "{ctx}: the offset named ({err})");
    let shown = err.to_string();
    assert!(
        shown.contains(&want_file.display().to_string()),
        "{ctx}: the message must name the file: {shown}"
    );
}

/// Opens a copy of `fixture` with `damage` applied to segment `index`, which
/// must fail (changing no file) with `Corrupt` at `offset` of the damaged
/// file; `what` says what the damage was.
fn assert_damage_is_corrupt(
    fixture: &Path,
    index: usize,
    damage: impl FnOnce(&mut Vec<u8>),
    what: &str,
    offset: usize,
) {
    let (copy, file) = damaged_copy(fixture, index, damage);
    let ctx = format!("{} {what}", file.display());
    let err = open_fails(copy.path(), &ctx);
    assert_corrupt(&err, &file, u64::try_from(offset).unwrap(), &ctx);
}

/// Flips each byte of record `rec` of segment `index` in turn, with each of
/// `patterns`, and expects `Corrupt` at the record's start. Returns the count.
fn flip_every_byte(fixture: &Path, index: usize, rec: (usize, usize), what: &str) -> usize {
    let (start, len) = rec;
    let mut cases = 0;
    for at in start..start + len {
        for pattern in [0x01u8, 0x80, 0xFF] {
            assert_damage_is_corrupt(
                fixture,
                index,
                |b| b[at] ^= pattern,
                &format!(
                    "({what}): record {start}..{} with byte {at} ^ {pattern:#04x}",
                    start + len
                ),
                start,
            );
            cases += 1;
        }
    }
    cases
}

#[test]
fn bad_record_with_valid_records_after_it_in_the_last_segment_is_corrupt() {
    let fixture = build();
    let [last, _] = active_indices(fixture.path());
    let recs = spans_of(fixture.path(), last);
    let middle = recs[recs.len() / 2];
    assert!(
        recs.len() / 2 + 1 < recs.len(),
        "valid records must follow the damaged one"
    );
    let cases = flip_every_byte(fixture.path(), last, middle, "middle of the last segment");
    // The record just before the valid final one, too.
    let cases = cases
        + flip_every_byte(
            fixture.path(),
            last,
            recs[recs.len() - 2],
            "second-to-last record of the last segment",
        );
    println!("corrupt_middle: {cases} damaged records in the last segment reported as Corrupt");
}

#[test]
fn zeroed_range_in_the_middle_of_the_last_segment_is_corrupt() {
    // A lost sector: zeros from inside one record to inside a later one,
    // with valid records after the range.
    let fixture = build();
    let [last, _] = active_indices(fixture.path());
    let recs = spans_of(fixture.path(), last);
    assert!(recs.len() >= 4, "want four records in the last segment");
    let (first_start, _) = recs[1];
    let (third_start, third_len) = recs[recs.len() - 2];
    for (from, to) in [
        (first_start, third_start + third_len),
        (first_start + 10, third_start + 1),
        (first_start + RECORD_HEADER_LEN, third_start + third_len),
    ] {
        assert_damage_is_corrupt(
            fixture.path(),
            last,
            |b| b[from..to].fill(0),
            &format!("zeroed over {from}..{to}"),
            first_start,
        );
    }
}

#[test]
fn bad_record_in_a_sealed_segment_is_corrupt() {
    let fixture = build();
    let segs = segment_paths(fixture.path());
    let active = active_indices(fixture.path());
    let mut cases = 0;
    // Sealed segments of both streams.
    for (index, seg) in segs.iter().enumerate() {
        if active.contains(&index) {
            continue;
        }
        let recs = record_spans(&fs::read(seg).unwrap());
        cases += flip_every_byte(
            fixture.path(),
            index,
            recs[recs.len() / 2],
            "middle of a sealed segment",
        );
        // Nothing valid follows the final record of a sealed segment, but a
        // sealed segment was fsynced whole before the next one began: damage
        // there is never a torn tail.
        cases += flip_every_byte(
            fixture.path(),
            index,
            *recs.last().unwrap(),
            "final record of a sealed segment",
        );
    }
    println!("corrupt_middle: {cases} damaged records in sealed segments reported as Corrupt");
}

#[test]
fn sealed_segment_cut_short_is_corrupt() {
    let fixture = build();
    let recs = spans_of(fixture.path(), 0);
    let (start, len) = *recs.last().unwrap();
    for cut in [start + 1, start + RECORD_HEADER_LEN, start + len - 1] {
        assert_damage_is_corrupt(
            fixture.path(),
            0,
            |b| b.truncate(cut),
            &format!("cut to {cut} bytes"),
            start,
        );
    }
}

#[test]
fn header_naming_another_format_version_is_incompatible() {
    let fixture = build();
    let [last, last_claims] = active_indices(fixture.path());
    for index in [0, last, last_claims] {
        for version in [FORMAT_VERSION + 1, 0, u32::MAX] {
            let (copy, file) =
                damaged_copy(fixture.path(), index, |b| set_version(b, version, true));
            let ctx = format!("{} with format version {version}", file.display());
            let err = open_fails(copy.path(), &ctx);
            let Error::IncompatibleFormat {
                file: named,
                found,
                supported,
                ..
            } = &err
            else {
                panic!("{ctx}: expected IncompatibleFormat, got {err:?}");
            };
            assert_eq!(named, &file, "{ctx}");
            assert_eq!(*found, version, "{ctx}");
            assert_eq!(*supported, FORMAT_VERSION, "{ctx}");
            let shown = err.to_string();
            assert!(
                shown.contains(&file.display().to_string()),
                "{ctx}: {shown}"
            );
        }
    }
}

#[test]
fn header_with_a_bad_checksum_followed_by_valid_records_is_corrupt() {
    let fixture = build();
    let [last, last_claims] = active_indices(fixture.path());
    for index in [0, last, last_claims] {
        // A version changed without its checksum is damage, not a version.
        assert_damage_is_corrupt(
            fixture.path(),
            index,
            |b| set_version(b, FORMAT_VERSION + 1, false),
            "with a header checksum mismatch",
            0,
        );
    }
}

#[test]
fn header_with_a_bad_magic_followed_by_valid_records_is_corrupt() {
    let fixture = build();
    let [last, last_claims] = active_indices(fixture.path());
    for index in [0, 1, last, last_claims] {
        for magic in [*b"iDEMKVSG", *b"IDEMKVSH", [0u8; 8], *b"XXXXXXXX"] {
            assert_damage_is_corrupt(
                fixture.path(),
                index,
                |b| b[..8].copy_from_slice(&magic),
                &format!("with magic {magic:02x?}"),
                0,
            );
        }
    }
}
