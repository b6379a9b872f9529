//! Committed files of format version 1 (`tests/fixtures/v1`): a valid store
//! opens with every record as written, a torn one opens with the tail cut, a
//! corrupt one is refused with the file and offset, and today's encoder
//! still writes the valid one byte for byte.

mod common;

use common::{acquire_with, copy_dir, small_segments};
use idemkv::{Error, Fingerprint, ManualClock, Options, Record, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_700_000_000_000;
const CENTURY: Duration = Duration::from_secs(86_400 * 365 * 100);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

/// A scratch copy, so opening never changes the committed files.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
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

#[test]
fn valid_fixture_opens_with_every_record() {
    let dir = copy_of("valid");
    let store = open(dir.path()).unwrap();
    check_recipe(&store, false);
    let stats = store.stats();
    assert_eq!(
        (
            stats.recovered_records,
            stats.torn_tail_bytes_truncated,
            stats.segments
        ),
        (80, 0, 2)
    );
    let t = acquire_with(&store, "new", Fingerprint::of(b"x"));
    assert!(
        t.generation() > 80,
        "generations continue after the recovered records"
    );
}

#[test]
fn torn_fixture_opens_with_the_tail_cut() {
    let dir = copy_of("torn");
    let store = open(dir.path()).unwrap();
    check_recipe(&store, true);
    assert_eq!(store.stats().torn_tail_bytes_truncated, 45);
    assert_eq!(
        std::fs::metadata(dir.path().join("0000000002.seg"))
            .unwrap()
            .len(),
        3914
    );
}

#[test]
fn corrupt_fixture_is_refused_with_file_and_offset() {
    let dir = copy_of("corrupt");
    let before = std::fs::read(dir.path().join("0000000001.seg")).unwrap();
    match open(dir.path()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file.file_name().unwrap(), "0000000001.seg");
            assert_eq!(offset, 2037);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.path().join("0000000001.seg")).unwrap(),
        before,
        "left untouched"
    );
}

#[test]
fn current_encoder_writes_the_valid_fixture_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_recipe(dir.path());
    for name in ["0000000001.seg", "0000000002.seg"] {
        let written = std::fs::read(dir.path().join(name)).unwrap();
        let committed = std::fs::read(fixture("valid").join(name)).unwrap();
        assert!(
            written == committed,
            "{name}: the encoder no longer writes format version 1 as committed"
        );
    }
}
