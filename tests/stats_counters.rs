//! Every counter in `Stats` moves as documented, and only when it should:
//! each operation is followed by a check of all the operation counters at
//! once, plus the sizes (live keys, bytes on disk, segments, fsyncs).

use idemkv::{Claim, Durability, Error, Fingerprint, ManualClock, Options, Seen, Stats, Store};
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_000_000;
const LEASE_MS: u64 = 1_000;
const RETENTION_MS: u64 = 10_000;

/// The operation counters, by name, so a failure says which one is off.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ops {
    claims: u64,
    acquired: u64,
    replays: u64,
    in_progress: u64,
    mismatches: u64,
    takeovers: u64,
    completes: u64,
    releases: u64,
    lease_extensions: u64,
    lease_lost: u64,
    removes: u64,
    seen_first: u64,
    seen_duplicates: u64,
    live_keys: u64,
}

fn ops(s: &Stats) -> Ops {
    Ops {
        claims: s.claims,
        acquired: s.acquired,
        replays: s.replays,
        in_progress: s.in_progress,
        mismatches: s.mismatches,
        takeovers: s.takeovers,
        completes: s.completes,
        releases: s.releases,
        lease_extensions: s.lease_extensions,
        lease_lost: s.lease_lost,
        removes: s.removes,
        seen_first: s.seen_first,
        seen_duplicates: s.seen_duplicates,
        live_keys: s.live_keys,
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, durability: Durability) -> Store {
    Options::new()
        .clock(clock.clone())
        .durability(durability)
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_millis(RETENTION_MS))
        .segment_size(4096)
        .max_response_len(1024)
        .open(dir)
        .unwrap()
}

/// Asserts the operation counters equal `want`, then returns them.
#[track_caller]
fn expect(store: &Store, want: Ops) -> Ops {
    let got = ops(&store.stats());
    assert_eq!(got, want);
    want
}

#[test]
fn operation_counters_move_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &clock, Durability::Immediate);
    let fp = Fingerprint::of(b"req");
    let other = Fingerprint::of(b"other req");
    let mut want = expect(&store, Ops::default());

    // A fresh claim.
    let Claim::Acquired(a) = store.claim("a", fp).unwrap() else {
        panic!()
    };
    want.claims += 1;
    want.acquired += 1;
    want.live_keys += 1;
    want = expect(&store, want);

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
    let Claim::Acquired(b) = store.claim("b", fp).unwrap() else {
        panic!()
    };
    want.claims += 1;
    want.acquired += 1;
    want.live_keys += 1;
    want = expect(&store, want);
    store.release(b).unwrap();
    want.releases += 1;
    want.live_keys -= 1;
    want = expect(&store, want);

    // A takeover, and the old ticket's three refusals.
    let Claim::Acquired(c_old) = store.claim("c", fp).unwrap() else {
        panic!()
    };
    want.claims += 1;
    want.acquired += 1;
    want.live_keys += 1;
    want = expect(&store, want);
    clock.advance(Duration::from_millis(LEASE_MS));
    let Claim::Acquired(c_new) = store.claim("c", fp).unwrap() else {
        panic!()
    };
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
    let Claim::Acquired(c_old2) = store.claim("c-2", fp).unwrap() else {
        panic!()
    };
    want.claims += 1;
    want.acquired += 1;
    want.live_keys += 1;
    want = expect(&store, want);
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
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    {
        let store = open(dir.path(), &clock, Durability::None);
        for i in 0..5 {
            let Claim::Acquired(t) = store.claim(format!("k{i}"), Fingerprint::of(b"x")).unwrap()
            else {
                panic!()
            };
            store.complete(t, b"v").unwrap();
        }
        assert_eq!(store.stats().completes, 5);
    }
    let store = open(dir.path(), &clock, Durability::None);
    let want = Ops {
        live_keys: 5,
        ..Ops::default()
    };
    expect(&store, want);
    assert_eq!(store.stats().recovered_records, 10);
    assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
    assert!(!store.stats().poisoned);
}

#[test]
fn size_counters_track_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &clock, Durability::Immediate);
    let s0 = store.stats();
    assert_eq!(s0.segments, 1);
    assert!(s0.bytes_on_disk > 0, "a fresh segment has its header");
    assert_eq!(s0.bytes_appended, 0);

    let fp = Fingerprint::of(b"req");
    let Claim::Acquired(t) = store.claim("k", fp).unwrap() else {
        panic!()
    };
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
        let Claim::Acquired(t) = store.claim(format!("fill-{i}"), fp).unwrap() else {
            panic!()
        };
        store.complete(t, &[i as u8; 1000]).unwrap();
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

    // The directory holds what the stats say.
    drop(store);
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, s3.bytes_on_disk);
}

#[test]
fn fsyncs_follow_the_durability_mode() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &clock, Durability::None);
    let fp = Fingerprint::of(b"req");
    for i in 0..5 {
        let Claim::Acquired(t) = store.claim(format!("k{i}"), fp).unwrap() else {
            panic!()
        };
        store.complete(t, b"small").unwrap();
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
