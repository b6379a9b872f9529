//! The claim stream: claims live in their own segments, every other record
//! in the main stream. A key's history crosses the two streams, so open
//! must put a claim and the main records around it back in the order they
//! were written. Each scenario below is checked on the live store, after a
//! reopen that scans the segments, and after a compaction and a reopen that
//! reads hint files; with filler pairs between the steps (the records of a
//! key in different, sealed segments) and without.
//!
//! Also: claim segments whose claims were all completed are deleted by
//! compaction without copying a byte, and the disk then holds the completes
//! and little else.

mod common;

use common::stream_paths;
use idemkv::{Claim, Fingerprint, ManualClock, Options, Record, Store, Ticket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(60);

fn options(clock: &Arc<ManualClock>) -> Options {
    Options::new()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(Duration::from_secs(3600))
        .segment_size(4096)
        .max_response_len(512)
        .background_compaction(false)
}

/// What a scenario does, with the store, the clock and a step between
/// operations (filler pairs or nothing).
type Scenario = fn(&Store, &ManualClock, &dyn Fn(&Store)) -> Expect;

/// The state the scenario must leave key `k` in.
#[derive(Debug)]
enum Expect {
    Absent,
    InProgress(Fingerprint),
    Completed(&'static [u8]),
}

fn acquire(store: &Store, fp: &str) -> Ticket {
    match store.claim("k", Fingerprint::of(fp)).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("claim of k: {other:?}"),
    }
}

/// Thirty claim+complete pairs of other keys: enough to roll both streams
/// over at least once.
fn fillers(store: &Store) {
    for _ in 0..30 {
        let key = format!("filler-{}", store.stats().claims);
        let Claim::Acquired(t) = store.claim(&key, Fingerprint::of(&key)).unwrap() else {
            panic!("{key}")
        };
        store.complete(t, &[b'f'; 100]).unwrap();
    }
}

fn check(store: &Store, want: &Expect, ctx: &str) {
    let got = store.get("k").unwrap();
    match (want, &got) {
        (Expect::Absent, None) => {}
        (Expect::InProgress(fp), Some(Record::InProgress { fingerprint, .. }))
            if fingerprint == fp => {}
        (Expect::Completed(r), Some(Record::Completed(c))) if c.response() == *r => {}
        _ => panic!("{ctx}: want {want:?}, got {got:?}"),
    }
}

/// Runs `scenario` with and without fillers; checks the live store, a
/// reopen, and a reopen from hints after a compaction.
fn run(name: &str, scenario: Scenario) {
    let no_step = |_: &Store| {};
    for (label, step) in [
        ("no fillers", &no_step as &dyn Fn(&Store)),
        ("fillers", &fillers),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = options(&clock).open(dir.path()).unwrap();
        let want = scenario(&store, &clock, step);
        let ctx = format!("{name} ({label})");
        check(&store, &want, &format!("{ctx}, live"));
        drop(store);
        let store = options(&clock).open(dir.path()).unwrap();
        check(&store, &want, &format!("{ctx}, reopened"));
        store.compact().unwrap();
        drop(store);
        let store = options(&clock).open(dir.path()).unwrap();
        check(&store, &want, &format!("{ctx}, compacted and reopened"));
        if label == "fillers" {
            assert!(
                store.stats().segments_opened_from_hints > 0,
                "{ctx}: the last open read hints"
            );
        }
    }
}

#[test]
fn a_complete_with_a_short_retention_expires_inside_the_claims_lease() {
    // The claim's lease (60 s) outlives the complete's retention (1 s):
    // the complete, written after the claim, decides.
    run("short retention", |store, clock, step| {
        let t = acquire(store, "a");
        step(store);
        store
            .complete_with_retention(t, b"done", Duration::from_secs(1))
            .unwrap();
        step(store);
        clock.advance(Duration::from_secs(5));
        Expect::Absent
    });
}

#[test]
fn a_claim_after_a_release_stays_in_progress() {
    run("release, then claim", |store, _, step| {
        let t = acquire(store, "a");
        step(store);
        store.release(t).unwrap();
        step(store);
        let _abandoned = acquire(store, "b");
        Expect::InProgress(Fingerprint::of("b"))
    });
}

#[test]
fn a_released_claim_stays_released() {
    run("claim, then release", |store, _, step| {
        let t = acquire(store, "a");
        step(store);
        store.release(t).unwrap();
        Expect::Absent
    });
}

#[test]
fn a_claim_after_a_removal_stays_in_progress() {
    run("remove, then claim", |store, _, step| {
        let t = acquire(store, "a");
        store.complete(t, b"first").unwrap();
        step(store);
        assert!(store.remove("k").unwrap());
        step(store);
        let _abandoned = acquire(store, "b");
        Expect::InProgress(Fingerprint::of("b"))
    });
}

#[test]
fn a_complete_after_a_lease_extension_stands() {
    run("extend, then complete", |store, _, step| {
        let t = acquire(store, "a");
        step(store);
        store.extend_lease(&t, Duration::from_secs(30)).unwrap();
        step(store);
        store.complete(t, b"extended").unwrap();
        Expect::Completed(b"extended")
    });
}

#[test]
fn a_takeover_and_its_complete_stand() {
    run("takeover", |store, clock, step| {
        let lost = acquire(store, "a");
        step(store);
        clock.advance(LEASE + Duration::from_secs(1));
        let t = acquire(store, "a");
        assert!(t.generation() > lost.generation());
        step(store);
        store.complete(t, b"second owner").unwrap();
        Expect::Completed(b"second owner")
    });
}

#[test]
fn a_new_claim_after_expiry_stays_in_progress() {
    run("expire, then claim", |store, clock, step| {
        let t = acquire(store, "a");
        store
            .complete_with_retention(t, b"old", Duration::from_secs(1))
            .unwrap();
        step(store);
        clock.advance(Duration::from_secs(2));
        let _abandoned = acquire(store, "b");
        Expect::InProgress(Fingerprint::of("b"))
    });
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn completed_claim_segments_are_deleted_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    // Files as long as their records, so the bytes closing adds show.
    let store = options(&clock).preallocate(false).open(dir.path()).unwrap();
    for _ in 0..7 {
        fillers(&store);
    }
    let sealed_claims = stream_paths(dir.path(), true).len() - 1;
    assert!(sealed_claims >= 3, "{sealed_claims} sealed claim segments");
    let report = store.compact().unwrap();
    assert_eq!(report.segments_dropped, sealed_claims as u64);
    assert_eq!((report.segments_rewritten, report.bytes_copied), (0, 0));
    assert_eq!(
        stream_paths(dir.path(), true).len(),
        1,
        "only the active claim segment is left"
    );
    // What is left: the completes, their hints, the active claim segment.
    let stats = store.stats();
    let completes = 210 * (60 + "filler-100".len() as u64 + 100);
    let claims_active = std::fs::metadata(&stream_paths(dir.path(), true)[0])
        .unwrap()
        .len();
    assert!(
        stats.bytes_on_disk < completes * 12 / 10 + claims_active,
        "{} bytes on disk for {completes} bytes of completes",
        stats.bytes_on_disk
    );
    drop(store);
    // Without a background compactor, closing writes at most one 60-byte
    // sync mark per stream.
    let grown = disk_bytes(dir.path()) - stats.bytes_on_disk;
    assert!(
        [0, 60, 120].contains(&grown),
        "close grew the store by {grown} bytes"
    );
    // With one (whose timer never fires here, and no write wakes it),
    // closing settles the store as it would: every claim was completed,
    // so the active claim segment goes too (the stream moves to a new,
    // empty segment), and the main stream's active segment gets a hint.
    let old_claims = stream_paths(dir.path(), true);
    let newest_before = common::segment_paths(dir.path()).pop().unwrap();
    drop(
        options(&clock)
            .background_compaction(true)
            .compaction_interval(Duration::from_secs(3600))
            .open(dir.path())
            .unwrap(),
    );
    let new_claims = stream_paths(dir.path(), true);
    assert_eq!(new_claims.len(), 1, "{new_claims:?}");
    assert!(
        !old_claims.contains(&new_claims[0]),
        "closing deleted the claim segment nothing pointed into: {old_claims:?}"
    );
    assert_eq!(
        std::fs::metadata(&new_claims[0]).unwrap().len(),
        32,
        "the claim stream goes on in a new segment holding its header only"
    );
    // Its id is above every id used before: a location a ticket remembers
    // never names another record.
    assert!(
        new_claims[0] > newest_before,
        "{new_claims:?} after {newest_before:?}"
    );
    let active_hint = stream_paths(dir.path(), false)
        .pop()
        .unwrap()
        .with_extension("hint");
    assert!(active_hint.exists(), "closing hinted the active segment");
    let store = options(&clock).open(dir.path()).unwrap();
    assert_eq!(stream_paths(dir.path(), true), new_claims);
    for i in 0..210 {
        let key = format!("filler-{i}");
        match store.get(&key).unwrap() {
            Some(Record::Completed(c)) => assert_eq!(c.response(), &[b'f'; 100][..]),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn a_claim_segment_goes_only_after_the_completes_that_ended_its_claims_are_durable() {
    // `Periodic` with a long period: completes reach the file but no fsync
    // until something asks. The claim of "k" is durable (its segment was
    // sealed), its complete is not; compaction then finds the claim
    // segment dead. Deleting it before the complete is durable would let a
    // power loss leave "k" with neither record: absent, so a retry would
    // run the side effect again.
    use idemkv::Durability;
    use idemkv::storage::{PendingFate, SimStorage};
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let open = || {
        options(&clock)
            .storage(Arc::new(sim.clone()))
            .durability(Durability::Periodic(Duration::from_secs(3600)))
            .open(Path::new("/store"))
            .unwrap()
    };
    let store = open();
    let t = acquire(&store, "a");
    let fillers = 20;
    for i in 0..fillers {
        let key = format!("filler-{i}");
        let Claim::Acquired(f) = store.claim(&key, Fingerprint::of(&key)).unwrap() else {
            panic!("{key}")
        };
        store.complete(f, b"done").unwrap();
    }
    store.complete(t, b"charged once").unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_dropped >= 1, "{report:?}");
    sim.power_loss(11, PendingFate::DropAll);
    drop(store);
    let store = open();
    check(
        &store,
        &Expect::Completed(b"charged once"),
        "after power loss",
    );
}
