//! Segment files preallocated to their whole size (`Options::preallocate`,
//! DESIGN.md §5 "Preallocation"): the space is taken when a segment starts,
//! a sealed segment ends at its last record, closing cuts the active ones,
//! zeros past the records are never a torn tail, and a power cut loses
//! nothing that was acknowledged.

mod common;

use common::{acquire_with, clock, written_len};
use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Durability, Fingerprint, ManualClock, Options, Record, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SEGMENT: u64 = 64 << 10;

fn options(clock: &Arc<ManualClock>) -> Options {
    common::options(clock)
        .segment_size(SEGMENT)
        .max_response_len(4096)
        .background_compaction(false)
}

fn key(i: usize) -> String {
    format!("tenant-3:POST /v1/orders:{i:05}")
}

fn response(i: usize) -> Vec<u8> {
    format!("{{\"order\":\"ord_{i:05}\",\"status\":\"created\"}}").into_bytes()
}

fn pair(store: &Store, i: usize) {
    let t = acquire_with(store, key(i), Fingerprint::of(key(i)));
    store.complete(t, &response(i)).unwrap();
}

#[track_caller]
fn assert_completed(store: &Store, range: std::ops::Range<usize>) {
    for i in range {
        match store.get(key(i)).unwrap() {
            Some(Record::Completed(c)) => assert_eq!(c.response(), &response(i)[..]),
            other => panic!("{}: {other:?}", key(i)),
        }
    }
}

/// The segment files of `dir`, oldest first, with their lengths.
fn segments(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    out.sort();
    out
}

/// Bytes of every file but the lock, as `du --apparent-size` counts them.
fn files_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn active_segments_take_their_whole_size_and_closing_cuts_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = options(&clock).open(dir.path()).unwrap();
    let main = segments(dir.path())
        .into_iter()
        .find(|(p, _)| std::fs::read(p).unwrap()[24] & 1 == 0)
        .unwrap();
    assert_eq!(
        main.1, SEGMENT,
        "the main stream's segment has its whole size from the start \
         (this test needs a file system with fallocate: ext4, xfs, btrfs, tmpfs)"
    );
    for i in 0..50 {
        pair(&store, i);
    }
    assert_eq!(
        std::fs::metadata(&main.0).unwrap().len(),
        SEGMENT,
        "appends below the preallocated length do not grow the file"
    );
    assert_eq!(
        store.stats().bytes_on_disk,
        files_len(dir.path()),
        "bytes_on_disk counts the space the files take"
    );
    drop(store);

    // Closed: every segment ends at its last record.
    for (path, len) in segments(dir.path()) {
        assert_eq!(len, written_len(&std::fs::read(&path).unwrap()), "{path:?}");
        assert!(len < SEGMENT, "{path:?}: {len}");
    }
    let store = options(&clock).open(dir.path()).unwrap();
    assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
    assert_completed(&store, 0..50);
}

#[test]
fn sealed_segments_end_at_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = options(&clock).open(dir.path()).unwrap();
    // About 250 bytes a pair: several main segments of 64 KiB.
    for i in 0..1200 {
        pair(&store, i);
    }
    let files = segments(dir.path());
    // The two newest are the streams' active segments, with their whole
    // size (the claim stream's segments are smaller); the rest are sealed.
    let (sealed, active) = files.split_at(files.len() - 2);
    assert_eq!(active[0].1.max(active[1].1), SEGMENT, "{files:?}");
    assert!(sealed.len() >= 6, "{files:?}");
    for (path, len) in sealed {
        let written = written_len(&std::fs::read(path).unwrap());
        assert_eq!(*len, written, "{path:?}");
    }
    assert_eq!(store.stats().bytes_on_disk, files_len(dir.path()));
    assert_completed(&store, 0..1200);
}

#[test]
fn power_loss_after_acknowledged_writes_keeps_them_and_cuts_nothing() {
    for seed in 0..40 {
        let sim = SimStorage::new();
        let clock = clock();
        let opts = || options(&clock).storage(Arc::new(sim.clone()));
        let store = opts().durability(Durability::Immediate).open("/s").unwrap();
        let n = 10 + (seed as usize * 37) % 400;
        for i in 0..n {
            pair(&store, i);
        }
        sim.power_loss(seed, PendingFate::Random);
        drop(store);
        let store = opts().open("/s").unwrap();
        assert_completed(&store, 0..n);
        assert_eq!(
            store.stats().torn_tail_bytes_truncated,
            0,
            "seed {seed}: every write was fsynced; the zeros after them are \
             preallocated space, not a torn tail"
        );
    }
}

#[test]
fn a_crashed_preallocated_store_opens_with_preallocation_off_and_back() {
    let sim = SimStorage::new();
    let clock = clock();
    let opts = |on: bool| {
        options(&clock)
            .storage(Arc::new(sim.clone()))
            .durability(Durability::Immediate)
            .preallocate(on)
    };
    let store = opts(true).open("/s").unwrap();
    for i in 0..300 {
        pair(&store, i);
    }
    // Killed: the active files keep their preallocated zeros.
    sim.kill_process();
    drop(store);

    let store = opts(false).open("/s").unwrap();
    assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
    assert_completed(&store, 0..300);
    // Appends overwrite the zeros; files past them do not grow.
    for i in 300..600 {
        pair(&store, i);
    }
    sim.kill_process();
    drop(store);

    let store = opts(true).open("/s").unwrap();
    assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
    assert_completed(&store, 0..600);
    drop(store);
    let store = opts(false).open("/s").unwrap();
    assert_completed(&store, 0..600);
}

#[test]
fn without_preallocation_files_grow_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = options(&clock).preallocate(false).open(dir.path()).unwrap();
    for i in 0..20 {
        pair(&store, i);
    }
    for (path, len) in segments(dir.path()) {
        assert_eq!(len, written_len(&std::fs::read(&path).unwrap()), "{path:?}");
    }
    assert_eq!(store.stats().bytes_on_disk, files_len(dir.path()));
}

/// A durable store writes zeros into the space it is about to append into
/// (so each `fdatasync` commits data alone, not the file system's record
/// of newly written space), at most one chunk ahead of the records per
/// stream; `Stats::zero_bytes_written` counts them. A store that does not
/// wait for fsyncs (`Durability::None`), or does not preallocate, writes
/// none.
#[test]
fn durable_stores_write_zeros_just_ahead_of_their_records() {
    const AHEAD: u64 = 256 << 10;
    let clock = clock();
    for (durability, preallocate) in [
        (Durability::Immediate, true),
        (Durability::None, true),
        (Durability::Immediate, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = options(&clock)
            .segment_size(1 << 20)
            .durability(durability)
            .preallocate(preallocate)
            .open(dir.path())
            .unwrap();
        for i in 0..6_000 {
            pair(&store, i);
        }
        let stats = store.stats();
        let (zeros, appended) = (stats.zero_bytes_written, stats.bytes_appended);
        let case = format!("{durability:?}, preallocate {preallocate}");
        assert!(appended > 1 << 20, "{case}: the workload spans segments");
        if durability == Durability::Immediate && preallocate {
            // Every append after a stream's first lands in zeroed space;
            // what lies past the last record is at most a chunk per
            // segment.
            assert!(zeros >= appended / 2, "{case}: {zeros} of {appended}");
            let bound = appended + AHEAD * (stats.segments + 2);
            assert!(
                zeros <= bound,
                "{case}: {zeros} zeros for {appended} appended"
            );
        } else {
            assert_eq!(zeros, 0, "{case}");
        }
        assert_completed(&store, 0..6_000);
    }
}
