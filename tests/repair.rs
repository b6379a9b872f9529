//! A way forward after corruption: `verify` finds damage without changing
//! anything; `repair` keeps a copy of each damaged file, salvages every
//! record that checks out, reports exactly what it skipped, and leaves a
//! store that opens and verifies. A crash during repair loses nothing more.

mod common;

use common::{clock, complete_new, main_segment_paths, record_spans, segment_paths, set_version};
use idemkv::storage::{PendingFate, SimStorage, Storage};
use idemkv::{Error, Fingerprint, Options, Record, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn options() -> Options {
    // No background compactor, so closing leaves every segment as it was
    // written (claim segments kept, no hints): the damage the tests put in
    // a segment is then met by open, which reads it.
    Options::new()
        .clock(clock())
        .segment_size(4096)
        .max_response_len(512)
        .background_compaction(false)
}

/// Completes "key-0".."key-59", enough to fill several segments.
fn write_keys(store: &Store) {
    for i in 0..60 {
        let response = format!("response {i}").repeat(3);
        complete_new(
            store,
            format!("key-{i}"),
            Fingerprint::of(b"fp"),
            response.as_bytes(),
        );
    }
}

/// Writes the 60 keys to a store in `dir`; returns the segment files.
fn populate(dir: &Path) -> Vec<PathBuf> {
    let store = options().open(dir).unwrap();
    write_keys(&store);
    drop(store);
    let segs = segment_paths(dir);
    assert!(segs.len() >= 3);
    segs
}

fn present(store: &Store) -> usize {
    (0..60)
        .filter(|i| match store.get(format!("key-{i}")).unwrap() {
            Some(Record::Completed(c)) => {
                assert_eq!(c.response(), format!("response {i}").repeat(3).as_bytes());
                true
            }
            Some(Record::InProgress { .. }) => false,
            None => false,
            Some(other) => panic!("{other:?}"),
        })
        .count()
}

#[test]
fn sound_store_verifies_and_repair_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let segs = populate(dir.path());
    let before: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let report = options().verify(dir.path()).unwrap();
    assert_eq!(
        (report.segments, report.records, report.torn_tail_bytes),
        (segs.len() as u64, 120, 0)
    );
    let repaired = options().repair(dir.path()).unwrap();
    assert!(repaired.repaired.is_empty());
    assert_eq!(repaired.records_kept, 120);
    let after: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn verify_and_repair_refuse_an_open_store() {
    let dir = tempfile::tempdir().unwrap();
    let _store = options().open(dir.path()).unwrap();
    assert!(matches!(options().verify(dir.path()), Err(Error::Locked)));
    assert!(matches!(options().repair(dir.path()), Err(Error::Locked)));
}

#[test]
fn verify_reports_a_torn_tail_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let segs = populate(dir.path());
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let report = idemkv::verify(dir.path()).unwrap();
    assert!(report.torn_tail_bytes > 0);
    assert_eq!(
        std::fs::metadata(last).unwrap().len(),
        len - 10,
        "verify changes nothing"
    );
}

#[test]
fn repair_salvages_around_a_corrupt_record_in_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    // The main stream's first segment, sealed: its records are completes.
    let damaged = &main_segment_paths(dir.path())[0];
    let original = std::fs::read(damaged).unwrap();
    let recs = record_spans(&original);
    let (offset, len) = recs[recs.len() / 2];
    let mut bytes = original.clone();
    bytes[offset + 61] ^= 0x40;
    std::fs::write(damaged, &bytes).unwrap();

    match idemkv::verify(dir.path()) {
        Err(Error::Corrupt {
            file, offset: at, ..
        }) => assert_eq!((&file, at), (damaged, offset as u64)),
        other => panic!("verify: {other:?}"),
    }
    assert!(matches!(
        options().open(dir.path()),
        Err(Error::Corrupt { .. })
    ));

    let report = options().repair(dir.path()).unwrap();
    assert_eq!(report.repaired.len(), 1);
    let fixed = &report.repaired[0];
    assert_eq!(&fixed.file, damaged);
    assert_eq!(fixed.skipped, vec![offset as u64..(offset + len) as u64]);
    assert_eq!((fixed.records_skipped, fixed.header_rewritten), (1, false));
    assert_eq!(fixed.records_kept, recs.len() as u64 - 1);
    assert_eq!(report.records_kept, 119);
    assert_eq!(
        std::fs::read(&fixed.backup).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );

    idemkv::verify(dir.path()).unwrap();
    let store = options().open(dir.path()).unwrap();
    assert_eq!(present(&store), 59, "every key but the damaged record's");
}

#[test]
fn repair_rewrites_a_damaged_header() {
    let dir = tempfile::tempdir().unwrap();
    let segs = populate(dir.path());
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[0..8].copy_from_slice(b"garbage!");
    std::fs::write(&segs[0], &bytes).unwrap();
    assert!(matches!(
        idemkv::verify(dir.path()),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    let report = idemkv::repair(dir.path()).unwrap();
    assert_eq!(report.repaired.len(), 1);
    assert!(report.repaired[0].header_rewritten);
    assert_eq!(report.repaired[0].skipped, vec![0..32]);
    assert_eq!(report.records_kept, 120);
    let store = options().open(dir.path()).unwrap();
    assert_eq!(present(&store), 60);
}

#[test]
fn repair_of_an_incompatible_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let segs = populate(dir.path());
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    set_version(&mut bytes, 99, true);
    std::fs::write(&segs[0], &bytes).unwrap();
    assert!(matches!(
        idemkv::repair(dir.path()),
        Err(Error::IncompatibleFormat { found: 99, .. })
    ));
    assert_eq!(std::fs::read(&segs[0]).unwrap(), bytes);
}

#[test]
fn crash_at_every_step_of_repair_loses_nothing_more() {
    // Build a damaged store on the simulated disk.
    let template = SimStorage::new();
    let dir = Path::new("/store");
    let opts = |sim: &SimStorage| options().storage(Arc::new(sim.clone()));
    {
        let store = opts(&template).open(dir).unwrap();
        write_keys(&store);
    }
    // The main stream's first segment, sealed.
    let seg = dir.join("0000000001.seg");
    let mut bytes = template.read_file(&seg).unwrap();
    let (offset, _) = record_spans(&bytes)[3];
    bytes[offset + 70] ^= 1;
    template.write_file(&seg, &bytes);
    let files: Vec<String> = template.list(dir).unwrap();

    let steps = {
        let sim = SimStorage::new();
        for f in &files {
            sim.write_file(&dir.join(f), &template.read_file(&dir.join(f)).unwrap());
        }
        let before = sim.ops();
        opts(&sim).repair(dir).unwrap();
        sim.ops() - before
    };
    assert!(steps >= 6, "repair takes {steps} storage steps");
    for n in 1..=steps {
        let sim = SimStorage::new();
        for f in &files {
            sim.write_file(&dir.join(f), &template.read_file(&dir.join(f)).unwrap());
        }
        sim.crash_after(n);
        assert!(opts(&sim).repair(dir).is_err(), "step {n} crashes");
        sim.power_loss(n, PendingFate::Random);
        let report = opts(&sim)
            .repair(dir)
            .unwrap_or_else(|e| panic!("repair after crash at step {n}: {e}"));
        assert_eq!(report.records_kept, 119, "step {n}");
        let store = opts(&sim).open(dir).unwrap();
        assert_eq!(present(&store), 59, "step {n}");
        drop(store);
        opts(&sim).verify(dir).unwrap();
    }
}
