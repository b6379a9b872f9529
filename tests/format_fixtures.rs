//! Committed files of format versions 1 and 2 (`tests/fixtures/v1`, `v2`),
//! written by the same recipe: a valid store opens with every record as
//! written, a torn one opens with the tail cut, a corrupt one is refused with
//! the file and offset, and today's encoder still writes the valid version 2
//! store byte for byte. Version 1 had one write stream; opening such a store
//! adds a version 2 claim segment, which an older build refuses.

mod common;

use common::{OFF_VERSION, acquire_with, copy_dir, le_u32, small_segments, stream_paths};
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
    small_segments(Options::new().clock(clock)).retention(CENTURY)
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
    // Every claim since is in a version 2 claim segment.
    let claims = stream_paths(dir.path(), true);
    assert!(!claims.is_empty());
    for seg in claims {
        let bytes = std::fs::read(&seg).unwrap();
        assert_eq!(
            le_u32(&bytes, OFF_VERSION),
            FORMAT_VERSION,
            "{}",
            seg.display()
        );
    }
    check_recipe(&open(dir.path()).unwrap(), false);
}

#[test]
fn valid_fixtures_open_with_every_record() {
    // Version 1: two segments, and the claim segment the open adds.
    valid_opens(1, 3);
    valid_opens(2, 6);
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

#[test]
fn torn_fixtures_open_with_the_tail_cut() {
    torn_opens(1, "0000000002.seg", 3914);
    torn_opens(2, "0000000006.seg", 308);
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
}

#[test]
fn current_encoder_writes_the_valid_fixture_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_recipe(dir.path());
    let names: Vec<String> = std::fs::read_dir(fixture(FORMAT_VERSION, "valid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 6);
    assert_eq!(
        stream_paths(dir.path(), false).len() + stream_paths(dir.path(), true).len(),
        names.len(),
        "the recipe writes as many segments as committed"
    );
    for name in names {
        let written = std::fs::read(dir.path().join(&name)).unwrap();
        let committed = std::fs::read(fixture(FORMAT_VERSION, "valid").join(&name)).unwrap();
        assert!(
            written == committed,
            "{name}: the encoder no longer writes format version {FORMAT_VERSION} as committed"
        );
    }
}
