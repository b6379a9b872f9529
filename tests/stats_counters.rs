//! Every counter in `Stats` moves as documented, and only when it should:
//! each operation is followed by a check of all the operation counters at
//! once, plus the sizes (live keys, bytes on disk, segments, fsyncs).

mod common;

use common::{
    LEASE_MS, OpCounts, RETENTION_MS, acquire_with, complete_new, dir_and_clock, options,
    small_segments,
};
use idemkv::{Claim, Durability, Error, Fingerprint, ManualClock, Seen, Store, Ticket};
use std::sync::Arc;
use std::time::Duration;

/// Files that grow as they are written, so `bytes_on_disk` follows every
/// write (`tests/preallocation.rs` checks it with the segments' whole size
/// given up front).
fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, durability: Durability) -> Store {
    small_segments(options(clock).durability(durability))
        .preallocate(false)
        .open(dir)
        .unwrap()
}

/// Asserts the operation counters equal `want`, then returns them.
#[track_caller]
fn expect(store: &Store, want: OpCounts) -> OpCounts {
    let got = OpCounts::of(&store.stats());
    assert_eq!(got, want);
    want
}

/// Claims the fresh `key`, which must acquire it: counted as a claim, an
/// acquisition and a live key, and checked like every other step.
#[track_caller]
fn acquire_counted(store: &Store, key: &str, fp: Fingerprint, want: &mut OpCounts) -> Ticket {
    let t = acquire_with(store, key, fp);
    want.claims += 1;
    want.acquired += 1;
    want.live_keys += 1;
    *want = expect(store, *want);
    t
}

#[test]
fn operation_counters_move_as_documented() {
    let (dir, clock) = dir_and_clock();
    let store = open(dir.path(), &clock, Durability::Immediate);
    let fp = Fingerprint::of(b"req");
    let other = Fingerprint::of(b"other req");
    let mut want = expect(&store, OpCounts::default());

    // A fresh claim.
    let a = acquire_counted(&store, "a", fp, &mut want);

    // A conflict while the owner works.
    assert!(matches!(
        store.claim("a", fp).unwrap(),
        Claim::InProgress { .. }
    ));
    want.claims += 1;
    want.in_progress += 1;
    want = expect(&store, want);

    // Another fingerprint on an in-progress key.
    assert!(matches!(store.claim("a", other).unwrap(), Claim::Mismatch));
    want.claims += 1;
    want.mismatches += 1;
    want = expect(&store, want);

    // A lease extension.
    store
        .extend_lease(&a, Duration::from_millis(LEASE_MS))
        .unwrap();
    want.lease_extensions += 1;
    want = expect(&store, want);

    // Completion, then a replay and a mismatch on the completed key.
    store.complete(a, b"response").unwrap();
    want.completes += 1;
    want = expect(&store, want);
    assert!(matches!(store.claim("a", fp).unwrap(), Claim::Replay(_)));
    want.claims += 1;
    want.replays += 1;
    want = expect(&store, want);
    assert!(matches!(store.claim("a", other).unwrap(), Claim::Mismatch));
    want.claims += 1;
    want.mismatches += 1;
    want = expect(&store, want);

    // A release.
    let b = acquire_counted(&store, "b", fp, &mut want);
    store.release(b).unwrap();
    want.releases += 1;
    want.live_keys -= 1;
    want = expect(&store, want);

    // A takeover, and the old ticket's three refusals.
    let c_old = acquire_counted(&store, "c", fp, &mut want);
    clock.advance(Duration::from_millis(LEASE_MS));
    let c_new = acquire_with(&store, "c", fp);
    want.claims += 1;
    want.acquired += 1;
    want.takeovers += 1;
    want = expect(&store, want);
    assert!(matches!(
        store.extend_lease(&c_old, Duration::from_secs(1)),
        Err(Error::LeaseLost)
    ));
    want.lease_lost += 1;
    want = expect(&store, want);
    let c_old2 = acquire_counted(&store, "c-2", fp, &mut want);
    assert!(store.remove("c-2").unwrap());
    want.removes += 1;
    want.live_keys -= 1;
    want = expect(&store, want);
    assert!(matches!(store.release(c_old2), Err(Error::LeaseLost)));
    want.lease_lost += 1;
    want = expect(&store, want);
    assert!(matches!(
        store.complete(c_old, b"stale"),
        Err(Error::LeaseLost)
    ));
    want.lease_lost += 1;
    want = expect(&store, want);
    store.complete(c_new, b"fresh").unwrap();
    want.completes += 1;
    want = expect(&store, want);

    // Removing an absent key counts nothing.
    assert!(!store.remove("never-there").unwrap());
    want = expect(&store, want);
    assert!(store.remove("c").unwrap());
    want.removes += 1;
    want.live_keys -= 1;
    want = expect(&store, want);

    // One-shot dedup.
    assert_eq!(
        store.mark_seen("m", Duration::from_millis(500)).unwrap(),
        Seen::First
    );
    want.seen_first += 1;
    want.live_keys += 1;
    want = expect(&store, want);
    assert_eq!(
        store.mark_seen("m", Duration::from_millis(500)).unwrap(),
        Seen::Duplicate
    );
    want.seen_duplicates += 1;
    want = expect(&store, want);
    // A claim on a seen key is a mismatch.
    assert!(matches!(store.claim("m", fp).unwrap(), Claim::Mismatch));
    want.claims += 1;
    want.mismatches += 1;
    want = expect(&store, want);
    // mark_seen on a live claimed key is a duplicate.
    assert_eq!(
        store.mark_seen("a", Duration::from_millis(500)).unwrap(),
        Seen::Duplicate
    );
    want.seen_duplicates += 1;
    want = expect(&store, want);

    // Reads and refused input count nothing.
    let _ = store.get("a").unwrap();
    let _ = store.get("zzz").unwrap();
    assert!(matches!(store.claim("", fp), Err(Error::EmptyKey)));
    want = expect(&store, want);

    // Expiry lowers live_keys without any operation.
    clock.advance(Duration::from_millis(500));
    want.live_keys -= 1; // "m"
    want = expect(&store, want);
    clock.advance(Duration::from_millis(RETENTION_MS));
    want.live_keys -= 1; // "a"
    let want = expect(&store, want);
    assert_eq!(want.live_keys, 0);
    assert!(
        store.stats().indexed_keys >= want.live_keys,
        "indexed keys include expired ones not yet evicted"
    );
}

#[test]
fn counters_start_again_at_zero_after_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock, Durability::None);
        for i in 0..5 {
            complete_new(&store, format!("k{i}"), Fingerprint::of(b"x"), b"v");
        }
        assert_eq!(store.stats().completes, 5);
    }
    let store = open(dir.path(), &clock, Durability::None);
    let want = OpCounts {
        live_keys: 5,
        ..OpCounts::default()
    };
    expect(&store, want);
    // The five completes; closing deleted the claim segment (every claim
    // in it was completed).
    assert_eq!(store.stats().recovered_records, 5);
    assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
    assert!(!store.stats().poisoned);
}

#[test]
fn size_counters_track_the_log() {
    let (dir, clock) = dir_and_clock();
    let store = open(dir.path(), &clock, Durability::Immediate);
    let s0 = store.stats();
    assert_eq!(s0.segments, 2, "one segment for each stream");
    assert_eq!(s0.bytes_on_disk, 64, "two fresh segments: their headers");
    assert_eq!(s0.bytes_appended, 0);

    let fp = Fingerprint::of(b"req");
    let t = acquire_with(&store, "k", fp);
    let s1 = store.stats();
    assert!(s1.fsyncs > s0.fsyncs, "an Immediate claim is fsynced");
    assert!(s1.bytes_appended > s0.bytes_appended);
    assert!(
        s1.bytes_on_disk > s0.bytes_on_disk,
        "a durable claim is on disk"
    );

    store.complete(t, &[7u8; 1000]).unwrap();
    let s2 = store.stats();
    assert!(s2.fsyncs > s1.fsyncs);
    assert!(s2.bytes_appended >= s1.bytes_appended + 1000);
    assert!(s2.bytes_on_disk >= s1.bytes_on_disk + 1000);

    // Fill past a few 4 KiB segments.
    for i in 0..12 {
        complete_new(&store, format!("fill-{i}"), fp, &[i as u8; 1000]);
    }
    let s3 = store.stats();
    assert!(s3.segments >= 3, "segments: {}", s3.segments);
    assert!(
        s3.bytes_on_disk >= s3.bytes_appended,
        "every acknowledged byte is on disk"
    );
    assert!(s3.bytes_on_disk <= s3.segments * 4096);
    assert!(s3.bytes_appended >= 13 * 1000);
    assert_eq!(s3.live_keys, 13);
    assert_eq!(s3.indexed_keys, 13);
    assert!(!s3.poisoned);

    // The directory holds what the stats say (closing may change it: it
    // writes hints and sync marks, and deletes settled claim segments).
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, s3.bytes_on_disk);
    drop(store);
}

#[test]
fn fsyncs_follow_the_durability_mode() {
    let (dir, clock) = dir_and_clock();
    let store = open(dir.path(), &clock, Durability::None);
    let fp = Fingerprint::of(b"req");
    for i in 0..5 {
        complete_new(&store, format!("k{i}"), fp, b"small");
    }
    let before = store.stats();
    assert_eq!(
        before.fsyncs, 0,
        "Durability::None does not fsync per write"
    );
    store.sync().unwrap();
    let after = store.stats();
    assert!(after.fsyncs > before.fsyncs, "sync fsyncs");
    assert!(
        after.bytes_on_disk > before.bytes_on_disk,
        "sync writes out the buffer"
    );
    // Nothing new to sync: no second fsync is needed, but it must not fail.
    store.sync().unwrap();
}
