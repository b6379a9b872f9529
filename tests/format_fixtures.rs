//! Committed files of format versions 1, 2 and 3 (`tests/fixtures/v1`,
//! `v2`, `v3`), written by the same recipe: a valid store opens with every
//! record as written, a torn one opens with the tail cut, a corrupt one is
//! refused with the file and offset, and today's encoder still writes the
//! valid version 3 store byte for byte. Version 1 had one write stream;
//! versions 1 and 2 had no sync marks. Opening an older store goes on in
//! new version 3 segments for both streams, which an older build refuses.
//!
//! The version 3 `torn` fixture is the page-level tear that older versions
//! refused to open: a batch whose first sector never reached the disk while
//! its later sectors, valid records that were never acknowledged, did.
//! `IDEMKV_BLESS_FIXTURES=1` rewrites the version 3 fixtures from the
//! recipe; without it, the test checks the committed files against it.

mod common;

use common::{
    OFF_VERSION, acquire_with, copy_dir, is_sync_mark, le_u32, small_segments, stream_paths,
    strip_close_marks, walk,
};
use idemkv::{Error, FORMAT_VERSION, Fingerprint, ManualClock, Options, Record, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_700_000_000_000;
const CENTURY: Duration = Duration::from_secs(86_400 * 365 * 100);

/// The committed fixture `name` of format version `version`.
fn fixture(version: u32, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/v{version}"))
        .join(name)
}

/// A scratch copy, so opening never changes the committed files.
fn copy_of(version: u32, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(version, name), dir.path());
    dir
}

/// The options the fixtures were written with, on `clock`.
fn options(clock: Arc<ManualClock>) -> Options {
    // Without a background compactor closing writes no hint and keeps the
    // claim segment: the fixture holds every kind of file as written.
    small_segments(Options::new().clock(clock))
        .retention(CENTURY)
        .background_compaction(false)
}

fn open(dir: &Path) -> idemkv::Result<Store> {
    options(Arc::new(ManualClock::new(START_MS + 10_000))).open(dir)
}

fn key(i: u32) -> String {
    format!("tenant-{}:POST /v1/charges:{i:04}", i % 3)
}

fn response(i: u32) -> Vec<u8> {
    format!("{{\"id\":\"ch_{i:04}\",\"amount\":{}}}", i * 100).into_bytes()
}

/// The recipe the `valid` fixture was written with.
fn write_recipe(dir: &Path) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = options(clock.clone()).open(dir).unwrap();
    for i in 0..40u32 {
        let t = acquire_with(&store, key(i), Fingerprint::of(format!("body {i}")));
        clock.advance(Duration::from_millis(10));
        match i % 8 {
            5 => store.release(t).unwrap(),
            6 => drop(t),
            _ => store.complete(t, &response(i)).unwrap(),
        }
        if i % 10 == 9 {
            let _ = store.mark_seen(format!("msg-{i}"), CENTURY).unwrap();
        }
    }
    assert!(store.remove(key(1)).unwrap());
}

/// Every key as the recipe left it; `removal_torn` for the torn fixture,
/// whose last record (the removal of key 1) was cut.
fn check_recipe(store: &Store, removal_torn: bool) {
    for i in 0..40u32 {
        let got = store.get(key(i)).unwrap();
        let fp = Fingerprint::of(format!("body {i}"));
        match (i, i % 8) {
            (1, _) if !removal_torn => assert_eq!(got, None, "key {i} was removed"),
            (_, 5) => assert_eq!(got, None, "key {i} was released"),
            (_, 6) => match got {
                Some(Record::InProgress {
                    fingerprint,
                    claimed_at_ms,
                    lease_expires_at_ms,
                }) => {
                    assert_eq!(fingerprint, fp);
                    assert_eq!(claimed_at_ms, START_MS + u64::from(i) * 10);
                    assert_eq!(lease_expires_at_ms, claimed_at_ms + 60_000);
                }
                other => panic!("key {i}: {other:?}"),
            },
            _ => match got {
                Some(Record::Completed(c)) => {
                    assert_eq!(c.response(), &response(i)[..], "key {i}");
                    assert_eq!(c.fingerprint(), fp);
                }
                other => panic!("key {i}: {other:?}"),
            },
        }
    }
    for i in [9, 19, 29, 39] {
        assert!(matches!(
            store.get(format!("msg-{i}")).unwrap(),
            Some(Record::Seen { .. })
        ));
    }
}

/// Opens the valid fixture of `version`; `segments` is how many segment
/// files the store has once open.
fn valid_opens(version: u32, segments: u64) {
    let dir = copy_of(version, "valid");
    let store = open(dir.path()).unwrap();
    check_recipe(&store, false);
    let stats = store.stats();
    assert_eq!(
        (
            stats.recovered_records,
            stats.torn_tail_bytes_truncated,
            stats.segments
        ),
        (80, 0, segments),
        "version {version}"
    );
    let t = acquire_with(&store, "new", Fingerprint::of(b"x"));
    assert!(
        t.generation() > 80,
        "generations continue after the recovered records"
    );
    drop(t);
    drop(store);
    // Both streams go on in segments of the current version, so a build
    // that reads only older versions refuses the store.
    for claims in [false, true] {
        let newest = stream_paths(dir.path(), claims).pop().unwrap();
        let bytes = std::fs::read(&newest).unwrap();
        assert_eq!(
            le_u32(&bytes, OFF_VERSION),
            FORMAT_VERSION,
            "{}",
            newest.display()
        );
    }
    check_recipe(&open(dir.path()).unwrap(), false);
}

/// An older version's last segment whose file goes on in zeros past its
/// records (space preallocated, or never written before a crash) is read
/// as ending at its last record, and open, which seals it to go on in a
/// version 3 segment, cuts it there: a sealed segment is checked whole, so
/// compaction and verify then read no zeros as a record.
#[test]
fn an_older_last_segment_with_zeros_after_it_is_sealed_at_its_last_record() {
    for version in [1, 2] {
        let dir = copy_of(version, "valid");
        let last = stream_paths(dir.path(), false).pop().unwrap();
        let written = std::fs::metadata(&last).unwrap().len();
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(&last, &bytes).unwrap();
        let store = open(dir.path()).unwrap();
        check_recipe(&store, false);
        store.compact().unwrap();
        drop(store);
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            written,
            "version {version}: sealed at its last record"
        );
        options(Arc::new(ManualClock::new(START_MS + 10_000)))
            .verify(dir.path())
            .unwrap();
        check_recipe(&open(dir.path()).unwrap(), false);
    }
}

#[test]
fn valid_fixtures_open_with_every_record() {
    // Version 1: two segments, then a new main and a new claim segment.
    valid_opens(1, 4);
    // Version 2: six segments, then a new one for each stream.
    valid_opens(2, 8);
    valid_opens(3, 6);
}

/// Opens the torn fixture of `version`, whose main stream's last segment
/// `tail` lost 45 bytes of the removal record.
fn torn_opens(version: u32, tail: &str, cut_len: u64) {
    let dir = copy_of(version, "torn");
    let store = open(dir.path()).unwrap();
    check_recipe(&store, true);
    assert_eq!(store.stats().torn_tail_bytes_truncated, 45);
    assert_eq!(
        std::fs::metadata(dir.path().join(tail)).unwrap().len(),
        cut_len,
        "version {version}"
    );
}

/// Opens the version 3 torn fixture: the recipe, then `LATE` pairs written
/// as one batch whose first sector was lost. The claim stream kept its
/// claims, the main stream is cut where the batch starts, so the late keys
/// are in progress and nothing after the hole came back.
fn torn_v3_opens() {
    let dir = copy_of(3, "torn");
    let main = stream_paths(dir.path(), false).pop().unwrap();
    let before = std::fs::metadata(&main).unwrap().len();
    let store = open(dir.path()).unwrap();
    check_recipe(&store, false);
    for i in 0..LATE {
        match store.get(late_key(i)).unwrap() {
            Some(Record::InProgress { fingerprint, .. }) => {
                assert_eq!(fingerprint, Fingerprint::of(late_key(i)));
            }
            other => panic!("{}: {other:?}", late_key(i)),
        }
    }
    let cut = common::written_len(&std::fs::read(&main).unwrap());
    let valid_len = std::fs::metadata(fixture(3, "valid").join(main.file_name().unwrap()))
        .unwrap()
        .len();
    let valid_main = std::fs::read(fixture(3, "valid").join(main.file_name().unwrap())).unwrap();
    let closing_marks = walk(&valid_main)
        .iter()
        .rev()
        .take_while(|r| is_sync_mark(&valid_main, r))
        .count() as u64;
    assert_eq!(
        cut,
        valid_len - closing_marks * 60,
        "cut where the batch began"
    );
    assert_eq!(store.stats().torn_tail_bytes_truncated, before - cut);
}

#[test]
fn torn_fixtures_open_with_the_tail_cut() {
    torn_opens(1, "0000000002.seg", 3914);
    torn_opens(2, "0000000006.seg", 308);
    torn_v3_opens();
}

/// Opens the corrupt fixture of `version`, which must be refused naming
/// `file` and `offset`, leaving it untouched.
fn corrupt_is_refused(version: u32, name: &str, at: u64) {
    let dir = copy_of(version, "corrupt");
    let before = std::fs::read(dir.path().join(name)).unwrap();
    match open(dir.path()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file.file_name().unwrap(), name);
            assert_eq!(offset, at);
        }
        other => panic!("version {version}: expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.path().join(name)).unwrap(),
        before,
        "left untouched"
    );
}

#[test]
fn corrupt_fixtures_are_refused_with_file_and_offset() {
    corrupt_is_refused(1, "0000000001.seg", 2037);
    // A damaged claim in a sealed claim segment.
    corrupt_is_refused(2, "0000000003.seg", 122);
    // A damaged complete in the main stream's last segment, which its
    // closing sync mark proves was fsynced: damage, not a torn tail.
    let (name, at) = corrupt_v3_target();
    corrupt_is_refused(3, &name, at);
}

/// How many claim+complete pairs the version 3 torn fixture adds.
const LATE: u32 = 6;

fn late_key(i: u32) -> String {
    format!("late-{i}")
}

/// The main stream's last segment of the valid version 3 fixture and the
/// offset of its last complete record: where the corrupt fixture is damaged.
fn corrupt_v3_target() -> (String, u64) {
    let main = stream_paths(&fixture(3, "valid"), false).pop().unwrap();
    let bytes = std::fs::read(&main).unwrap();
    let last = walk(&bytes)
        .into_iter()
        .rfind(|r| !is_sync_mark(&bytes, r) && bytes[r.start + 4] == 2)
        .expect("a complete record in the last main segment");
    let name = main.file_name().unwrap().to_str().unwrap().to_string();
    (name, last.start as u64)
}

/// The version 3 `torn` fixture, derived from `valid`: `LATE` more pairs,
/// then the state a power cut leaves when the main stream's batch holding
/// their completes lost its first 512-byte sector (zeros, past the old end
/// of the file) and kept the rest. The closing sync marks are gone too: the
/// process never closed the store.
fn derive_torn_v3(dir: &Path) {
    copy_dir(&fixture(3, "valid"), dir);
    let main = stream_paths(dir, false).pop().unwrap();
    strip_close_marks(dir);
    let start = std::fs::metadata(&main).unwrap().len() as usize;
    let clock = Arc::new(ManualClock::new(START_MS + 1_000));
    let store = options(clock).open(dir).unwrap();
    for i in 0..LATE {
        let t = acquire_with(&store, late_key(i), Fingerprint::of(late_key(i)));
        store.complete(t, &response(100 + i)).unwrap();
    }
    drop(store);
    strip_close_marks(dir);
    // Hints are derived data; the fixtures hold segments only.
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(
        stream_paths(dir, false).pop().unwrap(),
        main,
        "the batch stays in one segment"
    );
    let mut bytes = std::fs::read(&main).unwrap();
    let records = walk(&bytes);
    assert!(
        records
            .iter()
            .all(|r| r.start < start || !is_sync_mark(&bytes, r)),
        "the batch holds no sync mark"
    );
    let lost_to = start.next_multiple_of(512);
    assert!(
        records.iter().filter(|r| r.start >= lost_to).count() >= 2,
        "valid records follow the hole"
    );
    bytes[start..lost_to].fill(0);
    std::fs::write(&main, bytes).unwrap();
}

/// The version 3 `corrupt` fixture: `valid` with one key byte of the last
/// complete in the main stream's last segment flipped.
fn derive_corrupt_v3(dir: &Path) {
    copy_dir(&fixture(3, "valid"), dir);
    let (name, at) = corrupt_v3_target();
    let path = dir.join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize + 60] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
}

/// Every file of `dir`, by name.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// With `IDEMKV_BLESS_FIXTURES=1`, replaces committed fixture `name` of the
/// current version with `dir`; otherwise checks that they are equal.
fn check_or_bless(name: &str, dir: &Path) {
    let committed = fixture(FORMAT_VERSION, name);
    if std::env::var_os("IDEMKV_BLESS_FIXTURES").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).unwrap();
        for (file, bytes) in files_of(dir) {
            std::fs::write(committed.join(file), bytes).unwrap();
        }
        return;
    }
    let written = files_of(dir);
    let names: Vec<&String> = written.iter().map(|(n, _)| n).collect();
    let want = files_of(&committed);
    let want_names: Vec<&String> = want.iter().map(|(n, _)| n).collect();
    assert_eq!(names, want_names, "{name}: the files committed");
    for ((file, bytes), (_, want)) in written.iter().zip(&want) {
        assert!(
            bytes == want,
            "{name}/{file}: the recipe no longer writes format version {FORMAT_VERSION} as \
             committed (a format change needs a new version and new fixtures)"
        );
    }
}

#[test]
fn torn_and_corrupt_fixtures_follow_from_the_recipe() {
    for (name, derive) in [
        ("torn", derive_torn_v3 as fn(&Path)),
        ("corrupt", derive_corrupt_v3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        derive(dir.path());
        check_or_bless(name, dir.path());
    }
}

#[test]
fn current_encoder_writes_the_valid_fixture_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_recipe(dir.path());
    assert_eq!(
        stream_paths(dir.path(), false).len() + stream_paths(dir.path(), true).len(),
        6,
        "the recipe writes six segments"
    );
    check_or_bless("valid", dir.path());
}
